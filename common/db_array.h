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

#endif
