#!/usr/bin/env bash
# Starts the local PostgreSQL and NATS (JetStream) if they are not running, and
# on a machine that has neither installed (Debian/Ubuntu) installs them first:
# the distribution's `postgresql` and `nats-server` packages, local trust auth
# on 127.0.0.1 (users postgres and root, database `test`), JetStream on.
# Elsewhere it stops with the exact commands to run.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
NATS_STORE=/var/lib/nats-server

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

apt_install() {
  echo "installing $* (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

give_up() {
  cat >&2 <<EOF
$1 is not installed and this script can only install it on Debian/Ubuntu as root.
Install and start it yourself, then run this again:
$2
EOF
  exit 1
}

pg_cluster() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

# Trust for local TCP connections (a development machine), once.
pg_trust_local() {
  local version hba
  version="$(pg_cluster)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -q '^# wxcm: local trust' "$hba"; then
    {
      echo '# wxcm: local trust (added by scripts/services.sh for development)'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      cat "$hba"
    } >"$hba.wxcm" && mv "$hba.wxcm" "$hba"
    chown postgres:postgres "$hba"
  fi
}

pg_roles_and_database() {
  runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'" | grep -q 1 \
    || runuser -u postgres -- psql -qc "CREATE ROLE root SUPERUSER LOGIN"
  runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || runuser -u postgres -- psql -qc "CREATE DATABASE test"
}

if ! pg_up && { ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_cluster)" ]; }; then
  if can_apt; then
    apt_install postgresql
    pg_trust_local
    pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main restart || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_roles_and_database
  else
    give_up PostgreSQL "  sudo apt-get install postgresql   # or your system's package
  # then allow local TCP logins without a password (pg_hba.conf):
  #   host all all 127.0.0.1/32 trust
  # and start it listening on 127.0.0.1:5432"
  fi
fi

if ! pg_up; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

if ! nats_up && ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  if can_apt; then
    apt_install nats-server
  else
    give_up nats-server "  sudo apt-get install nats-server   # or https://docs.nats.io/running-a-nats-service/introduction/installation
  nats-server -a 127.0.0.1 -p 4222 -js -sd $NATS_STORE &"
  fi
fi

if ! nats_up; then
  echo "starting NATS"
  nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
  mkdir -p "$NATS_STORE"
  if command -v start-stop-daemon >/dev/null 2>&1; then
    start-stop-daemon --start --oknodo --background --exec "$nats_bin" -- \
      -a 127.0.0.1 -p 4222 -js -sd "$NATS_STORE" || true
  else
    nohup "$nats_bin" -a 127.0.0.1 -p 4222 -js -sd "$NATS_STORE" >/dev/null 2>&1 &
  fi
  for _ in $(seq 1 30); do nats_up && break; sleep 1; done
fi
nats_up || { echo "NATS is not reachable on 127.0.0.1:4222" >&2; exit 1; }
