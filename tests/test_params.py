"""The soft-entropy keywords: validated once per public call, defaults in one place."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib

import numpy as np
import pytest

import kdentropy as kde
from kdentropy import _validation, mpi
from kdentropy._params import DEFAULT, KEYWORDS, SoftParams
from kdentropy.cells import ReproducibilityLoss

SRC = pathlib.Path(kde.__file__).parent


@pytest.fixture
def checks(monkeypatch):
    """Counts of the temperature and sigma checks, however they are reached."""
    counts = {"temperature": 0, "sigma": 0}
    sharpness, kernel_width = _validation.sharpness, _validation.kernel_width

    def counted_sharpness(value, name="temperature"):
        counts["temperature"] += 1
        return sharpness(value, name)

    def counted_kernel_width(value, name="sigma"):
        counts["sigma"] += 1
        return kernel_width(value, name)

    monkeypatch.setattr(_validation, "sharpness", counted_sharpness)
    monkeypatch.setattr(_validation, "kernel_width", counted_kernel_width)
    return counts


def test_fields_are_checked_and_canonical():
    p = SoftParams(np.float32(2.0), np.array(0.25), 1, 2, np.bool_(True))
    assert (p.temperature, p.sigma, p.threshold, p.base, p.normalize) == (2.0, 0.25, 1.0, 2.0, True)
    assert all(type(v) is float for v in (p.temperature, p.sigma, p.threshold, p.base))
    assert type(p.normalize) is bool
    assert p.unit_scale(4) == pytest.approx(1 / (4 * np.log(2)), rel=1e-15)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.sigma = 1.0  # type: ignore[misc]
    assert SoftParams(sigma=0.25) == SoftParams(10.0, 0.25) and hash(SoftParams()) == hash(DEFAULT)


@pytest.mark.parametrize("kw, exc, word", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": 2e50}, ValueError, "temperature"),
    ({"sigma": -1.0}, ValueError, "sigma"),
    ({"sigma": 1e-51}, ValueError, "sigma"),
    ({"sigma": "0.5"}, TypeError, "sigma"),
    ({"threshold": float("nan")}, ValueError, "threshold"),
    ({"base": 1.0}, ValueError, "base"),
    ({"base": -2.0}, ValueError, "base"),
    ({"normalize": 1}, TypeError, "normalize"),
])
def test_bad_values_name_the_keyword(kw, exc, word):
    with pytest.raises(exc, match=word):
        SoftParams(**kw)


def _public_functions():
    yield from (kde.soft_entropy, kde.soft_entropy_grad, kde.soft_entropy_and_grad,
                mpi.soft_entropy, mpi.soft_entropy_grad, mpi.soft_entropy_and_grad,
                ReproducibilityLoss.__init__)
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    import kdentropy.jax
    import kdentropy.torch

    yield kdentropy.torch.soft_entropy
    yield kdentropy.jax.soft_entropy
    yield kdentropy.torch.SoftEntropyLoss.__init__


def test_every_signature_takes_its_defaults_from_one_object():
    for func in _public_functions():
        params = inspect.signature(func).parameters
        for field in dataclasses.fields(SoftParams):
            if field.init and field.name in params:
                assert params[field.name].default == getattr(DEFAULT, field.name), (func, field)


def _literal_defaults(tree: ast.AST):
    """Where a literal is given as the default of a temperature or sigma in code."""
    names = {"temperature", "sigma", "--temperature", "--sigma"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg in names and isinstance(default, ast.Constant):
                    yield node.lineno
        elif isinstance(node, ast.Call):  # add_argument("--sigma", default=0.5)
            flags = {c.value for c in node.args if isinstance(c, ast.Constant)}
            for kw in node.keywords:
                if (kw.arg == "default" and flags & names and isinstance(kw.value, ast.Constant)
                        and kw.value.value is not None):
                    yield node.lineno


def test_default_values_are_written_once_in_src():
    hits = [f"{path.relative_to(SRC)}:{line}" for path in sorted(SRC.rglob("*.py"))
            if path.name != "_params.py" for line in _literal_defaults(ast.parse(path.read_text()))]
    assert hits == []


def test_docstrings_state_the_defaults():
    assert f"Default {DEFAULT.temperature}." in KEYWORDS and f"Default {DEFAULT.sigma}." in KEYWORDS
    for func in _public_functions():
        if func.__name__ != "__init__":
            assert "{" + "keywords}" not in func.__doc__ and KEYWORDS in func.__doc__


def test_one_check_per_public_call(checks, rng):
    X = rng.random((32, 6))
    kde.soft_entropy_and_grad(X, 5.0, 0.3)
    kde.soft_entropy(X, 5.0, 0.3)
    assert checks == {"temperature": 2, "sigma": 2}


def test_the_training_loss_checks_once_then_never_again(checks, rng):
    loss = ReproducibilityLoss(5.0, 0.3)
    for _ in range(3):
        loss(rng.random((16, 6)))
    loss.soft_entropy(rng.random((16, 6)))
    assert checks == {"temperature": 1, "sigma": 1}
    again = ReproducibilityLoss.from_params(loss.params, anti_collapse=3.0)
    again(rng.random((16, 6)))
    assert checks == {"temperature": 1, "sigma": 1}
    assert again.get_config()["sigma"] == 0.3 and again.anti_collapse == 3.0


def test_a_loss_from_params_matches_the_constructor(rng):
    X = rng.random((24, 5))
    a = ReproducibilityLoss(4.0, 0.7, threshold=0.4, anti_collapse=2.0)
    b = ReproducibilityLoss.from_params(SoftParams(4.0, 0.7, 0.4), anti_collapse=2.0)
    va, ga, _ = a(X)
    vb, gb, _ = b(X)
    assert va == vb and np.array_equal(ga, gb)
    with pytest.raises(ValueError, match="nats"):
        ReproducibilityLoss.from_params(SoftParams(base=2.0))
    with pytest.raises(TypeError, match="params"):
        ReproducibilityLoss.from_params({"sigma": 1.0})


def test_framework_wrappers_check_once(checks, rng):
    torch = pytest.importorskip("torch")
    import kdentropy.torch as kt
    x = torch.tensor(rng.random((16, 4)), requires_grad=True)
    loss = kt.SoftEntropyLoss(sigma=0.4)
    loss(x).backward()
    loss(x).backward()
    assert checks == {"temperature": 1, "sigma": 1}
    kt.soft_entropy(x).backward()
    assert checks == {"temperature": 2, "sigma": 2}


def test_the_command_line_checks_once_for_a_whole_training_run(checks, tmp_path, capsys):
    from kdentropy.cli import main

    argv = ["train", "--cells", "8", "--steps", "3", "--hidden", "4", "--batch", "8",
            "--eval-batch", "16", "--eval-every", "2", "--iterations", "4", "--backend", "numpy",
            "--quiet", "--sigma", "0.7", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert checks == {"temperature": 1, "sigma": 1}
    assert main(["entropy", str(tmp_path / "missing.npy"), "--sigma", "-1"]) == 2
    assert "argument --sigma: sigma must be > 0" in capsys.readouterr().err
