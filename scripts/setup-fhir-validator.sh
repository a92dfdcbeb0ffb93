#!/usr/bin/env bash
# Installs the independent FHIR validator's npm packages (pinned by
# conformance/fhir-validate/package-lock.json) into its node_modules, unless
# they are there for the same lock file already. Prints node's path on its
# last line. Needs Node.js 18 or newer and the npm registry.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/conformance/fhir-validate"
mkdir -p "$ROOT/target"
# Tests on both backends may call this at once: one installs, the others wait.
exec 9>"$ROOT/target/.fhir-validate.lock"
flock 9

NODE="$(command -v node)"
major="$("$NODE" -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "Node.js 18 or newer is needed (found $("$NODE" --version))" >&2
    exit 1
fi
STAMP="$DIR/node_modules/.package-lock.sha256"
WANT="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$WANT" > "$STAMP"
fi
echo "$NODE"
