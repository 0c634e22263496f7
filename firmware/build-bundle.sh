#!/usr/bin/env bash
# build-bundle.sh VERSION writes the flashable gateway bundles, one per
# architecture, into dist/:
#
#   dist/fieldgate-firmware-VERSION-linux-amd64.tar.gz
#   dist/fieldgate-firmware-VERSION-linux-arm64.tar.gz
#   dist/fieldgate-firmware-VERSION-linux-armv7.tar.gz
#
# Each holds the static `fieldgate` supervisor for its architecture (which is
# also the collectors' containerd log driver), the collector image archives
# from dist/images/ (multi-platform; run `make images` first), the systemd
# unit, an example /etc/fieldgate/gateway.yaml, install.sh and SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${1:-${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}"
IMAGES="${IMAGES:-dist/images}"
OUT="${OUT:-dist}"
BUILD="${BUILD_DIR:-bin/bundle}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

shopt -s nullglob
images=("$IMAGES"/*.tar)
if [ "${#images[@]}" -eq 0 ]; then
  echo "build-bundle: no image archives in $IMAGES (run make images)" >&2
  exit 1
fi

for p in linux/amd64 linux/arm64 linux/arm/v7; do
  IFS=/ read -r os arch variant <<<"$p"
  name="fieldgate-firmware-$VERSION-$os-$arch$variant"
  stage="$BUILD/$name"
  rm -rf "$stage"
  mkdir -p "$stage/usr/local/bin" "$stage/lib/systemd/system" "$stage/etc/fieldgate" "$stage/var/lib/fieldgate/images"
  GOARM=""
  [ -n "$variant" ] && GOARM="${variant#v}"
  CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$GOARM" \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$stage/usr/local/bin/fieldgate" ./gateway/cmd/fieldgate
  cp firmware/bundle/fieldgate.service "$stage/lib/systemd/system/"
  cp firmware/bundle/gateway.yaml "$stage/etc/fieldgate/"
  cp firmware/bundle/install.sh "$stage/"
  cp "${images[@]}" "$stage/var/lib/fieldgate/images/"
  (cd "$stage" && find . -type f ! -name SHA256SUMS ! -name install.sh -printf '%P\n' | sort | xargs sha256sum > SHA256SUMS)
  mkdir -p "$OUT"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$BUILD" -czf "$OUT/$name.tar.gz" "$name"
  echo "$OUT/$name.tar.gz: $(stat -c %s "$OUT/$name.tar.gz") bytes"
done
