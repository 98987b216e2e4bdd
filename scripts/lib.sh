# shellcheck shell=bash
# Shared helpers for scripts/dev and scripts/test: find (or start) PostgreSQL and Redis.
# Sourced, never run; the callers use `set -euo pipefail`.
#
# For each dependency the first of these that answers wins:
#   1. the URL in the caller's variable (DATABASE_URL / TEST_DATABASE_URL, REDIS_URL / TEST_REDIS_URL);
#   2. the machine's own server on the standard port (127.0.0.1:5432 as user postgres, 127.0.0.1:6379);
#   3. a private server started from the installed binaries under .dev/ (git-ignored), on
#      127.0.0.1:55432 / 127.0.0.1:56379 (or the next free port), reused by later runs;
#   4. `docker compose up -d postgres redis`, when a Docker engine answers;
#   5. as root on Debian/Ubuntu: `apt-get install postgresql redis-server`, then 3.
# Knobs (environment):
#   TENANT_DEV_FORCE_PRIVATE=1   skip 2, so a private server is used even when the machine has one
#   TENANT_DEV_PG_PORT, TENANT_DEV_REDIS_PORT   first port tried for private servers
#   TENANT_DEV_NO_INSTALL=1      never run apt-get
# Results: FOUND_PG_URL (an admin-capable URL: the caller's own URL, or the `postgres` database of
# the server found) and FOUND_REDIS_URL. Progress goes to stderr, one "using" line per dependency.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=$REPO_ROOT/.dev
PRIVATE_PG_PORT=${TENANT_DEV_PG_PORT:-55432}
PRIVATE_REDIS_PORT=${TENANT_DEV_REDIS_PORT:-56379}
FOUND_PG_URL=
FOUND_REDIS_URL=

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
# `timeout SECS cmd...` where coreutils has it; plain `cmd...` elsewhere.
with_timeout() { if have timeout; then timeout "$@"; else shift; "$@"; fi; }

# python_tool NAME BIN PACKAGE...: a Python program of the tests' local peers, installed with pip
# into .dev/NAME on first use; prints the path of BIN there.
python_tool() {
  local venv=$DEV_DIR/$1 bin=$2
  shift 2
  if [[ ! -x $venv/bin/$bin ]]; then
    have python3 || die "python3 is needed for $*"
    say "installing $* into $venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    "$venv/bin/pip" install -q "$@" >&2 || die "pip could not install $*"
  fi
  printf '%s
' "$venv/bin/$bin"
}

