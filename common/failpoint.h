/* failpoint.h - test-only crash points.
 *
 * FAILPOINTS="name[:n],..." (read once at start) arms up to FAILPOINTS_MAX
 * of the names below: the n-th time (default first) the code passes one,
 * it fires. A name the code does not pass is refused at start (a typo
 * would otherwise test nothing, silently). */
#ifndef COMMON_FAILPOINT_H
#define COMMON_FAILPOINT_H

#define FAILPOINTS_MAX 8

/* Crash points (failpoint_hit: the process kills itself with SIGKILL), so a
 * test can prove that a crash at that exact instant loses nothing. */
#define FP_RELAY_AFTER_ACK "relay_after_ack"       /* acks received, rows not yet marked */
#define FP_INBOX_AFTER_COMMIT "inbox_after_commit" /* effect committed, message not yet acked */
/* Other faults (failpoint_on). */
#define FP_DB_COMMIT_CUT "db_commit_cut"   /* the socket cut right after COMMIT is sent */
#define FP_DB_COMMIT_LOST "db_commit_lost" /* cut just before it */
#define FP_STOP_HANG "stop_hang" /* a stop step that never ends (a lock nats.c holds) */

/* 1 when spec is empty or every entry is a known name, alone or with
 * ":n" (n from 1, its digits alone), at most FAILPOINTS_MAX of them. */
int failpoint_spec_valid(const char *spec);
/* spec: as failpoint_spec_valid accepts (config checked it). */
void failpoint_init(const char *spec);
void failpoint_hit(const char *name);
/* 1 the n-th time (default first) `name` is passed. */
int failpoint_on(const char *name);

#endif
