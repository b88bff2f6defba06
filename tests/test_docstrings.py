"""The Examples sections of the public docstrings run and print what they claim.

(The ``nn``, ``optim`` and ``cells`` modules run their own examples in their test modules.)
"""

import doctest

import pytest

import kdentropy
from kdentropy import backends, entropy


@pytest.mark.parametrize("module", [entropy, backends], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"kde": kdentropy}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
