/* admin_store.h - the admin API's SQL over the tables both services share
 * (outbox, dead_letters, processed_messages): listings as JSON documents,
 * requeue, re-send, and the bookkeeping of a re-applied dead letter. */
#ifndef COMMON_ADMIN_STORE_H
#define COMMON_ADMIN_STORE_H

#include <jansson.h>
#include "db.h"

extern const struct db_stmt admin_store_stmts[];
extern const size_t admin_store_nstmts;

/* Keyset paging: rows with id > after, at most limit of them. */
struct admin_page {
    long long after;
    int limit;
};

/* Outbox rows that are dead ("dead"), pending after failed attempts
 * ("failing"), or both (""): *doc = {"rows":[...], "next_after":id|null}. */
enum err admin_store_outbox(struct db *db, const char *state, const struct admin_page *pg,
                            json_t **doc);
/* Back to pending with attempts reset: the row with event_id, or (event_id
 * NULL) every dead row. *n = rows requeued. ERR_NOT_FOUND for an unknown id,
 * ERR_CONFLICT when that row is already published. */
enum err admin_store_requeue(struct db *db, const char *event_id, long *n);
/* Dead letters: "all", or only those not yet re-applied ("open" or ""); as
 * admin_store_outbox. */
enum err admin_store_dead_letters(struct db *db, const char *state, const struct admin_page *pg,
                                  json_t **doc);

/* One dead letter, locked for the caller's transaction (heap fields). */
struct dead_letter {
    char *subject;
    unsigned char *body;      /* NUL-terminated; may hold NULs within len */
    size_t len;
};
enum err admin_store_dead_letter(struct db *db, long long id, struct dead_letter *out);
void admin_dead_letter_cleanup(struct dead_letter *d);
/* Forgets the event id that the poisoning transaction itself recorded (the
 * effect was never applied), so that a re-apply is not taken as a duplicate;
 * an id recorded by another delivery is kept. Then, after the re-apply,
 * admin_store_dead_letter_done() records when and what came of it. */
enum err admin_store_forget_poisoned(struct db *db, long long id);
/* Closes dead letter id with result; one closed before keeps its own, and
 * kept (may be NULL) says which it has. ERR_NOT_FOUND: no such id. */
enum err admin_store_dead_letter_done(struct db *db, long long id, const char *result,
                                      char *kept, size_t kept_len);

/* The text of the statement "admin_resend" ($1: an order id), given the
 * service's query of that order's event ids (a column named event_id) and
 * its stream's duplicate window; caller frees. */
char *admin_store_resend_sql(const char *events_sql, int64_t window_ms);
/* Every event of one order back to pending, same event ids: *ids = JSON
 * array of them (empty: none kept), due = when the last of them is due
 * (RFC 3339: at once, or past the duplicate window of its last publish). */
enum err admin_store_resend(struct db *db, const char *order_id, json_t **ids, char *due,
                            size_t due_len);

#endif
