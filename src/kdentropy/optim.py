"""First-order optimizers on flat float64 parameter vectors.

Each optimizer updates ``params`` **in place** from a flat gradient with
``step(params, grad)``. Everything that evolves during optimisation (the step
count and the moment buffers) is in :meth:`Optimizer.state_dict`, so saving it
next to ``params`` and restoring it with :meth:`Optimizer.load_state_dict`
continues a run bit for bit. Hyperparameters are constructor arguments;
:meth:`Optimizer.get_config` and :func:`from_config` rebuild an optimizer from
them.

Learning rates may be a float or a schedule (:class:`Constant`,
:class:`Cosine`, :class:`Exponential`): a callable mapping the 0-based step
index to a rate, always in ``(0, 10]`` (larger rates overflow the update or
throw the parameters far outside any useful range). Optional global-norm
gradient clipping (``clip_norm``) rescales the whole gradient when its
Euclidean norm exceeds the limit.

Examples
--------
>>> import numpy as np
>>> from kdentropy.optim import Adam
>>> params = np.array([3.0, -2.0])
>>> opt = Adam(lr=0.1)
>>> for _ in range(500):
...     _ = opt.step(params, 2.0 * params)    # gradient of ||params||^2; updates in place
>>> bool(np.linalg.norm(params) < 1e-3)
True
"""

from __future__ import annotations

import abc
import json
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validation
from ._validation import nonnegative as _nonnegative
from ._validation import positive as _positive
from ._validation import unit_interval as _unit_interval
from ._schedules import SCHEDULES as _SCHEDULES
from ._schedules import Constant, Cosine, Exponential, Schedule, as_schedule

__all__ = [
    "Schedule", "Constant", "Cosine", "Exponential",
    "Optimizer", "SGD", "Adam", "AdamW",
    "from_config",
]


# ----------------------------------------------------------------------------- optimizers

