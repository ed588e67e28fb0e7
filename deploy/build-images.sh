#!/usr/bin/env bash
# Builds the images deploy/docker-compose.yml runs, from what this machine has, without a
# container registry:
#
#   ferry/ferryd:local      ferryd and ferry (a release build of this checkout) and the shared
#                           libraries they load, user `ferry` (uid 10001), data in /data
#   ferry/prometheus:local  Debian's prometheus and promtool (the `prometheus` package, installed
#                           with apt-get if missing) and the libraries they load, user nobody
#   ferry/dnsmasq:local     Debian's dnsmasq (the `dnsmasq-base` package, installed with apt-get
#                           if missing), user nobody: the SRV records of the peer-discovery
#                           cluster (deploy/docker-compose.discovery.yml)
#
# Each image is a minimal root filesystem: the binaries, what `ldd` lists for them, a few files
# under /etc. It is packed into a tarball and loaded with `docker import`. There is no shell or
# package manager in either image.
#
# Re-running is cheap: cargo's no-op build, then each tarball is packed again (seconds) and an
# image is imported only if its tarball changed; the tarball's sha256 is kept in the image's
# `org.ferry.rootfs` label.
#
# On a machine that can pull images, `docker compose build` builds the same two images from
# deploy/Dockerfile instead (see README.md, "Deploying a cluster").
#
# Usage: deploy/build-images.sh [--no-cargo]
#   --no-cargo   use the binaries already in the target directory (no `cargo build`)
# Environment: FERRYD_IMAGE (default ferry/ferryd:local), PROMETHEUS_IMAGE (default
# ferry/prometheus:local), DNSMASQ_IMAGE (default ferry/dnsmasq:local), CARGO_TARGET_DIR
# (default <repo>/target), PROMETHEUS_BIN (default /usr/bin/prometheus).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ferryd_image=${FERRYD_IMAGE:-ferry/ferryd:local}
prometheus_image=${PROMETHEUS_IMAGE:-ferry/prometheus:local}
prometheus_bin=${PROMETHEUS_BIN:-/usr/bin/prometheus}
dnsmasq_image=${DNSMASQ_IMAGE:-ferry/dnsmasq:local}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac

cargo_build=1
for arg in "$@"; do
  case "$arg" in
    --no-cargo) cargo_build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'build-images.sh: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
