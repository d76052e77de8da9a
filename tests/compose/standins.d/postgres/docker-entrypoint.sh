#!/usr/bin/env bash
# Entrypoint of the postgres stand-in: the documented behaviour of the
# official image's entrypoint, in short. On an empty PGDATA: initdb, run
# /docker-entrypoint-initdb.d/* against a server that listens on the Unix
# socket only (so TCP clients and `pg_isready -h 127.0.0.1` see nothing until
# initialisation is done), stop it; then run postgres in the foreground.
# No -u: init scripts are sourced into this shell, as in the official image.
set -Eeo pipefail

# Started as root: own the data folder, then run this script again as postgres.
if [[ ${1:-} == postgres && $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} != postgres ]]; then
    exec "$@"   # any other command (bash, psql ...) runs as given
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:=}"
: "${POSTGRES_HOST_AUTH_METHOD:=}"

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
        echo 'Error: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust' >&2
        exit 1
    fi
    # Same rule as the official image: a password makes the default scram-sha-256.
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    initdb_args=(--username="$POSTGRES_USER" --auth-local=trust --auth-host="$auth"
                 --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA")
    if [[ -n $POSTGRES_PASSWORD ]]; then
        initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
    else
        initdb "${initdb_args[@]}"
    fi
    {
        echo
        echo "host all all all $auth"
    } >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

    # Temporary server for the init scripts: Unix socket only.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER")
    if [[ $POSTGRES_DB != postgres ]]; then
        # Variables are interpolated in psql's input, not in -c.
        echo 'CREATE DATABASE :"db";' | "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e $f ]] || continue
        case $f in
            *.sh)
                # Executable scripts run; the others are sourced (official rule).
                # shellcheck disable=SC1090
                if [[ -x $f ]]; then echo "running $f"; "$f"
                else echo "sourcing $f"; . "$f"; fi ;;
            *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
            *) echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGPASSWORD
    echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
