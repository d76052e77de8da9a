/* harness.h - what integration tests need around the real servers: the
 * shared Postgres from scripts/stack, a private nats-server per test, the
 * service binaries as child processes, a tiny HTTP client and SQL helpers.
 *
 * Nothing here mocks Postgres or NATS: every call reaches a real server on
 * 127.0.0.1. Every wait is bounded. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- processes ---- */
struct proc {
    pid_t pid;
    char log[256];  /* its stderr goes here */
};
/* Starts argv with extra "NAME=value" environment entries (NULL-terminated). */
void proc_start(struct proc *p, const char *const argv[], const char *const env[]);
/* Sends sig and waits up to timeout_ms; returns the exit code, 128+signal,
 * or -1 if it did not end in time (then it is killed with SIGKILL). */
int proc_stop(struct proc *p, int sig, int timeout_ms);
/* Waits up to timeout_ms for the process to end by itself; as proc_stop. */
int proc_wait(struct proc *p, int timeout_ms);
/* Whether a line of its log so far contains what. */
int proc_log_has(const struct proc *p, const char *what);
/* How many times needle occurs in text (overlapping ones too). */
int count_of(const char *text, const char *needle);
/* Whether such a line comes within timeout_ms (polled every 100 ms). */
int proc_log_wait(const struct proc *p, const char *what, int timeout_ms);
/* The last `lines` lines of the process's log on stderr (each cut at 600
 * characters), headed by `what`: for a test to show, before it fails, what
 * a server said (the run deletes the logs afterwards). */
void proc_print_tail(const struct proc *p, const char *what, int lines);

/* ---- a private nats-server with JetStream ---- */
struct natsd {
    struct proc proc;
    int port, monitor_port, cluster_port; /* cluster_port 0: standalone */
    char store[256];
    char url[64];
    char conf[300];   /* a config file for nats-server, or "" (cluster nodes: their own) */
};
void natsd_start(struct natsd *n);        /* new store, free ports */
/* As natsd_start, with lines of nats-server configuration (e.g.
 * "max_payload: 1024"); natsd_restart() keeps them unless n->conf is
 * cleared first. */
void natsd_start_conf(struct natsd *n, const char *conf);
void natsd_kill(struct natsd *n);         /* kill -9 */
void natsd_restart(struct natsd *n);      /* same ports, same store */
void natsd_restart_empty(struct natsd *n); /* kill -9, lose the store, restart */
void natsd_cleanup(struct natsd *n);      /* kill and remove the store */
void natsd_freeze(struct natsd *n);       /* SIGSTOP: the node hangs, its sockets stay open */
void natsd_thaw(struct natsd *n);         /* SIGCONT */
/* 1 when a client connection named `name` is on this server (from /connz). */
int natsd_has_client(struct natsd *n, const char *name);

/* A 3-node JetStream cluster on loopback (routes between all three); urls
 * gets the comma-separated client URLs. Waits until each node listens. */
#define CLUSTER_NODES 3
void natsd_cluster_start(struct natsd n[CLUSTER_NODES], char *urls, size_t urls_len);

/* Messages stored in a stream (from the monitoring endpoint), -1 if none. */
long natsd_stream_msgs(struct natsd *n, const char *stream);
/* Waits up to timeout_ms until the stream holds count messages; 1 if it
 * did (the monitoring endpoint lags a publish a little). */
int natsd_stream_wait(struct natsd *n, const char *stream, long count, int timeout_ms);
/* A stream's max age in seconds, -1 if there is no such stream. */
long natsd_stream_max_age_s(struct natsd *n, const char *stream);

/* A request on subject (the JetStream API, say) from a connection of its
 * own; 0 when the answer holds `expect`. */
int natsd_request(struct natsd *n, const char *subject, const char *body, const char *expect);

/* Purges every message of a stream (JetStream API over the plain NATS
 * protocol: the stream and its consumers stay). Returns 0 on success. */
int natsd_purge(struct natsd *n, const char *stream);

/* Deletes the message at seq from stream by hand, through the raw
 * JetStream API (as `nats stream rmm` does). Returns 0 on success. */
int natsd_stream_msg_delete(struct natsd *n, const char *stream, unsigned long long seq);

/* Publishes body on subject with no header at all (a tool's message), as a
 * request JetStream acknowledges. Returns 0 when it did. */
int natsd_publish_bare(struct natsd *n, const char *subject, const char *body);
/* Publishes body on subject with Nats-Msg-Id msg_id (a test-side publisher
 * through common/broker.c). Returns 0 when JetStream acknowledged it. */
int natsd_publish(struct natsd *n, const char *subject, const char *msg_id, const char *body);
/* The same with a traceparent header (NULL: none). */
int natsd_publish_traced(struct natsd *n, const char *subject, const char *msg_id,
                         const char *body, const char *traceparent);

