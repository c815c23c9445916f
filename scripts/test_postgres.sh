#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (tests/study/test_postgres.py), listening on 127.0.0.1 only.
#   scripts/test_postgres.sh start DIR   create a cluster in DIR (new or empty; its parents must be enterable,
#                                        e.g. from mktemp -d), start it, create database "scalekit" and print
#                                        its SQLAlchemy URL on stdout (a fresh random password in it)
#   scripts/test_postgres.sh stop DIR    stop that server and remove DIR (after a failed start too)
# PostgreSQL refuses to run as root: as root the server runs as the user "postgres" (or "nobody").
# The binaries: initdb and pg_ctl on PATH, else the newest /usr/lib/postgresql/*/bin (Debian, Ubuntu).
set -euo pipefail

fail() { echo "test_postgres.sh: $*" >&2; exit 1; }

bin_dir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(realpath "$(command -v pg_ctl)")"  # a symlink's target folder holds createdb too
    return
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] && [ -x "$found/initdb" ] \
    || fail "no PostgreSQL server found (initdb, pg_ctl); install the distribution's postgresql package"
  echo "$found"
}

as_server() {  # run a command as the server's user, from DIR (the caller's folder may be closed to that user)
  if [ "$(id -u)" = 0 ]; then
    (cd "$dir" && runuser -u "$user" -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

[ $# = 2 ] || fail "usage: $0 start|stop DIR"
action=$1
dir=$(realpath -m "$2")
user=$(id -un)
if [ "$(id -u)" = 0 ]; then
  user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
fi

case "$action" in
  start)
    bin=$(bin_dir)
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || fail "$dir is not empty"
    chown "$user" "$dir" && chmod 700 "$dir"
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" > "$dir/password") && chown "$user" "$dir/password"
    as_server "$bin/initdb" -D "$dir/data" -U scalekit --pwfile="$dir/password" -A scram-sha-256 -E UTF8 \
      --no-locale --no-sync >"$dir/initdb.log" 2>&1 || fail "initdb failed: $(tail -n 1 "$dir/initdb.log")"
    started=""
    for _ in 1 2 3 4 5 6 7 8; do  # a random free port; another server may hold the one drawn
      port=$((20000 + RANDOM % 30000))
      if as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
          -o "-k $dir -h 127.0.0.1 -p $port -F" start >/dev/null 2>&1; then
        started=yes
        break
      fi
    done
    [ -n "$started" ] || fail "the server did not start: $(tail -n 1 "$dir/server.log")"
    echo "$port" > "$dir/port"
    PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U scalekit scalekit \
      || fail "createdb failed on 127.0.0.1:$port"
    echo "postgresql+psycopg2://scalekit:$password@127.0.0.1:$port/scalekit"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_server "$(bin_dir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$dir"
    ;;
  *)
    fail "usage: $0 start|stop DIR"
    ;;
esac
