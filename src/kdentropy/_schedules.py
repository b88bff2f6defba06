"""Learning-rate schedules: the rate as a function of the 0-based step index.

Used by :mod:`kdentropy.optim` (which exports them); every rate lies in
``(0, LR_MAX]`` (``kdentropy._validation.LR_MAX``).
"""

from __future__ import annotations

import abc
import math

from . import _validation

__all__ = ["Schedule", "Constant", "Cosine", "Exponential", "SCHEDULES", "as_schedule"]


# ----------------------------------------------------------------------------- schedules

class Schedule(abc.ABC):
    """A learning rate as a function of the 0-based step index."""

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The learning rate at 0-based step ``step``."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments plus ``"name"``."""

    def __repr__(self) -> str:
        cfg = self.get_config()
        name = cfg.pop("name")
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


class Constant(Schedule):
    """A fixed learning rate.

    Parameters
    ----------
    lr : float
        The rate, in ``(0, 10]`` (``kdentropy._validation.LR_MAX``).
    """

    def __init__(self, lr: float) -> None:
        self.lr = _validation.bounded(lr, "lr", 0.0, _validation.LR_MAX, low_open=True)

    def __call__(self, step: int) -> float:
        return self.lr

    def get_config(self) -> dict:
        return {"name": "Constant", "lr": self.lr}


class Cosine(Schedule):
    """Cosine decay from ``lr`` to ``min_lr`` over ``total_steps``, after optional warm-up.

    ``lr_t = min_lr + (lr - min_lr) (1 + cos(pi p)) / 2`` with ``p`` the
    fraction of the decay phase done (clamped to 1, so the rate stays at
    ``min_lr`` after ``total_steps``).

    Parameters
    ----------
    lr : float
        Peak rate, in ``(0, 10]``.
    total_steps : int
        Steps until the rate reaches ``min_lr``, warm-up included.
    min_lr : float, optional
        Final rate, ``0 <= min_lr <= lr``. Default 0.
    warmup : int, optional
        Steps of linear increase from ``lr / warmup`` to ``lr``. Default 0.
    """

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0, warmup: int = 0) -> None:
        self.lr = _validation.bounded(lr, "lr", 0.0, _validation.LR_MAX, low_open=True)
        self.total_steps = _validation.integer(total_steps, "total_steps")
        self.min_lr = _validation.nonnegative(min_lr, "min_lr")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr; got {self.min_lr} > {self.lr}")
        self.warmup = _validation.integer(warmup, "warmup", 0)
        if self.warmup >= self.total_steps:
            raise ValueError(f"warmup must be < total_steps = {self.total_steps}; "
                             f"got {self.warmup}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        p = min(1.0, (step - self.warmup) / (self.total_steps - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * p))

    def get_config(self) -> dict:
        return {"name": "Cosine", "lr": self.lr, "total_steps": self.total_steps,
                "min_lr": self.min_lr, "warmup": self.warmup}


class Exponential(Schedule):
    """Exponential decay ``lr_t = lr * gamma ** (t / decay_steps)``.

    Parameters
    ----------
    lr : float
        Initial rate, in ``(0, 10]``.
    gamma : float
        Decay factor per ``decay_steps`` steps, in (0, 1].
    decay_steps : int, optional
        Steps over which the rate is multiplied by ``gamma``. Default 1.
    """

    def __init__(self, lr: float, gamma: float, decay_steps: int = 1) -> None:
        self.lr = _validation.bounded(lr, "lr", 0.0, _validation.LR_MAX, low_open=True)
        self.gamma = _validation.bounded(gamma, "gamma", 0.0, 1.0, low_open=True)
        self.decay_steps = _validation.integer(decay_steps, "decay_steps")

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step / self.decay_steps)

    def get_config(self) -> dict:
        return {"name": "Exponential", "lr": self.lr, "gamma": self.gamma,
                "decay_steps": self.decay_steps}


SCHEDULES = {"Constant": Constant, "Cosine": Cosine, "Exponential": Exponential}


def as_schedule(lr: float | Schedule) -> Schedule:
    """``lr`` itself if it is a schedule, else a :class:`Constant` rate."""
    if isinstance(lr, Schedule):
        return lr
    return Constant(lr)
