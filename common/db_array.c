/* db_array.c - Postgres's binary array format (array_recv): a header of
 * five 32-bit big-endian words (dimensions = 1, has-nulls flag, element
 * type, element count, lower bound = 1), then each element as its length
 * (-1: NULL) and its bytes in the element type's binary form. */
#include "db_array.h"

#include <string.h>

#define COUNT_AT 12 /* the element count's word in the header */

static void be32(char *p, uint32_t v)
{
    unsigned char *u = (unsigned char *)p;
    u[0] = (unsigned char)(v >> 24);
    u[1] = (unsigned char)(v >> 16);
    u[2] = (unsigned char)(v >> 8);
    u[3] = (unsigned char)v;
}

static void put32(struct buf *b, uint32_t v)
{
    char w[4];
    be32(w, v);
    buf_append(b, w, sizeof w);
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

void db_array_open(struct buf *b, enum db_elem elem)
{
    buf_init(b);
    put32(b, 1);             /* one dimension */
    put32(b, 0);             /* has nulls: the server works it out */
    put32(b, (uint32_t)elem);
    put32(b, 0);             /* count, raised by each element */
    put32(b, 1);             /* lower bound */
}

int db_array_count(const struct buf *b)
{
    return (int)get32(b->data + COUNT_AT);
}

/* One more element of n bytes at p (p NULL: SQL NULL). */
static void element(struct buf *b, const void *p, size_t n)
{
    put32(b, p ? (uint32_t)n : UINT32_MAX); /* -1 */
    if (p)
        buf_append(b, p, n);
    be32(b->data + COUNT_AT, get32(b->data + COUNT_AT) + 1);
}

void db_array_text(struct buf *b, const char *s)
{
    element(b, s, s ? strlen(s) : 0);
}

void db_array_uuid(struct buf *b, const char *uuid)
{
    unsigned char bytes[16];
    if (!uuid || !uuid_valid(uuid)) {
        element(b, NULL, 0);
        return;
    }
    for (size_t i = 0, at = 0; i < sizeof bytes; i++, at += 2) {
        if (uuid[at] == '-')
            at++;
        bytes[i] = (unsigned char)(hex_val(uuid[at]) << 4 | hex_val(uuid[at + 1]));
    }
    element(b, bytes, sizeof bytes);
}

void db_array_int4(struct buf *b, int32_t v)
{
    char bytes[4];
    be32(bytes, (uint32_t)v);
    element(b, bytes, sizeof bytes);
}

void db_columns_open(struct db_columns *c, int n, const enum db_elem *elems)
{
    c->n = n;
    for (int i = 0; i < n; i++)
        db_array_open(&c->col[i], elems[i]);
}

int db_columns_rows(const struct db_columns *c)
{
    return db_array_count(&c->col[0]);
}

enum err db_columns_exec(struct db *db, const char *name, const struct db_columns *c,
                         const char *more, PGresult **res)
{
    struct db_param p[DB_MAX_PARAMS];
    for (int i = 0; i < c->n; i++)
        p[i] = DB_PARAM_BINARY(c->col[i]);
    p[c->n] = DB_PARAM_TEXT(more);
    return db_columns_rows(c) ? db_exec_params(db, name, c->n + (more != NULL), p, res) : ERR_OK;
}

void db_columns_cleanup(struct db_columns *c)
{
    for (int i = 0; i < c->n; i++)
        buf_cleanup(&c->col[i]);
}
