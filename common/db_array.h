/* db_array.h - one-dimensional Postgres arrays in the binary form a
 * statement parameter can take (db_exec_params), so that the server copies
 * text and uuids as they are: no quotes to unescape (a json element is
 * still checked by json_recv). A batch of rows goes as one such array per
 * column, read back with unnest().
 *
 * A batch sent as a JSON array cost Postgres about 10 us per row to parse
 * (json_lex, and every string's escapes taken off character by character:
 * json_lex, appendStringInfoChar and strlen were 12 % of its samples in the
 * consumer); arrays in text form about 6.5. */
#ifndef COMMON_DB_ARRAY_H
#define COMMON_DB_ARRAY_H

#include <stdint.h>
#include "db.h"
#include "util.h"

/* Element types, by their fixed OIDs (pg_type.dat). The array's element
 * type must be the one its parameter's cast names ($1::uuid[]: DB_UUID). */
enum db_elem { DB_INT4 = 23, DB_TEXT = 25, DB_JSON = 114, DB_UUID = 2950 };

/* Starts an empty array of elem in b (a new buffer, as buf_init makes). */
void db_array_open(struct buf *b, enum db_elem elem);
/* Appends an element: text or JSON (s NULL: SQL NULL), a uuid in its text
 * form (one that is not: NULL), an int4. */
void db_array_text(struct buf *b, const char *s);
void db_array_uuid(struct buf *b, const char *uuid);
void db_array_int4(struct buf *b, int32_t v);
/* How many elements b holds. */
int db_array_count(const struct buf *b);

/* A batch as columns, one array each, in the order of the statement's
 * parameters ($1..$n). */
struct db_columns {
    int n;
    struct buf col[DB_MAX_PARAMS - 1]; /* room for one more parameter after them */
};
/* Opens n columns, of the element types elems[0..n). */
void db_columns_open(struct db_columns *c, int n, const enum db_elem *elems);
/* The batch's rows: the first column's elements. */
int db_columns_rows(const struct db_columns *c);
/* Runs the prepared statement `name` with the columns as $1..$n and, if
 * `more` is not NULL, that text as $n+1 (db_exec's contract). Nothing runs
 * when the batch has no rows: ERR_OK, *res left alone. */
enum err db_columns_exec(struct db *db, const char *name, const struct db_columns *c,
                         const char *more, PGresult **res);
void db_columns_cleanup(struct db_columns *c);

#endif
