/* err.c — the error table's names and strings, and sa_err helpers. */
#include "sa/sa_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sa_err_name(int code)
{
    switch (code) {
#define SA__ERR_NAME(name, val, desc) \
    case (val):                       \
        return "SA_E" #name;
        SA_ERR_MAP(SA__ERR_NAME)
#undef SA__ERR_NAME
    }
    return "SA_E?";
}

const char *sa_err_str(int code)
{
    switch (code) {
#define SA__ERR_STR(name, val, desc) \
    case (val):                      \
        return desc;
        SA_ERR_MAP(SA__ERR_STR)
#undef SA__ERR_STR
    }
    return "unknown error";
}

int sa_err_set(sa_err *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int sa_err_wrap(sa_err *err, const char *fmt, ...)
{
    if (err == NULL)
        return 0;
    char prefix[SA_ERR_MSG_MAX];
    char old[SA_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(err->msg, prefix, n);
    if (n + 2 < sizeof err->msg) {
        err->msg[n++] = ':';
        err->msg[n++] = ' ';
    }
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof err->msg - 1 - n)
        m = sizeof err->msg - 1 - n;
    memcpy(err->msg + n, old, m);
    err->msg[n + m] = '\0';
    return err->code;
}

void sa_err_clear(sa_err *err)
{
    if (err != NULL) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
