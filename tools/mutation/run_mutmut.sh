#!/usr/bin/env bash
# Mutation testing of kdentropy's pure-Python core with mutmut 3, in a scratch copy.
#
#   tools/mutation/run_mutmut.sh [MODULE ...]      e.g. hard.py backends/_conditioning.py
#
# MODULEs are paths under src/kdentropy (default: the [tool.mutmut] only_mutate
# list of pyproject.toml). mutmut writes mutants/ and its cache into the
# directory it runs in, so it runs in $MUTMUT_WORKDIR (default
# /tmp/kdentropy-mutmut), a copy of src/, tests/ and pyproject.toml: the
# working tree is never touched. The tests run against the numpy backend only
# (KDENTROPY_BACKEND=numpy, -k "not cpu and not cuda"): the cpu backend
# compiles _estimator's functions with Numba, which cannot compile mutmut's
# trampolines. Prints mutmut's results and a score per module.
#
# Environment: MUTMUT_WORKDIR, MUTMUT_JOBS (default 1: the CI machine has 2
# shared cores), MUTMUT_FRESH=1 to drop earlier results.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${MUTMUT_WORKDIR:-/tmp/kdentropy-mutmut}"
jobs="${MUTMUT_JOBS:-1}"

if [[ "${MUTMUT_FRESH:-0}" == 1 ]]; then rm -rf "$work"; fi
mkdir -p "$work"
# A fresh copy of the sources each run (mutmut re-mutates changed files).
rm -rf "$work/src" "$work/tests"
cp -r "$root/src" "$root/tests" "$root/pyproject.toml" "$work/"
find "$work/src" "$work/tests" -name __pycache__ -prune -exec rm -rf {} +

if [[ $# -gt 0 ]]; then
    # Narrow only_mutate in the scratch pyproject to the modules asked for.
    python - "$work/pyproject.toml" "$@" <<'PY'
import re, sys
path, mods = sys.argv[1], sys.argv[2:]
text = open(path).read()
listed = ",\n".join(f'    "src/kdentropy/{m}"' for m in mods)
text, n = re.subn(r"only_mutate = \[.*?\]", f"only_mutate = [\n{listed},\n]", text, flags=re.S)
if n != 1:
    sys.exit("no only_mutate list in [tool.mutmut] of pyproject.toml")
open(path, "w").write(text)
PY
fi

cd "$work"
export KDENTROPY_BACKEND=numpy
mutmut run --max-children "$jobs" || true  # survivors make mutmut exit non-zero
mutmut results --all true > results.txt || true
python "$root/tools/mutation/score.py" results.txt
