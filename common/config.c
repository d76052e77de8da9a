/* config.c - the table of environment variables, their parsers and
 * defaults. Owns parsing and validation; not what the values mean. */
#include "config.h"
#include "failpoint.h"
#include "util.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct int_range { long min, max; };

struct setting {
    const char *name;
    int (*parse)(const struct setting *s, const char *v, struct config *c);
    const char *def;
    size_t offset;
    struct int_range range;
    const char *const *schemes; /* for URLs: accepted prefixes */
};

#define FIELD(f) offsetof(struct config, f)
#define AT(c, s, type) ((type *)((char *)(c) + (s)->offset))

static const char *const pg_schemes[] = {"postgresql://", "postgres://", NULL};
static const char *const nats_schemes[] = {"nats://", "tls://", NULL};

static int parse_int(const struct setting *s, const char *v, struct config *c)
{
    long long n;
    if (decimal_parse(v, 1, &n) < 0 || n < s->range.min || n > s->range.max)
        return -1;
    *AT(c, s, int) = (int)n;
    return 0;
}

/* A port, or empty for none (0): a port of 0 given is refused, as for PORT
 * (it was taken for "none" in silence). */
static int parse_port_or_none(const struct setting *s, const char *v, struct config *c)
{
    if (!v[0]) {
        *AT(c, s, int) = 0;
        return 0;
    }
    return parse_int(s, v, c);
}

/* A duration's units, largest first ("": digits alone are seconds). */
static const struct { const char *suffix; int64_t ms; } duration_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}, {"", 1000},
};

int config_parse_duration_ms(const char *s, int64_t *out)
{
    const char *end = NULL;
    long long n;
    if (decimal_prefix(s, 0, &n, &end) < 0)
        return -1;
    for (size_t i = 0; i < ARRAY_LEN(duration_units); i++) {
        if (strcmp(end, duration_units[i].suffix) == 0) {
            if (n > INT64_MAX / duration_units[i].ms)
                return -1;
            *out = n * duration_units[i].ms;
            return 0;
        }
    }
    return -1;
}

/* The longest duration any setting takes, unless it says less: 100 years.
 * Each use must hold it: JetStream's nanoseconds (2^63 ns is 292 years),
 * a monotonic deadline, a Postgres interval. Longer ones were taken and
 * then broke the service: a stream that could not be created, a
 * reconciliation run without pause, SQL failing every second (a helper's
 * probe). */
#define DURATION_MAX_MS (36500LL * 24 * 3600 * 1000)

static int parse_duration(const struct setting *s, const char *v, struct config *c)
{
    int64_t ms;
    if (config_parse_duration_ms(v, &ms) < 0 || ms < s->range.min ||
        ms > (s->range.max ? s->range.max : DURATION_MAX_MS))
        return -1;
    *AT(c, s, int64_t) = ms;
    return 0;
}

static int has_scheme(const char *v, const char *const *schemes)
{
    for (size_t i = 0; schemes[i]; i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(v, schemes[i], n) == 0 && v[n] != '\0')
            return 1;
    }
    return 0;
}

/* A port, 1-65535 in digits: where it ends, or NULL. */
static const char *port_at(const char *p)
{
    if (*p < '0' || *p > '9')
        return NULL;
    char *end;
    long port = strtol(p, &end, 10);
    return port >= 1 && port <= 65535 ? end : NULL;
}

/* libpq's port list: one per host, comma-separated, each a port or empty
 * (the default port). */
static int pg_ports_valid(const char *p)
{
    for (;;) {
        const char *end = *p == ',' || *p == '\0' ? p : port_at(p);
        if (!end || (*end != ',' && *end != '\0'))
            return 0;
        if (*end == '\0')
            return 1;
        p = end + 1;
    }
}

/* One NATS server URL: scheme://[user[:pass]@]host[:port][/], the host a
 * name, an address or [an IPv6 address]. */
