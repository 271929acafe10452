#!/usr/bin/env bash
# BottleCRM (PyPI django-crm, pinned) on loopback, for tests and `make demo CRM=bottlecrm`.
#
#   scripts/bottlecrm.sh install        venv + migrated schema cached under ~/.cache/outlook-crm-sync/bottlecrm/ (idempotent)
#   scripts/bottlecrm.sh up RUNDIR [PID] start PostgreSQL and the CRM on free loopback ports; writes
#                                       RUNDIR/bottlecrm.env (BOTTLECRM_BASE_URL, BOTTLECRM_TOKEN, ...);
#                                       with PID, a watchdog runs `down` once that process is gone
#   scripts/bottlecrm.sh down RUNDIR    stop what `up` started in RUNDIR and remove RUNDIR
#
# Needs Python 3.12 (django-crm requires >= 3.12; found on PATH, under pyenv, or $BOTTLECRM_PYTHON) and
# PostgreSQL server binaries (Debian's `postgresql`, installed with apt-get when missing and we are root).
# Exit status 3 means "cannot be had on this machine" (the tests skip); anything else non-zero is a failure.
#
# Cached per pinned version under ~/.cache/outlook-crm-sync/bottlecrm/VERSION/ (per machine, shared by clones; BOTTLECRM_CACHE overrides): the 3.12 venv (~390 MB, ~50 s
# to build), a pg_dump of the migrated schema (~2 min of `migrate`), and a stopped cluster made from it
# with the organisation and its token. With the cache, `up` copies the cluster and starts in seconds.
set -euo pipefail

VERSION=1.35.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BOTTLECRM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outlook-crm-sync/bottlecrm}/$VERSION
VENV=$CACHE/venv
SECRET_KEY=local-test-secret-key-not-secret-0123456789abcdef # signs JWTs of a throwaway loopback CRM
ADMIN_EMAIL=sync@example.com

say() { printf 'bottlecrm: %s\n' "$*" >&2; }
unavailable() { say "unavailable: $*"; exit 3; }

