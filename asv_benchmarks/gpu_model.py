"""Offline performance model of the CUDA pair kernels: SASS instruction counts, no GPU.

Standalone helper of ``gpu_floor.py --model`` (asv imports the benchmark
folder, so this module does nothing at import time and defines no
``time_*`` names).

Method
------
1. Each kernel is compiled to PTX for sm_90 with ``numba.cuda.compile_ptx``
   (no device needed), assembled by ``ptxas -v`` (registers, spills, shared
   memory) and disassembled by ``nvdisasm``.
2. A loop in SASS is a backward branch. Each loop's *exclusive* body (its
   instructions minus those of the loops nested in it) is counted by opcode.
3. A :class:`KernelSpec` says, per loop in SASS order, how much work one
   iteration of its parent hands it, in units of a *marker* opcode (``STS``
   for a staging loop, ``FFMA``/``DFMA`` for an arithmetic loop). Dividing by
   the marker count of the compiled body gives the trip count, so the unroll
   factor ptxas picked is read from the SASS, not assumed.
4. Warp-instructions = warps x sum(exclusive body x trips). Time is the
   largest of: issue (4 warp-instructions per SM and cycle, times an issue
   efficiency), the FP64 pipe (half a warp-DFMA per scheduler and cycle),
   the MUFU pipe (16 lanes per SM and cycle) and DRAM traffic.
5. The issue efficiency is fitted to the only profile we have (Nsight on an
   H200, the v1 kernels at 16384 x 1024 float32): issue-slot utilisation was
   0.645 at 4 resident warps per scheduler and 0.325 at 2, i.e. proportional
   to the resident warps; :func:`issue_efficiency` uses that slope, capped at
   :data:`ISSUE_CAP` (an assumption: barrier and dependency stalls never
   vanish).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# ----------------------------------------------------------------------------- hardware


class Gpu(NamedTuple):
    """What the model needs to know about one GPU."""

    name: str
    sms: int
    clock_hz: float  # sustained SM clock
    dram_bytes_per_s: float
    memory_bytes: float


# H100 SXM and H200 share the GH100 die and clocks; they differ in HBM.
H100 = Gpu("H100", 132, 1.98e9, 3.35e12, 80e9)
H200 = Gpu("H200", 132, 1.98e9, 4.8e12, 141e9)
KCACHE_FRACTION = 0.5  # _panels.KCACHE_FRACTION: the share of free memory a K cache may take
#: Free memory the fused route's K cache is planned with: the smaller GPU's
#: (``fit_route_rule`` sets it to 0 for the rule without the cache).
kcache_memory_bytes = min(H100.memory_bytes, H200.memory_bytes)
GPUS = (H100, H200)

SCHEDULERS = 4  # per SM, one warp-instruction issued per scheduler and cycle
MAX_WARPS_PER_SM = 64
REGISTERS_PER_SM = 65536
SMEM_PER_SM = 228 * 1024
SMEM_RESERVED_PER_BLOCK = 1024
DFMA_PER_SCHEDULER_CYCLE = 0.5  # 64 FP64 lanes per SM
MUFU_LANES_PER_SM_CYCLE = 16

# The H200 profile of the v1 kernels (16384 x 1024 float32): time, issue-slot
# utilisation, resident warps per scheduler (theoretical occupancy x 16).
PROFILE = {"v1.counts": (67.8e-3, 0.645, 4.0), "v1.grad": (261e-3, 0.325, 2.0)}
CALIBRATION_CASE = (16384, 1024, "float32")
#: Largest issue efficiency the model allows (assumption, see the module docstring).
ISSUE_CAP = 0.9


def _fit_issue_slope() -> float:
    """Least-squares slope of issue efficiency against resident warps per scheduler."""
    w = np.array([v[2] for v in PROFILE.values()])
    e = np.array([v[1] for v in PROFILE.values()])
    return float(w @ e / (w @ w))


ISSUE_SLOPE = _fit_issue_slope()


def issue_efficiency(warps_per_scheduler: float) -> float:
    """Fraction of issue slots used, from the resident warps per scheduler."""
    return min(ISSUE_CAP, ISSUE_SLOPE * warps_per_scheduler)


def implied_warp_instructions(name: str, gpu: Gpu = H200) -> float:
    """Warp-instructions the profile implies: time x SMs x 4 x clock x utilisation."""
    t, util, _ = PROFILE[name]
    return t * gpu.sms * SCHEDULERS * gpu.clock_hz * util


# ----------------------------------------------------------------------------- toolchain


def find_tool(name: str) -> str | None:
    """A CUDA tool from the pip-installed toolkit (matching NVVM's PTX), else from PATH."""
    for base in map(Path, sys.path):
        if base.is_dir():
            for candidate in sorted((base / "nvidia").glob(f"*/bin/{name}")):
                return str(candidate)
    return shutil.which(name)


def pretend_device(cc: tuple[int, int]) -> None:
    """Let device functions ask for a compute capability when no GPU is present."""
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = cc

    dispatcher.get_current_device = _Device


class Compiled(NamedTuple):
    """ptxas's resource report and the SASS of one kernel."""

    registers: int
    spill_bytes: int
    smem_bytes: int
    sass: str


_REGS = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def assemble(ptx: str, cc: tuple[int, int] = (9, 0)) -> Compiled:
    """``ptxas -v`` then ``nvdisasm`` on one kernel's PTX."""
    ptxas, nvdisasm = find_tool("ptxas"), find_tool("nvdisasm")
    if ptxas is None or nvdisasm is None:
        raise RuntimeError("ptxas/nvdisasm not found: pip install nvidia-cuda-nvcc "
                           "nvidia-cuda-nvdisasm")
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(src), "-o", str(cubin)],
                              capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"ptxas failed: {log.strip()[:400]}")
        sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    regs, smem, spill = _REGS.search(log), _SMEM.search(log), _SPILL.search(log)
    return Compiled(int(regs.group(1)) if regs else -1,
                    int(spill.group(1)) + int(spill.group(2)) if spill else 0,
                    int(smem.group(1)) if smem else 0, sass)


