#!/usr/bin/env bash
# Throwaway PostgreSQL servers for the Postgres trait's tests and benchmark.
#
#   eval "$(bash .ci/postgres.sh start)"   # installs the server if missing, starts it, prints exports
#   bash .ci/postgres.sh restart                # what the fault tests do mid-run
#   bash .ci/postgres.sh stop
#
# The main cluster lives in a temporary directory (POLICYGATE_PG_DIR, default one per port under
# $TMPDIR) and listens on 127.0.0.1 and 127.0.0.2, port $POLICYGATE_PG_PORT (default 55432), as a
# deployment would be reached: TLS with a certificate for 127.0.0.1 and localhost signed by a CA
# this script generates (openssl), and scram-sha-256 passwords for
#   policygate_owner  owns the schema: runs the migrations (CREATE on the database);
#   policygate_app    the application's role: executes the schema's functions, nothing else.
# Both may connect over TLS only. The superuser policygate (tests' setup and checks, pgbench) is
# trusted on the socket and on loopback: it is for tests only. 127.0.0.2 is not in the
# certificate, for the test of a verify-full refusal. A second, small cluster without TLS
# listens on $POLICYGATE_PG_PLAIN_PORT (default the port + 1), for the test of a refusal by
# tls = "require". pg_stat_statements is loaded so statements per acquire can be counted.
#
# Exports: POLICYGATE_POSTGRES_URL (policygate_app, verify-full) and PGPASSWORD (its password),
# POLICYGATE_POSTGRES_OWNER_URL and POLICYGATE_POSTGRES_OWNER_PASSWORD, POLICYGATE_POSTGRES_ADMIN_URL,
# POLICYGATE_POSTGRES_PLAIN_URL, POLICYGATE_POSTGRES_CA (the CA certificate's path).
#
# fsync is off (tests only); POLICYGATE_PG_FSYNC=on starts the main cluster with fsync on, as a
# real server runs, for the benchmark (synchronous_commit stays at its default, on).
set -euo pipefail
case "${POLICYGATE_PG_FSYNC:-off}" in on|off) ;; *) echo "POLICYGATE_PG_FSYNC must be on or off" >&2; exit 2 ;; esac
port=${POLICYGATE_PG_PORT:-55432}
plain_port=${POLICYGATE_PG_PLAIN_PORT:-$((port + 1))}
dir=${POLICYGATE_PG_DIR:-${TMPDIR:-/tmp}/policygate-pg-$port}

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

# initdb and the server refuse to run as root; run them as the postgres user then.
run=()
as_server() { "${run[@]}" "$@"; }

# A CA and a server certificate (SAN: localhost, 127.0.0.1), made once per cluster directory.
make_certificates() {
    local tls=$dir/tls
    [ -f "$tls/server.crt" ] && return 0
    mkdir -p "$tls"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 30 \
        -subj "/CN=PolicyGate test CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 30 \
        -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
    chmod 600 "$tls/server.key" "$tls/ca.key"
    chmod 644 "$tls/ca.crt" "$tls/server.crt"
    [ "$(id -u)" = 0 ] && chown postgres "$tls/server.key" "$tls/server.crt"
    return 0
}

case "${1:-}" in
start)
    if ! bin=$(find_bin); then
        echo "PostgreSQL server not found: installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        (apt-get update -qq && apt-get install -y -qq postgresql) >&2
        bin=$(find_bin)
    fi
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        run=(runuser -u postgres --)
    fi
    mkdir -p "$dir" "$dir-plain"
    [ "$(id -u)" = 0 ] && chown postgres "$dir" "$dir-plain"
    make_certificates
    if [ ! -f "$dir/passwords" ]; then
        printf 'owner=%s\napp=%s\n' "$(openssl rand -hex 16)" "$(openssl rand -hex 16)" >"$dir/passwords"
        chmod 600 "$dir/passwords"
    fi
    owner_password=$(sed -n 's/^owner=//p' "$dir/passwords")
    app_password=$(sed -n 's/^app=//p' "$dir/passwords")

    # The TLS cluster.
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_server "$bin/initdb" -D "$dir/data" -A trust -U policygate --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # First match wins: the superuser anyhow; everyone else over TLS with a password, or not at all.
    as_server tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
local   all  all                       trust
host    all  policygate   127.0.0.0/8  trust
hostssl all  all          127.0.0.0/8  scram-sha-256
host    all  all          127.0.0.0/8  reject
EOF
    if ! as_server "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
            "-p $port -k $dir -c listen_addresses=127.0.0.1,127.0.0.2 -c shared_preload_libraries=pg_stat_statements -c max_connections=200 -c fsync=${POLICYGATE_PG_FSYNC:-off} -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key -c password_encryption=scram-sha-256" >&2 \
            || { cat "$dir/server.log" >&2; exit 1; }
    fi
    as_server "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U policygate -d postgres >/dev/null <<EOF
SELECT 'CREATE ROLE policygate_owner LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'policygate_owner') \gexec
SELECT 'CREATE ROLE policygate_app LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'policygate_app') \gexec
ALTER ROLE policygate_owner PASSWORD '$owner_password';
ALTER ROLE policygate_app PASSWORD '$app_password';
GRANT CREATE ON DATABASE postgres TO policygate_owner;
EOF

    # The cluster without TLS.
    if [ ! -f "$dir-plain/data/PG_VERSION" ]; then
        as_server "$bin/initdb" -D "$dir-plain/data" -A trust -U policygate --no-sync >"$dir-plain/initdb.log" 2>&1 \
            || { cat "$dir-plain/initdb.log" >&2; exit 1; }
    fi
    if ! as_server "$bin/pg_ctl" -D "$dir-plain/data" status >/dev/null 2>&1; then
        as_server "$bin/pg_ctl" -D "$dir-plain/data" -l "$dir-plain/server.log" -w -t 60 start -o \
            "-p $plain_port -k $dir-plain -c listen_addresses=127.0.0.1 -c max_connections=20 -c shared_buffers=16MB -c fsync=off -c ssl=off" >&2 \
            || { cat "$dir-plain/server.log" >&2; exit 1; }
    fi

    tls="sslmode=verify-full&sslrootcert=$dir/tls/ca.crt"
    echo "export POLICYGATE_POSTGRES_URL='postgres://policygate_app@127.0.0.1:$port/postgres?$tls'"
    echo "export PGPASSWORD='$app_password'"
    echo "export POLICYGATE_POSTGRES_OWNER_URL='postgres://policygate_owner@127.0.0.1:$port/postgres?$tls'"
    echo "export POLICYGATE_POSTGRES_OWNER_PASSWORD='$owner_password'"
    echo "export POLICYGATE_POSTGRES_ADMIN_URL='postgres://policygate@127.0.0.1:$port/postgres?$tls'"
    echo "export POLICYGATE_POSTGRES_PLAIN_URL='postgres://policygate@127.0.0.1:$plain_port/postgres'"
    echo "export POLICYGATE_POSTGRES_CA='$dir/tls/ca.crt'"
    ;;
restart)
    # For the fault tests: every connection is dropped, and the server is back a moment later.
    bin=$(find_bin)
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    as_server "$bin/pg_ctl" -D "$dir/data" -m fast -w restart >/dev/null 2>&1 \
        || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    bin=$(find_bin) || exit 0
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    for d in "$dir" "$dir-plain"; do
        if [ -d "$d/data" ]; then as_server "$bin/pg_ctl" -D "$d/data" -m fast -w stop >&2 || true; fi
        rm -rf "$d"
    done
    ;;
*)
    echo "usage: $0 start|restart|stop" >&2
    exit 2
    ;;
esac
