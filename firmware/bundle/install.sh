#!/bin/sh
# install.sh installs this fieldgate firmware bundle on a Debian 12 gateway
# with containerd (Debian's package) — the first installation, or an update.
#
#   tar xzf fieldgate-firmware-VERSION-linux-ARCH.tar.gz
#   sudo ./fieldgate-firmware-VERSION-linux-ARCH/install.sh
#
# The bundle is verified and installed by `fieldgate update` (the installed
# fieldgate when there is one, else this bundle's own): its signature by a
# key in /etc/fieldgate/keys, every file's hash, its version. Then this
# script installs the systemd unit and the `fieldgate` command, and enables
# the service. On a gateway already running fieldgate, `fieldgate update
# BUNDLE.tar.gz` alone does the same without running anything from the
# bundle before it is verified.
#
# ROOT=/some/dir installs into another root (an image being prepared, a
# test): nothing is checked on the host and systemctl is not called.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT="${ROOT:-}"
CONFIG="$ROOT/etc/fieldgate/gateway.yaml"
KEYS="$ROOT/etc/fieldgate/keys"
SLOTS=/var/lib/fieldgate/slots

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

if [ -z "$ROOT" ]; then
  [ "$(id -u)" = 0 ] || die "run me as root"
  command -v containerd >/dev/null 2>&1 || die "containerd is missing: apt-get install containerd"
  command -v runc >/dev/null 2>&1 || die "runc is missing: apt-get install runc"
fi
set -- "$KEYS"/*.pub
[ -e "$1" ] || die "no trusted key in $KEYS: copy your release public key there first, e.g. install -D -m 0644 release.pub $KEYS/release.pub"

new_config=
if [ ! -e "$CONFIG" ]; then
  install -D -m 0644 "$HERE/gateway.yaml" "$CONFIG"
  new_config=1
  say "wrote the example $CONFIG: set mqtt.broker and the collectors before starting"
fi

FG="$ROOT$SLOTS/current/fieldgate"
[ -x "$FG" ] || FG="$HERE/fieldgate"
"$FG" update --config "$CONFIG" "$HERE"

# The unit and the command, from the verified copy in the active slot.
install -D -m 0644 "$ROOT$SLOTS/current/fieldgate.service" "$ROOT/lib/systemd/system/fieldgate.service"
mkdir -p "$ROOT/usr/local/bin"
ln -sfn "$SLOTS/current/fieldgate" "$ROOT/usr/local/bin/fieldgate"

if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  if systemctl is-active --quiet fieldgate.service; then
    say "the running fieldgate restarts on the new version by itself; follow it with: fieldgate update --status"
  elif [ -n "$new_config" ]; then
    systemctl enable fieldgate.service
    say "enabled fieldgate.service; after editing $CONFIG start it with: systemctl start fieldgate"
  else
    systemctl enable --now fieldgate.service
    say "fieldgate.service enabled and started: fieldgate status"
  fi
fi
