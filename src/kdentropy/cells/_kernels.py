"""Numba kernels for the cell system: the whole roll-out, and its backward pass, in two calls.

The NumPy engine of :class:`~kdentropy.cells.CellSystem` is the readable
reference: per time step it gathers the neighbourhood features, calls the MLP
layer by layer and scatters the feature gradient back, a dozen array
operations per step on small arrays. For the sizes cell systems are trained
at (tens of runs, tens to hundreds of cells) that time goes to call overhead
and temporaries, not arithmetic. Here one compiled loop does everything for
one run, all steps, and runs are spread over threads with ``prange``:

:func:`rollout`
    per run and step: gather all channels of each cell's neighbourhood
    through the topology's neighbour table, hidden layer, sigmoid outputs,
    the ``rate``/noise/clip update; keeps the states, hidden activations and
    outputs for the backward pass;
:func:`backward`
    per run, steps in reverse: the same chain rule as the NumPy engine
    (clip mask, rate, sigmoid, hidden layer, transpose of the gather),
    accumulating that run's parameter gradient in its own row, so the sum
    over runs is done afterwards in a fixed order and the result does not
    depend on the number of threads.

Why the arrays are "cells last" inside the kernels (``(C, D)`` states and
``(hidden, D)`` activations per run): every loop then runs over the cells,
contiguous in memory, so the compiler vectorises all of them (the products
with the weights, tanh, sigmoid, the clip), whatever the network's small
widths. The position features never change, so their share of the hidden
layer's input is computed once per call. The wrappers convert from and to
the ``(N, D, C)`` layout of the rest of kdentropy.

Only MLPs with exactly one hidden layer (any of the four activations) are
compiled; :func:`supports` says whether a network qualifies. The tests check
these kernels against the NumPy engine to rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

from .._jit import (
    CONTRACT, CONTRACT_REASSOC_NSZ_ARCP, exp_nonpos, serialised_on_workqueue, sigmoid,
)
from ..nn import MLP

if TYPE_CHECKING:
    from .system import CellSystem

__all__ = ["supports", "rollout", "backward", "Cache"]

# Fast-math flags: the roll-out's loops are elementwise over cells, which
# vectorise with FMA contraction alone (CONTRACT); reassociation must stay off
# there, since it would fold the rounding trick of the branch-free exp away.
# The backward pass has no exp, and its sums over cells vectorise only when
# they may be reassociated (CONTRACT_REASSOC_NSZ_ARCP). No flag assumes away
# inf or NaN, so both agree with the NumPy engine to rounding; each run's sums
# are in a fixed order (fixed at compile time), so results do not depend on
# the thread count.

# Activation codes of the compiled hidden layer.
_ACT = {"identity": 0, "tanh": 1, "relu": 2, "sigmoid": 3}


def supports(net: MLP) -> bool:
    """Whether the kernels can run this update network (one hidden layer, sigmoid output).

    Parameters
    ----------
    net : kdentropy.nn.MLP

    Returns
    -------
    bool
    """
    return len(net.layers) == 2 and net.output_activation == "sigmoid"


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _tanh(z: float) -> float:
    # (1 - e) / (1 + e) with e = exp(-2|z|) <= 1, from the branch-free exp of
    # kdentropy._jit, so loops vectorise (a libm exp call per value was half
    # the roll-out time).
    e = exp_nonpos(-2.0 * abs(z))
    t = (1.0 - e) / (1.0 + e)
    return t if z >= 0.0 else -t


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _activate(z, code):  # noqa: ANN001, ANN202 - compiled helper
    # One loop per activation (not a branch per value), so each loop vectorises.
    D = z.shape[0]
    if code == 1:
        for d in range(D):
            z[d] = _tanh(z[d])
    elif code == 2:
        for d in range(D):
            z[d] = max(z[d], 0.0)
    elif code == 3:
        for d in range(D):
            z[d] = sigmoid(z[d], 1.0, 0.0)


@njit(cache=True, inline="always", fastmath=CONTRACT_REASSOC_NSZ_ARCP)
def _activation_grad(y, dy, code):  # noqa: ANN001, ANN202 - compiled helper
    # dL/dz in place of dy, from the output y (as kdentropy.nn does).
    D = y.shape[0]
    if code == 1:
        for d in range(D):
            dy[d] *= 1.0 - y[d] * y[d]
    elif code == 2:
        for d in range(D):
            dy[d] = dy[d] if y[d] > 0.0 else 0.0
    elif code == 3:
        for d in range(D):
            dy[d] *= y[d] * (1.0 - y[d])


@njit(cache=True, inline="always", fastmath=CONTRACT_REASSOC_NSZ_ARCP)
def _gather(x, table, C, f):  # noqa: ANN001, ANN202 - compiled helper
    # f[k C + c, d] = x[c, table[k, d]]; x has an extra all-zero column D,
    # which the table names for "outside a bounded edge" (zero padding).
    K, D = table.shape
    for k in range(K):
        for c in range(C):
            row = k * C + c
            for d in range(D):
                f[row, d] = x[c, table[k, d]]


@njit(parallel=True, cache=True, fastmath=CONTRACT)
def _rollout_kernel(x0, xi, table, zpos, W1, W2, b2, rate, noise, act, keep,
                    traj, hid, out):  # noqa: ANN001, ANN202 - compiled kernel
    # x0 (N, C, D), xi (T, N, C, D), table (K, D) padded, zpos (H, D) = b1 + the
    # position features' share; writes traj (T+1, N, C, D+1), hid (T, N, H, D),
    # out (T, N, C, D) (the last two only if keep).
    N, C, D = x0.shape
    T = xi.shape[0]
    KC, H = W1.shape  # the neighbourhood rows only (positions are in zpos)
    for n in prange(N):
        f = np.empty((KC, D))
        zbuf = np.empty((H, D))
        u = np.empty(D)
        for c in range(C):
            for d in range(D):
                traj[0, n, c, d] = x0[n, c, d]
            traj[0, n, c, D] = 0.0
        for t in range(T):
            x = traj[t, n]
            _gather(x, table, C, f)
            z = hid[t, n] if keep else zbuf
            for h in range(H):
                zh = z[h]
                for d in range(D):
                    zh[d] = zpos[h, d]
                for i in range(KC):
                    w = W1[i, h]
                    for d in range(D):
                        zh[d] += w * f[i, d]
                _activate(zh, act)
            for c in range(C):
                for d in range(D):
                    u[d] = b2[c]
                for h in range(H):
                    w = W2[h, c]
                    for d in range(D):
                        u[d] += w * z[h, d]
                xn = traj[t + 1, n, c]
                for d in range(D):
                    s = sigmoid(u[d], 1.0, 0.0)
                    if keep:
                        out[t, n, c, d] = s
                    # rate 1 uses s itself, as the NumPy engine does.
                    pre = s if rate == 1.0 else x[c, d] + rate * (s - x[c, d])
                    if noise > 0.0:
                        pre = min(max(pre + noise * xi[t, n, c, d], 0.0), 1.0)
                    xn[d] = pre
                xn[D] = 0.0


@njit(parallel=True, cache=True, fastmath=CONTRACT_REASSOC_NSZ_ARCP)
def _backward_kernel(g_final, traj, hid, out, table, pos, W1, W2, rate, noise, act,
                     G):  # noqa: ANN001, ANN202 - compiled kernel
    # g_final (N, C, D); G (N, n_params) receives each run's gradient in the
    # flat layout of kdentropy.nn: W1 (F, H), b1 (H), W2 (H, C), b2 (C).
    N, C, D = g_final.shape
    T = hid.shape[0]
    F, H = W1.shape
    K = table.shape[0]
    KC = K * C
    P = pos.shape[0]
    o_b1 = F * H
    o_W2 = o_b1 + H
    o_b2 = o_W2 + H * C
    for n in prange(N):
        g = np.empty((C, D))
        for c in range(C):
            for d in range(D):
                g[c, d] = g_final[n, c, d]
        gx = np.zeros((C, D + 1))
        f = np.empty((KC, D))
        dz2 = np.empty((C, D))
        dz1 = np.empty((H, D))
        acc = np.empty(D)
        gw = G[n]
        for t in range(T - 1, -1, -1):
            x1 = traj[t + 1, n]
            x = traj[t, n]
            z = hid[t, n]
            for c in range(C):
                for d in range(D):
                    # The state is strictly inside (0, 1) exactly when the clip did not act.
                    inside = noise == 0.0 or (x1[c, d] > 0.0 and x1[c, d] < 1.0)
                    gp = g[c, d] if inside else 0.0
                    s = out[t, n, c, d]
                    dz2[c, d] = (rate * gp) * (s * (1.0 - s))
                    # The x_t in x_t + rate (s - x_t); its neighbour share is added below.
                    gx[c, d] = (1.0 - rate) * gp
                sb = 0.0
                for d in range(D):
                    sb += dz2[c, d]
                gw[o_b2 + c] += sb
            for h in range(H):
                dh = dz1[h]
                for d in range(D):
                    dh[d] = 0.0
                for c in range(C):
                    w = W2[h, c]
                    sw = 0.0
                    for d in range(D):
                        sw += z[h, d] * dz2[c, d]
                        dh[d] += w * dz2[c, d]
                    gw[o_W2 + h * C + c] += sw
                _activation_grad(z[h], dh, act)
                sb = 0.0
                for d in range(D):
                    sb += dh[d]
                gw[o_b1 + h] += sb
            _gather(x, table, C, f)
            for i in range(KC):
                for h in range(H):
                    sw = 0.0
                    for d in range(D):
                        sw += f[i, d] * dz1[h, d]
                    gw[i * H + h] += sw
            for p in range(P):
                for h in range(H):
                    sw = 0.0
                    for d in range(D):
                        sw += pos[p, d] * dz1[h, d]
                    gw[(KC + p) * H + h] += sw
            if t == 0:
                break  # dL/dx_0 is not needed (x_0 is data)
            # dL/dx_t: the transpose of the gather, added to the rate term.
            for i in range(KC):
                for d in range(D):
                    acc[d] = 0.0
                for h in range(H):
                    w = W1[i, h]
                    for d in range(D):
                        acc[d] += w * dz1[h, d]
                k, c = i // C, i % C
                for d in range(D):
                    gx[c, table[k, d]] += acc[d]  # column D collects the padding
            for c in range(C):
                for d in range(D):
                    g[c, d] = gx[c, d]


class Cache:
    """What :func:`backward` needs from :func:`rollout`: all states, activations and outputs.

    Attributes
    ----------
    traj : ndarray, shape (steps + 1, N, C, D + 1)
        States, cells last, with a zero padding column.
    hid : ndarray, shape (steps, N, hidden, D)
    out : ndarray, shape (steps, N, C, D)
    """

    def __init__(self, traj: np.ndarray, hid: np.ndarray, out: np.ndarray) -> None:
        self.traj, self.hid, self.out = traj, hid, out

    def __len__(self) -> int:
        return self.hid.shape[0]


def _tables(system: CellSystem, params: np.ndarray):  # noqa: ANN202 - private
    """Padded neighbour table (K, D), the position features (P, D) and the weights."""
    layout = system.layout
    table = np.ascontiguousarray(np.where(layout.neighbours < 0, layout.n_cells,
                                          layout.neighbours).T)
    pos = np.ascontiguousarray(layout.positions.T)
    (W1, b1), (W2, b2) = system.net.views(params)
    return table, pos, np.ascontiguousarray(W1), b1, np.ascontiguousarray(W2), b2


# The workqueue threading layer (no OpenMP or TBB) must not run parallel
# kernels from two threads at once.
@serialised_on_workqueue
def rollout(system: CellSystem, params: np.ndarray, x0: np.ndarray, xi: np.ndarray,
            keep_caches: bool, keep_trajectory: bool
            ) -> tuple[np.ndarray, np.ndarray | None, Cache | None]:
    """Roll ``system`` out from checked inputs.

    Parameters
    ----------
    system : CellSystem
        With :func:`supports` true for its network.
    params : ndarray of float64, shape (n_params,)
    x0 : ndarray of float64, shape (N, D, C)
    xi : ndarray of float64, shape (steps, N, D, C)
    keep_caches : bool
        Keep what :func:`backward` needs.
    keep_trajectory : bool
        Also return all states.

    Returns
    -------
    final : ndarray, shape (N, D, C)
    trajectory : ndarray, shape (steps + 1, N, D, C), or None
    cache : Cache or None
    """
    N, D, C = x0.shape
    T, H = system.steps, system.hidden[0]
    table, pos, W1, b1, W2, b2 = _tables(system, params)
    KC = table.shape[0] * C
    zpos = b1[:, None] + W1[KC:].T @ pos   # constant share of the hidden input
    traj = np.empty((T + 1, N, C, D + 1))
    hid = np.empty((T, N, H, D) if keep_caches else (1, 1, H, D))
    out = np.empty((T, N, C, D) if keep_caches else (1, 1, C, D))
    _rollout_kernel(np.ascontiguousarray(x0.transpose(0, 2, 1)),
                    np.ascontiguousarray(xi.transpose(0, 1, 3, 2)), table,
                    np.ascontiguousarray(zpos), W1[:KC], W2, b2, float(system.rate),
                    float(system.noise), _ACT[system.activation], bool(keep_caches),
                    traj, hid, out)
    final = np.ascontiguousarray(traj[-1, :, :, :D].transpose(0, 2, 1))
    trajectory = np.ascontiguousarray(traj[:, :, :, :D].transpose(0, 1, 3, 2)) \
        if keep_trajectory else None
    return final, trajectory, Cache(traj, hid, out) if keep_caches else None


@serialised_on_workqueue
def backward(system: CellSystem, params: np.ndarray, cache: Cache, g: np.ndarray) -> np.ndarray:
    """``dL/dparams`` from ``dL/d(final states)`` and the :class:`Cache` of :func:`rollout`.

    Parameters
    ----------
    system : CellSystem
    params : ndarray of float64, shape (n_params,)
    cache : Cache
    g : ndarray of float64, shape (N, D, C)
        Gradient of the loss with respect to the final states.

    Returns
    -------
    ndarray of float64, shape (n_params,)
    """
    N = g.shape[0]
    table, pos, W1, _, W2, _ = _tables(system, params)
    G = np.zeros((N, system.n_params))
    _backward_kernel(np.ascontiguousarray(np.transpose(g, (0, 2, 1)), dtype=np.float64),
                     cache.traj, cache.hid, cache.out, table, pos, W1, W2,
                     float(system.rate), float(system.noise), _ACT[system.activation], G)
    # A fixed-order sum over runs: the same bits for any number of threads.
    return G.sum(axis=0)
