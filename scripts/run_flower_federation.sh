#!/usr/bin/env bash
# The federation as a Flower app on loopback: a `flower-superlink` (TLS with the key set's CA and
# server certificate, SuperNode authentication on), one `flower-supernode` per artist (its own
# SuperNode key, registered with `flwr supernode register`, and its own `client.toml` + key
# bundle), then `flwr run` of the app with the server's `server.toml`.  Needs `pip install -e ".[flower]"`.
#
#   scripts/run_flower_federation.sh [N_ARTISTS] [ROUNDS] [EPSILON] [SECURE_MODE]
#   (defaults: 3 2 8 none; SECURE_MODE one of none, ckks, secagg, secagg+; a finite EPSILON: the walk-through
#   ends with the audit of the epsilon reports)
#
# Everything goes into a fresh temporary directory (printed; or $WORK): synthetic images, fresh keys.
# It ends with `fedstyle audit` of the signed epsilon reports the ServerApp stored.
set -euo pipefail

N="${1:-3}"; ROUNDS="${2:-2}"; EPSILON="${3:-8}"; SECURE="${4:-none}"
BIN="${BIN:-$(dirname "$(command -v fedstyle)")}"
WORK="${WORK:-$(mktemp -d -t fedstyle-flower.XXXXXX)}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
export PATH="$BIN:$PATH"
export FEDSTYLE_CACHE="${FEDSTYLE_CACHE:-$WORK/cache}" FLWR_HOME="$WORK/flwr-home" OMP_NUM_THREADS=1
echo "work dir: $WORK (SuperLink on 127.0.0.1:$PORT)"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# 1. the federation's machines, as for `fedstyle server/client`: keys, server.toml, one client.toml per artist
"$BIN/fedstyle" synth --out "$WORK/data" --artists "$N" --per-artist 6 >/dev/null
"$BIN/fedstyle" keys init --out "$WORK/keys" --count "$N" >/dev/null
"$BIN/python" - "$WORK" "$ROUNDS" "$EPSILON" "$N" "$SECURE" <<'PY'
import sys
from pathlib import Path
from fedstyle_secure.transport.loopback import artist_folders
from fedstyle_secure.transport.processes import federation_tables, write_machine_configs

work, rounds, epsilon, n = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
secure = sys.argv[5]
federation, server, client = federation_tables(rounds, secure, epsilon, n, quorum=n, phase_seconds=300)
write_machine_configs(
    work, work / "keys", artist_folders(work / "data", work), federation=federation, server=server,
    client={**client, "min_training_artworks": 1},
)
PY

# 2. the SuperLink: TLS with the project's CA and server certificate; only registered SuperNodes may join
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedstyle"

[superlink.fedstyle]
address = "127.0.0.1:$PORT"
root-certificates = "$WORK/keys/ca.crt"
TOML
"$BIN/flower-superlink" --ssl-ca-certfile "$WORK/keys/ca.crt" --ssl-certfile "$WORK/keys/server.crt" \
  --ssl-keyfile "$WORK/keys/server.key" --enable-supernode-auth --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$PORT" --database "$WORK/superlink.sqlite" > "$WORK/superlink.log" 2>&1 &
pids+=("$!")

# 3. one SuperNode per artist: its own authentication key (EC P-384, OpenSSH format), registered first
for i in $(seq 0 $((N - 1))); do
  artist="$(printf 'artist_%02d' "$i")"
  "$BIN/python" -m fedstyle_secure.flower.node_keys "$WORK/$artist/supernode" >/dev/null
  for _ in $(seq 1 60); do
    "$BIN/flwr" supernode register "$WORK/$artist/supernode.pub" fedstyle > "$WORK/$artist/register.log" 2>&1 && break
    sleep 1
  done
  "$BIN/flower-supernode" --superlink "127.0.0.1:$PORT" --root-certificates "$WORK/keys/ca.crt" \
    --auth-supernode-private-key "$WORK/$artist/supernode" --port "$((PORT + 1 + i))" \
    --node-config "client-config=\"$WORK/$artist/client.toml\"" > "$WORK/$artist/supernode.log" 2>&1 &
  pids+=("$!")
done

# 4. the run: the app folder only names the installed components; the ServerApp reads server.toml
mkdir -p "$WORK/app"
cat > "$WORK/app/pyproject.toml" <<'TOML'
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedstyle-flower"
version = "1.0.0"
description = "fedstyle-secure's federation as a Flower app (the code is the installed fedstyle_secure.flower)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedstyle"

[tool.flwr.app.components]
serverapp = "fedstyle_secure.flower.apps:server"
clientapp = "fedstyle_secure.flower.apps:client"

[tool.flwr.app.config]
server-config = ""
TOML
echo '"""Empty: the app runs the installed fedstyle_secure.flower."""' > "$WORK/app/fedstyle_flower.py"
"$BIN/flwr" run "$WORK/app" fedstyle --stream --run-config "server-config=\"$WORK/server/server.toml\"" \
  > "$WORK/run.log" 2>&1 || { tail -50 "$WORK/run.log"; exit 1; }

# 5. the same checks as after `fedstyle server/client`: the style index and the audited epsilon reports
test -f "$WORK/server/index/index.json"
"$BIN/fedstyle" audit "$WORK/server/reports" --keys "$WORK/keys"
echo "style index: $WORK/server/index"
