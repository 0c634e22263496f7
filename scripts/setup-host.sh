#!/usr/bin/env bash
# setup-host.sh installs, only when missing, the host packages that fieldgate's
# tests, demo and benchmarks need: the real peers (mosquitto, socat, pymodbus,
# containerd + runc, node for node-opcua), tmux for the live view's terminal
# test, mbpoll for manual checks, protoc (protobuf-compiler) for `make proto`,
# minisign for the firmware signature interop tests,
# and Debian's Docker engine and docker-compose for the lab-bench test
# (compose/benchtest runs its own private dockerd; the system one is not
# started).
# Idempotent: a second run changes nothing and takes well under a second.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

for pkg in mosquitto mosquitto-clients socat python3-pymodbus python3-serial-asyncio mbpoll containerd runc minisign nodejs npm protobuf-compiler docker.io docker-compose; do
  case "$pkg" in
    nodejs) have_cmd node && continue ;;
    npm) have_cmd npm && continue ;;
  esac
  have_pkg "$pkg" || need+=("$pkg")
done
# tmux: the terminal `fieldgate watch` is tested in.
have_pkg tmux || need+=(tmux)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: missing packages ${need[*]}; run this script as root" >&2
    exit 1
  fi
  echo "setup-host: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the host lean, except that pymodbus' serial
  # server needs python3-serial-asyncio, which we name explicitly above.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start system services; our tests run private
  # instances, so the system ones are stopped to keep ports and sockets free.
  for svc in mosquitto containerd docker.socket docker; do
    if have_cmd systemctl && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
  done
fi
