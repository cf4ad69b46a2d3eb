#!/usr/bin/env bash
# Makes sure Debian's Chromium and its WebDriver are installed for the console
# browser tests (packages chromium and chromium-driver). Elsewhere it stops with
# the command to run.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium and chromium-driver (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
  exit 0
fi
cat >&2 <<'MSG'
The console's browser tests need Chromium and chromedriver at /usr/bin/chromium
and /usr/bin/chromedriver. On Debian/Ubuntu run, as root:
  apt-get install -y chromium chromium-driver
MSG
exit 1
