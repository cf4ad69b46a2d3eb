#!/usr/bin/env bash
# The `wxcm` server binary never links dev-only code: not the WeChat/Pay
# simulator (and its private test keys), not the benchmark drivers.
set -euo pipefail
forbidden='^(wxcm-simulator|wxcm-bench|wxcm-demo|wxcm-tests) '
for crate in wxcm wxcm-server; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -E "$forbidden"; then
    echo "$crate depends on dev-only code (above)" >&2
    exit 1
  fi
done
echo "wxcm and wxcm-server link no simulator, benchmark or demo crate"
