#!/usr/bin/env bash
# `make demo`: start Longform in embedded mode (SQLite, in-process worker, the local
# SmolLM2 model), submit a real ~600-word `write` job over REST, print the piece and its scores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export LONGFORM_DATA_DIR="${LONGFORM_DATA_DIR:-$PWD/var/demo}"
mkdir -p "$LONGFORM_DATA_DIR"
unset LLM_ENDPOINTS BROKER_URL

PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LONGFORM_URL="http://127.0.0.1:$PORT"

"$BIN/longform" db upgrade
"$BIN/longform" serve --port "$PORT" >"$LONGFORM_DATA_DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT

for _ in $(seq 100); do
  curl -fsS "$LONGFORM_URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LONGFORM_DATA_DIR/serve.log"; exit 1; }
  sleep 0.2
done

echo "Longform is up at $LONGFORM_URL (embedded model: SmolLM2-135M-Instruct, on the CPU)."
"$BIN/longform" write "Write an article of about 600 words on why people keep gardens in cities." --words 600
