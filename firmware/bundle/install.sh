#!/bin/sh
# install.sh installs an unpacked fieldgate firmware bundle into ROOT (default
# /): the supervisor binary, the systemd unit, the collector image archives
# (imported by the supervisor at start, no registry needed) and, only if none
# exists yet, the example config. Needs containerd and runc on the target.
#
#   tar xzf fieldgate-firmware-VERSION-linux-ARCH.tar.gz && cd fieldgate-firmware-* && sudo ./install.sh
set -eu
cd "$(dirname "$0")"
ROOT="${ROOT:-}"

sha256sum -c SHA256SUMS >/dev/null
install -D -m 0755 usr/local/bin/fieldgate "$ROOT/usr/local/bin/fieldgate"
install -D -m 0644 lib/systemd/system/fieldgate.service "$ROOT/lib/systemd/system/fieldgate.service"
mkdir -p "$ROOT/var/lib/fieldgate/images"
for f in var/lib/fieldgate/images/*.tar; do
  install -m 0644 "$f" "$ROOT/var/lib/fieldgate/images/"
done
if [ ! -e "$ROOT/etc/fieldgate/gateway.yaml" ]; then
  install -D -m 0644 etc/fieldgate/gateway.yaml "$ROOT/etc/fieldgate/gateway.yaml"
  echo "install: wrote the example $ROOT/etc/fieldgate/gateway.yaml — edit it before starting"
fi
if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable fieldgate.service
  echo "install: enabled fieldgate.service; start it with: systemctl restart fieldgate"
fi
