# One image for both services; docker-compose.yml picks the binary with
# `command`. Build stage: compile with `make` (bin/order-service and
# bin/inventory-service). Runtime stage: only the shared libraries they load.
FROM debian:bookworm-slim AS build

RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential make pkg-config \
        libmicrohttpd-dev libpq-dev libnats-dev libjansson-dev; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN make && test -x bin/order-service && test -x bin/inventory-service


FROM debian:bookworm-slim

# Runtime libraries (Debian bookworm names), curl for the healthchecks.
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libmicrohttpd12 libpq5 libnats3.4 libjansson4 curl ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app
COPY --from=build /src/bin/order-service /src/bin/inventory-service /app/bin/
COPY --from=build /src/migrations/ /app/migrations/
# Fails the build if a binary needs a library this stage lacks.
RUN ! ldd bin/order-service bin/inventory-service | grep 'not found'

# Default MIGRATIONS_DIR (migrations/order, migrations/inventory) is relative
# to this working folder; docker-compose.yml sets it absolute anyway.
USER app
EXPOSE 8080 8081
CMD ["bin/order-service"]
