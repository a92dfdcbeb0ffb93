#!/usr/bin/env bash
# Installs SoftHSM2 (Debian package softhsm2) if missing and initialises a
# fresh test token in DIR (default: target/softhsm). Used by the smartcard
# tests, which find the configuration through SOFTHSM2_CONF (set for every
# cargo command in .cargo/config.toml to target/softhsm/softhsm2.conf).
# Token "medvault-test", SO PIN 12345678, user PIN 123456: test values only.
# Prints the PKCS#11 module path on its last line.
set -euo pipefail

DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)/target/softhsm}"
LABEL="${SOFTHSM_LABEL:-medvault-test}"
SO_PIN="${SOFTHSM_SO_PIN:-12345678}"
USER_PIN="${SOFTHSM_PIN:-123456}"

if ! command -v softhsm2-util >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "softhsm2 is not installed and this is not root: apt-get install softhsm2" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
fi

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
rm -rf "$DIR/tokens"
mkdir -p "$DIR/tokens"
chmod 700 "$DIR/tokens"
cat > "$DIR/softhsm2.conf" <<CONF
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$DIR/softhsm2.conf"
softhsm2-util --init-token --free --label "$LABEL" --so-pin "$SO_PIN" --pin "$USER_PIN" >/dev/null

for candidate in /usr/lib/softhsm/libsofthsm2.so \
                 "/usr/lib/$(uname -m)-linux-gnu/softhsm/libsofthsm2.so" \
                 /usr/local/lib/softhsm/libsofthsm2.so; do
    if [ -f "$candidate" ]; then
        echo "$candidate"
        exit 0
    fi
done
echo "libsofthsm2.so not found" >&2
exit 1