/* Fetches up to count messages from the durable consumer and acknowledges
 * them without doing anything with them: a consumer that skipped them.
 * Returns how many it took (-1 if it could not bind). */
int natsd_take(struct natsd *n, const char *stream, const char *durable, const char *filter,
               int count);

/* ---- Postgres (the shared stack; each test resets its databases) ---- */
const char *pg_url(const char *db);       /* "orders" | "inventory" */
void pg_reset(const char *db);            /* drop every table of the database */
/* Signals Postgres's background writers (the WAL writer, and the writers
 * that flush it before a data page); returns how many were signalled. */
int pg_signal_writers(int sig);
/* First column of the first row as a long (-1 on error or no row). */
long pg_long(const char *db, const char *sql);
/* First column of the first row as a heap string (NULL on error). */
char *pg_text(const char *db, const char *sql);
/* Runs sql; returns 0 on success. */
int pg_exec(const char *db, const char *sql);
/* A connection with a transaction left open, in which sql ran (a lock, a
 * row updated and not committed): what a test holds while a service waits
 * for it. NULL if sql failed. pg_release() ends it: how is "COMMIT" or
 * "ROLLBACK"; 1 if that succeeded (a COMMIT of an aborted transaction is
 * not a success: Postgres rolls it back). */
PGconn *pg_hold(const char *db, const char *sql);
int pg_release(PGconn *c, const char *how);

/* Runs `scripts/stack <cmd>` on the test's stack (pg-stop, pg-start). */
void stack_cmd(const char *cmd);

/* ---- the services ---- */
struct svc {
    struct proc proc;
    int port;
    char base[64];
};
/* Starts bin/<name> against the database and NATS url with extra env; waits
 * for /healthz and for migrations to finish (/readyz answers with checks). */
void svc_start(struct svc *s, const char *name, const char *nats_url, const char *const env[]);
/* The same without waiting for anything. */
void svc_spawn(struct svc *s, const char *name, const char *nats_url, const char *const env[]);
int svc_stop(struct svc *s, int sig);
void svc_freeze(struct svc *s);           /* SIGSTOP */
void svc_thaw(struct svc *s);             /* SIGCONT */
/* A series' value from the service's /metrics (exact "name{labels}"), or -1. */
double svc_metric(struct svc *s, const char *series);

/* ---- HTTP ---- */
struct http_result {
    int status;
    char *body;       /* heap, NUL-terminated; free with http_result_free */
    char *head;       /* the status line and headers, heap, as body */
    char location[256];
    char content_type[128];
};
/* One request on a fresh connection to 127.0.0.1:port. headers is a
 * NUL-terminated list of "Name: value" strings or NULL. Returns 0 or -1. */
int http_do(int port, const char *method, const char *path, const char *const *headers,
            const char *body, size_t body_len, struct http_result *out);
void http_result_free(struct http_result *r);
/* POST a JSON body; returns status (body freed unless out is given). */
int http_post_json(int port, const char *path, const char *json, struct http_result *out);
int http_get(int port, const char *path, struct http_result *out);

/* A server that takes connections and never speaks (frozen, to a client): a
 * socket listening on 127.0.0.1 that nobody accepts on, the kernel
 * completing the handshakes. Its fd; *port is where. */
int mute_listener(int *port);
/* A TCP connection from src_ip (e.g. "127.0.0.2") to 127.0.0.1:port, or -1. */
int http_connect_from(const char *src_ip, int port);
/* Sends the raw request bytes from src_ip, reads the reply until the server
 * closes or timeout_ms passes. Returns 0 with out filled, or -1. */
int http_raw(const char *src_ip, int port, const char *raw, size_t len, int timeout_ms,
             struct http_result *out);
/* The same, the sending side shut once the request is out (shutdown(SHUT_WR),
 * as `nc -N` and some HTTP/1.0 clients do). */
int http_raw_then_eof(const char *src_ip, int port, const char *raw, size_t len, int timeout_ms,
                      struct http_result *out);

/* ---- misc ---- */
/* Lines of the file at path that contain every string of needles
 * (NULL-terminated); -1 if it cannot be read. */
long file_lines_with(const char *path, const char *const *needles);
/* Folder for this run's logs and stores ($ITEST_TMP, else /tmp). */
const char *itest_tmp(void);
int free_port(void);
/* Polls fn(arg) every 50 ms until it returns non-zero or timeout_ms passes. */
int wait_until(int (*fn)(void *), void *arg, int timeout_ms);
/* The value of a string field in a JSON body, or "" (static buffer). */
const char *json_field(const char *body, const char *field);
/* A metric's value from a /metrics text ("name{labels}" exact), or -1. */
double metric_in(const char *text, const char *series);

#endif
