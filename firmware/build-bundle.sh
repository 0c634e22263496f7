#!/usr/bin/env bash
# build-bundle.sh [VERSION] writes the signed gateway firmware bundles, one per
# architecture, into dist/:
#
#   dist/fieldgate-firmware-VERSION-linux-amd64.tar.gz
#   dist/fieldgate-firmware-VERSION-linux-arm64.tar.gz
#   dist/fieldgate-firmware-VERSION-linux-armv7.tar.gz
#
# Each holds, under one top directory: the static `fieldgate` binary for its
# architecture (supervisor, boot selector, updater and the collectors' log
# driver), the collector image archives from dist/images/ (run `make images`
# first) in images/, the systemd unit fieldgate.service, an example
# gateway.yaml, install.sh, and manifest.json — product, version,
# architecture, the sha256 of every file including install.sh, the images
# pinned by digest — with its minisign signature manifest.json.minisig.
#
# Environment:
#   FIRMWARE_KEY                minisign secret key to sign with (from
#                               `fieldgate bundle keygen` or `minisign -G`);
#                               its public key is FIRMWARE_KEY with .key
#                               replaced by .pub, used to check the result.
#                               Unset: a throw-away development key is made
#                               in dist/dev-key/ (said loudly).
#   FIRMWARE_KEY_PASSWORD_FILE  the key's password, if it is encrypted.
#   FIRMWARE_VERSION            the manifest's monotonic version (numbers and
#                               dots). Default: VERSION when it is one, else
#                               0.0.<number of commits>.
#   PLATFORMS                   default "linux/amd64 linux/arm64 linux/arm/v7".
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${1:-${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}"
IMAGES="${IMAGES:-dist/images}"
OUT="${OUT:-dist}"
BUILD="${BUILD_DIR:-bin/bundle}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64 linux/arm/v7}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

if [ -z "${FIRMWARE_VERSION:-}" ]; then
  if [[ "${VERSION#v}" =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
    FIRMWARE_VERSION="${VERSION#v}"
  else
    FIRMWARE_VERSION="0.0.$(git rev-list --count HEAD 2>/dev/null || echo 0)"
    echo "build-bundle: VERSION $VERSION is not numeric; manifest version $FIRMWARE_VERSION (commit count; set FIRMWARE_VERSION to choose)"
  fi
fi

shopt -s nullglob
images=("$IMAGES"/*.tar)
if [ "${#images[@]}" -eq 0 ]; then
  echo "build-bundle: no image archives in $IMAGES (run make images)" >&2
  exit 1
fi

mkdir -p "$BUILD" "$OUT"
# The host's own fieldgate writes the manifests and signs them.
HOSTFG="$BUILD/fieldgate-host"
CGO_ENABLED=0 go build -trimpath -o "$HOSTFG" ./gateway/cmd/fieldgate

KEY="${FIRMWARE_KEY:-}"
PASSWORD_ARGS=()
[ -n "${FIRMWARE_KEY_PASSWORD_FILE:-}" ] && PASSWORD_ARGS=(--password-file "$FIRMWARE_KEY_PASSWORD_FILE")
if [ -z "$KEY" ]; then
  KEY="$OUT/dev-key/fieldgate-dev.key"
  PUB="$OUT/dev-key/fieldgate-dev.pub"
  if [ ! -e "$KEY" ]; then
    mkdir -p "$OUT/dev-key"
    "$HOSTFG" bundle keygen --key "$KEY" --pub "$PUB"
  fi
  cat >&2 <<EOF
build-bundle: ##############################################################
build-bundle: ## FIRMWARE_KEY is not set: signing with a THROW-AWAY
build-bundle: ## DEVELOPMENT KEY $KEY.
build-bundle: ## Gateways accept these bundles only if they trust
build-bundle: ## $PUB in /etc/fieldgate/keys.
build-bundle: ## Never ship them; sign releases with
build-bundle: ##   make firmware FIRMWARE_KEY=/path/to/release.key
build-bundle: ##############################################################
EOF
else
  PUB="${KEY%.key}.pub"
fi
if [ ! -r "$PUB" ]; then
  echo "build-bundle: public key $PUB not found next to $KEY: it is needed to check the bundles" >&2
  exit 1
fi
KEYS_CHECK="$BUILD/keys-check"
rm -rf "$KEYS_CHECK" && mkdir -p "$KEYS_CHECK" && cp "$PUB" "$KEYS_CHECK/"

for p in $PLATFORMS; do
  IFS=/ read -r os arch variant <<<"$p"
  name="fieldgate-firmware-$VERSION-$os-$arch$variant"
  stage="$BUILD/$name"
  rm -rf "$stage"
  mkdir -p "$stage/images"
  GOARM=""
  [ -n "$variant" ] && GOARM="${variant#v}"
  CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$GOARM" \
    go build -trimpath -ldflags "-s -w -X main.version=$FIRMWARE_VERSION" -o "$stage/fieldgate" ./gateway/cmd/fieldgate
  install -m 0644 firmware/bundle/fieldgate.service firmware/bundle/gateway.yaml "$stage/"
  install -m 0755 firmware/bundle/install.sh "$stage/"
  install -m 0644 "${images[@]}" "$stage/images/"
  "$HOSTFG" bundle manifest --version "$FIRMWARE_VERSION" --release "$VERSION" --arch "$p" "$stage" >/dev/null
  "$HOSTFG" bundle sign --key "$KEY" "${PASSWORD_ARGS[@]}" "$stage/manifest.json" >/dev/null
  "$HOSTFG" bundle verify --keys "$KEYS_CHECK" --arch "$p" "$stage" >/dev/null
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$BUILD" -czf "$OUT/$name.tar.gz" "$name"
  echo "$OUT/$name.tar.gz: fieldgate $FIRMWARE_VERSION for $p, $(stat -c %s "$OUT/$name.tar.gz") bytes, signed by $(basename "$PUB")"
done
