/* migrate.c - the migration runner: list NNN_*.sql, take the advisory lock,
 * apply what schema_migrations lacks, one transaction per file.
 * Owns the schema_migrations table; not the schema itself. */
#include "migrate.h"
#include "db.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Arbitrary constant shared by every instance of every service version. */
#define MIGRATE_LOCK_KEY "7306620031"
/* How long one run waits for the lock before it says who holds it (the
 * caller tries again, and can give up or stop): others' migrations take
 * milliseconds; a session that holds the lock for minutes is stuck, and
 * waiting on it in silence is how a start hung without a word. */
#define LOCK_WAIT_MS 2000
#define LOCK_POLL_MS 100

static const char *const migrate_table_sql =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

struct mig_file {
    long version;
    char *name;
};

static int by_version(const void *a, const void *b)
{
    const struct mig_file *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static int is_migration(const char *name, long *version)
{
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 4, ".sql") != 0 || !isdigit((unsigned char)name[0]))
        return 0;
    *version = strtol(name, NULL, 10);
    return 1;
}

static void free_files(struct mig_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i].name);
    free(files);
}

/* Sorted list of migration files in dir. */
static enum err list_files(const char *dir, struct mig_file **out, size_t *count,
                           char *msg, size_t msglen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(msg, msglen, "cannot open the folder %s: %s", dir, strerror(errno));
        return ERR_IO;
    }
    struct mig_file *files = NULL;
    size_t n = 0;
    struct dirent *ent;
    long version;
    enum err e = ERR_OK;
    while ((ent = readdir(d)) != NULL) {
        if (!is_migration(ent->d_name, &version))
            continue;
        /* a folder or a broken link under such a name was read as an empty
         * migration, failed, and tried again for ever (a helper's probe) */
        char *path = xasprintf("%s/%s", dir, ent->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, R_OK) != 0) {
            snprintf(msg, msglen, "%s in %s is not a file that can be read", ent->d_name, dir);
            e = ERR_IO;
        }
        free(path);
        if (e != ERR_OK)
            break;
        files = xrealloc(files, (n + 1) * sizeof *files);
        files[n].version = version;
        files[n++].name = xstrdup(ent->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(files, n, sizeof *files, by_version);
    if (e == ERR_OK && n == 0) { /* a service with no tables would answer 500 to everything */
        snprintf(msg, msglen, "no migrations (NNN_name.sql) in the folder %s", dir);
        e = ERR_IO;
    }
    for (size_t i = 1; e == ERR_OK && i < n; i++)
        if (files[i].version == files[i - 1].version) { /* one of them would never run */
            snprintf(msg, msglen, "%s and %s in %s have the same number", files[i - 1].name,
                     files[i].name, dir);
            e = ERR_IO;
        }
    *out = files;
    *count = n;
    return e;
}

enum err migrate_check_dir(const char *dir, char *msg, size_t msglen)
{
    struct mig_file *files = NULL;
    size_t n = 0;
    enum err e = list_files(dir, &files, &n, msg, msglen);
    free_files(files, n);
    return e;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b);
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, got);
    fclose(f);
    return b.data;
}

