#!/usr/bin/env bash
# demo.sh — the one-command demo (`make demo`): a private containerd, a local
# mosquitto, simulated devices (two Eastron meters on an RS-485 line made of a
# socat pty pair, a drive on Modbus TCP, an OPC UA server) and the fieldgate
# supervisor running the collector images as containers.
#
# On a terminal it ends in `fieldgate watch`, the live view of every tag;
# q or Ctrl-C there stops everything the demo started. With DEMO_SECONDS set,
# or when standard input or output is not a terminal (CI, scripts), it prints
# the MQTT traffic for DEMO_SECONDS (default 30) and the status table instead,
# checks that every collector delivered data, then stops it all.
# Needs root (containerd); expects `make build images` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${DEMO_DIR:-/tmp/fieldgate-demo}
SECONDS_TO_RUN=${DEMO_SECONDS:-30}
LIVE=0
if [ -z "${DEMO_SECONDS:-}" ] && [ -t 0 ] && [ -t 1 ]; then LIVE=1; fi
MQTT_PORT=${DEMO_MQTT_PORT:-18830}
HTTP_PORT=${DEMO_HTTP_PORT:-19273}
MODBUS_TCP_PORT=${DEMO_MODBUS_TCP_PORT:-15020}
OPCUA_PORT=${DEMO_OPCUA_PORT:-14840}
NAMESPACE=fieldgate-demo
BIN=$ROOT/bin

[ "$(id -u)" = 0 ] || { echo "demo: containerd needs root" >&2; exit 1; }
for f in fieldgate devsim; do
  [ -x "$BIN/$f" ] || { echo "demo: $BIN/$f missing; run make build" >&2; exit 1; }
done
ls "$ROOT"/dist/images/*.tar >/dev/null 2>&1 || { echo "demo: no images in dist/images; run make images" >&2; exit 1; }

pids=()
cleanup() {
  set +e
  trap - INT TERM
  echo "demo: stopping"
  # fieldgate stops and deletes the collector containers (--stop-collectors);
  # their shims exit with them.
  [ -n "${FG_PID:-}" ] && kill -TERM "$FG_PID" 2>/dev/null && wait "$FG_PID" 2>/dev/null
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  # Anything still running from the demo's directory (a shim whose
  # container could not be deleted) is the demo's own: stop it by pid.
  left=$(pgrep -f -- "$DIR/" || true)
  if [ -n "$left" ]; then
    echo "demo: stopping leftovers: $(echo $left)"
    kill -KILL $left 2>/dev/null
  fi
  grep " $DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  # runc keeps its state under /run/containerd/runc/<namespace> whatever
  # containerd's state dir: drop the namespace's directory once it is empty.
  rmdir "/run/containerd/runc/$NAMESPACE" 2>/dev/null
  echo "demo: stopped; logs and config in $DIR"
}
# Ctrl-C or TERM end the script, and EXIT cleans up once, whatever the path.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$DIR" && mkdir -p "$DIR/containerd" "$DIR/data"
echo "demo: working in $DIR"

# Private containerd: own root, state and socket.
cat >"$DIR/containerd/config.toml" <<TOML
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
TOML
containerd --config "$DIR/containerd/config.toml" >"$DIR/containerd.log" 2>&1 &
pids+=($!)

cat >"$DIR/mosquitto.conf" <<CONF
user root
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
CONF
mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &
pids+=($!)

# The RS-485 line: the collector gets ttyUSB0, the simulated meters ttySIM.
socat pty,raw,echo=0,link="$DIR/ttyUSB0" pty,raw,echo=0,link="$DIR/ttySIM" 2>"$DIR/socat.log" &
pids+=($!)

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: $what did not come up" >&2; exit 1
}
wait_for "the pty pair" test -e "$DIR/ttySIM"
"$BIN/devsim" modbus --rtu "$DIR/ttySIM" --baud 19200 --unit 1=eastron-sdm630 --unit 2=eastron-sdm120 >"$DIR/devsim-rtu.log" 2>&1 &
pids+=($!)
"$BIN/devsim" modbus --tcp "127.0.0.1:$MODBUS_TCP_PORT" --unit 1=fieldgate-demo-drive >"$DIR/devsim-tcp.log" 2>&1 &
pids+=($!)
"$BIN/devsim" opcua --port "$OPCUA_PORT" --device boiler1=eastron-sdm120 >"$DIR/devsim-opcua.log" 2>&1 &
pids+=($!)
wait_for "containerd" test -S "$DIR/containerd/containerd.sock"
wait_for "mosquitto" bash -c "exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT"

sed -e "s|@DIR@|$DIR|g" -e "s|@IMAGES@|$ROOT/dist/images|g" -e "s|@NAMESPACE@|$NAMESPACE|g" \
    -e "s|@MQTT_PORT@|$MQTT_PORT|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
    -e "s|@MODBUS_TCP_PORT@|$MODBUS_TCP_PORT|g" -e "s|@OPCUA_PORT@|$OPCUA_PORT|g" \
    scripts/demo/gateway.yaml.in >"$DIR/gateway.yaml"
"$BIN/fieldgate" validate --config "$DIR/gateway.yaml"

"$BIN/fieldgate" run --config "$DIR/gateway.yaml" --stop-collectors >"$DIR/fieldgate.log" 2>&1 &
FG_PID=$!
wait_for "fieldgate" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT"

if [ "$LIVE" = 1 ]; then
  echo "demo: fieldgate is up (http://127.0.0.1:$HTTP_PORT/status); starting the live view — q or Ctrl-C stops the demo"
  # The view's own Ctrl-C (the terminal is in raw mode) quits it; the EXIT
  # trap then stops everything else.
  "$BIN/fieldgate" watch --config "$DIR/gateway.yaml" --addr "127.0.0.1:$HTTP_PORT" || true
  exit 0
fi

mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -v -t 'fieldgate/#' -W "$((SECONDS_TO_RUN + 15))" >"$DIR/mqtt.log" 2>/dev/null &
SUB_PID=$!
pids+=($SUB_PID)
echo "demo: fieldgate is up (http://127.0.0.1:$HTTP_PORT/status); MQTT traffic for ${SECONDS_TO_RUN}s:"
tail -n +1 -f "$DIR/mqtt.log" | cut -c1-200 &
TAIL_PID=$!
sleep "$SECONDS_TO_RUN"
kill "$TAIL_PID" 2>/dev/null || true
echo
"$BIN/fieldgate" status --addr "127.0.0.1:$HTTP_PORT" || true
echo
"$BIN/fieldgate" watch --config "$DIR/gateway.yaml" --addr "127.0.0.1:$HTTP_PORT" --once 3s || true
echo
data=$(grep -c '/data/' "$DIR/mqtt.log" || true)
echo "demo: $data data messages received; logs and config in $DIR"
for c in modbus-line3 modbus-cell7 opcua-boiler; do
  grep -q "/data/$c/" "$DIR/mqtt.log" || { echo "demo: no data from $c — see $DIR/fieldgate.log and 'bin/fieldgate logs $c --config $DIR/gateway.yaml'" >&2; exit 1; }
done
