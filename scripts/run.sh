#!/usr/bin/env bash
# `make run`: the server with every role, the WeChat/Pay simulator it talks to,
# a demo tenant and owner, and (on an empty demo tenant) a day of demo activity
# through the real paths, so the consoles have something to show.
# Expects WXCM (the wxcm binary), WXCM_SIM, DEMO_PASSWORD and SANDBOX_LISTEN from make.
set -euo pipefail

listen="${WXCM_HTTP__LISTEN:-127.0.0.1:8080}"
base="http://${listen/0.0.0.0/127.0.0.1}"
sandbox="http://$SANDBOX_LISTEN"

"$WXCM" migrate
"$WXCM" tenant create --id demo --name "Demo Cinema"
if WXCM_ADMIN_PASSWORD="$DEMO_PASSWORD" "$WXCM" admin create --tenant demo --username owner --role owner 2>/dev/null; then
  echo "demo owner created"
else
  echo "demo owner already exists"
fi

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# WeChat cannot be reached from here: the simulator stands in for it, and every base URL points at it.
"$WXCM_SIM" --listen "$SANDBOX_LISTEN" & pids+=($!)
echo "wechat simulator on $sandbox"
export WXCM_WECHAT__API_BASE="$sandbox" WXCM_WECHAT__OPEN_BASE="$sandbox" \
  WXCM_WECHAT__MP_BASE="$sandbox" WXCM_WECHAT__PAY_BASE_URL="$sandbox"
"$WXCM" serve & server=$!; pids+=("$server")

for _ in $(seq 1 120); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$server" 2>/dev/null || { echo "wxcm serve stopped; see its log above" >&2; exit 1; }
  sleep 0.5
done
[ "${ready:-0}" = 1 ] || { echo "wxcm is not ready after 60 s ($base/readyz)" >&2; exit 1; }

# A day of demo activity when the demo tenant has no member yet (the seed checks).
WXCM_ADMIN_PASSWORD="$DEMO_PASSWORD" "$WXCM" demo seed --tenant demo --server "$base" --simulator "$sandbox" \
  || echo "demo seed failed (the server runs anyway); retry with: $WXCM demo seed --tenant demo" >&2

cat <<MSG

wxcm is ready.
  admin console  $base/console/   tenant demo, user owner, password $DEMO_PASSWORD
  staff console  $base/staff/
  admin API      $base/admin/api/v1  (OpenAPI at $base/openapi.json)
Stop with Ctrl-C.
MSG
wait "$server"
