#!/usr/bin/env bash
# Checks deploy/ferryd.service with `systemd-analyze verify` (systemd's own parser: unknown
# keys, bad values, a missing executable) and `systemd-analyze security` (its sandbox score). The unit names /usr/local/bin/ferryd, where it is
# installed; the check points those paths at the ferryd built here, in a copy.
#
# Usage: deploy/verify-unit.sh [DIR]   DIR holds ferryd [default: $CARGO_TARGET_DIR/release,
#                                      else <repo>/target/release]
# Fails on any complaint, warnings included. Needs systemd-analyze (Debian's `systemd`).
set -euo pipefail
deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$deploy")
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/release}
case "$bin" in /*) ;; *) bin=$PWD/$bin ;; esac
[ -x "$bin/ferryd" ] || { echo "verify-unit.sh: no $bin/ferryd (build it, or pass its directory)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "verify-unit.sh: systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/ferryd|$bin/ferryd|g" "$deploy/ferryd.service" >"$work/ferryd.service"
# verify exits 0 on some warnings: any output is a failure.
if ! systemd-analyze verify "$work/ferryd.service" >"$work/out" 2>&1 || [ -s "$work/out" ]; then
  echo "verify-unit.sh: systemd-analyze verify deploy/ferryd.service:" >&2
  cat "$work/out" >&2
  exit 1
fi
# The sandbox, as systemd scores it (0 is fully sandboxed, 10 not at all; this unit is 1.4).
# --threshold is in tenths: fail above 2.0, so a dropped protection is caught.
if ! systemd-analyze security --offline=true --threshold=20 "$work/ferryd.service" >"$work/out" 2>&1; then
  echo "verify-unit.sh: deploy/ferryd.service's exposure is above 2.0:" >&2
  tail -n 3 "$work/out" >&2
  exit 1
fi
echo "deploy/ferryd.service: ok (systemd-analyze verify; $(grep -o 'exposure level.*' "$work/out"))"