static int nats_url_valid(const char *url)
{
    const char *p = strstr(url, "://") + 3;
    const char *slash = strchr(p, '/'), *at = strrchr(p, '@');
    if (at && (!slash || at < slash))
        p = at + 1;
    const char *host_end = *p == '[' ? strchr(p, ']') : p + strcspn(p, ":/");
    if (!host_end || host_end == p || (*p == '[' && host_end == p + 1)) /* "", "[]" */
        return 0;
    const char *rest = *host_end == ']' ? host_end + 1 : host_end;
    if (*rest == ':' && !(rest = port_at(rest + 1)))
        return 0;
    return *rest == '\0' || *rest == '/';
}

/* libpq's options with a fixed set of values (libpq 15), "|"-separated:
 * PQconninfoParse takes any value, and the connection then fails for ever. */
static const struct { const char *keyword, *values; } pg_enums[] = {
    {"sslmode", "|disable|allow|prefer|require|verify-ca|verify-full|"},
    {"gssencmode", "|disable|prefer|require|"},
    {"channel_binding", "|disable|prefer|require|"},
    {"target_session_attrs", "|any|read-write|read-only|primary|standby|prefer-standby|"},
};

/* Options libpq reads as an int when it connects (parse_int_param: digits,
 * then blanks at most; "keepalives" without the blanks), and the range the
 * socket option it sets takes (Linux: TCP_KEEPIDLE and TCP_KEEPINTVL
 * 1-32767, TCP_KEEPCNT 1-127): "keepalives_idle=xyz" or "=0" failed every
 * connection, for ever (a helper's probe and a review). */
static const struct { const char *keyword; long min, max; int blanks; } pg_ints[] = {
    {"connect_timeout", INT_MIN, INT_MAX, 1}, {"keepalives", INT_MIN, INT_MAX, 0},
    {"keepalives_idle", 1, 32767, 1}, {"keepalives_interval", 1, 32767, 1},
    {"keepalives_count", 1, 127, 1}, {"tcp_user_timeout", INT_MIN, INT_MAX, 1},
};

static int pg_int_valid(const char *v, long min, long max, int blanks)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (blanks)
        end += strspn(end, " \t\n\r\f\v");
    return end != v && *end == '\0' && errno == 0 && n >= min && n <= max;
}

static int pg_option_valid(const PQconninfoOption *o)
{
    if (!o->val)
        return 1;
    if (strcmp(o->keyword, "port") == 0)
        return pg_ports_valid(o->val);
    for (size_t i = 0; i < ARRAY_LEN(pg_ints); i++)
        if (strcmp(o->keyword, pg_ints[i].keyword) == 0)
            return pg_int_valid(o->val, pg_ints[i].min, pg_ints[i].max, pg_ints[i].blanks);
    for (size_t i = 0; i < ARRAY_LEN(pg_enums); i++)
        if (strcmp(o->keyword, pg_enums[i].keyword) == 0) {
            char word[48];
            snprintf(word, sizeof word, "|%.40s|", o->val);
            return !strchr(o->val, '|') && strstr(pg_enums[i].values, word) != NULL;
        }
    return 1;
}

/* A Postgres URL libpq can read, with valid ports and option values: else
 * the service would retry a connection that can never be made. */
static int pg_url_valid(const char *url)
{
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    int ok = opts != NULL;
    for (PQconninfoOption *o = opts; ok && o->keyword; o++)
        ok = pg_option_valid(o);
    PQconninfoFree(opts);
    return ok;
}

/* A URL with a known scheme. NATS takes a comma-separated list of them;
 * a Postgres URL may itself hold commas (multi-host), so it is not split. */
static int parse_url(const struct setting *s, const char *v, struct config *c)
{
    char *copy = xstrdup(v), *rest = copy, *tok;
    int ok = *v != '\0';
    const char *sep = s->schemes == nats_schemes ? "," : "";
    /* strsep, not strtok: an empty entry (",a", "a,,b", "a,") is a token
     * too, without a scheme, and refused */
    while (ok && (tok = strsep(&rest, sep)) != NULL)
        ok = has_scheme(tok, s->schemes) && !strpbrk(tok, " \t\n") &&
             (s->schemes != nats_schemes || nats_url_valid(tok));
    free(copy);
    if (!ok || v[strlen(v) - 1] == ',' || (s->schemes == pg_schemes && !pg_url_valid(v)))
        return -1;
    *AT(c, s, char *) = xstrdup(v);
    return 0;
}

