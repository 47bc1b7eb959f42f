/*
 * bench_util.h — what the benchmarks share: a monotonic clock, a process's
 * peak resident set, and strict option scanning (unknown, repeated or
 * value-less options are refused, never guessed).  Header-only.
 */
#ifndef SA_BENCH_UTIL_H
#define SA_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Peak resident set (VmHWM) of pid in kB; -1 if unknown. */
static inline long bench_peak_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

enum { BENCH_OPT_HELP = -1, BENCH_OPT_BAD = -2 };

/*
 * The option at argv[*i]: its index in names[nopts], the first nvalued of
 * which take a value (then *val is it and *i moves past it).  --help / -h
 * give BENCH_OPT_HELP; an unknown, repeated or value-less option gives
 * BENCH_OPT_BAD with the reason in why.  seen[nopts] starts zeroed.
 */
static inline int bench_opt(int argc, char **argv, int *i, const char *const *names, int nopts,
                            int nvalued, int *seen, const char **val, char *why, size_t cap)
{
    const char *a = argv[*i];
    *val = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
        return BENCH_OPT_HELP;
    for (int k = 0; k < nopts; k++) {
        if (strcmp(a, names[k]) != 0)
            continue;
        if (seen[k]++) {
            snprintf(why, cap, "option %s given twice", a);
            return BENCH_OPT_BAD;
        }
        if (k < nvalued) {
            if (++*i >= argc) {
                snprintf(why, cap, "option %s needs a value", a);
                return BENCH_OPT_BAD;
            }
            *val = argv[*i];
        }
        return k;
    }
    snprintf(why, cap, "unknown option \"%s\"", a);
    return BENCH_OPT_BAD;
}

#endif /* SA_BENCH_UTIL_H */
