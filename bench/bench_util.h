/*
 * bench_util.h — what the benchmarks share: clocks and sleeps, a process's
 * peak resident set, child processes (started, stopped, their logs read),
 * scratch directories removed, medians, and strict option scanning
 * (unknown, repeated or value-less options are refused, never guessed).
 * Header-only.  Nothing here exits: a function that can fail says so, and
 * the benchmark's own die() reports it.  Include after defining
 * _GNU_SOURCE (nftw, prctl).
 */
#ifndef SA_BENCH_UTIL_H
#define SA_BENCH_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Defaults for builds outside CMake (which passes the real ones). */
#ifndef SA_PG_BINDIR
#define SA_PG_BINDIR "/usr/lib/postgresql/15/bin"
#endif
#ifndef SA_BRIDGE_BIN
#define SA_BRIDGE_BIN "build/bridge/sa-bridge"
#endif

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall clock, µs since 1970: the clock PostgreSQL's commit timestamps use. */
static inline int64_t bench_now_rt_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline void bench_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

/* ---- processes and their logs ------------------------------------------ */

/*
 * Start argv[0] with stderr (and stdout, unless out_fd >= 0: then stdout
 * is out_fd) appended to log.  The child gets SIGKILL if we die, so nothing
 * outlives the benchmark.  Its pid, or -1 (errno) when fork failed.
 */
static inline pid_t bench_spawn(const char *const *argv, const char *log, int out_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(out_fd >= 0 ? out_fd : fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Signal *pid (when > 0) and reap it, waiting at most wait_ms before a
 * SIGKILL; *pid becomes 0. */
static inline void bench_stop_child(pid_t *pid, int sig, int wait_ms)
{
    if (*pid <= 0)
        return;
    kill(*pid, sig);
    for (int i = 0; i < wait_ms / 50; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        bench_sleep_ms(50);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* Print the last ~2 kB of the file at path (NULL or "": none) on stderr,
 * headed "tail of <what>". */
static inline void bench_tail(const char *path, const char *what)
{
    FILE *f = path != NULL && path[0] != '\0' ? fopen(path, "r") : NULL;
    if (f == NULL)
        return;
    char buf[2048];
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    fseek(f, end > (long)sizeof buf ? end - (long)sizeof buf : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n > 0)
        fprintf(stderr, "--- tail of %s ---\n%.*s\n", what, (int)n, buf);
}

/* Find needle in the log at path; 1 and the rest of its line in out, or 0. */
static inline int bench_log_find(const char *path, const char *needle, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int found = 0;
    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        const char *p = strstr(line, needle);
        if (p != NULL) {
            snprintf(out, cap, "%s", p + strlen(needle));
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Print how many lines of the bridge's log at path hold warn or error (the
 * log format's marks of a warning and an error), and the first few. */
static inline void bench_log_problems(const char *path, const char *warn, const char *error)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, warn) == NULL && strstr(line, error) == NULL)
            continue;
        if (n++ < 5)
            printf("# bridge log: %s", line);
    }
    fclose(f);
    printf("# bridge log: %d warning(s) and error(s)\n", n);
}

static inline int bench__rm_entry(const char *path, const struct stat *st, int flag,
                                  struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Remove the directory tree at dir (not following links), as far as it
 * goes. */
static inline void bench_rm_tree(const char *dir)
{
    nftw(dir, bench__rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- figures --------------------------------------------------------------- */

static inline int bench__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (n > 0); sorts v. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench__cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- options ------------------------------------------------------------------ */

/* v as a number in [lo, hi] into *out: 0, or -1 (v NULL, not a number,
 * out of range; *out untouched). */
static inline int bench_num(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v != NULL ? strtod(v, &end) : 0;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || !(x >= lo && x <= hi))
        return -1;
    *out = x;
    return 0;
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