static int parse_string(const struct setting *s, const char *v, struct config *c)
{
    if (s->range.min > 0 && *v == '\0')
        return -1;
    *AT(c, s, char *) = xstrdup(v);
    return 0;
}

/* FAILPOINTS: names the code passes (failpoint.h), not typos. */
static int parse_failpoints(const struct setting *s, const char *v, struct config *c)
{
    return failpoint_spec_valid(v) ? parse_string(s, v, c) : -1;
}

/* A secret (empty = off): no blanks. A short one is the caller's to warn of. */
static int parse_secret(const struct setting *s, const char *v, struct config *c)
{
    if (strpbrk(v, " \t\r\n"))
        return -1;
    *AT(c, s, char *) = xstrdup(v);
    return 0;
}

static int parse_level(const struct setting *s, const char *v, struct config *c)
{
    return log_level_parse(v, AT(c, s, enum log_level));
}

static const char *const SERVICE_DEFAULT = NULL; /* marker: taken from config_defaults */
/* marker: shorter on a replicated cluster, where the broker itself can lose
 * acknowledged messages (notes/cluster.md); JS_REPLICAS is read before it */
static const char REPLICAS_DEFAULT[] = "";

static const struct setting settings[] = {
    {"PORT", parse_int, SERVICE_DEFAULT, FIELD(port), {1, 65535}, NULL},
    {"DATABASE_URL", parse_url, SERVICE_DEFAULT, FIELD(database_url), {1, 0}, pg_schemes},
    {"NATS_URL", parse_url, "nats://127.0.0.1:4222", FIELD(nats_url), {1, 0}, nats_schemes},
    {"MIGRATIONS_DIR", parse_string, SERVICE_DEFAULT, FIELD(migrations_dir), {1, 0}, NULL},
    {"LOG_LEVEL", parse_level, "info", FIELD(log_level), {0, 0}, NULL},
    {"JS_REPLICAS", parse_int, "1", FIELD(js_replicas), {1, 5}, NULL},
    {"NATS_PING_INTERVAL", parse_duration, "2s", FIELD(nats_ping_interval_ms), {100, 0}, NULL},
    {"NATS_MAX_PINGS_OUT", parse_int, "3", FIELD(nats_max_pings_out), {1, 100}, NULL},
    {"HTTP_THREADS", parse_int, "16", FIELD(http_threads), {1, 256}, NULL},
    {"RELAY_SWEEP_MS", parse_int, "200", FIELD(relay_sweep_ms), {10, 3600000}, NULL},
    {"RELAY_BATCH", parse_int, "1024", FIELD(relay_batch), {1, 10000}, NULL},
    {"RELAY_MAX_ATTEMPTS", parse_int, "10", FIELD(relay_max_attempts), {1, 1000000}, NULL},
    {"OUTBOX_RETENTION", parse_duration, "1h", FIELD(outbox_retention_ms), {0, 0}, NULL},
    {"PROCESSED_RETENTION", parse_duration, "7d", FIELD(processed_retention_ms), {1000, 0}, NULL},
    {"STREAM_MAX_AGE", parse_duration, "3d", FIELD(stream_max_age_ms), {1000, 0}, NULL},
    {"STREAM_DUPLICATE_WINDOW", parse_duration, "2m", FIELD(stream_duplicate_window_ms),
     {1000, 0}, NULL},
    {"CONSUMER_BATCH", parse_int, "512", FIELD(consumer_batch), {1, 10000}, NULL},
    {"CONSUMER_WORKERS", parse_int, "3", FIELD(consumer_workers), {1, 64}, NULL},
    {"REDRIVE_AFTER", parse_duration, REPLICAS_DEFAULT, FIELD(redrive_after_ms), {1000, 0}, NULL},
    {"DB_REQUEST_TIMEOUT", parse_duration, "3s", FIELD(db_request_timeout_ms), {100, INT32_MAX}, NULL},
    {"DB_WORK_TIMEOUT", parse_duration, "30s", FIELD(db_work_timeout_ms), {100, INT32_MAX}, NULL},
    {"DB_IDLE_TX_TIMEOUT", parse_duration, "15s", FIELD(db_idle_tx_timeout_ms), {1000, INT32_MAX}, NULL},
    /* at most 1h: the keepalive's idle time (half of it) must stay under
     * Linux's 32767 s, or no connection is ever made */
    {"DB_TCP_TIMEOUT", parse_duration, "10s", FIELD(db_tcp_timeout_ms), {1000, 3600000}, NULL},
    {"HTTP_MAX_CONNECTIONS", parse_int, "1000", FIELD(http_max_connections), {2, 1000000}, NULL},
    {"HTTP_MAX_CONNECTIONS_PER_IP", parse_int, "256", FIELD(http_max_per_ip), {1, 1000000}, NULL},
    {"HTTP_REQUEST_TIMEOUT", parse_duration, "10s", FIELD(http_request_timeout_ms), {1000, INT32_MAX}, NULL},
    {"FAILPOINTS", parse_failpoints, "", FIELD(failpoints), {0, 0}, NULL},
    {"ADMIN_TOKEN", parse_secret, "", FIELD(admin_token), {0, 0}, NULL},
    {"ADMIN_PORT", parse_port_or_none, "", FIELD(admin_port), {1, 65535}, NULL},
    {"RECONCILE_EVERY", parse_duration, "1m", FIELD(reconcile_every_ms), {1000, 0}, NULL},
    {"RECONCILE_WINDOW", parse_duration, "15m", FIELD(reconcile_window_ms), {1000, 0}, NULL},
    {"RECONCILE_SCAN", parse_int, "2000", FIELD(reconcile_scan), {1, 1000000}, NULL},
    {"NATS_TLS_CA", parse_string, "", FIELD(nats_tls_ca), {0, 0}, NULL},
};

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* Debian's ca-certificates */

