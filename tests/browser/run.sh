#!/usr/bin/env bash
# tests/browser/run.sh - headless-Chromium test of the web page served by
# `zimage serve`: installs Debian's chromium + chromium-driver and selenium
# (PyPI) if missing, builds ./zimage if needed, starts the server on a free
# loopback port with the tiny fixture model, runs test_web.py against it,
# then stops the server with SIGTERM and checks it exits cleanly (status 0).
#
# Env: ZIMAGE_BIN (default build/cpu/zimage), ZIMAGE_FIXTURES (tests/fixtures),
#      BROWSER_TEST_KEEP_LOG=1 to print the server log on success too.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "browser test: installing chromium and chromium-driver (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
PY=${PYTHON:-python3}
if ! $PY -c "import selenium" >/dev/null 2>&1; then
    echo "browser test: installing selenium (pip)"
    $PY -m pip install -q selenium || $PY -m pip install -q --break-system-packages selenium
fi

BIN=${ZIMAGE_BIN:-build/cpu/zimage}
if [ ! -x "$BIN" ]; then make cpu >/dev/null; BIN=build/cpu/zimage; fi
FIX=${ZIMAGE_FIXTURES:-tests/fixtures}
MODEL="$FIX/models/tiny-a"
[ -d "$MODEL" ] || { echo "browser test: $MODEL missing"; exit 1; }

LOG=$(mktemp /tmp/zimage-browser.XXXXXX)
OMP_NUM_THREADS=2 "$BIN" serve -m "$MODEL" --device cpu --host 127.0.0.1 --port 0 \
    --min-size 32 --max-size 256 --default-size 64 --default-steps 2 --model-name tiny-a -v \
    >"$LOG" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

URL=""
for _ in $(seq 1 300); do
    URL=$(sed -n 's/^zimage: serving .* on \(http:[^ ]*\) .*/\1/p' "$LOG" | head -1)
    [ -n "$URL" ] && break
    kill -0 "$PID" 2>/dev/null || { echo "browser test: server died"; cat "$LOG"; exit 1; }
    sleep 0.1
done
[ -n "$URL" ] || { echo "browser test: server did not start"; cat "$LOG"; exit 1; }
echo "browser test: server at $URL"

rc=0
$PY tests/browser/test_web.py "$URL" || rc=$?

# graceful stop: SIGTERM -> exit status 0
kill -TERM "$PID"
src=0
for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then echo "browser test: server ignored SIGTERM"; src=1; kill -9 "$PID"; fi
wait "$PID" || src=$?
trap - EXIT
if [ "$src" -ne 0 ]; then echo "browser test: server exited with status $src after SIGTERM"; rc=1; fi
if [ "$rc" -ne 0 ] || [ -n "${BROWSER_TEST_KEEP_LOG:-}" ]; then echo "--- server log"; cat "$LOG"; fi
rm -f "$LOG"
if [ "$rc" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit "$rc"
