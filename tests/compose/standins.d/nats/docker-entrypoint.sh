#!/bin/sh
# Entrypoint of the nats stand-in, same rule as the official alpine image's:
# a command made only of flags is given to nats-server; any other runs as is.
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi
exec "$@"