const char *config_tls_ca(const struct config *c)
{
    return c->nats_tls_ca && c->nats_tls_ca[0] ? c->nats_tls_ca : SYSTEM_CA_BUNDLE;
}

/* A file of PEM certificates (its start holds one): else nats.c's load
 * fails later, as a vague "SSL Error" under NATS_URL. */
static int pem_certificates(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char head[16384];
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = '\0';
    return strstr(head, "-----BEGIN CERTIFICATE-----") != NULL;
}

static const char *default_for(const struct setting *s, const struct config_defaults *d,
                               const struct config *sofar)
{
    if (s->def == REPLICAS_DEFAULT)
        return sofar->js_replicas > 1 ? "30s" : "5m";
    if (s->def != SERVICE_DEFAULT)
        return s->def;
    if (s->offset == FIELD(port))
        return d->port;
    if (s->offset == FIELD(database_url))
        return d->database_url;
    return d->migrations_dir;
}

/* A bad value as the error line shows it: printable ASCII as it is, any
 * other byte as \xNN (a newline in a value must not make the line two),
 * at most ECHO_MAX of its characters. */
#define ECHO_MAX 64

static void echo_value(const char *v, char *out, size_t n)
{
    size_t o = 0, i = 0;
    for (; v[i] && i < ECHO_MAX && o + 5 < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch >= 0x20 && ch < 0x7f)
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", ch);
    }
    if (v[i] && o + 4 < n)
        o += (size_t)snprintf(out + o, n - o, "...");
    out[o] = '\0';
}

/* The settings that are fine alone but break recovery together. */
static int check_together(const struct config *c, char *msg, size_t msglen)
{
    if (c->stream_max_age_ms < c->stream_duplicate_window_ms) {
        snprintf(msg, msglen, "invalid value for STREAM_MAX_AGE: must be at least "
                 "STREAM_DUPLICATE_WINDOW (%lld ms), or JetStream refuses the stream",
                 (long long)c->stream_duplicate_window_ms);
        return -1;
    }
    if (c->stream_max_age_ms >= c->processed_retention_ms) {
        snprintf(msg, msglen, "invalid value for PROCESSED_RETENTION: must be longer "
                 "than STREAM_MAX_AGE so that no redelivery outlives its processed id");
        return -1;
    }
    /* Checked whenever it is set, tls:// or not: a path mistyped is
     * heard of at the start, not on the day TLS is turned on. */
    if ((strstr(c->nats_url, "tls://") || c->nats_tls_ca[0]) &&
        !pem_certificates(config_tls_ca(c))) {
        snprintf(msg, msglen, "invalid value for NATS_TLS_CA: a CA file (PEM certificates) "
                 "to verify the server with is needed, and %.200s is none", config_tls_ca(c));
        return -1;
    }
    if (c->admin_port == c->port) {
        snprintf(msg, msglen, "invalid value for ADMIN_PORT: %d is PORT already (unset "
                 "ADMIN_PORT to serve /admin/ there)", c->admin_port);
        return -1;
    }
    return 0;
}