/* Who holds the lock, into msg. */
static void lock_holder(struct db *db, char *msg, size_t msglen)
{
    PGresult *r = NULL;
    enum err e = db_query(db,
        "SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), "
        "coalesce(a.client_addr::text, 'local'), coalesce(a.state, '?'), "
        "coalesce(round(extract(epoch FROM now() - coalesce(a.state_change, a.backend_start)))::text, '?') "
        "FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' "
        "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = " MIGRATE_LOCK_KEY,
        0, NULL, &r);
    if (e == ERR_OK && PQntuples(r) > 0)
        snprintf(msg, msglen, "the migration lock is held by session %s (%s, from %s, %s for "
                 "%s s)", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                 PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
    else
        snprintf(msg, msglen, "the migration lock is held by another session");
    PQclear(r);
}

/* The advisory lock, waited for LOCK_WAIT_MS at most: ERR_RETRY (msg says
 * who holds it) after that. */
static enum err take_lock(struct db *db, char *msg, size_t msglen)
{
    int64_t end = mono_ms() + LOCK_WAIT_MS;
    for (;;) {
        PGresult *r = NULL;
        enum err e = db_query(db, "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, &r);
        int got = e == ERR_OK && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (e != ERR_OK) {
            snprintf(msg, msglen, "%s", db_errmsg(db));
            return e;
        }
        if (got)
            return ERR_OK;
        if (mono_ms() >= end) {
            lock_holder(db, msg, msglen);
            return ERR_RETRY;
        }
        sleep_ms(LOCK_POLL_MS);
    }
}

static enum err applied_before(struct db *db, long version, int *yes)
{
    char v[32];
    snprintf(v, sizeof v, "%ld", version);
    const char *params[] = {v};
    PGresult *r = NULL;
    enum err e = db_query(db, "SELECT 1 FROM schema_migrations WHERE version = $1::int",
                          1, params, &r);
    if (e == ERR_OK)
        *yes = PQntuples(r) > 0;
    PQclear(r);
    return e;
}

/* Applies one file in its own transaction, recording it in the same one. */
static enum err apply_file(struct db *db, const char *dir, const struct mig_file *f,
                           char *msg, size_t msglen)
{
    char *path = xasprintf("%s/%s", dir, f->name);
    char *sql = read_file(path);
    char v[32];
    snprintf(v, sizeof v, "%ld", f->version);
    const char *params[] = {v, f->name};
    enum err e = ERR_IO;
    if (!sql) {
        snprintf(msg, msglen, "cannot read %s", path);
        goto out;
    }
    if ((e = db_exec_sql(db, "BEGIN")) != ERR_OK ||
        (e = db_exec_sql(db, sql)) != ERR_OK ||
        (e = db_query(db, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)",
                      2, params, NULL)) != ERR_OK ||
        (e = db_exec_sql(db, "COMMIT")) != ERR_OK) {
        snprintf(msg, msglen, "migration %s failed: %s", f->name, db_errmsg(db));
        db_rollback(db);
    }
out:
    free(sql);
    free(path);
    return e;
}

static enum err apply_pending(struct db *db, const char *dir, struct mig_file *files,
                              size_t n, int *applied, char *msg, size_t msglen)
{
    enum err e = ERR_OK;
    for (size_t i = 0; i < n && e == ERR_OK; i++) {
        int done = 0;
        e = applied_before(db, files[i].version, &done);
        if (e == ERR_OK && !done && (e = apply_file(db, dir, &files[i], msg, msglen)) == ERR_OK)
            (*applied)++;
    }
    if (e != ERR_OK && msg[0] == '\0')
        snprintf(msg, msglen, "%s", db_errmsg(db));
    return e;
}

enum err migrate_run(const char *url, const char *dir, int *applied,
                     char *msg, size_t msglen)
{
    struct mig_file *files = NULL;
    size_t n = 0;
    struct db *db = NULL;
    int count = 0;
    msg[0] = '\0';
    enum err e = list_files(dir, &files, &n, msg, msglen);
    if (e != ERR_OK)
        goto out;
    db_new(url, "migrate", NULL, 0, &db);
    db_set_kind(db, DB_UNBOUNDED); /* a migration may take long; a start waits for it */
    /* The session-level lock is released by the unlock below or, if this
     * process dies, by the server when the connection closes. */
    if ((e = take_lock(db, msg, msglen)) != ERR_OK)
        goto out;
    if ((e = db_exec_sql(db, migrate_table_sql)) != ERR_OK) {
        snprintf(msg, msglen, "%s", db_errmsg(db));
        goto out;
    }
    e = apply_pending(db, dir, files, n, &count, msg, msglen);
    db_exec_sql(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
out:
    if (applied)
        *applied = count;
    db_free(db);
    free_files(files, n);
    return e;
}
