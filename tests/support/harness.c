/* harness.c - processes, nats-server, Postgres helpers and an HTTP client
 * for the integration tests. Everything talks to real servers on loopback. */
#include "harness.h"
#include "broker.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what)
{
    fprintf(stderr, "harness: %s\n", what);
    abort();
}

/* Children of this test process, killed at exit so that a failed assertion
 * (which ends the test process) leaves no server behind. */
static pid_t children[64];

static void kill_children(void)
{
    for (size_t i = 0; i < ARRAY_LEN(children); i++)
        if (children[i] > 0 && kill(children[i], SIGKILL) == 0)
            waitpid(children[i], NULL, 0);
}

/* Every process started, also in $ITEST_TMP/pids: scripts/test stops by
 * those PIDs whatever is left once the suites ended, however they ended. */
static void note_pid(pid_t pid)
{
    const char *t = getenv("ITEST_TMP");
    if (!t || !*t)
        return;
    char path[512];
    snprintf(path, sizeof path, "%s/pids", t);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
}

static void track(pid_t pid)
{
    static int registered;
    if (!registered++)
        atexit(kill_children);
    note_pid(pid);
    /* a free slot (proc_wait frees a child's when it reaps it); with none,
     * scripts/test still stops it by the PID noted above */
    for (size_t i = 0; i < ARRAY_LEN(children); i++)
        if (children[i] <= 0) {
            children[i] = pid;
            return;
        }
}

/* A child reaped: its PID may be any process's next (a Postgres backend's),
 * and kill_children must not signal it. */
static void untrack(pid_t pid)
{
    for (size_t i = 0; i < ARRAY_LEN(children); i++)
        if (children[i] == pid)
            children[i] = 0;
}

const char *itest_tmp(void)
{
    const char *t = getenv("ITEST_TMP");
    return t && *t ? t : "/tmp";
}

void proc_start(struct proc *p, const char *const argv[], const char *const env[])
{
    static int seq;
    snprintf(p->log, sizeof p->log, "%s/proc-%d-%d.log", itest_tmp(), (int)getpid(), seq++);
    p->pid = fork();
    if (p->pid < 0)
        die("fork");
    if (p->pid == 0) {
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        setpgid(0, 0);
        /* dies with the test process, however that one ends (a failed
         * assertion ends it without running teardowns) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    track(p->pid);
}

#define TAIL_WIDTH 600

void proc_print_tail(const struct proc *p, const char *what, int lines)
{
    FILE *f = lines > 0 ? fopen(p->log, "r") : NULL;
    if (!f)
        return;
    char (*ring)[TAIL_WIDTH + 2] = xcalloc((size_t)lines, sizeof *ring);
    char line[TAIL_WIDTH + 2];
    size_t n = 0, keep = (size_t)lines;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') { /* cut: skip the rest */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            line[len - 1] = '\n';
        } else if (len && line[len - 1] != '\n') { /* the last line, unfinished */
            line[len++] = '\n';
            line[len] = '\0';
        }
        memcpy(ring[n++ % keep], line, len + 1);
    }
    fclose(f);
    fprintf(stderr, "---- %s: %s (last %zu of %zu lines) ----\n", what, p->log, n < keep ? n : keep, n);
    for (size_t i = n > keep ? n - keep : 0; i < n; i++)
        fputs(ring[i % keep], stderr);
    free(ring);
}

int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

int proc_log_has(const struct proc *p, const char *what)
{
    FILE *f = fopen(p->log, "r");
    char line[4096];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return found;
}

int proc_log_wait(const struct proc *p, const char *what, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    int found;
    while (!(found = proc_log_has(p, what)) && mono_ms() < end)
        sleep_ms(100);
    return found;
}

int proc_wait(struct proc *p, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        int st = 0;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(10);
    }
    return -1;
}

int proc_stop(struct proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int code = proc_wait(p, timeout_ms);
    if (code == -1 && p->pid > 0) {
        kill(p->pid, SIGKILL);
        proc_wait(p, 5000);
    }
    return code;
}

