#!/usr/bin/env bash
# Creates the Python virtual environment of the black-box tests in
# target/pyenv from conformance/requirements.txt (pinned versions), unless it
# exists for the same requirements already. Prints the interpreter's path on
# its last line. Needs python3 (3.9 or newer) with the venv module and the
# package index (or PIP_FIND_LINKS).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/target/pyenv}"
REQUIREMENTS="$ROOT/conformance/requirements.txt"
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: -r "$REQUIREMENTS" >&2
    echo "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"