# Hide the password of a URL before printing it.
redact_url() { printf '%s\n' "$1" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'; }

# Export KEY=VALUE lines of an env file without overriding what is already set (dotenv rules:
# the process environment wins). Comments, blank lines and `export ` prefixes are allowed.
load_env_file() {
  local file=$1 line key val
  [[ -f $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[2]} val=${BASH_REMATCH[3]}
    if [[ $val =~ ^\"(.*)\"[[:space:]]*$ || $val =~ ^\'(.*)\'[[:space:]]*$ ]]; then
      val=${BASH_REMATCH[1]}
    else
      val=${val%%[[:space:]]#*}   # unquoted: drop an inline comment
    fi
    [[ -n ${!key+x} ]] && continue
    export "$key=$val"
  done <"$file"
}

# ---------------------------------------------------------------- small network helpers

# True when something accepts TCP connections on HOST PORT.
tcp_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  with_timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# First port from $1 upwards (20 tries) that nothing on 127.0.0.1 listens on.
free_port() {
  local p
  for ((p = $1; p < $1 + 20; p++)); do
    tcp_open 127.0.0.1 "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# "host port" of a URL (default port $2); an empty host means localhost.
url_host_port() {
  local re='^[A-Za-z0-9+.-]+://([^@/?]*@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))?'
  [[ $1 =~ $re ]] || return 1
  local host=${BASH_REMATCH[2]:-127.0.0.1} port=${BASH_REMATCH[4]:-$2}
  host=${host#[}; host=${host%]}
  echo "$host $port"
}

# ---------------------------------------------------------------- PostgreSQL URLs

PG_URL_RE='^([A-Za-z]+://[^/?]*)(/[^?]*)?(\?.*)?$'

# The same URL naming database $2 instead.
pg_url_with_db() {
  [[ $1 =~ $PG_URL_RE ]] || { say "cannot parse PostgreSQL URL $(redact_url "$1")"; return 1; }
  printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$2" "${BASH_REMATCH[3]}"
}

# The database named in a URL (empty when none).
pg_url_db() {
  [[ $1 =~ $PG_URL_RE ]] || return 1
  local db=${BASH_REMATCH[2]#/}
  echo "$db"
}

# psql that never prompts, stops on the first error and prints bare values.
_psql() {
  local url=$1; shift
  if have psql; then
    PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} psql -X -w -q -At -v ON_ERROR_STOP=1 -d "$url" "$@"
  elif [[ -n ${_TENANT_PG_IN_DOCKER:-} ]]; then
    # No client on the host: use the one in the Compose container (same server).
    local db; db=$(pg_url_db "$url"); db=${db:-postgres}
    _compose exec -T postgres psql -X -q -At -v ON_ERROR_STOP=1 -U postgres -d "$db" "$@"
  else
    say "psql is not installed"; return 127
  fi
}

# True when a PostgreSQL server answers at URL and lets us in. The database in the URL may not
# exist yet (the scripts create it), so the server's `postgres` database counts as well.
pg_answers() {
  local url=$1 hp admin
  if have psql; then
    _psql "$url" -c 'select 1' >/dev/null 2>&1 && return 0
    admin=$(pg_url_with_db "$url" postgres 2>/dev/null) || return 1
    _psql "$admin" -c 'select 1' >/dev/null 2>&1
  elif have pg_isready; then
    pg_isready -q -t 3 -d "$url"
  else
    hp=$(url_host_port "$url" 5432) || return 1
    # shellcheck disable=SC2086 # "host port" splits on purpose
    tcp_open $hp
  fi
}

# Create the database named in URL when it does not exist (connecting to the server's
# `postgres` database, or `template1` when that one is missing).
ensure_database() {
  local url=$1 db admin found
  db=$(pg_url_db "$url") || die "cannot parse PostgreSQL URL $(redact_url "$url")"
  [[ -n $db ]] || return 0   # none named: libpq uses the user's own, which we can't create
  [[ $db =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]] || die "refusing to create database with unusual name '$db'"
  admin=$(pg_url_with_db "$url" postgres)
  if ! found=$(_psql "$admin" -c "select 1 from pg_database where datname = '$db'" 2>/dev/null); then
    admin=$(pg_url_with_db "$url" template1)
    found=$(_psql "$admin" -c "select 1 from pg_database where datname = '$db'") ||
      die "cannot connect to PostgreSQL at $(redact_url "$url") to create database $db"
  fi
  [[ $found == 1 ]] && return 0
  say "postgres: creating database $db"
  # A concurrent run may win the race: "already exists" is fine.
  local err
  if ! err=$(_psql "$admin" -c "create database \"$db\"" 2>&1); then
    [[ $err == *"already exists"* ]] || die "create database $db failed: $err"
  fi
}

# The same URL as user $2 with password $3 (URL-safe characters only; empty: none).
pg_url_with_user() {
  [[ $1 =~ $PG_URL_RE ]] || { say "cannot parse PostgreSQL URL $(redact_url "$1")"; return 1; }
  local scheme=${BASH_REMATCH[1]%%://*} host=${BASH_REMATCH[1]#*://}
  host=${host##*@}
  printf '%s://%s%s@%s%s%s\n' "$scheme" "$2" "${3:+:$3}" "$host" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
}

# owned_database ADMIN_URL OWNER PASSWORD: the database named in ADMIN_URL (a superuser's URL),
# owned by the ordinary role OWNER, which row-level security holds (deploy/postgres/owner.sql:
# no SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB). Creates the database when missing; prints
# the URL the service should use: OWNER's, or ADMIN_URL's for a database made by an older
# scripts/dev (owned by the superuser, so its tables are too), with a warning.
owned_database() {
  local admin=$1 owner=$2 password=$3 db current
  ensure_database "$admin"
  db=$(pg_url_db "$admin")
  current=$(_psql "$admin" -c "select datdba::regrole::text from pg_database where datname = current_database()") ||
    die "cannot read the owner of database $db"
  if [[ $current != "$owner" ]] &&
    [[ $(_psql "$admin" -c "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'") != 0 ]]; then
    say "postgres: database $db belongs to $current (made by an older scripts/dev) and is kept as it is;"
    say "  the service connects as $current, which row-level security does not hold if it is a superuser."
    say "  Drop the database (dropdb $db) to have it made again with the ordinary owner $owner."
    printf '%s\n' "$admin"
    return 0
  fi
  { printf '%s\n' "select from (select set_config('tenant_setup.owner', :'owner', false)," \
      "  set_config('tenant_setup.password', :'password', false)) s;"
    cat "$REPO_ROOT/deploy/postgres/owner.sql"
  } | _psql "$admin" -v owner="$owner" -v password="$password" >/dev/null || die "could not make $owner the owner of $db"
  [[ $current == "$owner" ]] || say "postgres: database $db is owned by the ordinary role $owner"
  pg_url_with_user "$admin" "$owner" "$password"
}

# ---------------------------------------------------------------- private PostgreSQL

# Directory with initdb and pg_ctl: on PATH, from pg_config, or Debian's newest /usr/lib/postgresql/*/bin.
pg_bindir() {
  local d
  if have initdb && have pg_ctl; then dirname "$(command -v pg_ctl)"; return 0; fi
  if have pg_config; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]]; then echo "$d"; return 0; fi
  fi
  while IFS= read -r d; do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then echo "$d"; return 0; fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  return 1
}

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres` OS user.
_as_pg_user() {
  if [[ $(id -u) != 0 ]]; then "$@"
  elif have runuser; then runuser -u postgres -- "$@"
  else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

# Where the private server lives: .dev/pg, unless we are root and the `postgres` user cannot
# reach the repository (e.g. it sits under /root); then a per-repository folder in /tmp.
pg_private_base() {
  mkdir -p "$DEV_DIR"
  if [[ $(id -u) == 0 ]] && ! _as_pg_user test -x "$DEV_DIR" 2>/dev/null; then
    echo "${TMPDIR:-/tmp}/tenant-dev-pg-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)"
  else
    echo "$DEV_DIR/pg"
  fi
}

# Start (or reuse) the private server; sets FOUND_PG_URL. Every step checks its own result:
# callers use it in `if`, where `set -e` does not apply.
start_private_postgres() {
  local bindir base data port
  bindir=$(pg_bindir) || return 1
  if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
    say "postgres: running as root but there is no 'postgres' OS user to run a private server"
    return 1
  fi
  base=$(pg_private_base)
  data=$base/data
  mkdir -p "$base" || return 1
  if [[ $(id -u) == 0 ]]; then chown postgres: "$base" || return 1; fi

  if [[ -f $data/PG_VERSION ]]; then
    if _as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null)   # line 4 of postmaster.pid: the port
      FOUND_PG_URL=postgres://postgres@127.0.0.1:$port/postgres
      if [[ -n $port ]] && pg_answers "$FOUND_PG_URL"; then
        say "postgres: using private server (running) at $FOUND_PG_URL, data in $data"
        return 0
      fi
      say "postgres: private server in $data runs but does not answer on port ${port:-?}"
      return 1
    fi
  else
    # New cluster: trust auth is fine because it listens on 127.0.0.1 and on a socket inside
    # the folder only.
    rm -rf "$data"
    _as_pg_user "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C \
      >"$base/initdb.log" 2>&1 || { say "postgres: initdb failed, see $base/initdb.log"; return 1; }
    local sock=$base/run
    mkdir -p "$sock" || return 1
    if [[ $(id -u) == 0 ]]; then chown postgres: "$sock" || return 1; fi
    # A unix socket path is limited to ~107 bytes; past that, TCP only.
    if (( ${#sock} > 90 )); then sock=''; fi
    {
      echo "# added by scripts/lib.sh: private development/test server"
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = '$sock'"
      echo "max_connections = 200"   # each integration test opens its own pool
    } >>"$data/postgresql.conf" || return 1
  fi

  # The port is chosen at each start, so a port taken since the last run is not fatal.
  port=$(free_port "$PRIVATE_PG_PORT") || { say "postgres: no free port from $PRIVATE_PG_PORT"; return 1; }
  _as_pg_user "$bindir/pg_ctl" -D "$data" -l "$base/postgres.log" -w -t 60 -o "-p $port" start \
    >/dev/null || { say "postgres: private server did not start, see $base/postgres.log"; return 1; }
  FOUND_PG_URL=postgres://postgres@127.0.0.1:$port/postgres
  pg_answers "$FOUND_PG_URL" || { say "postgres: private server started but does not answer"; return 1; }
  say "postgres: using private server (started) at $FOUND_PG_URL, data in $data"
}

stop_private_postgres() {
  local bindir base
  base=$(pg_private_base)
  [[ -f $base/data/PG_VERSION ]] || return 0
  bindir=$(pg_bindir) || return 0
  if _as_pg_user "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    _as_pg_user "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null && say "postgres: private server stopped"
  fi
}

# ---------------------------------------------------------------- Redis

redis_answers() {
  local url=$1 hp host port reply
  if have redis-cli; then
    reply=$(with_timeout 3 redis-cli -u "$url" ping 2>/dev/null) || return 1
    [[ $reply == PONG ]]
  else
    hp=$(url_host_port "$url" 6379) || return 1
    read -r host port <<<"$hp"
    # Plain RESP over bash's /dev/tcp (no auth support; enough to tell "is it there").
    # shellcheck disable=SC2016 # expanded by the inner bash
    reply=$(with_timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && read -r r <&3 && echo "$r"' _ "$host" "$port" 2>/dev/null) || return 1
    [[ $reply == +PONG* ]]
  fi
}

# Start (or reuse) the private Redis in .dev/redis; sets FOUND_REDIS_URL.
start_private_redis() {
  local base=$DEV_DIR/redis port pid i
  have redis-server || return 1
  mkdir -p "$base" || return 1
  if [[ -f $base/port && -f $base/redis.pid ]]; then
    port=$(<"$base/port") pid=$(<"$base/redis.pid")
    if kill -0 "$pid" 2>/dev/null && redis_answers "redis://127.0.0.1:$port/"; then
      FOUND_REDIS_URL=redis://127.0.0.1:$port/
      say "redis: using private server (running) at $FOUND_REDIS_URL, pid $pid"
      return 0
    fi
  fi
  port=$(free_port "$PRIVATE_REDIS_PORT") || { say "redis: no free port from $PRIVATE_REDIS_PORT"; return 1; }
  rm -f "$base/redis.pid"
  # Nothing kept on disk: it is a cache for development and tests.
  redis-server --port "$port" --bind 127.0.0.1 --dir "$base" --daemonize yes --save '' \
    --appendonly no --pidfile "$base/redis.pid" --logfile "$base/redis.log" >/dev/null ||
    { say "redis: private server did not start, see $base/redis.log"; return 1; }
  echo "$port" >"$base/port"
  FOUND_REDIS_URL=redis://127.0.0.1:$port/
  for ((i = 0; i < 50; i++)); do
    if redis_answers "$FOUND_REDIS_URL"; then
      say "redis: using private server (started) at $FOUND_REDIS_URL, data in $base"
      return 0
    fi
    sleep 0.2
  done
  say "redis: private server started but does not answer, see $base/redis.log"
  return 1
}

stop_private_redis() {
  local base=$DEV_DIR/redis pid i
  [[ -f $base/redis.pid ]] || return 0
  pid=$(<"$base/redis.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    say "redis: private server stopped"
  fi
  rm -f "$base/redis.pid"
}

# ---------------------------------------------------------------- Docker and apt fallbacks

_compose() {
  local file=$REPO_ROOT/docker-compose.yml
  if docker compose version >/dev/null 2>&1; then docker compose -f "$file" "$@"
  elif have docker-compose; then docker-compose -f "$file" "$@"
  else return 127
  fi
}

# Bring up the Compose postgres and redis once per run, published on the private ports so they
# don't collide with servers on the standard ports.
_docker_deps_up() {
  [[ -n ${_TENANT_DOCKER_UP:-} ]] && return 0
  have docker && docker info >/dev/null 2>&1 || return 1
  say "starting postgres and redis with docker compose"
  POSTGRES_HOST_PORT=$PRIVATE_PG_PORT REDIS_HOST_PORT=$PRIVATE_REDIS_PORT \
    _compose up -d postgres redis >&2 || return 1
  _TENANT_DOCKER_UP=1
}

# apt-get install both servers at most once per run (as root on Debian/Ubuntu only).
_apt_install_deps() {
  case ${_TENANT_APT:-} in ok) return 0 ;; failed) return 1 ;; esac
  _TENANT_APT=failed
  [[ ${TENANT_DEV_NO_INSTALL:-0} != 1 && $(id -u) == 0 && -f /etc/debian_version ]] || return 1
  have apt-get || return 1
  say "installing postgresql and redis-server with apt-get"
  local pkgs=(postgresql redis-server)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; then
    apt-get update >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
      return 1
  fi
  _TENANT_APT=ok
}

# ---------------------------------------------------------------- the finders

# find_postgres [VAR]: VAR (default DATABASE_URL) names the caller's own URL.
find_postgres() {
  local var=${1:-DATABASE_URL} url i
  url=${!var:-}
  FOUND_PG_URL=
  if [[ -n $url ]]; then
    if pg_answers "$url"; then
      FOUND_PG_URL=$url
      say "postgres: using \$$var at $(redact_url "$url")"
      return 0
    fi
    say "postgres: \$$var ($(redact_url "$url")) does not answer; looking for another server"
  fi
  if [[ ${TENANT_DEV_FORCE_PRIVATE:-0} != 1 ]]; then
    url=postgres://postgres@127.0.0.1:5432/postgres
    if pg_answers "$url"; then
      FOUND_PG_URL=$url
      say "postgres: using the machine's server at $url"
      return 0
    fi
  fi
  if pg_bindir >/dev/null && start_private_postgres; then return 0; fi
  if _docker_deps_up; then
    url=postgres://postgres:${POSTGRES_PASSWORD:-postgres}@127.0.0.1:$PRIVATE_PG_PORT/postgres
    _TENANT_PG_IN_DOCKER=1
    for ((i = 0; i < 60; i++)); do
      if pg_answers "$url"; then
        FOUND_PG_URL=$url
        say "postgres: using docker compose service at $(redact_url "$url")"
        return 0
      fi
      sleep 1
    done
    say "postgres: docker compose service did not answer within 60 s"
  fi
  if _apt_install_deps && start_private_postgres; then return 0; fi
  die "postgres: no server found or startable (set $var, install PostgreSQL, or start Docker)"
}

# find_redis [VAR]: VAR (default REDIS_URL) names the caller's own URL.
find_redis() {
  local var=${1:-REDIS_URL} url i
  url=${!var:-}
  FOUND_REDIS_URL=
  if [[ -n $url ]]; then
    if redis_answers "$url"; then
      FOUND_REDIS_URL=$url
      say "redis: using \$$var at $(redact_url "$url")"
      return 0
    fi
    say "redis: \$$var ($(redact_url "$url")) does not answer; looking for another server"
  fi
  if [[ ${TENANT_DEV_FORCE_PRIVATE:-0} != 1 ]]; then
    url=redis://127.0.0.1:6379/
    if redis_answers "$url"; then
      FOUND_REDIS_URL=$url
      say "redis: using the machine's server at $url"
      return 0
    fi
  fi
  if have redis-server && start_private_redis; then return 0; fi
  if _docker_deps_up; then
    url=redis://127.0.0.1:$PRIVATE_REDIS_PORT/
    for ((i = 0; i < 60; i++)); do
      if redis_answers "$url"; then
        FOUND_REDIS_URL=$url
        say "redis: using docker compose service at $url"
        return 0
      fi
      sleep 1
    done
    say "redis: docker compose service did not answer within 60 s"
  fi
  if _apt_install_deps && start_private_redis; then return 0; fi
  die "redis: no server found or startable (set $var, install redis-server, or start Docker)"
}

# Stop the private servers (not the machine's, not Docker's).
stop_private_deps() {
  stop_private_postgres
  stop_private_redis
}