/* Whether port was handed out by free_port in this process already: a port
 * nobody listens on yet is free to the check below until its server starts,
 * so two servers about to start (a nats-server's client and monitoring
 * ports) could be handed one port and one of them would not start. */
static int handed_out(int port)
{
    static int given[256];
    static size_t n;
    for (size_t i = 0; i < n && i < ARRAY_LEN(given); i++)
        if (given[i] == port)
            return 1;
    given[n++ % ARRAY_LEN(given)] = port;
    return 0;
}

/* The ports free_port hands out: 10000..31999, or ITEST_PORTS="LO-HI"
 * inside it, so that test runs at once (scripts/test's shards) never hand
 * out one port to two servers, nor take the port of a server one of them
 * is restarting. */
static void port_range(int *lo, int *n)
{
    const char *v = getenv("ITEST_PORTS");
    int a = 10000, b = 31999;
    if (v && (sscanf(v, "%d-%d", &a, &b) != 2 || a < 10000 || b > 31999 || b - a < 100))
        die("ITEST_PORTS: give LO-HI inside 10000-31999, at least 100 ports");
    *lo = a;
    *n = b - a + 1;
}

/* A free port below the kernel's range for outgoing connections: a server
 * restarted on the same port (natsd_restart) must not find it taken by
 * some client's outgoing connection meanwhile. */
