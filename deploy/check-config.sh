#!/usr/bin/env bash
# Checks the cluster's configuration files without starting anything:
#   - prometheus.yml            promtool check config (it loads alerts.yml too)
#   - alerts.yml                promtool check rules, and its unit tests in alerts.test.yml
#   - node1.toml … node3.toml   ferryd --print-config (ferryd parses and validates them), and
#                               secrets/node1.toml … (with the users) once make-secrets.sh ran
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
ferryd=${CARGO_TARGET_DIR:-$repo/target}/release/ferryd
configs=(node1.toml node2.toml node3.toml node-discovery.toml)
[ -f secrets/node1.toml ] && configs+=(secrets/node1.toml secrets/node2.toml secrets/node3.toml)
[ -f secrets/node-discovery.toml ] && configs+=(secrets/node-discovery.toml)
for config in "${configs[@]}"; do
  echo "== ferryd --config $config --print-config"
  if [ -x "$ferryd" ]; then
    env -u FERRYD_DATA_DIR -u FERRYD_TCP -u FERRYD_METRICS -u FERRYD_CONFIG \
      "$ferryd" --config "$config" --print-config >/dev/null
  else
    docker run --rm --network none -v "$deploy/$config:/etc/ferry/ferryd.toml:ro" \
      ferry/ferryd:local --config /etc/ferry/ferryd.toml --print-config >/dev/null
  fi
  echo "  ok"
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
