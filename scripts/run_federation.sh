#!/usr/bin/env bash
# Run a real federation on loopback: one `fedstyle server` process and one `fedstyle client`
# process per artist, each with only its own key bundle, over gRPC + mutual TLS.
#
#   scripts/run_federation.sh [N_ARTISTS] [ROUNDS] [SECURE] [EPSILON]   (defaults: 3 2 secagg 8; EPSILON inf = no DP)
#
# Everything goes into a fresh temporary directory (printed, and kept for its logs, reports and index:
# remove it when done); synthetic images, fresh keys. FEDSTYLE names the command (default: this
# checkout's .venv/bin/fedstyle from `make setup`, else `fedstyle` on PATH).
set -euo pipefail

N="${1:-3}"; ROUNDS="${2:-2}"; SECURE="${3:-secagg}"; EPSILON="${4:-8}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${FEDSTYLE:-}" ]; then
  if [ -x "$REPO/.venv/bin/fedstyle" ]; then FEDSTYLE="$REPO/.venv/bin/fedstyle"; else FEDSTYLE=fedstyle; fi
fi
command -v "$FEDSTYLE" >/dev/null || { echo "no fedstyle command: run \`make setup\` first or set FEDSTYLE" >&2; exit 127; }
WORK="$(mktemp -d -t fedstyle-federation.XXXXXX)"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
export FEDSTYLE_CACHE="${FEDSTYLE_CACHE:-$WORK/cache}"
echo "work dir: $WORK (port $PORT)"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

"$FEDSTYLE" synth --out "$WORK/data" --artists "$N" --per-artist 6 >/dev/null
"$FEDSTYLE" keys init --out "$WORK/keys" --count "$N" >/dev/null
"$FEDSTYLE" keys bundle --keys "$WORK/keys" --server --out "$WORK/server/keys" >/dev/null

cat > "$WORK/server/server.toml" <<TOML
[server]
keys = "keys"
state_db = "state.sqlite"
listen = "127.0.0.1:$PORT"
index = "index"
reports_dir = "reports"

[federation]
rounds = $ROUNDS
secure_mode = "$SECURE"
quorum = $N
phase_seconds = 120
TOML
if [ "$EPSILON" != "inf" ]; then
  echo "epsilon = $EPSILON" >> "$WORK/server/server.toml"   # DP-SGD plan; no set-up round under DP
else
  echo "refreshes = [$(seq -s, 0 $((ROUNDS - 1)))]" >> "$WORK/server/server.toml"
fi
"$FEDSTYLE" server --config "$WORK/server/server.toml" --log-format json > "$WORK/server/log.jsonl" 2>&1 &
server_pid=$!; pids+=("$server_pid")

for i in $(seq 0 $((N - 1))); do
  artist="$(printf 'artist_%02d' "$i")"
  dir="$WORK/$artist"
  mkdir -p "$dir/data"
  "$FEDSTYLE" keys bundle --keys "$WORK/keys" --artist "$artist" --out "$dir/keys" >/dev/null
  ln -s "$WORK/data/$artist" "$dir/data/$artist"
  cat > "$dir/client.toml" <<TOML
[client]
keys = "keys"
data = "data"
server = "127.0.0.1:$PORT"
state_dir = "state"
# synthetic artists: their lifetime ledger (every run's epsilon per artwork) stays with this trial
lifetime_ledger = "lifetime-ledger.sqlite"
TOML
  "$FEDSTYLE" client --config "$dir/client.toml" --log-format json > "$dir/log.jsonl" 2>&1 &
  pids+=("$!")
done

status=0
wait "$server_pid" || status=$?
for pid in "${pids[@]:1}"; do wait "$pid" || status=$?; done
echo "server log: $WORK/server/log.jsonl"
if [ "$EPSILON" != "inf" ]; then
  # identities from the key set, not from the manifest in the server's folder
  "$FEDSTYLE" audit "$WORK/server/reports" --keys "$WORK/keys" || status=$?
fi
echo "outputs kept in $WORK (remove it with: rm -rf $WORK)"
exit "$status"
