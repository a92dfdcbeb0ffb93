#!/usr/bin/env bash
# Runs the black-box HDDT conformance suite (conformance/hddt) against our own
# `medvault serve --dev`: first with SQLite, then with PostgreSQL if
# MEDVAULT_TEST_POSTGRES_URL is set (a fresh database medvault_conformance_<pid>
# is created on that server and dropped afterwards, so nothing collides with
# the Rust tests' database). Creates the pinned venv with setup-python.sh.
#
# Usage: scripts/conformance.sh [--medvault-bin PATH] [other runner options]
# (default binary: target/debug/medvault). Prints each backend's counts and,
# last, the sum as `conformance: N passed, M failed, K skipped`; exits 1 if a
# test failed or a run did not finish.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="$(bash scripts/setup-python.sh | tail -n 1)"
# The HDDT profile rules of every returned resource (conformance/fhir-validate).
bash scripts/setup-fhir-validator.sh > /dev/null
# A run against our server has more than this many tests: fewer passed means
# the suite stopped early or lost tests.
MIN_PASSED=120
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

total_passed=0
total_failed=0
total_skipped=0
status=0

# run_suite LABEL ARGS...: runs the suite, shows its output, adds its counts.
run_suite() {
    local label="$1"
    shift
    local log
    log="$(mktemp)"
    set +e
    "$PYTHON" -m conformance.hddt "$@" 2>&1 | tee "$log"
    local code="${PIPESTATUS[0]}"
    set -e
    local counts
    counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)"
    rm -f "$log"
    if [ -z "$counts" ]; then
        echo "conformance ($label): the run did not finish"
        status=1
        total_failed=$((total_failed + 1))
        return
    fi
    local passed failed skipped
    passed="$(echo "$counts" | sed -E 's/^([0-9]+) passed.*/\1/')"
    failed="$(echo "$counts" | sed -E 's/.* ([0-9]+) failed.*/\1/')"
    skipped="$(echo "$counts" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')"
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + ${skipped:-0}))
    echo "conformance ($label): $counts"
    if [ "$code" -ne 0 ]; then
        status=1
    fi
    if [ "$passed" -lt "$MIN_PASSED" ]; then
        echo "conformance ($label): only $passed passed; expected at least $MIN_PASSED"
        status=1
    fi
}

echo "== HDDT conformance suite, SQLite"
run_suite SQLite --database sqlite "$@"

if [ -n "${MEDVAULT_TEST_POSTGRES_URL:-}" ]; then
    database="medvault_conformance_$$"
    base="${MEDVAULT_TEST_POSTGRES_URL%/*}"
    url="$base/$database"
    # pg8000 (in the venv) creates and drops the database: no psql needed.
    pg() {
        "$PYTHON" - "$MEDVAULT_TEST_POSTGRES_URL" "$1" <<'PY'
import sys
import urllib.parse

import pg8000.native

url = urllib.parse.urlparse(sys.argv[1])
connection = pg8000.native.Connection(
    user=urllib.parse.unquote(url.username or "postgres"),
    password=urllib.parse.unquote(url.password) if url.password else None,
    host=url.hostname or "127.0.0.1",
    port=url.port or 5432,
    database=url.path.lstrip("/") or "postgres",
)
connection.run(sys.argv[2])
connection.close()
PY
    }
    echo "== HDDT conformance suite, PostgreSQL (database $database)"
    pg "CREATE DATABASE $database"
    trap 'pg "DROP DATABASE IF EXISTS '"$database"' WITH (FORCE)" || true' EXIT
    run_suite PostgreSQL --database "$url" "$@"
else
    echo "== HDDT conformance suite, PostgreSQL: not run (MEDVAULT_TEST_POSTGRES_URL is unset)"
fi

echo "conformance: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$status"