int free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)mono_ms();
    int lo, n;
    port_range(&lo, &n);
    for (int i = 0; i < 1000; i++) {
        int port = lo + (int)(rand_r(&seed) % (unsigned)n);
        if (handed_out(port))
            continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    die("free_port");
    return -1;
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int port_open_cb(void *arg)
{
    return port_open(*(int *)arg);
}

int wait_until(int (*fn)(void *), void *arg, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    while (mono_ms() < end) {
        if (fn(arg))
            return 1;
        sleep_ms(50);
    }
    return fn(arg);
}

/* ---- nats-server ---- */

static void natsd_spawn(struct natsd *n)
{
    char port[16], mport[16];
    snprintf(port, sizeof port, "%d", n->port);
    snprintf(mport, sizeof mport, "%d", n->monitor_port);
    const char *argv[] = {"nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-m", mport,
                    "-sd", n->store, n->conf[0] ? "-c" : NULL, n->conf, NULL};
    const char *cluster_argv[] = {"nats-server", "-c", n->conf, NULL};
    const char *env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    proc_start(&n->proc, n->cluster_port ? cluster_argv : argv, env);
    if (!wait_until(port_open_cb, &n->port, 10000))
        die("nats-server did not start");
}

static void natsd_prepare(struct natsd *n)
{
    memset(n, 0, sizeof *n);
    n->port = free_port();
    n->monitor_port = free_port();
    snprintf(n->store, sizeof n->store, "%s/nats-XXXXXX", itest_tmp());
    if (!mkdtemp(n->store))
        die("mkdtemp");
    snprintf(n->url, sizeof n->url, "nats://127.0.0.1:%d", n->port);
}

void natsd_start(struct natsd *n)
{
    natsd_prepare(n);
    natsd_spawn(n);
}

void natsd_start_conf(struct natsd *n, const char *conf)
{
    char path[300];
    snprintf(path, sizeof path, "%s/natsd-%d.conf", itest_tmp(), free_port());
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", conf) < 0 || fclose(f) != 0)
        die("cannot write a nats-server config");
    natsd_prepare(n);
    snprintf(n->conf, sizeof n->conf, "%s", path);
    natsd_spawn(n);
}

static void write_node_conf(struct natsd *n, int i, const struct natsd all[CLUSTER_NODES])
{
    snprintf(n->conf, sizeof n->conf, "%s.conf", n->store);
    FILE *f = fopen(n->conf, "w");
    if (!f)
        die("cluster config");
    fprintf(f, "server_name: n%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"
            "jetstream { store_dir: \"%s\", max_memory_store: 64MB, max_file_store: 1GB }\n"
            "cluster { name: itest, listen: 127.0.0.1:%d, routes: [",
            i + 1, n->port, n->monitor_port, n->store, n->cluster_port);
    for (int k = 0; k < CLUSTER_NODES; k++)
        fprintf(f, "%snats-route://127.0.0.1:%d", k ? ", " : "", all[k].cluster_port);
    fprintf(f, "] }\n");
    fclose(f);
}

void natsd_cluster_start(struct natsd n[CLUSTER_NODES], char *urls, size_t urls_len)
{
    size_t used = 0;
    for (int i = 0; i < CLUSTER_NODES; i++) {
        memset(&n[i], 0, sizeof n[i]);
        n[i].port = free_port();
        n[i].monitor_port = free_port();
        n[i].cluster_port = free_port();
        snprintf(n[i].store, sizeof n[i].store, "%s/nats-n%d-XXXXXX", itest_tmp(), i + 1);
        if (!mkdtemp(n[i].store))
            die("mkdtemp");
        snprintf(n[i].url, sizeof n[i].url, "nats://127.0.0.1:%d", n[i].port);
        used += (size_t)snprintf(urls + used, urls_len - used, "%s%s", i ? "," : "", n[i].url);
    }
    for (int i = 0; i < CLUSTER_NODES; i++)
        write_node_conf(&n[i], i, n);
    for (int i = 0; i < CLUSTER_NODES; i++)
        natsd_spawn(&n[i]);
}

/* Whether every thread of pid is stopped ('T' in /proc/pid/task/N/stat). */
static int all_threads_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 1; /* gone: nothing runs */
    int stopped = 1;
    struct dirent *e;
    while (stopped && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char stat[400], buf[512];
        snprintf(stat, sizeof stat, "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(stat, "r");
        if (!f)
            continue; /* the thread ended */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *close_paren = strrchr(buf, ')'); /* the state follows "(comm)" */
        stopped = close_paren && (close_paren[2] == 'T' || close_paren[2] == 't');
    }
    closedir(d);
    return stopped;
}

/* SIGSTOP, and back once every thread has stopped: kill() returns before
 * they all have, and a server thread still running answered a request sent
 * after it once (a fetch meant to time out on the frozen server got its
 * messages, CI 2026-12-08). */
static void freeze_pid(pid_t pid)
{
    if (kill(pid, SIGSTOP) != 0)
        die("SIGSTOP");
    for (int i = 0; i < 2000 && !all_threads_stopped(pid); i++)
        sleep_ms(1);
}

void natsd_freeze(struct natsd *n)
{
    freeze_pid(n->proc.pid);
}

void natsd_thaw(struct natsd *n)
{
    kill(n->proc.pid, SIGCONT);
}

void svc_freeze(struct svc *s)
{
    freeze_pid(s->proc.pid);
}

void svc_thaw(struct svc *s)
{
    if (kill(s->proc.pid, SIGCONT) != 0)
        die("svc_thaw");
}

int natsd_has_client(struct natsd *n, const char *name)
{
    struct http_result r;
    if (http_do(n->monitor_port, "GET", "/connz", NULL, NULL, 0, &r) != 0)
        return 0;
    json_t *o = json_loads(r.body, JSON_DECODE_INT_AS_REAL, NULL);
    json_t *conns = json_object_get(o, "connections");
    int found = 0;
    for (size_t i = 0; i < json_array_size(conns); i++) {
        const char *cn = json_string_value(json_object_get(json_array_get(conns, i), "name"));
        found = found || (cn && strcmp(cn, name) == 0);
    }
    json_decref(o);
    http_result_free(&r);
    return found;
}

void natsd_kill(struct natsd *n)
{
    proc_stop(&n->proc, SIGKILL, 5000);
}

void natsd_restart(struct natsd *n)
{
    natsd_spawn(n);
}

void natsd_restart_empty(struct natsd *n)
{
    natsd_kill(n);
    char *cmd = xasprintf("rm -rf '%s'/*", n->store);
    if (system(cmd) != 0)
        die(cmd);
    free(cmd);
    natsd_spawn(n);
}

void natsd_cleanup(struct natsd *n)
{
    natsd_kill(n);
    if (n->store[0]) {
        char *cmd = xasprintf("rm -rf '%s' '%s.conf'", n->store, n->store);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", n->store);
        free(cmd);
    }
}

/* A number of a stream's details from the monitoring endpoint: object
 * "state" or "config", then field; -1 if the stream is not there. */
static double stream_number(struct natsd *n, const char *stream, const char *object,
                            const char *field)
{
    struct http_result r;
    double v = -1;
    if (http_do(n->monitor_port, "GET", "/jsz?streams=true&config=true", NULL, NULL, 0, &r) != 0)
        return -1;
    /* reserved_* counters exceed int64: read numbers as reals */
    json_t *o = json_loads(r.body, JSON_DECODE_INT_AS_REAL, NULL);
    json_t *accts = json_object_get(o, "account_details");
    for (size_t i = 0; i < json_array_size(accts); i++) {
        json_t *sd = json_object_get(json_array_get(accts, i), "stream_detail");
        for (size_t j = 0; j < json_array_size(sd); j++) {
            json_t *s = json_array_get(sd, j);
            const char *name = json_string_value(json_object_get(s, "name"));
            if (name && strcmp(name, stream) == 0)
                v = json_number_value(json_object_get(json_object_get(s, object), field));
        }
    }
    json_decref(o);
    http_result_free(&r);
    return v;
}

long natsd_stream_msgs(struct natsd *n, const char *stream)
{
    long count = (long)stream_number(n, stream, "state", "messages");
    if (count < 0)
        fprintf(stderr, "harness: stream %s not found\n", stream);
    return count;
}

struct stream_count {
    struct natsd *n;
    const char *stream;
    long count;
};

static int stream_holds(void *arg)
{
    const struct stream_count *w = arg;
    return natsd_stream_msgs(w->n, w->stream) == w->count;
}

int natsd_stream_wait(struct natsd *n, const char *stream, long count, int timeout_ms)
{
    struct stream_count w = {n, stream, count};
    return wait_until(stream_holds, &w, timeout_ms);
}

long natsd_stream_max_age_s(struct natsd *n, const char *stream)
{
    double ns = stream_number(n, stream, "config", "max_age");
    return ns < 0 ? -1 : (long)(ns / 1e9);
}

/* A plain NATS request (no headers) on a connection of its own: 0 when the
 * reply holds `expect`. */
int natsd_request(struct natsd *n, const char *subject, const char *body, const char *expect)
{
    natsConnection *nc = NULL;
    natsMsg *reply = NULL;
    int rc = -1;
    if (natsConnection_ConnectTo(&nc, n->url) == NATS_OK &&
        natsConnection_RequestString(&reply, nc, subject, body, 5000) == NATS_OK &&
        strstr(natsMsg_GetData(reply), expect))
        rc = 0;
    natsMsg_Destroy(reply);
    natsConnection_Destroy(nc);
    return rc;
}

int natsd_stream_msg_delete(struct natsd *n, const char *stream, unsigned long long seq)
{
    char subject[128], body[64];
    snprintf(subject, sizeof subject, "$JS.API.STREAM.MSG.DELETE.%s", stream);
    snprintf(body, sizeof body, "{\"seq\":%llu}", seq);
    return natsd_request(n, subject, body, "\"success\":true");
}

int natsd_publish_bare(struct natsd *n, const char *subject, const char *body)
{
    return natsd_request(n, subject, body, "\"seq\":"); /* JetStream's ack */
}

static int broker_up(void *arg)
{
    return broker_connected(arg);
}

/* A test-side client of stream (through common/broker.c), connected; NULL
 * if it could not connect within 10 s. */
static struct broker *test_broker(struct natsd *n, const char *name, const char *stream)
{
    struct broker_settings set = {n->url, name, stream, 1, 3LL * 24 * 3600 * 1000,
                                  0, 0, 0, NULL, 0};
    struct broker *b = NULL;
    char msg[256];
    if (broker_new(&set, &b, msg, sizeof msg) != ERR_OK)
        return NULL;
    if (!wait_until(broker_up, b, 10000)) {
        broker_free(b);
        return NULL;
    }
    return b;
}

int natsd_publish(struct natsd *n, const char *subject, const char *msg_id, const char *body)
{
    return natsd_publish_traced(n, subject, msg_id, body, NULL);
}

int natsd_publish_traced(struct natsd *n, const char *subject, const char *msg_id,
                         const char *body, const char *traceparent)
{
    const char *stream = strncmp(subject, "orders.", 7) == 0 ? "ORDERS" : "INVENTORY";
    struct broker *b = test_broker(n, "test-publisher", stream);
    char msg[256];
    if (!b)
        return -1;
    struct broker_out out = {.subject = subject, .event_id = msg_id, .event_type = "Test",
                             .traceparent = traceparent, .payload = body, .len = strlen(body)};
    int rc = -1;
    if (broker_ensure_stream(b, msg, sizeof msg) == ERR_OK &&
        broker_publish(b, &out, 1, 5000) == ERR_OK && out.acked)
        rc = 0;
    broker_free(b);
    return rc;
}

int natsd_take(struct natsd *n, const char *stream, const char *durable, const char *filter,
               int count)
{
    struct broker *b = test_broker(n, "test-taker", stream);
    struct broker_sub *sub = NULL;
    char msg[256];
    if (!b)
        return -1;
    int taken = -1;
    if (broker_subscribe(b, stream, durable, filter, &sub, msg, sizeof msg) == ERR_OK) {
        taken = 0;
        for (int tries = 0; taken < count && tries < 20; tries++) {
            struct broker_in *m = NULL;
            int got = 0;
            if (broker_fetch(sub, count - taken, 500, &m, &got) != ERR_OK)
                continue;
            for (int i = 0; i < got; i++)
                broker_ack(&m[i]);
            broker_fetch_free(m, got);
            taken += got;
        }
        broker_sub_free(sub);
    }
    broker_free(b);
    return taken;
}

/* ---- Postgres ---- */

const char *pg_url(const char *db)
{
    const char *v = getenv(strcmp(db, "orders") == 0 ? "STACK_PG_URL_ORDERS"
                                                     : "STACK_PG_URL_INVENTORY");
    if (!v)
        die("STACK_PG_URL_* not set: run the tests through `make test`");
    return v;
}

static void quiet(void *arg, const char *msg)
{
    (void)arg, (void)msg;
}

static PGresult *pg_run(const char *db, const char *sql, PGconn **conn)
{
    *conn = PQconnectdb(pg_url(db));
    if (PQstatus(*conn) != CONNECTION_OK)
        return NULL;
    PQsetNoticeProcessor(*conn, quiet, NULL);
    return PQexec(*conn, sql);
}

int pg_exec(const char *db, const char *sql)
{
    PGconn *c = NULL;
    PGresult *r = pg_run(db, sql, &c);
    int st = PQresultStatus(r);
    int ok = r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
    if (!ok)
        fprintf(stderr, "pg_exec(%s): %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

PGconn *pg_hold(const char *db, const char *sql)
{
    PGconn *c = NULL;
    char *tx = xasprintf("BEGIN; %s", sql);
    PGresult *r = pg_run(db, tx, &c);
    int st = PQresultStatus(r);
    int ok = r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
    if (!ok) {
        fprintf(stderr, "pg_hold(%s): %s", sql, PQerrorMessage(c));
        PQfinish(c);
        c = NULL;
    }
    PQclear(r);
    free(tx);
    return c;
}

int pg_release(PGconn *c, const char *how)
{
    PGresult *r = PQexec(c, how);
    /* COMMIT in an aborted transaction answers ROLLBACK, with no error */
    const char *said = r ? PQcmdStatus(r) : "";
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(said, how) == 0;
    if (!ok)
        fprintf(stderr, "pg_release(%s): answered \"%s\" %s\n", how, said, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

long pg_long(const char *db, const char *sql)
{
    PGconn *c = NULL;
    PGresult *r = pg_run(db, sql, &c);
    long v = -1;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

char *pg_text(const char *db, const char *sql)
{
    PGconn *c = NULL;
    PGresult *r = pg_run(db, sql, &c);
    char *v = NULL;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

int pg_signal_writers(int sig)
{
    char *pids = pg_text("orders", "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity "
                         "WHERE backend_type IN ('walwriter', 'background writer', 'checkpointer')");
    int n = 0;
    for (char *save = NULL, *t = pids ? strtok_r(pids, " ", &save) : NULL; t;
         t = strtok_r(NULL, " ", &save))
        n += kill((pid_t)atoi(t), sig) == 0;
    free(pids);
    return n;
}

void pg_reset(const char *db)
{
    pg_signal_writers(SIGCONT); /* a failed crash test may have left them frozen */
    /* Sessions of an earlier test's processes may linger a moment after they
     * were killed: end them, so that they hold no lock on what is dropped. */
    static const char *const sql =
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid();"
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public;";
    for (int attempt = 0; attempt < 5; attempt++, sleep_ms(200))
        if (pg_exec(db, sql) == 0)
            return;
    die("pg_reset");
}

void stack_cmd(const char *cmd)
{
    char *line = xasprintf("scripts/stack %s >/dev/null", cmd);
    if (system(line) != 0)
        die(line);
    free(line);
}

/* ---- services ---- */

static int ready_answers(void *arg)
{
    struct svc *s = arg;
    struct http_result r;
    if (http_do(s->port, "GET", "/readyz", NULL, NULL, 0, &r) != 0)
        return 0;
    int ok = strstr(r.body, "\"postgres\":\"ok\"") != NULL;
    http_result_free(&r);
    return ok;
}

void svc_spawn(struct svc *s, const char *name, const char *nats_url, const char *const env[])
{
    char dir[512];
    if (!realpath(getenv("SERVICE_BIN_DIR") ? getenv("SERVICE_BIN_DIR") : "build/asan/bin", dir))
        die("service binaries not built (build/asan/bin)");
    int order = strcmp(name, "order-service") == 0;
    char *bin = xasprintf("%s/%s", dir, name);
    static char port_env[2][32], db_env[2][512], nats_env[2][128], mig_env[2][64];
    int k = order ? 0 : 1;
    s->port = free_port();
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    snprintf(port_env[k], sizeof port_env[k], "PORT=%d", s->port);
    snprintf(db_env[k], sizeof db_env[k], "DATABASE_URL=%s", pg_url(order ? "orders" : "inventory"));
    snprintf(nats_env[k], sizeof nats_env[k], "NATS_URL=%s", nats_url);
    snprintf(mig_env[k], sizeof mig_env[k], "MIGRATIONS_DIR=migrations/%s",
             order ? "order" : "inventory");
    const char *all[32] = {port_env[k], db_env[k], nats_env[k], mig_env[k], "LOG_LEVEL=debug",
                           "RELAY_SWEEP_MS=100", "ASAN_OPTIONS=detect_leaks=1"};
    size_t n = 7;
    for (size_t i = 0; env && env[i] && n < 31; i++)
        all[n++] = env[i];
    all[n] = NULL;
    const char *argv[] = {bin, NULL};
    proc_start(&s->proc, argv, all);
    free(bin);
}

void svc_start(struct svc *s, const char *name, const char *nats_url, const char *const env[])
{
    svc_spawn(s, name, nats_url, env);
    if (!wait_until(ready_answers, s, 20000))
        fprintf(stderr, "harness: %s did not become ready (log %s)\n", name, s->proc.log);
}

int svc_stop(struct svc *s, int sig)
{
    return proc_stop(&s->proc, sig, 10000);
}

double svc_metric(struct svc *s, const char *series)
{
    struct http_result r;
    if (http_get(s->port, "/metrics", &r) != 200)
        return -1;
    double v = metric_in(r.body, series);
    http_result_free(&r);
    return v;
}

/* ---- HTTP client ---- */

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue; /* a signal (a child's end, in a test with threads) */
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The body of a chunked response, joined (a truncated one: what came). */
static char *dechunk(const char *p)
{
    struct buf b;
    buf_init(&b);
    for (;;) {
        char *end;
        unsigned long n = strtoul(p, &end, 16);
        const char *data = strstr(end, "\r\n");
        if (n == 0 || !data || strlen(data + 2) < n)
            break;
        buf_append(&b, data + 2, n);
        p = data + 2 + n + 2; /* past the chunk's CRLF */
    }
    return b.data;
}

static void parse_response(const char *raw, struct http_result *out)
{
    out->status = atoi(raw + 9);
    const char *loc = strcasestr(raw, "\r\nLocation: ");
    if (loc)
        sscanf(loc + 12, "%255[^\r]", out->location);
    const char *ct = strcasestr(raw, "\r\nContent-Type: ");
    if (ct)
        sscanf(ct + 16, "%127[^\r]", out->content_type);
    const char *body = strstr(raw, "\r\n\r\n");
    out->head = body ? xasprintf("%.*s", (int)(body - raw) + 2, raw) : xstrdup(raw);
    const char *te = strcasestr(raw, "\r\nTransfer-Encoding: chunked");
    if (body && te && te < body) /* Go's servers (nats-server) chunk replies over 4 KiB */
        out->body = dechunk(body + 4);
    else
        out->body = xstrdup(body ? body + 4 : "");
}

/* Sends the request on fd, reads the reply until the server closes (or
 * end_ms passes), closes fd. 0 with out filled, or -1. */
static int exchange(int fd, const char *data, size_t len, int64_t end_ms, int then_eof,
                    struct http_result *out)
{
    struct buf resp;
    buf_init(&resp);
    int rc = send_all(fd, data, len);
    if (rc == 0 && then_eof)
        shutdown(fd, SHUT_WR);
    char chunk[8192];
    ssize_t got;
    while (rc == 0 && mono_ms() < end_ms &&
           ((got = recv(fd, chunk, sizeof chunk, 0)) > 0 || (got < 0 && errno == EINTR)))
        if (got > 0)
            buf_append(&resp, chunk, (size_t)got);
    close(fd);
    if (resp.len < 12)
        rc = -1;
    else
        parse_response(resp.data, out);
    buf_cleanup(&resp);
    return rc;
}

/* With HTTP_RECORD=<file>, every exchange is appended to it as a JSON line
 * {method, path, status, content_type, body} for tests/openapi/validate. */
static void record(const char *method, const char *path, const struct http_result *out)
{
    const char *file = getenv("HTTP_RECORD");
    if (!file || !*file)
        return;
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:o}", "method", method, "path", path,
                          "status", out->status, "content_type", out->content_type, "body",
                          json_string(out->body) ?: json_null());
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int fd = line ? open(file, O_WRONLY | O_APPEND | O_CREAT, 0644) : -1;
    if (fd >= 0) {
        char *l = xasprintf("%s\n", line);
        ssize_t w = write(fd, l, strlen(l)); /* one write: lines of parallel tests never mix */
        (void)w;
        free(l);
        close(fd);
    }
    free(line);
    json_decref(o);
}

int http_do(int port, const char *method, const char *path, const char *const *headers,
            const char *body, size_t body_len, struct http_result *out)
{
    memset(out, 0, sizeof *out);
    int fd = connect_to(port);
    if (fd < 0)
        return -1;
    struct buf req;
    buf_init(&req);
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path);
    for (size_t i = 0; headers && headers[i]; i++)
        buf_printf(&req, "%s\r\n", headers[i]);
    if (body)
        buf_printf(&req, "Content-Length: %zu\r\n", body_len);
    buf_append(&req, "\r\n", 2);
    if (body)
        buf_append(&req, body, body_len);
    int rc = exchange(fd, req.data, req.len, INT64_MAX, 0, out);
    if (rc == 0)
        record(method, path, out);
    buf_cleanup(&req);
    return rc;
}

void http_result_free(struct http_result *r)
{
    free(r->body);
    free(r->head);
    r->body = r->head = NULL;
}

int http_post_json(int port, const char *path, const char *json, struct http_result *out)
{
    static const char *const h[] = {"Content-Type: application/json", NULL};
    struct http_result local;
    struct http_result *r = out ? out : &local;
    if (http_do(port, "POST", path, h, json, strlen(json), r) != 0)
        return -1;
    int st = r->status;
    if (!out)
        http_result_free(r);
    return st;
}

int http_get(int port, const char *path, struct http_result *out)
{
    struct http_result local;
    struct http_result *r = out ? out : &local;
    if (http_do(port, "GET", path, NULL, NULL, 0, r) != 0)
        return -1;
    int st = r->status;
    if (!out)
        http_result_free(r);
    return st;
}

long file_lines_with(const char *path, const char *const *needles)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    while (getline(&line, &cap, f) > 0) {
        int all = 1;
        for (size_t i = 0; all && needles[i]; i++)
            all = strstr(line, needles[i]) != NULL;
        n += all;
    }
    free(line);
    fclose(f);
    return n;
}

const char *json_field(const char *body, const char *field)
{
    static __thread char out[512];
    out[0] = '\0';
    json_t *o = json_loads(body ? body : "", 0, NULL);
    const char *v = json_string_value(json_object_get(o, field));
    if (v)
        snprintf(out, sizeof out, "%s", v);
    json_decref(o);
    return out;
}

double metric_in(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

/* ---- raw HTTP from a chosen loopback address ---- */

int mute_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("mute_listener: cannot listen on 127.0.0.1");
    *port = ntohs(a.sin_port);
    return fd;
}

int http_connect_from(const char *src_ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    inet_pton(AF_INET, src_ip, &src.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int raw_exchange(const char *src_ip, int port, const char *raw, size_t len, int timeout_ms,
                        int then_eof, struct http_result *out)
{
    memset(out, 0, sizeof *out);
    int fd = http_connect_from(src_ip, port);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return exchange(fd, raw, len, mono_ms() + timeout_ms, then_eof, out);
}

int http_raw(const char *src_ip, int port, const char *raw, size_t len, int timeout_ms,
             struct http_result *out)
{
    return raw_exchange(src_ip, port, raw, len, timeout_ms, 0, out);
}

int http_raw_then_eof(const char *src_ip, int port, const char *raw, size_t len, int timeout_ms,
                      struct http_result *out)
{
    return raw_exchange(src_ip, port, raw, len, timeout_ms, 1, out);
}

/* ---- JetStream admin over the plain NATS protocol ---- */

int natsd_purge(struct natsd *n, const char *stream)
{
    int fd = connect_to(n->port);
    if (fd < 0)
        return -1;
    char *req = xasprintf("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n"
                          "SUB _INBOX.harness_purge 1\r\n"
                          "PUB $JS.API.STREAM.PURGE.%s _INBOX.harness_purge 0\r\n\r\n",
                          stream);
    int rc = write(fd, req, strlen(req)) == (ssize_t)strlen(req) ? -1 : -2;
    struct buf got;
    buf_init(&got);
    char chunk[1024];
    /* until the API's answer; reads are bounded by the socket's timeout */
    while (rc == -1 && !strstr(got.data, "\"error\"") && !strstr(got.data, "-ERR")) {
        ssize_t k = read(fd, chunk, sizeof chunk);
        if (k <= 0)
            break;
        buf_append(&got, chunk, (size_t)k);
        if (strstr(got.data, "\"success\":true"))
            rc = 0;
    }
    if (rc != 0)
        fprintf(stderr, "harness: purge of %s failed: %.600s\n", stream, got.data);
    buf_cleanup(&got);
    free(req);
    close(fd);
    return rc;
}
