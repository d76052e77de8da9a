/* fuzz_http.c - libFuzzer harness: the HTTP layer fed raw request bytes.
 * A real server (common/http.c on libmicrohttpd) with the services' real
 * route tables listens on loopback; each input is sent as it is on a fresh
 * connection (method, path, headers, chunked or not, pipelined requests),
 * the write side is closed and the reply read to the end. The services run
 * without a database (schema not ready): the handlers parse, validate and
 * answer 503 where they would write. */
#include "http.h"
#include "inventory_http.h"
#include "order_http.h"
#include "service.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLY_WAIT_MS 300 /* no reply by then: a malformed request left open (the reaper cuts it) */
#define REPLY_PAUSE_MS 20

static struct service svc; /* serving = 0: no database */
static struct http_server *server;
static int port;

static void start_server(void)
{
    size_t n = order_nroutes + inventory_nroutes;
    struct http_route *routes = xcalloc(n, sizeof *routes);
    memcpy(routes, order_routes, order_nroutes * sizeof *routes);
    memcpy(routes + order_nroutes, inventory_routes, inventory_nroutes * sizeof *routes);
    struct http_limits lim = {2, 1000, 1000, 500};
    for (int tries = 0; tries < 50 && !server; tries++) {
        port = 20000 + (int)(mono_ms() * 7919 % 10000);
        http_start(port, &lim, routes, n, &svc, &server);
    }
    if (!server)
        abort();
}

/* A connection to the server. libFuzzer's timeout alarm (SIGALRM, every
 * -timeout / 2 + 1 s) can interrupt connect(): a fresh socket then, not a
 * crash (a CI run aborted so after 6 s, on an input that passes alone). */
static int connect_server(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int tries = 0; tries < 20; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        int err = errno;
        if (fd >= 0)
            close(fd);
        if (err != EINTR) {
            fprintf(stderr, "fuzz_http: connect to the server: %s\n", strerror(err));
            break;
        }
    }
    abort(); /* the server stopped listening */
}

static void exchange(const uint8_t *data, size_t size)
{
    int fd = connect_server();
    for (size_t off = 0; off < size;) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early (413, a bad request line) */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    /* libmicrohttpd does not always close a half-closed keep-alive
     * connection at once: read until the end, or a pause after a reply. */
    char buf[4096];
    int got = 0;
    for (int64_t end = mono_ms() + REPLY_WAIT_MS; mono_ms() < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, got ? REPLY_PAUSE_MS : 100);
        if (ready == 0 && got)
            break;
        if (ready > 0 && recv(fd, buf, sizeof buf, 0) <= 0)
            break;
        got |= ready > 0;
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        start_server();
    exchange(data, size);
    return 0;
}
