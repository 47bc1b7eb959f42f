/*
 * logfmt.c — log lines without secrets (contract in logfmt.h).
 */
#include "logfmt.h"

#include <string.h>
#include <strings.h>

/*
 * msg with secrets replaced into out: each known secret, the value of a
 * "password=" key, the password of a "scheme://user:password@" URI, and a
 * "Bearer " token become "***".
 */
void logfmt_scrub(const char *msg, const char *const *secrets, size_t nsecrets, char *out,
                  size_t cap)
{
    size_t o = 0;
    for (const char *p = msg; *p != '\0' && o + 1 < cap;) {
        size_t skip = 0;
        for (size_t i = 0; i < nsecrets && secrets[i] != NULL && skip == 0; i++)
            if (secrets[i][0] != '\0' && strncmp(p, secrets[i], strlen(secrets[i])) == 0)
                skip = strlen(secrets[i]);
        static const char *const keys[] = {"password=", "Bearer "};
        for (int k = 0; k < 2 && skip == 0; k++) {
            size_t kl = strlen(keys[k]);
            if (strncasecmp(p, keys[k], kl) == 0) {
                for (size_t i = 0; i < kl && o + 1 < cap; i++)
                    out[o++] = p[i];
                p += kl;
                const char *q = p;
                if (*q == '\'') { /* quoted conninfo value */
                    for (q++; *q != '\0' && *q != '\''; q++)
                        if (*q == '\\' && q[1] != '\0')
                            q++;
                    if (*q == '\'')
                        q++;
                } else {
                    while (*q != '\0' && *q != ' ' && *q != '&' && *q != '"')
                        q++;
                }
                skip = (size_t)(q - p);
                if (skip == 0)
                    skip = (size_t)-1; /* nothing to hide: copy on */
            }
        }
        if (skip == 0 && p[0] == ':' && p[1] == '/' && p[2] == '/') { /* scheme://user:pw@ */
            const char *at = p + 3, *colon = NULL;
            while (*at != '\0' && *at != '@' && *at != '/' && *at != ' ')
                if (*at++ == ':' && colon == NULL)
                    colon = at - 1;
            if (*at == '@' && colon != NULL) {
                for (const char *c = p; c <= colon && o + 1 < cap; c++)
                    out[o++] = *c;
                p = colon + 1;
                skip = (size_t)(at - p);
            }
        }
        if (skip == (size_t)-1)
            continue;
        if (skip > 0) {
            for (const char *r = "***"; *r != '\0' && o + 1 < cap; r++)
                out[o++] = *r;
            p += skip;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

/* The message as a logfmt value: quoted, with \ " and control characters
 * escaped, so a line is always one line. */
void logfmt_quote(const char *msg, char *out, size_t cap)
{
    size_t o = 0;
    out[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0' && o + 3 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
        } else if (*p < 0x20 || *p == 0x7f) {
            out[o++] = '?';
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

