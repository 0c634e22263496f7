#!/usr/bin/env bash
# build-images.sh cross-compiles the collectors as static binaries for
# linux/amd64, linux/arm64 and linux/arm/v7 and packs each into a
# multi-platform OCI image archive under dist/images/ (see firmware/ociimage).
# It also builds the lab bench's images (compose/) into dist/bench-images/:
# devsim (the simulators, static, three platforms) and a mosquitto broker made
# from this machine's Debian mosquitto — the binary, the shared libraries ldd
# lists and a minimal config — for this machine's platform. No registry is
# used. The bench images stay out of dist/images/, which the firmware bundle
# and the demo import into the gateway's containerd.
#
#   firmware/build-images.sh                 # version from git describe
#   VERSION=1.4.0 firmware/build-images.sh   # explicit version
#   COLLECTORS=modbus BENCH=0 firmware/build-images.sh
#   PLATFORMS=linux/amd64 OUT=/tmp/i BENCH_OUT=/tmp/i firmware/build-images.sh   # one platform (tests)
#
# Output: dist/images/collector-modbus.tar, dist/images/collector-opcua.tar,
# tagged fieldgate/collector-<name>:$VERSION and :latest;
# dist/bench-images/devsim.tar (fieldgate/devsim) and
# dist/bench-images/mosquitto.tar (fieldgate/mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
COLLECTORS="${COLLECTORS:-modbus opcua}"
BENCH="${BENCH:-1}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64 linux/arm/v7}"
OUT="${OUT:-dist/images}"
BENCH_OUT="${BENCH_OUT:-dist/bench-images}"
BUILD="${BUILD_DIR:-bin/images}"
# Reproducible timestamps: the commit time, so equal sources give equal digests.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

go build -o "$BUILD/mkimage" ./firmware/cmd/mkimage

# static_image NAME PKG BINARY OUT: a static Go binary for every platform.
static_image() {
  local name="$1" pkg="$2" binary="$3" out="$4" args=() p os arch variant dir GOARM
  for p in $PLATFORMS; do
    IFS=/ read -r os arch variant <<<"$p"
    dir="$BUILD/${os}_${arch}${variant:+_$variant}"
    GOARM=""
    [ -n "$variant" ] && GOARM="${variant#v}"
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$GOARM" \
      go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$dir/$binary" "$pkg"
    args+=(--binary "$p=$dir/$binary")
  done
  "$BUILD/mkimage" --name "$name" --version "$VERSION" "${args[@]}" --out "$out"
}

for c in $COLLECTORS; do
  static_image "fieldgate/collector-$c" "./collectors/cmd/$c-collector" "$c-collector" "$OUT/collector-$c.tar"
done

[ "$BENCH" = 1 ] || exit 0

static_image fieldgate/devsim ./devices/cmd/devsim devsim "$BENCH_OUT/devsim.tar"

# The broker: Debian's mosquitto as it is installed here, for this platform.
mosquitto="$(command -v mosquitto || true)"
if [ -z "$mosquitto" ]; then
  echo "build-images: mosquitto is not installed (run scripts/setup-host.sh); no broker image" >&2
  exit 1
fi
case "$(dpkg --print-architecture)" in
  amd64) platform=linux/amd64 ;;
  arm64) platform=linux/arm64 ;;
  armhf) platform=linux/arm/v7 ;;
  *) echo "build-images: no broker image for architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac
conf="$BUILD/mosquitto.conf"
cat >"$conf" <<'CONF'
# Lab-bench broker: anonymous MQTT on 1883, nothing kept on disk.
listener 1883
allow_anonymous true
persistence false
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
CONF
files=(--file "$conf=/mosquitto/config/mosquitto.conf")
# Every library ldd resolves ("name => /path (addr)"), and the loader
# ("/lib64/ld-linux-x86-64.so.2 (addr)"), at the path the binary asks for.
while read -r lib; do
  files+=(--file "$(readlink -f "$lib")=$lib")
done < <(ldd "$mosquitto" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
"$BUILD/mkimage" --name fieldgate/mosquitto --version "$VERSION" \
  --binary "$platform=$mosquitto" --entrypoint /usr/sbin/mosquitto \
  --cmd -c --cmd /mosquitto/config/mosquitto.conf --user 1883:1883 \
  "${files[@]}" --out "$BENCH_OUT/mosquitto.tar"
