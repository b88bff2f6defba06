"""The soft entropy as a differentiable PyTorch loss, computed by kdentropy's kernels.

:func:`soft_entropy` is a :class:`torch.autograd.Function`: its forward pass
calls :func:`kdentropy.soft_entropy_and_grad` once, keeps the analytic
gradient, and its backward pass only scales that gradient by the incoming
``grad_output``. Memory is O(N·D), like the kernels, instead of the O(N²) of
a dense autograd formula.

* CPU tensors reach the ``cpu`` backend as NumPy views (no copy for
  contiguous float32/float64 tensors); the gradient comes back as a tensor
  that shares the kernel's output buffer.
* CUDA tensors reach the ``cuda`` backend in place through
  ``__cuda_array_interface__``; the gradient comes back as a CUDA tensor that
  shares the device buffer (``torch.as_tensor``, no copy).

Install with ``pip install 'kdentropy[torch]'``. ``import kdentropy`` never
imports PyTorch; ``import kdentropy.torch`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "kdentropy.torch needs PyTorch; install it with: pip install 'kdentropy[torch]'"
    ) from exc

from . import _validation
from ._params import DEFAULT, SoftParams, fill_doc
from ._soft import compute

__all__ = ["soft_entropy", "SoftEntropyLoss"]

_NATIVE = (torch.float32, torch.float64)  # computed in their own precision, as in the NumPy API

_NO_SECOND_DERIVATIVE = (
    "kdentropy.torch.soft_entropy is differentiable once: its backward pass scales a gradient "
    "computed by kdentropy's kernels and records no graph, so a second derivative "
    "(backward or autograd.grad with create_graph=True) is not available. Call backward "
    "without create_graph, or use a dense autograd formula where second derivatives are needed."
)


def _compute_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` detached, in the dtype kdentropy computes it in (float32/float64 unchanged)."""
    if x.is_complex():
        raise TypeError(f"x must be real; got a complex tensor ({x.dtype})")
    x = x.detach()
    # float16, bfloat16, integers and bool are computed in float64, like the NumPy API
    # (NumPy has no bfloat16, so the cast also makes every CPU tensor viewable).
    return x if x.dtype in _NATIVE else x.to(torch.float64)


def _as_kernel_input(x: torch.Tensor) -> Any:
    """What :func:`kdentropy.soft_entropy_and_grad` reads: a NumPy view or a CUDA tensor."""
    if x.device.type == "cpu":
        return x.numpy()  # a view; kdentropy copies only if it is not C-contiguous
    if x.device.type == "cuda":
        # The cuda backend reads the tensor in place via __cuda_array_interface__
        # (strided views are not guaranteed there, so make it contiguous: no copy if it is).
        return x.contiguous()
    raise TypeError(f"x is on device {x.device}; kdentropy.torch supports CPU and CUDA tensors "
                    "(move it with x.cpu() or x.cuda())")


def _as_tensor(a: Any, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A kernel result as a tensor on ``like``'s device, without a copy where possible."""
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(a).to(like.device)  # shares memory with a on the CPU
    else:
        # A Numba device array or CuPy array: wrapped in place through
        # __cuda_array_interface__; the tensor keeps the buffer alive.
        t = torch.as_tensor(a, device=like.device)
    return t.to(dtype)  # no-op for float32/float64


def _call_kernels(x: torch.Tensor, params: SoftParams, want_grad: bool) -> tuple[Any, Any]:
    """One kdentropy call on a computable tensor, ordered with PyTorch's CUDA work."""
    if x.device.type != "cuda":
        return compute(_as_kernel_input(x), params, None, want_grad)
    with torch.cuda.device(x.device):
        X = _as_kernel_input(x)
        # The kernels run on Numba's stream, not PyTorch's: wait until PyTorch's
        # current stream has written x, and, after the call, until the kernels
        # have written the gradient, before PyTorch's stream may read it.
        torch.cuda.current_stream(x.device).synchronize()
        H, G = compute(X, params, None, want_grad)
        torch.cuda.synchronize(x.device)
    return H, G


class _SoftEntropy(torch.autograd.Function):
    """Value and kernel gradient in the forward pass; backward scales the saved gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, params: SoftParams, want_grad: bool
                ) -> torch.Tensor:  # noqa: D102 (documented on soft_entropy)
        H, G = _call_kernels(_compute_input(x), params, want_grad)
        out_dtype = x.dtype if x.is_floating_point() else torch.float64
        if want_grad:
            ctx.save_for_backward(_as_tensor(G, x, x.dtype))
        else:
            ctx.save_for_backward(None)
        return _as_tensor(np.asarray(H, dtype=np.float64), x, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor
                 ) -> tuple[torch.Tensor | None, None, None]:  # noqa: D102
        if torch.is_grad_enabled():  # only create_graph=True records the backward pass
            raise RuntimeError(_NO_SECOND_DERIVATIVE)
        (G,) = ctx.saved_tensors
        if G is None:  # x did not require grad when the forward pass ran
            return None, None, None
        # H has shape x.shape[:-2]: each population's dL/dH scales its (N, D) block.
        scale = grad_output.to(G.dtype).reshape(grad_output.shape + (1, 1))
        return G * scale, None, None


def _apply(x: torch.Tensor, params: SoftParams) -> torch.Tensor:
    """Check ``x`` and run :class:`_SoftEntropy` with validated keywords."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__} "
                        "(use kdentropy.soft_entropy for NumPy arrays)")
    _validation.pattern_shape(x.shape, "x")
    # Inside forward autograd is off and needs_input_grad ignores torch.no_grad(), so
    # decide here whether the gradient is wanted; without it one value-only pass runs.
    want_grad = torch.is_grad_enabled() and x.requires_grad
    return _SoftEntropy.apply(x, params, want_grad)


