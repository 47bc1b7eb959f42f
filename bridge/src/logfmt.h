/*
 * logfmt.h — the pieces of sa-bridge's log lines (logfmt: key=value
 * fields, one event a line) that must be right whatever a message holds.
 */
#ifndef SA_BRIDGE_LOGFMT_H
#define SA_BRIDGE_LOGFMT_H

#include <stddef.h>

/*
 * msg with secrets replaced by "***" into out (cap bytes, always
 * NUL-terminated, truncated if need be): each of the nsecrets strings in
 * secrets (NULL entries end the list), the value of a "password=" key
 * (quoted or not, any case), the password of a "scheme://user:password@"
 * URI, and the token after "Bearer ".
 */
void logfmt_scrub(const char *msg, const char *const *secrets, size_t nsecrets, char *out,
                  size_t cap);

/* msg as a logfmt value: in double quotes, with \ and " escaped, newline,
 * CR and tab as \n \r \t, other control bytes as '?' — one line always.
 * out: cap bytes (>= 3), truncated if need be. */
void logfmt_quote(const char *msg, char *out, size_t cap);

#endif /* SA_BRIDGE_LOGFMT_H */
