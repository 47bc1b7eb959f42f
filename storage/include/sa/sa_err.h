/*
 * sa_err.h — the one error vocabulary of Softadastra.
 *
 * Every fallible call returns an int: 0 on success, or a negative SA_E* code
 * from the table below.  Where detail matters the call also fills an sa_err
 * (which may be NULL when the caller does not want the message).  Callers
 * branch on the code; people read the message.  The library never prints.
 */
#ifndef SA_ERR_H
#define SA_ERR_H

#include <stddef.h>

/* X(name, value, description) — the single source of codes, names, strings. */
#define SA_ERR_MAP(X)                                                       \
    X(OK, 0, "success")                                                     \
    X(NOMEM, -1, "out of memory")                                           \
    X(IO, -2, "input/output error")                                         \
    X(CORRUPT, -3, "stored data is corrupt")                                \
    X(INVAL, -4, "invalid argument")                                        \
    X(FORMAT, -5, "incompatible data directory")                            \
    X(TRUNCATED, -6, "input is truncated")                                  \
    X(TOOBIG, -7, "input exceeds a size limit")                             \
    X(VERSION, -8, "unsupported format version")                            \
    X(NOTFOUND, -9, "not found")                                            \
    X(BUSY, -10, "resource is busy or locked")                              \
    X(CLOSED, -11, "handle is closed")                                      \
    X(RANGE, -12, "value out of range")                                     \
    X(PG, -13, "PostgreSQL error")                                          \
    X(SYS, -14, "system call failed")                                       \
    X(PROTO, -15, "protocol violation")                                     \
    X(EXISTS, -16, "already exists")                                        \
    X(TIMEOUT, -17, "timed out")                                            \
    X(GAP, -18, "sequence gap")                                             \
    X(CLOCK, -19, "clock skew beyond the allowed bound")

enum sa_err_code {
#define SA__ERR_ENUM(name, val, desc) SA_E##name = (val),
    SA_ERR_MAP(SA__ERR_ENUM)
#undef SA__ERR_ENUM
};

#define SA_ERR_MSG_MAX 512

/* An error value: the code and a human message naming what went wrong. */
typedef struct sa_err {
    int code;
    char msg[SA_ERR_MSG_MAX];
} sa_err;

/* "SA_EIO" style name of a code; "SA_E?" for unknown codes.  Static string. */
const char *sa_err_name(int code);
/* One-line description of a code.  Static string. */
const char *sa_err_str(int code);

/*
 * Fill *err (if not NULL) with code and a printf-style message, and return
 * code, so callers can write `return sa_err_set(err, SA_EINVAL, "...")`.
 */
int sa_err_set(sa_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the existing message with context: "context: old message". */
int sa_err_wrap(sa_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reset to success with an empty message.  NULL is a no-op. */
void sa_err_clear(sa_err *err);

#endif /* SA_ERR_H */
