#!/usr/bin/env bash
# The domain crate must stay pure: no runtime, database, HTTP or messaging crates.
set -euo pipefail
forbidden='^(tokio|sqlx|axum|hyper|reqwest|async-nats|postgres-es|cqrs-es|sea-query) '
if cargo tree -p wxcm-domain -e normal --prefix none | grep -E "$forbidden"; then
  echo "wxcm-domain depends on an I/O crate (above)" >&2
  exit 1
fi
echo "wxcm-domain is pure"
