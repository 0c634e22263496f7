#!/usr/bin/env bash
# build-images.sh cross-compiles the collectors as static binaries for
# linux/amd64, linux/arm64 and linux/arm/v7 and packs each into a
# multi-platform OCI image archive under dist/images/ (see firmware/ociimage).
#
#   firmware/build-images.sh                 # version from git describe
#   VERSION=1.4.0 firmware/build-images.sh   # explicit version
#   COLLECTORS=modbus firmware/build-images.sh
#
# Output: dist/images/collector-modbus.tar, dist/images/collector-opcua.tar,
# tagged fieldgate/collector-<name>:$VERSION and :latest.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
COLLECTORS="${COLLECTORS:-modbus opcua}"
PLATFORMS="linux/amd64 linux/arm64 linux/arm/v7"
OUT="${OUT:-dist/images}"
BUILD="${BUILD_DIR:-bin/images}"
# Reproducible timestamps: the commit time, so equal sources give equal digests.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

go build -o "$BUILD/mkimage" ./firmware/cmd/mkimage
for c in $COLLECTORS; do
  args=()
  for p in $PLATFORMS; do
    IFS=/ read -r os arch variant <<<"$p"
    dir="$BUILD/${os}_${arch}${variant:+_$variant}"
    GOARM=""
    [ -n "$variant" ] && GOARM="${variant#v}"
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$GOARM" \
      go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$dir/$c-collector" "./collectors/cmd/$c-collector"
    args+=(--binary "$p=$dir/$c-collector")
  done
  "$BUILD/mkimage" --name "fieldgate/collector-$c" --version "$VERSION" "${args[@]}" --out "$OUT/collector-$c.tar"
done