/* ms in the largest unit that holds it whole ("90s", "36500d"), with days
 * beside it when none above ms does (INT32_MAX ms: 24.9 days). */
static void format_ms(int64_t ms, char *out, size_t n)
{
    for (size_t i = 0; duration_units[i].ms > 1; i++)
        if (ms > 0 && ms % duration_units[i].ms == 0) {
            snprintf(out, n, "%lld%s", (long long)(ms / duration_units[i].ms),
                     duration_units[i].suffix);
            return;
        }
    if (ms >= 86400000)
        snprintf(out, n, "%lldms (%.1f days)", (long long)ms, (double)ms / 86400000);
    else
        snprintf(out, n, "%lldms", (long long)ms);
}

/* What a setting takes, for its error line ("" when the line says it). */
static void expected_form(const struct setting *s, char *out, size_t n)
{
    char lo[48], hi[48];
    out[0] = '\0';
    if (s->parse == parse_int || s->parse == parse_port_or_none) {
        snprintf(out, n, "; expected an integer from %lld to %lld%s", (long long)s->range.min,
                 (long long)s->range.max, s->parse == parse_port_or_none ? ", or empty for none" : "");
    } else if (s->parse == parse_duration) {
        format_ms(s->range.min, lo, sizeof lo);
        format_ms(s->range.max ? s->range.max : DURATION_MAX_MS, hi, sizeof hi);
        snprintf(out, n, "; expected a duration (such as 500ms, 30s, 5m, 2h, 7d; digits alone "
                 "are seconds) from %s to %s", s->range.min ? lo : "0", hi);
    } else if (s->parse == parse_level) {
        snprintf(out, n, "; expected debug, info, warn or error");
    } else if (s->parse == parse_failpoints) {
        snprintf(out, n, "; expected name[:n],... of the names in common/failpoint.h");
    } else if (s->parse == parse_string && s->range.min > 0) {
        snprintf(out, n, "; expected a value, not an empty one");
    }
}

enum err config_load(const struct config_defaults *d, struct config *out,
                     char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < ARRAY_LEN(settings); i++) {
        const struct setting *s = &settings[i];
        const char *v = getenv(s->name);
        const char *use = v ? v : default_for(s, d, out);
        if (s->parse(s, use, out) < 0) {
            if (s->parse == parse_url) /* may hold a password: do not echo it */
                snprintf(msg, msglen, "invalid value for %s: expected %s", s->name,
                         s->schemes == pg_schemes
                             ? "postgresql://... that libpq can read, its ports 1-65535"
                             : "nats://host[:port] (or tls://), comma-separated, ports 1-65535");
            else if (s->parse == parse_secret) /* never echoed */
                snprintf(msg, msglen, "invalid value for %s: no blanks allowed", s->name);
            else {
                char shown[ECHO_MAX * 4 + 8], form[256];
                echo_value(use, shown, sizeof shown);
                expected_form(s, form, sizeof form);
                snprintf(msg, msglen, "invalid value for %s: \"%s\"%s", s->name, shown, form);
            }
            config_cleanup(out);
            return ERR_CONFIG;
        }
    }
    if (check_together(out, msg, msglen) < 0) {
        config_cleanup(out);
        return ERR_CONFIG;
    }
    return ERR_OK;
}

void config_cleanup(struct config *c)
{
    free(c->database_url);
    free(c->nats_url);
    free(c->migrations_dir);
    free(c->failpoints);
    free(c->admin_token);
    free(c->nats_tls_ca);
    memset(c, 0, sizeof *c);
}