class Optimizer(abc.ABC):
    """Base class: validation, learning-rate schedule, clipping and state handling.

    Subclasses implement ``_update(params, grad, lr)`` and name their moment
    buffers in ``_buffers``.

    Attributes
    ----------
    step_count : int
        Number of steps taken so far.
    last_grad_norm : float
        Norm of the most recent gradient before clipping (NaN before the
        first step).
    """

    _buffers: tuple[str, ...] = ()

    def __init__(self, lr: float | Schedule, clip_norm: float | None,
                 weight_decay: float) -> None:
        self.schedule = as_schedule(lr)
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")
        self.step_count = 0
        self.last_grad_norm = math.nan
        self._state: dict[str, np.ndarray] = {}

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return self.schedule(self.step_count)

    def step(self, params: np.ndarray, grad: ArrayLike) -> np.ndarray:
        """Update ``params`` in place from ``grad`` and return it.

        Parameters
        ----------
        params : ndarray of float64, shape (P,)
            Parameter vector; modified in place.
        grad : array_like, shape (P,)
            Gradient of the loss at ``params``; not modified.

        Returns
        -------
        params : ndarray
            The same object, updated.

        Raises
        ------
        TypeError
            If ``params`` is not a writable float64 vector or ``grad`` is not real.
        ValueError
            If shapes disagree with each other or with the optimizer's state,
            or ``grad`` is not finite.
        """
        _validation.inplace_vector(params, "params", writable=True)
        grad = _validation.real_array(grad, "grad")
        if grad.shape != params.shape:
            raise ValueError(f"grad must have the shape of params, {params.shape}; "
                             f"got {grad.shape}")
        if not np.isfinite(grad).all():
            raise ValueError("grad must be finite; got NaN or infinity")
        for name in self._buffers:
            buf = self._state.get(name)
            if buf is None:
                self._state[name] = np.zeros_like(params)
            elif buf.shape != params.shape:
                raise ValueError(f"params has shape {params.shape} but the optimizer state "
                                 f"{name!r} has shape {buf.shape}")
        norm = float(np.linalg.norm(grad))
        self.last_grad_norm = norm
        if self.clip_norm is not None and norm > self.clip_norm:
            grad = grad * (self.clip_norm / norm)
        lr = self.schedule(self.step_count)
        self.step_count += 1
        self._update(params, grad, lr)
        return params

    @abc.abstractmethod
    def _update(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Apply one update of step size ``lr`` to ``params`` in place."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything that changes during optimisation, as numpy arrays.

        The dict saves directly with ``numpy.savez`` (keys are plain names).

        Returns
        -------
        dict
            ``"type"`` (class name), ``"step_count"``, ``"last_grad_norm"``
            and one array per moment buffer (absent before the first step).
        """
        state = {"type": np.array(type(self).__name__),
                 "step_count": np.array(self.step_count, dtype=np.int64),
                 "last_grad_norm": np.array(self.last_grad_norm, dtype=np.float64)}
        for name in self._buffers:
            if name in self._state:
                state[name] = self._state[name].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the arrays are copied).

        Parameters
        ----------
        state : mapping
            As returned by :meth:`state_dict`, or the same keys read back
            from an ``.npz`` file.

        Raises
        ------
        TypeError
            If ``state`` is not a mapping.
        ValueError
            If the state belongs to another optimizer type, is incomplete or
            inconsistent.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a mapping; got {type(state).__name__}")
        missing = {"type", "step_count"} - set(state.keys())
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        kind = str(np.asarray(state["type"]))
        if kind != type(self).__name__:
            raise ValueError(f"state is for a {kind} optimizer, not {type(self).__name__}")
        step_count = np.asarray(state["step_count"])
        if step_count.shape != () or not np.issubdtype(step_count.dtype, np.integer) \
                or step_count < 0:
            raise ValueError(f"state 'step_count' must be an integer >= 0; got {step_count!r}")
        step_count = int(step_count)
        buffers = {}
        for name in self._buffers:
            if name in state:
                buf = np.array(state[name], dtype=np.float64)
                if buf.ndim != 1:
                    raise ValueError(f"state {name!r} must be 1-D; got shape {buf.shape}")
                buffers[name] = buf
            elif step_count > 0:
                raise ValueError(f"state is missing buffer {name!r}")
        shapes = {b.shape for b in buffers.values()}
        if len(shapes) > 1:
            raise ValueError(f"state buffers have different shapes: {sorted(shapes)}")
        self.step_count = step_count
        self.last_grad_norm = float(np.asarray(state.get("last_grad_norm", math.nan)))
        self._state = buffers

    def get_config(self) -> dict:
        """JSON-serialisable hyperparameters; :func:`from_config` rebuilds the optimizer."""
        return {"name": type(self).__name__, "lr": self.schedule.get_config(),
                "clip_norm": self.clip_norm, "weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        cfg = self.get_config()
        name = cfg.pop("name")
        cfg["lr"] = self.schedule
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    With ``g`` the (clipped) gradient plus ``weight_decay * params``:
    ``v <- momentum v + g``, then ``params <- params - lr v`` or, with
    Nesterov, ``params <- params - lr (g + momentum v)``.

    Parameters
    ----------
    lr : float or Schedule
        Learning rate.
    momentum : float, optional
        In [0, 1). Default 0 (plain gradient descent).
    nesterov : bool, optional
        Nesterov momentum (needs ``momentum > 0``). Default False.
    weight_decay : float, optional
        L2 penalty coefficient added to the gradient. Default 0.
    clip_norm : float, optional
        Global-norm clipping threshold; ``None`` (default) disables it.
    """

    _buffers = ("velocity",)

    def __init__(self, lr: float | Schedule = 1e-2, momentum: float = 0.0, *,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, clip_norm, weight_decay)
        self.momentum = _unit_interval(momentum, "momentum")
        self.nesterov = _validation.boolean(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")

    def _update(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        if self.weight_decay:
            grad = grad + self.weight_decay * params
        v = self._state["velocity"]
        v *= self.momentum
        v += grad
        if self.nesterov:
            params -= lr * (grad + self.momentum * v)
        else:
            params -= lr * v

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(momentum=self.momentum, nesterov=self.nesterov)
        return cfg


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is an L2 term in the gradient.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g²``,
    ``params <- params - lr m̂ / (sqrt(v̂) + eps)`` with the bias-corrected
    moments ``m̂ = m / (1 - b1^t)``, ``v̂ = v / (1 - b2^t)``.

    Parameters
    ----------
    lr : float or Schedule
        Learning rate. Default 1e-3.
    betas : tuple of float, optional
        ``(b1, b2)``, each in [0, 1). Default ``(0.9, 0.999)``.
    eps : float, optional
        Denominator floor (> 0). Default 1e-8.
    weight_decay : float, optional
        Coupled L2 coefficient (added to the gradient before the moments).
        See :class:`AdamW` for the decoupled form. Default 0.
    clip_norm : float, optional
        Global-norm clipping threshold; ``None`` (default) disables it.
    """

    _buffers = ("m", "v")
    _decoupled = False  # AdamW overrides: decay outside the adaptive scaling

    def __init__(self, lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, clip_norm, weight_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of floats; got {betas!r}") from None
        self.betas = (_unit_interval(b1, "betas[0]"), _unit_interval(b2, "betas[1]"))
        self.eps = _positive(eps, "eps")

    def _update(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        if self.weight_decay:
            if self._decoupled:
                # AdamW: shrink params directly, outside the adaptive scaling.
                params *= 1.0 - lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * params
        b1, b2 = self.betas
        m, v = self._state["m"], self._state["v"]
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * (grad * grad)
        t = self.step_count
        m_hat = m / (1.0 - b1 ** t)
        v_hat = v / (1.0 - b2 ** t)
        params -= lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(betas=list(self.betas), eps=self.eps)
        return cfg


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter).

    Before the Adam update, ``params <- params (1 - lr * weight_decay)``; the
    decay does not pass through the adaptive moments.

    Parameters
    ----------
    lr : float or Schedule
        Learning rate. Default 1e-3.
    betas : tuple of float, optional
        Default ``(0.9, 0.999)``.
    eps : float, optional
        Default 1e-8.
    weight_decay : float, optional
        Decoupled decay coefficient. Default 1e-2.
    clip_norm : float, optional
        Global-norm clipping threshold; ``None`` (default) disables it.
    """

    _decoupled = True

    def __init__(self, lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, weight_decay: float = 1e-2,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, betas, eps, weight_decay=weight_decay, clip_norm=clip_norm)


_OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def from_config(config: dict | str) -> Optimizer:
    """Rebuild an optimizer (without its state) from :meth:`Optimizer.get_config`.

    Parameters
    ----------
    config : dict or str
        The dict, or its JSON text.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        If the optimizer or schedule name is unknown or ``"lr"`` is missing.
    TypeError
        If ``config`` is not a dict, or holds arguments the optimizer does
        not take.

    Examples
    --------
    >>> opt = from_config(Adam(lr=Cosine(0.01, 100), clip_norm=1.0).get_config())
    >>> opt.schedule, opt.clip_norm
    (Cosine(lr=0.01, total_steps=100, min_lr=0.0, warmup=0), 1.0)
    """
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(_OPTIMIZERS)}")
    lr_cfg = cfg.pop("lr", None)
    if not isinstance(lr_cfg, dict):
        raise ValueError(f"config['lr'] must be a schedule config dict; got {lr_cfg!r}")
    lr_cfg = dict(lr_cfg)
    sched_name = lr_cfg.pop("name", None)
    if sched_name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {sched_name!r}; expected one of {sorted(_SCHEDULES)}")
    schedule = _SCHEDULES[sched_name](**lr_cfg)
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    return _OPTIMIZERS[name](lr=schedule, **cfg)