@fill_doc()
def soft_entropy(x: torch.Tensor, temperature: float = DEFAULT.temperature,
                 sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                 base: float | None = DEFAULT.base,
                 normalize: bool = DEFAULT.normalize) -> torch.Tensor:
    """Soft reproducibility entropy of a batch of patterns, differentiable in PyTorch.

    The same quantity as :func:`kdentropy.soft_entropy`: with
    ``S = sigmoid(T (x - θ))``, ``K_ij = exp(-||S_i - S_j||² / (2σ²))`` and
    ``C_i = Σ_j K_ij``, ``H = log N - mean_i log C_i``. The forward pass
    computes H and dH/dx with kdentropy's kernels in O(N·D) memory; the
    backward pass multiplies the stored gradient by ``grad_output``.

    Parameters
    ----------
    x : torch.Tensor, shape (..., N, D)
        N patterns of D real-valued cells, on the CPU or a CUDA device.
        Leading axes index independent populations. float32 and float64 are
        computed in their own precision; float16, bfloat16, integer and bool
        tensors are computed in float64 (as the NumPy API does) and the
        gradient is returned in x's dtype. Complex tensors are a TypeError.
        Non-contiguous tensors are accepted (they are copied once).
    {keywords}

    Returns
    -------
    H : torch.Tensor, shape x.shape[:-2]
        The entropy, on x's device, in x's dtype (float64 for integer or
        bool x). Differentiable once with respect to x.

    Raises
    ------
    TypeError
        If x is not a tensor, is complex, or lives on a device other than
        CPU/CUDA; if a keyword has the wrong type.
    ValueError
        As :func:`kdentropy.soft_entropy` (shape, NaN/inf, keyword values).
    RuntimeError
        In the backward pass, if a second derivative is requested
        (``create_graph=True``).

    Notes
    -----
    The gradient is computed in the forward pass whenever autograd is enabled
    and x requires grad (about twice the cost of the value alone); under
    ``torch.no_grad()`` or for x without ``requires_grad`` only the value is
    computed. The backend follows :func:`kdentropy.use_backend` and
    :func:`kdentropy.set_backend`: ``auto`` runs CPU tensors on ``cpu`` and
    CUDA tensors on ``cuda``. On CUDA the call synchronises PyTorch's current
    stream before the kernels run and the device after, so the result is
    correctly ordered with PyTorch's work on any stream.

    Examples
    --------
    >>> import torch
    >>> from kdentropy.torch import soft_entropy
    >>> x = torch.rand(64, 16, dtype=torch.float64, requires_grad=True)
    >>> H = soft_entropy(x)
    >>> H.backward()
    >>> x.grad.shape
    torch.Size([64, 16])
    """
    return _apply(x, SoftParams(temperature, sigma, threshold, base, normalize))


class SoftEntropyLoss(torch.nn.Module):
    """:func:`soft_entropy` as a :class:`torch.nn.Module` loss.

    Parameters
    ----------
    temperature, sigma, threshold, base, normalize
        As :func:`soft_entropy`; validated once, here.
    reduction : {"mean", "sum", "none"}, optional
        How the entropies of a batch of populations (input shape
        ``(..., N, D)``) are combined; for a single ``(N, D)`` population all
        three give H. Default ``"mean"``.

    Examples
    --------
    >>> import torch
    >>> from kdentropy.torch import SoftEntropyLoss
    >>> loss = SoftEntropyLoss(temperature=10.0, sigma=0.5)
    >>> x = torch.rand(3, 32, 8, requires_grad=True)   # 3 populations
    >>> loss(x).backward()
    """

    def __init__(self, temperature: float = DEFAULT.temperature, sigma: float = DEFAULT.sigma,
                 *, threshold: float = DEFAULT.threshold, base: float | None = DEFAULT.base,
                 normalize: bool = DEFAULT.normalize, reduction: str = "mean") -> None:
        super().__init__()
        self.params = SoftParams(temperature, sigma, threshold, base, normalize)
        self.reduction = _validation.choice(reduction, "reduction", ("mean", "sum", "none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The (reduced) soft entropy of ``x``, shape ``(..., N, D)``.

        Parameters
        ----------
        x : torch.Tensor
            As :func:`soft_entropy`.

        Returns
        -------
        torch.Tensor
            A scalar for ``"mean"``/``"sum"``, shape ``x.shape[:-2]`` for ``"none"``.
        """
        H = _apply(x, self.params)
        if self.reduction == "mean":
            return H.mean()
        if self.reduction == "sum":
            return H.sum()
        return H

    def extra_repr(self) -> str:
        """The keywords, for ``repr(module)``."""
        p = self.params
        return (f"temperature={p.temperature}, sigma={p.sigma}, threshold={p.threshold}, "
                f"base={p.base}, normalize={p.normalize}, reduction={self.reduction!r}")
