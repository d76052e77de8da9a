/* err.h - the project's one error enum.
 *
 * Every module returns `enum err` (ERR_OK on success). Library statuses
 * (PGRES_*, natsStatus, json_error_t) are translated where the library is
 * called; callers see only these codes and err_str() text. */
#ifndef COMMON_ERR_H
#define COMMON_ERR_H

#define ERR_TABLE(X)                                                     \
    X(OK,          "ok")                                                 \
    X(INVALID,     "invalid argument")                                   \
    X(VALIDATION,  "validation failed")                                  \
    X(CONFIG,      "bad configuration")                                  \
    X(IO,          "input/output error")                                 \
    X(UNAVAILABLE, "dependency unavailable")                             \
    X(DB,          "database error")                                     \
    X(CONFLICT,    "conflict")                                           \
    X(NOT_FOUND,   "not found")                                          \
    X(BROKER,      "message broker error")                               \
    X(TIMEOUT,     "timed out")                                          \
    X(RETRY,       "transient failure, retry later")                     \
    X(POISON,      "message can never be processed")                     \
    X(IN_DOUBT,    "commit sent, its outcome unknown")                   \
    X(STOPPED,     "stopped by a signal")

enum err {
#define ERR_ENUM(name, text) ERR_##name,
    ERR_TABLE(ERR_ENUM)
#undef ERR_ENUM
    ERR__COUNT
};

/* Static text for an error code; never NULL. */
const char *err_str(enum err e);

#endif
