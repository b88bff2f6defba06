"""The Examples sections of the public docstrings run and print what they claim."""

import doctest

import pytest

import kdentropy
from kdentropy import _api, _backend


@pytest.mark.parametrize("module", [_api, _backend])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"kde": kdentropy}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 or module is _backend
    assert result.failed == 0
