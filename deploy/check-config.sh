#!/usr/bin/env bash
# Checks the cluster's configuration files without starting anything:
#   - prometheus.yml            promtool check config (it loads alerts.yml too)
#   - alerts.yml                promtool check rules, and its unit tests in alerts.test.yml
#   - node1.toml … node3.toml   ferryd --check-config in the node image (everything a start
#                               would refuse), and secrets/node1.toml … (with the users) once
#                               make-secrets.sh ran
#   - node-discovery.toml       likewise (the nodes of docker-compose.discovery.yml)
#   - docker-compose.yml        docker compose config (when Compose is installed), also with
#                               docker-compose.discovery.yml on top
# promtool and ferryd are this machine's if installed (/usr/bin/promtool from Debian's
# prometheus package; target/release/ferryd), else the ones in the images
# deploy/build-images.sh builds. cluster-tests/tests/deploy_files.rs checks the same in
# `cargo test`.
set -euo pipefail
deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$deploy")
cd "$deploy"

if command -v promtool >/dev/null 2>&1; then
  promtool=(promtool)
elif docker image inspect ferry/prometheus:local >/dev/null 2>&1; then
  promtool=(docker run --rm --network none -v "$deploy:/cfg:ro" -w /cfg --entrypoint /usr/bin/promtool ferry/prometheus:local)
else
  echo "check-config.sh: no promtool: install Debian's prometheus package or run deploy/build-images.sh" >&2
  exit 1
fi
echo "== promtool check config prometheus.yml"
"${promtool[@]}" check config prometheus.yml
echo "== promtool check rules alerts.yml"
"${promtool[@]}" check rules alerts.yml
echo "== promtool test rules alerts.test.yml"
"${promtool[@]}" test rules alerts.test.yml

# The node configs, and the ones make-secrets.sh made from them (with the users) if it ran.
# `ferryd --check-config` refuses whatever ferryd would refuse at start (addresses, TLS files,
# users, peers, the data directory) and exits 78 then. The configs name the container's paths
# (/data, /run/secrets/peer-password), so the full check runs in the node image, with the
# mounts and environment the compose file gives a node; without the image, this machine's
# ferryd can only parse them (--print-config), and says so.
ferryd_image=${FERRYD_IMAGE:-ferry/ferryd:local}
ferryd=${CARGO_TARGET_DIR:-$repo/target}/release/ferryd
configs=(node1.toml node2.toml node3.toml node-discovery.toml)
[ -f secrets/node1.toml ] && configs+=(secrets/node1.toml secrets/node2.toml secrets/node3.toml)
[ -f secrets/node-discovery.toml ] && configs+=(secrets/node-discovery.toml)
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-check-config.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Before make-secrets.sh ran there is no password yet: any non-empty file stands in for it.
peer_password=$deploy/secrets/peer.password
if [ ! -s "$peer_password" ]; then
  peer_password=$work/peer.password
  echo placeholder >"$peer_password"
fi
for config in "${configs[@]}"; do
  if docker image inspect "$ferryd_image" >/dev/null 2>&1; then
    echo "== ferryd --config $config --check-config (in $ferryd_image)"
    docker run --rm --network none \
      -e FERRYD_DATA_DIR=/data -e FERRYD_TCP=0.0.0.0:7300 -e FERRYD_METRICS=0.0.0.0:7301 \
      -v "$deploy/$config:/etc/ferry/ferryd.toml:ro" \
      -v "$peer_password:/run/secrets/peer-password:ro" \
      "$ferryd_image" --config /etc/ferry/ferryd.toml --check-config
  elif [ -x "$ferryd" ]; then
    echo "== ferryd --config $config --print-config (parsed only: run deploy/build-images.sh for the full check)"
    env -u FERRYD_DATA_DIR -u FERRYD_TCP -u FERRYD_METRICS -u FERRYD_CONFIG \
      "$ferryd" --config "$config" --print-config >/dev/null
    echo "  ok"
  else
    echo "check-config.sh: no $ferryd_image image and no $ferryd: run deploy/build-images.sh" >&2
    exit 1
  fi
done

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=()
fi
if [ ${#compose[@]} -gt 0 ]; then
  echo "== ${compose[*]} config"
  "${compose[@]}" -f docker-compose.yml config --quiet
  echo "  ok"
  echo "== ${compose[*]} config (with docker-compose.discovery.yml)"
  "${compose[@]}" -f docker-compose.yml -f docker-compose.discovery.yml --profile later config --quiet
  echo "  ok"
fi
