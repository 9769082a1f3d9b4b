#!/usr/bin/env bash
# A throwaway PostgreSQL server for the Postgres trait's tests and benchmark.
#
#   eval "$(bash .ci/postgres.sh start)"   # installs the server if missing, starts it, prints exports
#   bash .ci/postgres.sh restart                # what the fault tests do mid-run
#   bash .ci/postgres.sh stop
#
# The cluster lives in a temporary directory (POLICYGATE_PG_DIR, default one per port under
# $TMPDIR) and listens on 127.0.0.1:$POLICYGATE_PG_PORT (default 55432), trusting local users:
# it is for tests only. pg_stat_statements is loaded so statements per acquire can be counted.
# fsync is off (tests only); POLICYGATE_PG_FSYNC=on starts it with fsync on, as a real server
# runs, for the benchmark (synchronous_commit stays at its default, on).
set -euo pipefail
case "${POLICYGATE_PG_FSYNC:-off}" in on|off) ;; *) echo "POLICYGATE_PG_FSYNC must be on or off" >&2; exit 2 ;; esac
port=${POLICYGATE_PG_PORT:-55432}
dir=${POLICYGATE_PG_DIR:-${TMPDIR:-/tmp}/policygate-pg-$port}

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

case "${1:-}" in
start)
    if ! bin=$(find_bin); then
        echo "PostgreSQL server not found: installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        (apt-get update -qq && apt-get install -y -qq postgresql) >&2
        bin=$(find_bin)
    fi
    # initdb and the server refuse to run as root; run them as the postgres user then.
    run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        run=(runuser -u postgres --)
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U policygate --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! "${run[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
            "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c max_connections=200 -c fsync=${POLICYGATE_PG_FSYNC:-off}" >&2 \
            || { cat "$dir/server.log" >&2; exit 1; }
    fi
    echo "export POLICYGATE_POSTGRES_URL='postgres://policygate@127.0.0.1:$port/postgres'"
    ;;
restart)
    # For the fault tests: every connection is dropped, and the server is back a moment later.
    bin=$(find_bin)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w restart >/dev/null 2>&1 \
        || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    bin=$(find_bin) || exit 0
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    if [ -d "$dir/data" ]; then "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true; fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|restart|stop" >&2
    exit 2
    ;;
esac
