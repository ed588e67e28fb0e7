#!/usr/bin/env bash
# CI for the Python client: a venv with the package and its test extras, mypy --strict, then
# pytest against real ferryd processes. Uses $FERRYD and $FERRY when set; otherwise builds both
# (debug) from the workspace with cargo. $PYTHON picks the interpreter (3.11 or newer),
# $FERRY_PY_VENV the venv's directory (default clients/python/.venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "ci.sh: $python is $("$python" --version 2>&1); ferry-client needs Python 3.11 or newer" >&2
  exit 1
fi
venv="${FERRY_PY_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv"; then
    # Debian's python3 keeps venv and ensurepip in python3-venv.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      rm -rf "$venv"
      apt-get install -y python3-venv python3-pip >/dev/null
      "$python" -m venv "$venv"
    else
      echo "ci.sh: cannot make a venv (install python3-venv)" >&2
      exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "$here[test]"

if [ -z "${FERRYD:-}" ] || [ -z "${FERRY:-}" ]; then
  target="${CARGO_TARGET_DIR:-$root/target}"
  (cd "$root" && cargo build -p ferry --bins)
  export FERRYD="${FERRYD:-$target/debug/ferryd}" FERRY="${FERRY:-$target/debug/ferry}"
fi
echo "ci.sh: ferryd=$FERRYD ferry=$FERRY python=$("$venv/bin/python" --version)"

cd "$here"
"$venv/bin/python" -m mypy
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