def compile_kernel(pyfunc: Callable, sig: tuple, launch_bounds: Any,
                   cc: tuple[int, int] = (9, 0)) -> Compiled:
    """PTX by numba-cuda (no GPU), then :func:`assemble`."""
    from numba import cuda

    pretend_device(cc)
    ptx, _ = cuda.compile_ptx(pyfunc, sig, cc=cc, launch_bounds=launch_bounds)
    return assemble(ptx, cc)


# ----------------------------------------------------------------------------- SASS loops

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"(\.L_x_\d+)")


@dataclass
class Loop:
    """One backward branch of the SASS: body ``[start, end]`` by address."""

    start: int
    end: int
    inclusive: collections.Counter = field(default_factory=collections.Counter)
    exclusive: collections.Counter = field(default_factory=collections.Counter)
    parent: int | None = None  # index of the innermost enclosing loop

    def contains(self, other: "Loop") -> bool:
        return self.start <= other.start and other.end <= self.end and self is not other


def opcode_class(op: str) -> str:
    """The opcode without modifiers (``FFMA.FTZ`` -> ``FFMA``)."""
    return op.split(".")[0]


def parse_sass(sass: str) -> tuple[list[tuple[int, str]], list[Loop]]:
    """Instructions ``(address, opcode class)`` and loops of one kernel."""
    insns, labels, pending, branches = [], {}, [], []
    for raw in sass.splitlines():
        m = _LABEL.match(raw.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _INSN.search(raw)
        if not m:
            continue
        addr = int(m.group(1), 16)
        for name in pending:
            labels[name] = addr
        pending = []
        op = opcode_class(m.group(2))
        insns.append((addr, op))
        if op == "BRA":
            t = _TARGET.search(m.group(3))
            if t:
                branches.append((addr, t.group(1)))
    loops = [Loop(labels[t], a) for a, t in branches if t in labels and labels[t] <= a]
    # The self-branch after EXIT (a trap) is not a loop of the program.
    loops = [lp for lp in loops if lp.end > lp.start]
    loops.sort(key=lambda lp: (lp.start, -lp.end))
    for lp in loops:
        lp.inclusive.update(op for a, op in insns if lp.start <= a <= lp.end)
    for k, lp in enumerate(loops):
        enclosing = [q for q, o in enumerate(loops) if o.contains(lp)]
        lp.parent = max(enclosing, key=lambda q: loops[q].start) if enclosing else None
    for k, lp in enumerate(loops):
        lp.exclusive = lp.inclusive.copy()
        for child in loops:
            if child.parent == k:
                lp.exclusive.subtract(child.inclusive)
    return insns, loops


def total(counter: collections.Counter, ops: tuple[str, ...] | None = None) -> int:
    """Instructions in ``counter`` (of opcodes ``ops`` if given)."""
    return sum(v for k, v in counter.items() if ops is None or k in ops)


FMA_OPS = ("FFMA", "DFMA")
# Instructions that do not occupy an issue slot of their own kind we model
# separately are still counted in the issue total.


# ----------------------------------------------------------------------------- kernel specs


class Case(NamedTuple):
    """One benchmark problem."""

    N: int
    D: int
    dtype: str  # "float32" or "float64"
    G: int = 1


class LoopSpec(NamedTuple):
    """Work one iteration of the parent (or one warp, for an outermost loop) gives a loop.

    ``marker`` names the opcode counted in the body (``None``: ``work`` is the
    trip count itself); ``work(case)`` is in units of that opcode per thread.
    """

    role: str
    marker: str | None
    work: Callable[[Case], float]


@dataclass
class KernelSpec:
    """How to compile one kernel and how its loops scale with a case."""

    name: str
    build: Callable[[], tuple[Callable, tuple, Any]]  # pyfunc, signature, launch bounds
    threads: int
    loops: list[LoopSpec]
    warps: Callable[[Case], float]  # warps launched (all blocks)
    blocks: Callable[[Case], float]
    dram_bytes: Callable[[Case], float] = lambda case: 0.0


class Prediction(NamedTuple):
    """Model output for one kernel on one case."""

    warp_insns: float
    fma_insns: float
    dfma_insns: float
    mufu_insns: float
    dram_bytes: float
    warps_per_scheduler: float
    blocks: float
    blocks_per_sm: int


def blocks_per_sm(regs: int, smem: int, threads: int) -> int:
    """Resident blocks per SM from registers, shared memory and threads."""
    warps = -(-threads // 32)
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (REGISTERS_PER_SM // regs_per_warp) // warps
    by_smem = SMEM_PER_SM // (smem + SMEM_RESERVED_PER_BLOCK)
    by_threads = MAX_WARPS_PER_SM // warps
    return max(1, min(by_regs, by_smem, by_threads, 32))


def loop_trips(spec: KernelSpec, loops: list[Loop], case: Case) -> list[float]:
    """Executions of each loop body per warp (product of trips up the loop tree)."""
    if len(loops) != len(spec.loops):
        raise RuntimeError(
            f"{spec.name}: the SASS has {len(loops)} loops, the spec describes "
            f"{len(spec.loops)} ({', '.join(s.role for s in spec.loops)}); update the spec")
    trips = []
    for lp, ls in zip(loops, spec.loops):
        per_body = lp.inclusive.get(ls.marker, 0) if ls.marker else 1
        if ls.marker and per_body == 0:
            raise RuntimeError(f"{spec.name}: loop {ls.role} has no {ls.marker} in its SASS")
        trips.append(ls.work(case) / per_body)
    cumulative = []
    for k, lp in enumerate(loops):
        t = trips[k]
        q = lp.parent
        while q is not None:
            t *= trips[q]
            q = loops[q].parent
        cumulative.append(t)
    return cumulative


def predict(spec: KernelSpec, compiled: Compiled, case: Case) -> Prediction:
    """Warp-instructions and pipe counts of one kernel on one case."""
    insns, loops = parse_sass(compiled.sass)
    trips = loop_trips(spec, loops, case)
    in_loop = collections.Counter()
    for lp, t in zip(loops, trips):
        for op, n in lp.exclusive.items():
            in_loop[op] += n * t
    covered = [(lp.start, lp.end) for lp in loops]
    straight = collections.Counter(op for a, op in insns
                                   if not any(s <= a <= e for s, e in covered))
    per_warp = in_loop + straight
    warps = spec.warps(case)
    bps = blocks_per_sm(compiled.registers, compiled.smem_bytes, spec.threads)
    wps = bps * spec.threads / 32 / SCHEDULERS
    return Prediction(warps * total(per_warp), warps * total(per_warp, FMA_OPS),
                      warps * per_warp.get("DFMA", 0), warps * per_warp.get("MUFU", 0),
                      spec.dram_bytes(case), wps, spec.blocks(case), bps)


def seconds(p: Prediction, gpu: Gpu) -> dict[str, float]:
    """Issue-, pipe- and memory-bound times of one prediction on one GPU."""
    if p.blocks == 0:  # a kernel variant the case does not launch
        return {"issue": 0.0, "fp64": 0.0, "mufu": 0.0, "memory": 0.0, "efficiency": 0.0}
    # Partial last waves leave SMs idle: scale by the rounded-up wave count.
    slots = gpu.sms * p.blocks_per_sm
    waves = p.blocks / slots
    tail = max(1.0, np.ceil(waves) / waves) if waves > 0 else 1.0
    # Only a full wave keeps every scheduler's warps resident.
    wps = p.warps_per_scheduler * min(1.0, waves)
    eff = issue_efficiency(wps)
    cycles = gpu.clock_hz * gpu.sms
    return {"issue": tail * p.warp_insns / (cycles * SCHEDULERS * eff),
            "fp64": tail * p.dfma_insns / (cycles * SCHEDULERS * DFMA_PER_SCHEDULER_CYCLE),
            "mufu": tail * p.mufu_insns * 32 / (cycles * MUFU_LANES_PER_SM_CYCLE),
            "memory": p.dram_bytes / gpu.dram_bytes_per_s,
            "efficiency": eff}


def kernel_seconds(p: Prediction, gpu: Gpu) -> float:
    """The binding bound of :func:`seconds`."""
    s = seconds(p, gpu)
    return max(s["issue"], s["fp64"], s["mufu"], s["memory"])


def inner_loop_figures(compiled: Compiled, spec: KernelSpec) -> list[tuple[str, int, int, float]]:
    """``(role, instructions, FMAs, instructions per FMA)`` of every loop that holds FMAs."""
    _, loops = parse_sass(compiled.sass)
    rows = []
    for lp, ls in zip(loops, spec.loops):
        n, f = total(lp.exclusive), total(lp.exclusive, FMA_OPS)
        if f:
            rows.append((ls.role, n, f, n / f))
    return rows


# ----------------------------------------------------------------------------- v1 (calibration)

V1_PATH = "src/kdentropy/backends/cuda.py"  # the one-file backend that v2 replaced


def load_v1(repo: Path) -> Any:
    """The v1 CUDA module from git history (the last version of :data:`V1_PATH`)."""
    import importlib.util

    last = subprocess.run(["git", "-C", str(repo), "rev-list", "-1", "HEAD", "--", V1_PATH],
                          capture_output=True, text=True, check=True).stdout.strip()
    if not last:
        raise RuntimeError(f"{V1_PATH} is not in the git history")
    source = subprocess.run(["git", "-C", str(repo), "show", f"{last}^:{V1_PATH}"],
                            capture_output=True, text=True, check=True).stdout
    tmp = Path(tempfile.mkdtemp(prefix="kdentropy_v1_")) / "kdentropy_v1_cuda.py"
    tmp.write_text(source)
    spec = importlib.util.spec_from_file_location("kdentropy_v1_cuda", tmp)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _v1_splits(v1: Any, case: Case) -> tuple[int, int, int]:
    """``(row tiles, splits P, tiles per split)`` as v1's host code chose them on 132 SMs."""
    tl = v1._TILINGS[np.dtype(case.dtype)]
    n = -(-case.N // tl.tile)
    blocks = n * case.G
    P = max(1, min(n, -(-4 * H200.sms // blocks)))
    P = max(1, min(P, v1._SPLIT_BUFFER_BYTES // max(1, case.G * case.N * case.D * 8)))
    per = -(-n // P)
    return n, -(-n // per), per


def v1_specs(v1: Any, dtype: str = "float32") -> list[KernelSpec]:
    """Specs of v1's ``counts`` and ``grad`` (compiled as v1 launched them, no launch bounds)."""
    from numba import types as nt

    dt = np.dtype(dtype)
    tl = v1._TILINGS[dt]
    TH, R, KT, RC = tl.threads, tl.regs, tl.kt, tl.rc
    B, DC, NT = tl.tile, tl.dchunk, TH * TH
    ft, f64 = getattr(nt, dtype), nt.float64
    k = v1._kernels(dt)

    def blocks(case: Case) -> float:
        n, P, _ = _v1_splits(v1, case)
        return n * P * case.G

    def warps(case: Case) -> float:
        return blocks(case) * NT / 32

    def tiles(case: Case) -> float:  # mean column tiles per block
        n, P, _ = _v1_splits(v1, case)
        return n / P

    distance = [
        LoopSpec("slices", None, lambda c: -(-c.D // KT)),
        LoopSpec("staging", "STS", lambda c: 2 * -(-B * KT // NT)),
        LoopSpec("distance", "FFMA" if dtype == "float32" else "DFMA", lambda c: KT * R * R),
    ]
    counts = KernelSpec(
        "v1.counts", lambda: (k["counts"].py_func, (ft[:, :, ::1], f64[:, :, ::1], ft, nt.int64),
                              None),
        NT, [LoopSpec("populations", None, lambda c: 1), LoopSpec("column tiles", None, tiles),
             *distance], warps, blocks)
    grad = KernelSpec(
        "v1.grad", lambda: (k["grad"].py_func, (ft[:, :, ::1], ft[:, ::1], f64[:, :, :, ::1], ft,
                                                nt.int64), None),
        NT, [LoopSpec("populations", None, lambda c: 1), LoopSpec("column tiles", None, tiles),
             *distance,
             LoopSpec("D chunks", None, lambda c: -(-c.D // DC)),
             LoopSpec("staging", "STS", lambda c: -(-B * DC // NT)),
             LoopSpec("apply", "FFMA" if dtype == "float32" else "DFMA",
                      lambda c: B * R * RC)],
        warps, blocks)
    return [counts, grad]


def calibrate(repo: Path) -> list[tuple[str, float, float, float, float, float]]:
    """v1 on the profiled case: ``(kernel, predicted, implied, error, predicted s, measured s)``."""
    v1 = load_v1(repo)
    case = Case(*CALIBRATION_CASE)
    rows = []
    for spec in v1_specs(v1, case.dtype):
        compiled = compile_kernel(*spec.build())
        p = predict(spec, compiled, case)
        implied = implied_warp_instructions(spec.name)
        rows.append((spec.name, p.warp_insns, implied, p.warp_insns / implied - 1,
                     kernel_seconds(p, H200), PROFILE[spec.name][0]))
    return rows


# ----------------------------------------------------------------------------- the tree's fused route


def _fused_splits(_fused: Any, n_tiles: int, blocks_per_split: int,
                  bytes_per_split: int) -> tuple[int, int]:
    """``_fused._splits`` as it would run on a 132-SM GPU."""
    saved = _fused.multiprocessors
    _fused.multiprocessors = lambda: H200.sms
    try:
        return _fused._splits(n_tiles, blocks_per_split, bytes_per_split)
    finally:
        _fused.multiprocessors = saved


def tile_specs(dtype: str) -> list[tuple[KernelSpec, Any]]:
    """Specs of the Gram route's tile kernels (``_tiles``), one pair per slice width.

    The host picks the slice width from D (:func:`_tiles.slice_width`); a
    variant launches no warps on a case whose D selects another width, so
    summing every variant's prediction gives the route's.
    """
    from numba import types as nt

    from kdentropy.backends.cuda import _fused, _tile_apply, _tiles

    dt = np.dtype(dtype)
    ft, f64 = getattr(nt, dtype), nt.float64
    fma = "FFMA" if dtype == "float32" else "DFMA"
    sh = _tiles.SHAPES[dt]

    def kept(case: Case) -> bool:
        # plan()'s rule on the smaller of the two GPUs: the cache within half its memory.
        need = _fused.kept_bytes(case.G, case.N, case.D, dt)
        return 0 < need <= KCACHE_FRACTION * kcache_memory_bytes

    TH, R, RC = sh.threads, sh.regs, sh.cells
    B, NT, PAD = sh.tile, TH * TH, _tiles.PAD
    widths = sorted({_tiles.slice_width(D, dt) for D in range(1, sh.dchunk + 1)})
    out = []
    for width in widths:
        def mine(case: Case, width: int = width) -> bool:
            return _tiles.slice_width(case.D, dt) == width

        def padded(case: Case) -> int:
            return -(-case.D // PAD) * PAD

        def n_slices(case: Case, width: int = width) -> int:
            return -(-padded(case) // width)

        def count_geo(case: Case) -> tuple[int, int, int, int, bool]:
            saved = _fused.multiprocessors
            _fused.multiprocessors = lambda: H200.sms
            try:
                return _fused.counts_geometry(case.N, case.D, case.G, dt)
            finally:
                _fused.multiprocessors = saved

        def weighted_geo(case: Case) -> tuple[int, int, int, int, int]:
            saved = _fused.multiprocessors
            _fused.multiprocessors = lambda: H200.sms
            try:
                return _fused.weighted_geometry(case.N, case.D, case.G, dt, True)
            finally:
                _fused.multiprocessors = saved

        def c_blocks(case: Case, mine: Callable = mine) -> float:
            if not mine(case):
                return 0.0
            n, P, _, _, _ = count_geo(case)
            return n * P * case.G

        def w_blocks(case: Case, mine: Callable = mine) -> float:
            if not mine(case) or kept(case):
                return 0.0
            n, P, _, chunks, _ = weighted_geo(case)
            return n * P * chunks * case.G

        def k_blocks(case: Case, mine: Callable = mine) -> float:
            if not mine(case) or not kept(case):
                return 0.0
            n, P, _, chunks, _ = weighted_geo(case)
            return n * P * chunks * case.G

        def c_dram(case: Case, mine: Callable = mine) -> float:
            if not mine(case):
                return 0.0
            _, P, _, n_off, sym = count_geo(case)
            slices = P + (n_off if sym else 0)
            # S once (L2 holds the re-reads), the float64 slices written and
            # summed, the K cache written.
            cache = _tiles.kept_elements(case.G, case.N, dt) * dt.itemsize if kept(case) else 0
            return case.G * case.N * (case.D * dt.itemsize + (2 * slices + 1) * 8) + cache

        def w_dram(case: Case, mine: Callable = mine) -> float:
            if not mine(case):
                return 0.0
            _, P, _, _, _ = weighted_geo(case)
            return case.G * case.N * case.D * (dt.itemsize + (2 * P + 1) * 8)

        def k_dram(case: Case, mine: Callable = mine) -> float:
            if not mine(case):
                return 0.0
            n, P, _, chunks, _ = weighted_geo(case)
            # Every D chunk reads its row tiles' n K tiles (L2 does not hold them).
            return w_dram(case) + chunks * case.G * n * n * B * B * dt.itemsize

        def offsets(case: Case) -> float:  # mean offsets per block
            _, P, _, n_off, _ = count_geo(case)
            return n_off / P

        def tiles(case: Case) -> float:  # mean column tiles per block
            n, P, _, _, _ = weighted_geo(case)
            return n / P

        def dist(case: Case, width: int = width) -> float:  # FMAs per thread and slice
            return padded(case) / n_slices(case, width) * R * R

        def apply(case: Case) -> float:
            # Units past the chunk's cells are whole idle warps: count the busy ones.
            _, _, _, chunks, _ = weighted_geo(case)
            cells = min(sh.dchunk, case.D)
            units = (B // R) * -(-cells // RC)
            return B * R * RC * (-(-units // 32)) / (NT // 32)

        counts_k = _tiles.counts_kernel(dt, width)
        weighted_k = _tiles.weighted_kernel(dt, width)
        kept_k = _tile_apply.kept_weighted_kernel(dt, width)
        c_sig = (ft[:, :, ::1], ft[::1], f64[:, ::1], f64[:, :, ::1], ft, nt.int64, nt.int64,
                 nt.int64, nt.int64, ft[::1], nt.int64)
        k_sig = (ft[:, :, ::1], ft[::1], ft[:, ::1], ft[::1], f64[:, :, :, ::1], nt.int64,
                 nt.int64, nt.int64, nt.int64)
        w_sig = (ft[:, :, ::1], ft[::1], f64[:, ::1], ft[:, ::1], f64[:, :, :, ::1], ft,
                 nt.int64, nt.int64, nt.int64)
        c_spec = KernelSpec(
            f"tiles.counts[{dtype},kw={width}]",
            lambda k=counts_k, sig=c_sig: (k.py_func, sig, k.targetoptions.get("launch_bounds")),
            NT, [LoopSpec("offsets", None, offsets),
                 LoopSpec("slices", None, n_slices),
                 LoopSpec("distance", fma, dist)],
            lambda c, f=c_blocks: f(c) * NT / 32, c_blocks, c_dram)
        w_spec = KernelSpec(
            f"tiles.weighted[{dtype},kw={width}]",
            lambda k=weighted_k, sig=w_sig: (k.py_func, sig, k.targetoptions.get("launch_bounds")),
            NT, [LoopSpec("column tiles", None, tiles),
                 LoopSpec("slices", None, n_slices),
                 LoopSpec("distance", fma, dist),
                 LoopSpec("apply", fma, apply)],
            lambda c, f=w_blocks: f(c) * NT / 32, w_blocks, w_dram)
        k_spec = KernelSpec(
            f"tiles.kept_weighted[{dtype},kw={width}]",
            lambda k=kept_k, sig=k_sig: (k.py_func, sig, k.targetoptions.get("launch_bounds")),
            NT, [LoopSpec("column tiles", None, tiles),
                 LoopSpec("apply", fma, apply)],
            lambda c, f=k_blocks: f(c) * NT / 32, k_blocks, k_dram)
        out += [(c_spec, counts_k), (w_spec, weighted_k), (k_spec, kept_k)]
    return out


def fused_specs(dtype: str, gram: bool) -> list[tuple[KernelSpec, Any]]:
    """Specs of the fused route's kernels, with their dispatchers.

    The Gram form runs the tile kernels (:func:`tile_specs`), direct
    differences the ``counts``/``weighted`` kernels of ``_fused``.
    """
    if gram:
        return tile_specs(dtype)
    from numba import types as nt

    from kdentropy.backends.cuda import _fused

    dt = np.dtype(dtype)
    ft, f64 = getattr(nt, dtype), nt.float64
    fma = "FFMA" if dtype == "float32" else "DFMA"
    width = dt.itemsize
    k = _fused.kernels(dt, gram)
    out = []
    for kind in ("counts", "weighted"):
        tl = _fused.TILINGS[dt, kind]
        TH, R, KT, RC, _ = tl
        B, DC, NT = tl.tile, tl.dchunk, TH * TH

        def geometry(case: Case, kind: str = kind, B: int = B, DC: int = DC
                     ) -> tuple[int, int, int, int]:
            n = -(-case.N // B)
            if kind == "counts":
                P, per = _fused_splits(_fused, n, n * case.G, case.G * case.N * 8)
                return n, P, per, 1
            chunks = -(-case.D // DC)
            P, per = _fused_splits(_fused, n, n * chunks * case.G, case.G * case.N * case.D * 8)
            P = max(1, min(P, _fused.MAX_GRID_Y_Z // chunks))
            per = -(-n // P)
            return n, -(-n // per), per, chunks

        def blocks(case: Case, geometry: Callable = geometry) -> float:
            n, P, _, chunks = geometry(case)
            return n * P * chunks * case.G

        def warps(case: Case, blocks: Callable = blocks, NT: int = NT) -> float:
            return blocks(case) * NT / 32

        def tiles(case: Case, geometry: Callable = geometry) -> float:
            n, P, _, _ = geometry(case)
            return n / P

        def dram(case: Case, geometry: Callable = geometry, kind: str = kind) -> float:
            n, P, _, chunks = geometry(case)
            cells = case.G * case.N * (case.D if kind == "weighted" else 1)
            # S read once per block from DRAM at worst is L2-resident; count it once,
            # the float64 partials written and read back by sum_partials.
            return case.G * case.N * case.D * width + (2 * P + 1) * cells * 8

        loops = [LoopSpec("column tiles", None, tiles),
                 LoopSpec("distance slices", None, lambda c, KT=KT: -(-c.D // KT)),
                 LoopSpec("distance staging", "STS",
                          lambda c, B=B, KT=KT, NT=NT: 2 * -(-B * KT // NT)),
                 LoopSpec("distance", fma, lambda c, KT=KT, R=R: min(KT, c.D) * R * R)]
        if kind == "weighted":
            loops += [LoopSpec("apply staging", "STS", lambda c, B=B, DC=DC, NT=NT:
                               -(-B * DC // NT)),
                      LoopSpec("apply", fma, lambda c, B=B, R=R, RC=RC: B * R * RC)]
        if kind == "counts":
            sig = (ft[:, :, ::1], f64[:, ::1], f64[:, :, ::1], ft, nt.int64, nt.int64)
        else:
            sig = (ft[:, :, ::1], f64[:, ::1], ft[:, ::1], f64[:, :, :, ::1], ft, nt.int64,
                   nt.int64, nt.int64)
        kernel = k[kind]
        spec = KernelSpec(f"fused.{kind}[{dtype},{'gram' if gram else 'direct'}]",
                          lambda kernel=kernel, sig=sig: (
                              kernel.py_func, sig, kernel.targetoptions.get("launch_bounds")),
                          NT, loops, warps, blocks, dram)
        out.append((spec, kernel))
    return out


def with_remainders(spec: KernelSpec, compiled: Compiled) -> KernelSpec:
    """Add the remainder loops ptxas emits after an unrolled run-time loop.

    ptxas unrolls the apply loop (run-time trip count) by up to 4 and follows
    it with a one-step remainder loop; every benchmark tile is a multiple of
    4 rows, so the remainder runs 0 times on full tiles.
    """
    _, loops = parse_sass(compiled.sass)
    extra = len(loops) - len(spec.loops)
    if extra <= 0:
        return spec
    roles = list(spec.loops)
    for _ in range(extra):
        roles.append(LoopSpec(f"{roles[-1].role} remainder", None, lambda c: 0.0))
    return KernelSpec(spec.name, spec.build, spec.threads, roles, spec.warps, spec.blocks,
                      spec.dram_bytes)


# ----------------------------------------------------------------------------- panel route and floor

#: The measured cuBLAS floor (gpu-h200.md): ``S S^T`` then ``(N x N) S``, ms on an H200.
FLOOR_MS = {(4096, 64, "float32"): 0.17, (4096, 64, "float64"): 0.14,
            (8192, 256, "float32"): 1.66, (8192, 256, "float64"): 1.28,
            (16384, 1024, "float32"): 21.79, (16384, 1024, "float64"): 18.36,
            (65536, 64, "float32"): 30.34, (65536, 64, "float64"): 27.45}
PANEL_WORKSPACE = 4 * 2**30  # _panels.WORKSPACE_CAP on a GPU


def floor_seconds(case: Case, gpu: Gpu) -> float:
    """The measured floor; on an H100 its N^2 panel traffic runs at the H100's bandwidth."""
    t = FLOOR_MS[case.N, case.D, case.dtype] * 1e-3
    if gpu is H200:
        return t
    panel = 2 * case.N ** 2 * np.dtype(case.dtype).itemsize  # K written, then read
    return t + panel / gpu.dram_bytes_per_s - panel / H200.dram_bytes_per_s


def panel_seconds(case: Case, gpu: Gpu) -> float:
    """Panel route: its GEMMs scaled from the floor plus the epilogues' N^2 traffic.

    With all ``G N^2`` kernel values inside the workspace, pass 2 reuses them:
    two GEMMs (as the floor), epilogue traffic 4 N^2 words (read Gp, write K,
    read K, write W). Otherwise three GEMMs and 3 N^2 words.
    """
    w = np.dtype(case.dtype).itemsize
    cached = case.G * case.N ** 2 * w <= PANEL_WORKSPACE
    gemms = 1.0 if cached else 1.5
    words = 4 if cached else 3
    return case.G * (gemms * floor_seconds(case, gpu)
                     + words * case.N ** 2 * w / gpu.dram_bytes_per_s)


# ----------------------------------------------------------------------------- per case


def fused_seconds(case: Case, compiled: dict[str, tuple[KernelSpec, Compiled]],
                  gpu: Gpu) -> tuple[float, float, dict[str, float]]:
    """Fused route (both passes): ``(warp-instructions, seconds, bounds summed)``."""
    insns, secs = 0.0, 0.0
    bounds = collections.Counter()
    for spec, comp in compiled.values():
        p = predict(spec, comp, case)
        insns += p.warp_insns
        s = seconds(p, gpu)
        secs += max(s["issue"], s["fp64"], s["mufu"], s["memory"])
        for key in ("issue", "fp64", "mufu", "memory"):
            bounds[key] += s[key]
    return insns, secs, dict(bounds)


def fit_route_rule(compiled_by_dtype: dict[str, dict[str, tuple[KernelSpec, Compiled]]],
                   kcache: bool = True) -> dict[str, tuple[float, float, float, float]]:
    """Per dtype ``(a, b, c, e)``: fused ~ N^2 (a D + b), panel ~ N^2 (c D + e) seconds on an H200.

    ``kcache``: the fused route with pass 1's kernel values kept (else recomputed).

    ``a, b`` by least squares over the model's fused times at N = 16384,
    D = 8..128 (the fused route's domain; beyond it the fused pass 2
    recomputes distances per D chunk and grows faster than linearly); ``c, e`` over the measured floors plus the panel epilogue
    traffic (:func:`panel_seconds`) of the four benchmark cases.
    """
    global kcache_memory_bytes
    saved = kcache_memory_bytes
    kcache_memory_bytes = saved if kcache else 0.0
    try:
        return _fit(compiled_by_dtype)
    finally:
        kcache_memory_bytes = saved


def _fit(compiled_by_dtype: dict[str, dict[str, tuple[KernelSpec, Compiled]]]
         ) -> dict[str, tuple[float, float, float, float]]:
    rule = {}
    for dtype, compiled in compiled_by_dtype.items():
        Ds = np.array([8, 16, 32, 64, 128], dtype=float)
        N = 16384
        t = np.array([fused_seconds(Case(N, int(D), dtype), compiled, H200)[1] for D in Ds]) / N**2
        a, b = np.linalg.lstsq(np.stack([Ds, np.ones_like(Ds)], 1), t, rcond=None)[0]
        cases = [Case(n, d, dtype) for (n, d, dt) in FLOOR_MS if dt == dtype]
        Dp = np.array([c.D for c in cases], dtype=float)
        tp = np.array([panel_seconds(c, H200) / c.N**2 for c in cases])
        c_, e = np.linalg.lstsq(np.stack([Dp, np.ones_like(Dp)], 1), tp, rcond=None)[0]
        rule[dtype] = (float(a), float(b), float(c_), float(e))
    return rule
