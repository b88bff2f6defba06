#!/usr/bin/env bash
# Developer hygiene in one command: lint, format, types, package build and metadata.
#
#   bash tools/check_hygiene.sh            # from anywhere; needs ruff, mypy, build, twine
#   pip install ruff mypy build twine       # (or: pre-commit run --all-files for the first two)
#
# Every step runs even when an earlier one fails; the exit status is 1 if any
# failed. Configuration lives in pyproject.toml ([tool.ruff], [tool.mypy]).
set -uo pipefail
cd "$(dirname "$0")/.."

# Files that follow `ruff format` already. The rest of the tree predates it and
# keeps its hand-wrapped style until it is reformatted in one commit (then
# replace this list by ".").
FORMAT_CHECKED=(
    src/kdentropy/__main__.py
    src/kdentropy/hard.py
    src/kdentropy/backends/cpu/_sums.py
    tests/conftest.py
    tests/check_vector_width.py
    tests/test_docstrings.py
    tests/test_examples.py
)

failed=()
step() {  # step NAME COMMAND...: run it, remember a failure, go on
    local name=$1
    shift
    echo "== $name: $*"
    if "$@"; then
        echo "-- $name: ok"
    else
        echo "-- $name: FAILED"
        failed+=("$name")
    fi
}

step "ruff lint" ruff check .
step "ruff format" ruff format --check "${FORMAT_CHECKED[@]}"
step "mypy" mypy
dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
step "build" python -m build --sdist --wheel --outdir "$dist" .
step "twine check" bash -c 'twine check --strict "$0"/*' "$dist"

if ((${#failed[@]})); then
    echo "hygiene: FAILED: ${failed[*]}"
    exit 1
fi
echo "hygiene: all checks passed"
