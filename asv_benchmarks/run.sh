#!/usr/bin/env bash
# Full, recorded benchmark run for RESULTS.md, with NumPy's BLAS on its native kernel.
#
#   asv_benchmarks/run.sh                  # everything (about 75 min on 2 cores)
#   asv_benchmarks/run.sh -b comparisons   # a subset (extra arguments go to `asv run`)
#   KDENTROPY_BENCH_SMOKE=1 asv_benchmarks/run.sh -b comparisons   # smoke run (small grid)
#
# A smoke run (KDENTROPY_BENCH_SMOKE=1) times the comparisons on the smaller
# shapes only, still with >= 5 interleaved rounds, and writes
# results/RESULTS-smoke.md instead of RESULTS.md.
#
# Why a wrapper: asv passes its own environment to the benchmark processes, and
# this machine's shell sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE=512,
# which force OpenBLAS onto older (AVX2) kernels and a smaller blocking. They
# must be unset before Python starts: OpenBLAS reads them once, when NumPy
# loads it, and asv imports NumPy before any benchmark module. What the shell
# had set is passed on in KDENTROPY_BENCH_UNSET, so RESULTS.md says what was
# removed; the kernel that actually ran is recorded by every comparison
# process (threadpoolctl). Never source this in tests or CI.
set -euo pipefail
cd "$(dirname "$0")"

unset_vars=()
for var in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
    if [[ -n "${!var-}" ]]; then
        unset_vars+=("$var=${!var}")
    fi
    unset "$var"
done
export KDENTROPY_BENCH_UNSET="${unset_vars[*]-}"
# float64 jax.jit runs only with x64 enabled (otherwise JAX computes in float32).
export JAX_ENABLE_X64="${JAX_ENABLE_X64:-1}"

# The measured code is the working tree (`--python=same`), recorded under HEAD:
# refuse uncommitted kernel changes unless told otherwise.
if [[ -z "${KDENTROPY_BENCH_ALLOW_DIRTY-}" ]] && \
   [[ -n "$(git status --porcelain -- $(python make_results.py --kernel-paths))" ]]; then
    echo "run.sh: uncommitted changes under the kernel sources; commit them first" \
         "(or set KDENTROPY_BENCH_ALLOW_DIRTY=1; RESULTS.md will say so)" >&2
    exit 2
fi

commit=$(git rev-parse HEAD)
mkdir -p results/records
export KDENTROPY_BENCH_RECORD="$PWD/results/records/$commit.jsonl"
output=RESULTS.md
if [[ -n "${KDENTROPY_BENCH_SMOKE-}" ]]; then
    KDENTROPY_BENCH_RECORD="$PWD/results/records/$commit-smoke.jsonl"
    output=results/RESULTS-smoke.md
fi
if [[ $# -eq 0 || -n "${KDENTROPY_BENCH_SMOKE-}" ]]; then
    : > "$KDENTROPY_BENCH_RECORD"    # a full (or smoke) run starts a fresh record; subsets append
fi
python make_results.py --record-environment "results/records/$commit-environment.json"

start=$(date +%s)
asv machine --yes >/dev/null
asv run --python=same --set-commit-hash="$commit" "$@"
echo "run.sh: asv took $(( ($(date +%s) - start) / 60 )) min"
python make_results.py --record "$KDENTROPY_BENCH_RECORD" --output "$output"
