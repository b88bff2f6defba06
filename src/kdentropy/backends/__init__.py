"""Computational backends. Each module exposes the same small interface:

``NAME``
    The backend's name.
``unavailable_reason() -> str | None``
    ``None`` when the backend can run here, otherwise a one-line reason.
``value_and_grad(X3, temperature, sigma, threshold, want_grad) -> (H, grad)``
    ``X3`` is a C-contiguous ``(G, N, D)`` float32/float64 host array with finite
    values and ``N >= 1``; ``H`` is a float64 array of shape ``(G,)`` in nats and
    ``grad`` an array like ``X3`` (``None`` unless ``want_grad``).

Validation, dtype and shape handling, ``base``/``normalize`` scaling and dispatch
live in :mod:`kdentropy._api`; backends do numerics only.
"""
