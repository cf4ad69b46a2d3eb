#!/usr/bin/env bash
# Prints the path of a schemathesis executable, installing it first when missing:
# a virtualenv outside the clone (WXCM_VENV, default ~/.cache/wxcm-venv) with the
# pinned version, so a fresh machine gets the same fuzzer and later runs reuse it.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
venv="${WXCM_VENV:-$HOME/.cache/wxcm-venv}"
bin="$venv/bin/schemathesis"

# `grep -q` would stop reading early and pipefail would then count pip's SIGPIPE as
# a missing install (a reinstall at random): read the whole answer first.
installed="$("$venv/bin/python" -m pip show schemathesis 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ -x "$bin" ] && [ "$installed" = "$SCHEMATHESIS_VERSION" ]; then
  echo "$bin"
  exit 0
fi

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  # Debian splits venv and ensurepip out of python3.
  echo "installing python3-venv" >&2
  apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
echo "$bin"
