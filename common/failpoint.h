/* failpoint.h - test-only crash points.
 *
 * FAILPOINTS="name[:n],..." (read once at start) makes the process kill
 * itself with SIGKILL the n-th time (default first) it passes `name`, so a
 * test can prove that a crash at that exact instant loses nothing. Known
 * names: relay_after_ack (acks received, rows not yet marked),
 * inbox_after_commit (effect committed, message not yet acked). */
#ifndef COMMON_FAILPOINT_H
#define COMMON_FAILPOINT_H

void failpoint_init(const char *spec);
void failpoint_hit(const char *name);
/* 1 the n-th time (default first) `name` is passed, for faults other than a
 * crash. Known: db_commit_cut (the socket is cut right after COMMIT is sent),
 * db_commit_lost (cut just before it). */
int failpoint_on(const char *name);

#endif
