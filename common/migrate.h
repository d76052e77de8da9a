/* migrate.h - forward-only numbered SQL migrations.
 *
 * Files named NNN_description.sql in a folder are applied in numeric order,
 * each in its own transaction, recorded in schema_migrations, under a
 * Postgres advisory lock so that concurrent starters apply each file once. */
#ifndef COMMON_MIGRATE_H
#define COMMON_MIGRATE_H

#include <stddef.h>
#include "err.h"

/* Applies the pending files of dir to the database at url. *applied (if not
 * NULL) gets how many files this call applied. On failure msg says which file
 * and why: ERR_UNAVAILABLE (server unreachable, worth retrying), ERR_RETRY
 * (another session held the lock for 2 s: msg says which), ERR_IO
 * (folder unreadable), ERR_DB (a file failed; nothing of it is kept). */
enum err migrate_run(const char *url, const char *dir, int *applied,
                     char *msg, size_t msglen);
/* ERR_OK when dir can be read and holds migrations, no two with the same
 * number; else ERR_IO, and msg says why. */
enum err migrate_check_dir(const char *dir, char *msg, size_t msglen);

#endif