find_python312() {
  local c candidates=()
  [ -n "${BOTTLECRM_PYTHON:-}" ] && candidates+=("$BOTTLECRM_PYTHON")
  candidates+=("$(command -v python3.12 || true)")
  local pyroot
  pyroot=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  # newest 3.12.x first
  while IFS= read -r c; do candidates+=("$c/bin/python"); done < <(printf '%s\n' "$pyroot"/versions/3.12* | sort -rV)
  candidates+=(/usr/bin/python3.12 /usr/local/bin/python3.12)
  for c in "${candidates[@]}"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if "$c" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

find_pgbin() { # the newest Debian PostgreSQL server, or nothing
  local d found=""
  while read -r d; do
    if [ -x "$d/initdb" ]; then found=$d; fi
  done < <(printf '%s\n' "${BOTTLECRM_PG_ROOT:-/usr/lib/postgresql}"/*/bin | sort -V)
  echo "$found"
}

ensure_postgres() {
  PGBIN=$(find_pgbin)
  if [ -z "$PGBIN" ]; then
    [ "$(id -u)" = 0 ] || unavailable "PostgreSQL server binaries missing and not root to apt-get install postgresql"
    say "installing Debian's postgresql with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ||
      unavailable "apt-get install postgresql failed"
    PGBIN=$(find_pgbin)
    [ -n "$PGBIN" ] || unavailable "PostgreSQL installed but no server binaries under /usr/lib/postgresql"
  fi
  PGMAJOR=$(basename "$(dirname "$PGBIN")")
}

# PostgreSQL refuses to run as root: as root, run the server as the `postgres` account.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_venv() {
  if [ -x "$VENV/bin/uvicorn" ] && [ -f "$VENV/.installed" ]; then return 0; fi
  local py
  py=$(find_python312) || unavailable "Python 3.12 not found (PATH, pyenv, or set BOTTLECRM_PYTHON)"
  say "building the BottleCRM venv with $py (once per version)"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "django-crm==$VERSION"
  touch "$VENV/.installed"
}

free_port() { # below the ephemeral range, where no outgoing connection can take it before the bind
  "$VENV/bin/python" -c '
import random, socket
for _ in range(200):
    port, s = random.randint(10000, 32000), socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
'
}

django_env() { # DJANGO_ENV_FILE PG_PORT
  cat >"$1" <<EOT
export DJANGO_SETTINGS_MODULE=crm.settings ENV_TYPE=dev DEBUG=True
export SECRET_KEY=$SECRET_KEY
export ALLOWED_HOSTS=localhost,127.0.0.1
export DBNAME=bottlecrm DBUSER=postgres DBPASSWORD=unused DBHOST=127.0.0.1 DBPORT=$2
export CELERY_BROKER_URL=memory:// CELERY_RESULT_BACKEND=cache+memory://
export EMAIL_BACKEND=django.core.mail.backends.console.EmailBackend
EOT
}

pg_start() { # DATADIR PORT SOCKETDIR LOG
  as_pg "$PGBIN/pg_ctl" -D "$1" -l "$4" -w -o \
    "-p $2 -k $3 -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null
}

# A stopped PostgreSQL cluster holding the migrated schema, the organisation, its admin profile and a
# personal access token (no person, no browser). `up` copies it, so a warm start skips initdb, restore
# and Django's start-up. Rebuilt from schema-pgN.dump when present, else by `migrate` (~2 min).
ensure_cluster() {
  CLUSTER=$CACHE/cluster-pg$PGMAJOR
  [ -f "$CLUSTER/token" ] && [ -f "$CLUSTER/data/PG_VERSION" ] && return 0
  local dump=$CACHE/schema-pg$PGMAJOR.dump build port
  build=$(mktemp -d "${TMPDIR:-/tmp}/bottlecrm-build.XXXXXX")
  port=$(free_port)
  [ "$(id -u)" = 0 ] && chown postgres "$build"
  as_pg "$PGBIN/initdb" -D "$build/data" -U postgres --auth=trust -E UTF8 >"$build/initdb.log" 2>&1
  pg_start "$build/data" "$port" "$build" "$build/pg.log"
  trap 'as_pg "$PGBIN/pg_ctl" -D "$build/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$build"' EXIT
  local pgc=(-h 127.0.0.1 -p "$port" -U postgres)
  "$PGBIN/createdb" "${pgc[@]}" bottlecrm
  django_env "$build/django.env" "$port"
  # shellcheck disable=SC1091
  . "$build/django.env"
  if [ -f "$dump" ]; then
    "$PGBIN/pg_restore" "${pgc[@]}" -d bottlecrm --no-owner "$dump"
  else
    say "migrating the schema (once per version, about 2 minutes)"
    (cd "$build" && "$VENV/bin/python" -m django migrate -v0 >"$build/migrate.log" 2>&1) ||
      { say "migrate failed:"; tail -20 "$build/migrate.log" >&2; exit 1; }
    "$PGBIN/pg_dump" "${pgc[@]}" -Fc bottlecrm -f "$dump.tmp" && mv "$dump.tmp" "$dump"
  fi
  local token
  token=$(cd "$build" && "$VENV/bin/python" -m django shell -v0 -c "
from common.models import User, Org, Profile, PersonalAccessToken
u, _ = User.objects.get_or_create(email='$ADMIN_EMAIL')
o, _ = Org.objects.get_or_create(name='Sync Test Org')
p, _ = Profile.objects.get_or_create(user=u, org=o, defaults={'role': 'ADMIN'})
raw, _ = PersonalAccessToken.generate(p, 'outlook-sync')
print(raw)" 2>"$build/bootstrap.log" | tail -1)
  case "$token" in bcrm_pat_*) ;; *) say "bootstrap failed:"; tail -20 "$build/bootstrap.log" >&2; exit 1 ;; esac
  as_pg "$PGBIN/pg_ctl" -D "$build/data" -m fast -w stop >/dev/null
  rm -rf "$CLUSTER" "$CLUSTER.tmp"
  mkdir -p "$CLUSTER.tmp"
  cp -a "$build/data" "$CLUSTER.tmp/data"
  (umask 077 && echo "$token" >"$CLUSTER.tmp/token")
  mv "$CLUSTER.tmp" "$CLUSTER"
  trap - EXIT
  rm -rf "$build"
}

cmd_install() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9 # two sessions never build the cache at once
  [ -f "$VENV/.installed" ] || find_python312 >/dev/null ||
    unavailable "Python 3.12 not found (PATH, pyenv, or set BOTTLECRM_PYTHON)"
  ensure_postgres
  ensure_venv
  ensure_cluster
  flock -u 9
}

cmd_up() {
  local run=${1:?usage: bottlecrm.sh up RUNDIR [PID]}
  cmd_install
  mkdir -p "$run"
  run=$(cd "$run" && pwd)
  local pg_port api_port token
  pg_port=$(free_port)
  api_port=$(free_port)
  mkdir -p "$run/pg"
  cp -a "$CLUSTER/data" "$run/pg/data"
  [ "$(id -u)" = 0 ] && chown postgres "$run" "$run/pg"
  echo "$PGBIN" >"$run/pgbin"
  pg_start "$run/pg/data" "$pg_port" "$run/pg" "$run/pg/pg.log"
  django_env "$run/django.env" "$pg_port"
  # shellcheck disable=SC1091
  . "$run/django.env"
  token=$(cat "$CLUSTER/token")

  (cd "$run" && exec nohup "$VENV/bin/uvicorn" crm.asgi:application --host 127.0.0.1 --port "$api_port" \
    --no-access-log >"$run/uvicorn.log" 2>&1) &
  echo $! >"$run/uvicorn.pid"
  local ok=""
  for _ in $(seq 1 300); do
    if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$api_port/healthz/', timeout=1)" 2>/dev/null; then
      ok=1
      break
    fi
    kill -0 "$(cat "$run/uvicorn.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ok" ] || { say "the CRM did not start, see $run/uvicorn.log"; exit 1; }

  umask 077
  cat >"$run/bottlecrm.env" <<EOT
BOTTLECRM_BASE_URL=http://127.0.0.1:$api_port
BOTTLECRM_TOKEN=$token
BOTTLECRM_ADMIN_EMAIL=$ADMIN_EMAIL
BOTTLECRM_PG_PORT=$pg_port
EOT
  if [ -n "${2:-}" ]; then # the caller may die without calling `down`: then the watchdog does
    # shellcheck disable=SC2016 # the inner script expands its own arguments
    BOTTLECRM_WATCHDOG=1 setsid nohup bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 2; done
      exec "$0" down "$2"' "$ROOT/scripts/bottlecrm.sh" "$2" "$run" >/dev/null 2>&1 &
    echo $! >"$run/watchdog.pid"
  fi
  say "up at http://127.0.0.1:$api_port (run dir $run)"
}

cmd_down() {
  local run=${1:?usage: bottlecrm.sh down RUNDIR}
  [ -d "$run" ] || return 0
  if [ -z "${BOTTLECRM_WATCHDOG:-}" ] && [ -f "$run/watchdog.pid" ]; then
    kill "$(cat "$run/watchdog.pid")" 2>/dev/null || true
  fi
  if [ -f "$run/uvicorn.pid" ]; then
    local pid
    pid=$(cat "$run/uvicorn.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  if [ -f "$run/pgbin" ] && [ -f "$run/pg/data/postmaster.pid" ]; then
    as_pg "$(cat "$run/pgbin")/pg_ctl" -D "$run/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$run"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up "${2:-}" "${3:-}" ;;
  down) cmd_down "${2:-}" ;;
  *) echo "usage: $0 install | up RUNDIR | down RUNDIR" >&2; exit 2 ;;
esac
