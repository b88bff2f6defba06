"""kdentropy.torch: the soft entropy as a PyTorch autograd Function, against the NumPy API."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kdentropy as kde

torch = pytest.importorskip("torch")
import kdentropy.torch as kt  # noqa: E402  (ours: an ImportError fails, never skips)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KW = dict(temperature=10.0, sigma=0.5)


def clustered(rng: np.random.Generator, N: int, D: int, dtype=np.float64) -> np.ndarray:
    """Four random 0/1 prototypes plus noise 0.15: 0 < H < log N and non-vanishing gradients."""
    protos = rng.integers(0, 2, size=(4, D)).astype(np.float64)
    return (protos[rng.integers(0, 4, size=N)] + 0.15 * rng.standard_normal((N, D))).astype(dtype)


def _leaf(a: np.ndarray, requires_grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=requires_grad)


def _value_and_grad(x: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    H = kt.soft_entropy(x, **kw)
    (g,) = torch.autograd.grad(H.sum(), x)
    return H, g


def test_gradcheck_float64(rng):
    for x in (_leaf(clustered(rng, 6, 3)), _leaf(np.stack([clustered(rng, 5, 3) for _ in "ab"]))):
        assert torch.autograd.gradcheck(lambda t: kt.soft_entropy(t, 8.0, 0.7, base=2), (x,))


@pytest.mark.parametrize("kw", [{}, dict(base=2.0, normalize=True, threshold=0.4)])
def test_float64_equals_numpy_api(rng, kw):
    X = clustered(rng, 40, 12)
    H, g = _value_and_grad(_leaf(X), **KW, **kw)
    H_ref, G_ref = kde.soft_entropy_and_grad(X, **KW, **kw)
    assert H.dtype == g.dtype == torch.float64
    assert abs(H.item() - H_ref) <= 1e-12
    np.testing.assert_allclose(g.numpy(), G_ref, rtol=0, atol=1e-12)


def test_float32_within_bars_of_float64(rng):
    X = clustered(rng, 64, 16, dtype=np.float32)
    H, g = _value_and_grad(_leaf(X))
    assert H.dtype == g.dtype == torch.float32
    # Exactly the NumPy API's float32 computation ...
    H32, G32 = kde.soft_entropy_and_grad(X)
    assert H.item() == np.float32(H32)
    np.testing.assert_array_equal(g.numpy(), G32)
    # ... which is within the usual bars of float64.
    H_ref, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64))  # the same rounded input
    assert abs(H.item() - H_ref) <= 1e-5 * math.log(64)
    assert np.linalg.norm(g.numpy() - G_ref) <= 1e-4 * np.linalg.norm(G_ref)


def test_batched_leading_axes(rng):
    X = np.stack([clustered(rng, 24, 6) for _ in range(6)]).reshape(2, 3, 24, 6)
    x = _leaf(X)
    H = kt.soft_entropy(x)
    assert H.shape == (2, 3)
    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)  # distinct dL/dH per population
    (H * w).sum().backward()
    H_ref, G_ref = kde.soft_entropy_and_grad(X)
    np.testing.assert_allclose(H.detach().numpy(), H_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), G_ref * w.numpy()[..., None, None],
                               rtol=0, atol=1e-12)


def test_non_contiguous_and_unmodified(rng):
    base = clustered(rng, 30, 20)
    leaf = _leaf(base.T.copy())          # (20, 30)
    x = leaf.t()[:, ::2]                 # (30, 10), a strided view of the leaf
    assert not x.is_contiguous()
    before = leaf.detach().clone()
    H = kt.soft_entropy(x)
    H.backward()
    H_ref, G_ref = kde.soft_entropy_and_grad(base[:, ::2])
    assert abs(H.item() - H_ref) <= 1e-12
    # The gradient reaches the leaf's strided positions, and only those.
    np.testing.assert_allclose(leaf.grad.t()[:, ::2].numpy(), G_ref, rtol=0, atol=1e-12)
    assert leaf.grad.t()[:, 1::2].abs().max() == 0
    assert torch.equal(leaf.detach(), before)


def test_cpu_tensors_reach_the_kernels_without_a_copy(rng, monkeypatch):
    seen = []
    real = kt.compute

    def spy(X, *args):
        seen.append(X)
        return real(X, *args)

    monkeypatch.setattr(kt, "compute", spy)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(clustered(rng, 16, 4), dtype=dtype, requires_grad=True)
        kt.soft_entropy(x).backward()
        assert np.shares_memory(seen[-1], x.detach().numpy())


def test_requires_grad_false_and_no_grad(rng):
    X = clustered(rng, 20, 5)
    x = _leaf(X, requires_grad=False)
    H = kt.soft_entropy(x)
    assert not H.requires_grad and H.grad_fn is None
    assert abs(H.item() - kde.soft_entropy(X)) <= 1e-12
    y = _leaf(X)
    with torch.no_grad():
        assert not kt.soft_entropy(y).requires_grad
    assert torch.equal(x, torch.tensor(X))


def test_input_not_modified_float32(rng):
    X = clustered(rng, 32, 8, dtype=np.float32)
    x = _leaf(X)
    kt.soft_entropy(x).backward()
    np.testing.assert_array_equal(x.detach().numpy(), X)


def test_loss_used_twice_accumulates(rng):
    X = clustered(rng, 20, 6)
    _, G = kde.soft_entropy_and_grad(X)
    x = _leaf(X)
    H = kt.soft_entropy(x)
    (2.0 * H + 3.0 * H).backward()                       # one node, two uses of its output
    np.testing.assert_allclose(x.grad.numpy(), 5.0 * G, rtol=0, atol=1e-12)
    x.grad = None
    (kt.soft_entropy(x) - 0.5 * kt.soft_entropy(x)).backward()   # two nodes on one input
    np.testing.assert_allclose(x.grad.numpy(), 0.5 * G, rtol=0, atol=1e-12)
    kt.soft_entropy(x).backward()                        # .grad accumulates across calls
    np.testing.assert_allclose(x.grad.numpy(), 1.5 * G, rtol=0, atol=1e-12)


def test_double_backward_raises(rng):
    x = _leaf(clustered(rng, 10, 4))
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(kt.soft_entropy(x), x, create_graph=True)


def test_other_dtypes_and_errors(rng):
    X = clustered(rng, 16, 4)
    x16 = torch.tensor(X, dtype=torch.bfloat16, requires_grad=True)
    H = kt.soft_entropy(x16)
    H.backward()
    assert H.dtype == x16.grad.dtype == torch.bfloat16      # computed in float64, like NumPy
    H_ref, G_ref = kde.soft_entropy_and_grad(x16.detach().double().numpy())
    assert H.item() == pytest.approx(H_ref, rel=1e-2)
    np.testing.assert_allclose(x16.grad.double().numpy(), G_ref, rtol=2e-2, atol=1e-3)
    b = torch.tensor(X > 0.5)
    assert kt.soft_entropy(b).dtype == torch.float64
    with pytest.raises(TypeError, match="real"):
        kt.soft_entropy(torch.zeros(4, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kt.soft_entropy(X)
    with pytest.raises(ValueError, match="2 dimensions"):
        kt.soft_entropy(torch.zeros(5))
    with pytest.raises(ValueError, match="sigma"):
        kt.soft_entropy(torch.zeros(4, 3), sigma=0.0)
    with pytest.raises(ValueError, match="NaN"):
        kt.soft_entropy(torch.full((4, 3), float("nan")))


def test_single_pattern_and_no_cells():
    x = torch.rand(1, 5, dtype=torch.float64, requires_grad=True)
    kt.soft_entropy(x).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert kt.soft_entropy(torch.zeros(7, 0)).item() == 0.0


def test_module(rng):
    X = np.stack([clustered(rng, 20, 5) for _ in range(3)])
    H_ref = kde.soft_entropy(X, base=2)
    for reduction, expect in [("mean", H_ref.mean()), ("sum", H_ref.sum()), ("none", H_ref)]:
        loss = kt.SoftEntropyLoss(base=2, reduction=reduction)
        np.testing.assert_allclose(loss(torch.tensor(X)).numpy(), expect, rtol=0, atol=1e-12)
    assert "reduction='mean'" in repr(kt.SoftEntropyLoss())
    with pytest.raises(ValueError, match="reduction"):
        kt.SoftEntropyLoss(reduction="max")
    with pytest.raises(ValueError, match="temperature"):
        kt.SoftEntropyLoss(temperature=-1.0)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_kdentropy_imports_no_framework():
    out = _run("import sys, kdentropy\n"
               "print(sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_torch_names_the_extra():
    # sys.modules["torch"] = None makes "import torch" fail as if it were not installed.
    out = _run("import sys; sys.modules['torch'] = None\nimport kdentropy.torch")
    assert out.returncode != 0
    assert "ImportError" in out.stderr
    assert "pip install 'kdentropy[torch]'" in out.stderr


def test_torch_cells_example_quick():
    out = subprocess.run([sys.executable, str(EXAMPLES / "torch_cells.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "hard entropy" in out.stdout
    assert "peak memory" in out.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_stays_on_device(rng):
    X = clustered(rng, 64, 16, dtype=np.float32)
    x = torch.tensor(X, device="cuda", requires_grad=True)
    H = kt.soft_entropy(x)
    H.backward()
    assert H.device == x.grad.device == x.device
    assert x.grad.dtype == torch.float32
    H_ref, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64))
    assert abs(H.item() - H_ref) <= 1e-5 * math.log(64)
    g = x.grad.cpu().numpy()
    assert np.linalg.norm(g - G_ref) <= 1e-4 * np.linalg.norm(G_ref)
    x64 = torch.tensor(X.astype(np.float64), device="cuda", requires_grad=True)
    kt.soft_entropy(x64).backward()
    np.testing.assert_allclose(x64.grad.cpu().numpy(), G_ref, rtol=0, atol=1e-12)


def test_docstring_examples():
    result = doctest.testmod(kt, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