command -v ldd >/dev/null || die "ldd is missing (package libc-bin)"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Copies an executable to DEST inside ROOT, with every shared library `ldd` lists for it (and
# the dynamic loader), each at the path ldd shows, symlinks resolved.
add_binary() {
  local root=$1 src=$2 dest=$3 lib
  install -D -m 0755 "$src" "$root$dest"
  # ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)",
  # "linux-vdso.so.1 (0x…)" (in the kernel, no file), or "not a dynamic executable".
  if ! ldd "$src" >"$work/ldd.out" 2>&1; then
    grep -q 'not a dynamic executable' "$work/ldd.out" && return 0
    die "ldd $src failed: $(cat "$work/ldd.out")"
  fi
  grep -q 'not found' "$work/ldd.out" && die "$src needs libraries this machine lacks: $(grep 'not found' "$work/ldd.out")"
  while read -r lib; do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' "$work/ldd.out")
}

# Packs ROOT into a reproducible tarball (sorted, fixed mtimes, numeric owners as set in ROOT)
# and imports it as IMAGE unless the image already holds exactly that tarball. Further
# arguments are `docker import --change` instructions.
import_root() {
  local root=$1 image=$2 tarball sum current
  shift 2
  tarball="$work/$(basename "$root").tar"
  tar --create --file "$tarball" --directory "$root" --sort=name --mtime=@0 \
    --numeric-owner --format=gnu .
  # The changes are part of what the image is: hash them with the tarball.
  sum=$( { sha256sum <"$tarball"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
  current=$(docker image inspect --format '{{index .Config.Labels "org.ferry.rootfs"}}' "$image" 2>/dev/null || true)
  if [ "$current" = "$sum" ]; then
    say "$image is up to date ($(du -h "$tarball" | cut -f1) root, ${sum:0:12})"
    return 0
  fi
  local changes=() change old
  for change in "$@" "LABEL org.ferry.rootfs=$sum"; do changes+=(--change "$change"); done
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  docker import "${changes[@]}" --message "deploy/build-images.sh" "$tarball" "$image" >/dev/null
  say "$image imported ($(du -h "$tarball" | cut -f1) root, ${sum:0:12})"
  # The previous version lost its tag: remove it, unless containers still use it.
  if [ -n "$old" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
}

# Minimal /etc: users, groups, name resolution through /etc/hosts then DNS (Docker provides
# both files at run time; glibc 2.34+ has the files and dns lookups built in).
write_etc() {
  local root=$1 user=$2 uid=$3 home=$4
  mkdir -p "$root/etc"
  printf 'root:x:0:0:root:/root:/nonexistent\n%s:x:%s:%s:%s:%s:/nonexistent\n' \
    "$user" "$uid" "$uid" "$user" "$home" >"$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  : >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"
  mkdir -m 1777 "$root/tmp"
}

# ---------------------------------------------------------------------------------------------
# ferry/ferryd:local

if [ "$cargo_build" = 1 ]; then
  command -v cargo >/dev/null || die "cargo is missing (install Rust 1.95+, or pass --no-cargo)"
  say "cargo build --release -p ferry"
  (cd "$repo" && cargo build --release -p ferry --bins)
fi
for bin in ferryd ferry; do
  [ -x "$target_dir/release/$bin" ] || die "$target_dir/release/$bin is missing (run without --no-cargo)"
done

root="$work/ferryd"
mkdir -p "$root"
write_etc "$root" ferry 10001 /data
add_binary "$root" "$target_dir/release/ferryd" /usr/local/bin/ferryd
add_binary "$root" "$target_dir/release/ferry" /usr/local/bin/ferry
# CA certificates, for TLS clients (the binaries link OpenSSL).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
# The data directory, owned by ferry: a new named volume mounted there takes its owner and mode.
mkdir -m 0700 "$root/data"
chown -R 0:0 "$root"
chown 10001:10001 "$root/data"

import_root "$root" "$ferryd_image" \
  'ENV FERRYD_DATA_DIR=/data' \
  'ENV FERRYD_TCP=0.0.0.0:7300' \
  'ENV FERRYD_METRICS=0.0.0.0:7301' \
  'ENV FERRY_URI=unix:///data/ferryd.sock' \
  'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  'USER 10001:10001' \
  'WORKDIR /data' \
  'VOLUME /data' \
  'EXPOSE 7300 7301' \
  'ENTRYPOINT ["/usr/local/bin/ferryd"]' \
  'CMD []'

# ---------------------------------------------------------------------------------------------
# ferry/prometheus:local

if [ ! -x "$prometheus_bin" ]; then
  say "installing Debian's prometheus package (prometheus, promtool)"
  [ "$(id -u)" = 0 ] && sudo= || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool_bin=$(dirname "$prometheus_bin")/promtool
[ -x "$promtool_bin" ] || die "$promtool_bin is missing"

root="$work/prometheus"
mkdir -p "$root"
write_etc "$root" nobody 65534 /prometheus
add_binary "$root" "$prometheus_bin" /usr/bin/prometheus
add_binary "$root" "$promtool_bin" /usr/bin/promtool
# Debian's build serves the web UI's assets from here. Many of them (jQuery, Bootstrap, …) are
# symlinks into other Debian packages (/usr/share/javascript/…), which the image does not have:
# copy what the links point to (tar -h), never the links. moment-timezone's raw zone data
# (200 MiB) is left out: the UI loads moment-timezone-with-data.min.js, which embeds it.
if [ -d /usr/share/prometheus/web ]; then
  mkdir -p "$root/usr/share/prometheus"
  tar --create --dereference --file - --directory /usr/share/prometheus \
    --exclude=web/static/moment-timezone/data web | tar --extract --file - --directory "$root/usr/share/prometheus"
  # Every asset the UI's pages name must be in the image (a missing one is a broken page).
  for asset in $(grep -rhoE 'static/[A-Za-z0-9_./-]+\.(js|css|gif|ico|handlebar)' \
      /usr/share/prometheus/web/templates | sort -u); do
    [ -f "$root/usr/share/prometheus/web/$asset" ] || die "the Prometheus web UI needs $asset, which is not in the image"
  done
fi
for dir in consoles console_libraries; do
  mkdir -p "$root/etc/prometheus/$dir"
  [ -d "/etc/prometheus/$dir" ] && cp -RL --preserve=mode "/etc/prometheus/$dir/." "$root/etc/prometheus/$dir/"
done
# A link whose target is not in the image would be a 404 in the web UI: refuse to build one.
dangling=$(find "$root" -xtype l)
[ -z "$dangling" ] || die "dangling symlinks in the Prometheus image's root: $dangling"
# Overridden by the compose file's bind mount; lets the image start on its own.
printf 'global:\n  scrape_interval: 15s\n' >"$root/etc/prometheus/prometheus.yml"
mkdir -m 0755 "$root/prometheus"
chown -R 0:0 "$root"
chown 65534:65534 "$root/prometheus"

import_root "$root" "$prometheus_image" \
  'USER 65534:65534' \
  'WORKDIR /prometheus' \
  'VOLUME /prometheus' \
  'EXPOSE 9090' \
  'ENTRYPOINT ["/usr/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]'

# ---------------------------------------------------------------------------------------------
# ferry/dnsmasq:local

if [ ! -x /usr/sbin/dnsmasq ]; then
  say "installing Debian's dnsmasq-base package (dnsmasq)"
  [ "$(id -u)" = 0 ] && sudo= || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null
fi

root="$work/dnsmasq"
mkdir -p "$root"
write_etc "$root" nobody 65534 /nonexistent
add_binary "$root" /usr/sbin/dnsmasq /usr/sbin/dnsmasq
chown -R 0:0 "$root"

# Not root, so no privileged port: it serves on 5353. The records come as arguments (the
# compose file's `command`); names it has no records for go to the container's resolver.
import_root "$root" "$dnsmasq_image" \
  'USER 65534:65534' \
  'EXPOSE 5353/udp 5353/tcp' \
  'ENTRYPOINT ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--log-facility=-", "--port=5353", "--pid-file"]' \
  'CMD []'
