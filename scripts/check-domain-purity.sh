#!/usr/bin/env bash
# The domain and protocol crates must stay pure: no runtime, database, HTTP or messaging crates.
set -euo pipefail
forbidden='^(tokio|sqlx|axum|hyper|reqwest|async-nats|postgres-es|cqrs-es|sea-query) '
# The protocol crate (WeChat and Pay wire formats and crypto) is pure as well.
for crate in wxcm-domain wxcm-protocol; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -E "$forbidden"; then
    echo "$crate depends on an I/O crate (above)" >&2
    exit 1
  fi
  echo "$crate is pure"
done
