/*
 * pg_harness.c — start, drive and always clean up a throwaway PostgreSQL
 * cluster for integration tests.  See pg_harness.h for the guarantees; this
 * file's sections: small helpers, running commands as the server user, the
 * guardian process, exit/signal handlers, the public API.
 *
 * Temp directory layout (everything the harness creates lives under it):
 *   <dir>/.sa_pgh        marker: `pgh.sh stop DIR` refuses dirs without it
 *   <dir>/data/          PGDATA; data/sa_pgh.conf holds our settings and is
 *                        included from postgresql.conf
 *   <dir>/postgres.log   server log (pg_ctl -l)
 *   <dir>/cmd.log        output of initdb / pg_ctl runs
 *   <dir>/.s.PGSQL.N     unix socket, unless <dir> is too long for sun_path,
 *                        in which case a separate /tmp/sa_pghs.XXXXXX is used
 *                        and <dir>/sockdir names it
 */
#include "pg_harness.h"

#include "sa/sa_alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SA_PG_BINDIR
#define SA_PG_BINDIR "/usr/lib/postgresql/15/bin"
#endif

/* How often to try another port when the one we picked got taken between
 * choosing it and the postmaster binding it. */
#define SA_PGH_PORT_TRIES 5
/* Upper bound for the guardian's cleanup (pg_ctl stop -m immediate + rm). */
#define SA_PGH_GUARD_WAIT_MS 30000
/* sun_path is 108 bytes; "/.s.PGSQL.65535" plus ".lock" must fit too. */
#define SA_PGH_SOCK_MAX 100

struct sa_pgh {
    char *dir;       /* temp root, removed on stop */
    char *sockdir;   /* == dir, or a separate short dir (own_sockdir) */
    int own_sockdir; /* sockdir is a separate directory to remove */
    char *datadir;
    char *logfile;
    char *cmdlog;
    char *conninfo;
    char *conninfo_tcp;
    const char *bindir; /* static string (environment or compiled-in) */
    int port;
    int drop;  /* run server commands as uid/gid (caller is root) */
    uid_t uid;
    gid_t gid;
    int running;
    PGconn *conn; /* cached connection for sa_pgh_exec, may be NULL */
    int guard_wfd;   /* write end of the wake pipe; only we hold it */
    int guard_ackfd; /* read end of the ack pipe; EOF = guardian exited */
    pid_t guard_pid;
    pid_t owner; /* the pid that created it: handlers act only there */
    sa_pgh *next; /* registry of live handles, for exit/signal cleanup */
};

static sa_pgh *pgh_live;
static int pgh_handlers_installed;

/* ======================================================================
 * Small helpers
 * ====================================================================== */

/* printf into a new sa_malloc'd string; NULL on out of memory. */
static char *pgh_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pgh_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = sa_malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static const char *pgh_bindir(void)
{
    const char *e = getenv("PG_BINDIR");
    return (e != NULL && e[0] != '\0') ? e : SA_PG_BINDIR;
}

/* mkdir -p for the parent of our temp dirs. */
static int pgh_mkdir_p(const char *path, sa_err *err)
{
    char buf[4096];
    if (strlen(path) >= sizeof buf)
        return sa_err_set(err, SA_EINVAL, "temp dir path too long: %s", path);
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return sa_err_set(err, SA_ESYS, "mkdir %s: %s", buf, strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

static int pgh_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: keep going so as much as possible goes */
    return 0;
}

/* rm -rf; a missing path is fine. */
static void pgh_rmtree(const char *path)
{
    if (path != NULL)
        nftw(path, pgh_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Copy the last bytes of a file (from a line start) into buf; "" if none. */
static void pgh_tail(const char *path, char *buf, size_t bufsize)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    long want = (long)bufsize - 1;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > want ? size - want : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t n = fread(buf, 1, bufsize - 1, f);
            buf[n] = '\0';
            char *nl = from > 0 ? strchr(buf, '\n') : NULL;
            if (nl != NULL)
                memmove(buf, nl + 1, strlen(nl + 1) + 1);
        }
    }
    fclose(f);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
}

/* Does the file contain needle in its bytes from offset `from` on? */
static int pgh_file_has(const char *path, long from, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int found = 0;
    char line[1024];
    if (fseek(f, from, SEEK_SET) == 0)
        while (!found && fgets(line, sizeof line, f) != NULL)
            found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static long pgh_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Write (or append to) a file the server user must be able to read. */
static int pgh_write_file(const sa_pgh *h, const char *path, const char *text, int append,
                          sa_err *err)
{
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
    int fd = open(path, flags, 0600);
    int rc = 0;
    if (fd < 0)
        return sa_err_set(err, SA_EIO, "open %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        rc = sa_err_set(err, SA_EIO, "write %s: %s", path, strerror(errno));
        goto done;
    }
    if (h->drop && fchown(fd, h->uid, h->gid) != 0) {
        rc = sa_err_set(err, SA_ESYS, "chown %s: %s", path, strerror(errno));
        goto done;
    }
done:
    close(fd);
    return rc;
}

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick). */
static int pgh_free_port(sa_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sa_err_set(err, SA_ESYS, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int rc;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        rc = sa_err_set(err, SA_ESYS, "picking a free port: %s", strerror(errno));
    else
        rc = ntohs(a.sin_port);
    close(fd);
    return rc;
}

/* Is this process alive (and not a zombie nobody reaped)? */
static int pgh_pid_alive(pid_t pid)
{
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* state follows "(comm)" */
    return !(rp != NULL && rp[1] == ' ' && rp[2] == 'Z');
}

static void pgh_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ======================================================================
 * Running commands as the server user
 * ====================================================================== */

/*
 * fork + exec argv[0] as the server user, output appended to `outfile`
 * (NULL: /dev/null), stdin from /dev/null, and wait.  Returns the exit
 * status (0..255), 128+signal if it died of a signal, or SA_ESYS.
 * All our descriptors above 2 are closed in the child, so neither the
 * guardian's pipe nor a libpq socket ever reaches initdb, pg_ctl or postgres.
 */
static int pgh_run(const sa_pgh *h, char *const argv[], const char *outfile, sa_err *err)
{
    pid_t pid = fork();
    if (pid < 0)
        return sa_err_set(err, SA_ESYS, "fork: %s", strerror(errno));
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = outfile != NULL ? open(outfile, O_WRONLY | O_CREAT | O_APPEND, 0600)
                                  : open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(126);
        if (outfile != NULL && h->drop && fchown(out, h->uid, h->gid) != 0)
            _exit(126);
        close_range(3, ~0U, 0); /* ENOSYS on old kernels: CLOEXEC still holds */
        if (h->drop && (setgroups(0, NULL) != 0 || setgid(h->gid) != 0 || setuid(h->uid) != 0))
            _exit(126);
        if (h->dir != NULL && chdir(h->dir) != 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return sa_err_set(err, SA_ESYS, "waitpid: %s", strerror(errno));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Can the server user create files in dir (all parents searchable)? */
static int pgh_dir_usable(const sa_pgh *h, const char *dir)
{
    if (!h->drop)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(h->gid) != 0 || setuid(h->uid) != 0)
            _exit(1);
        _exit(access(dir, W_OK | X_OK) == 0 ? 0 : 1);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Read the postmaster's pid from the first line of postmaster.pid. */
static long pgh_read_pid(const char *datadir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/postmaster.pid", datadir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return pid;
}

static int pgh_ctl_stop(const sa_pgh *h, const char *mode, sa_err *err)
{
    char *ctl = pgh_strf("%s/pg_ctl", h->bindir);
    if (ctl == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    char *argv[] = {ctl,     "stop", "-D", h->datadir, "-m", (char *)mode,
                    "-w",    "-t",   "60", "-s",       NULL};
    int rc = pgh_run(h, argv, h->cmdlog, err);
    if (rc > 0) {
        char tail[300];
        pgh_tail(h->cmdlog, tail, sizeof tail);
        rc = sa_err_set(err, SA_EIO, "pg_ctl stop -m %s failed (exit %d): %s", mode, rc, tail);
    }
    sa_free(ctl);
    return rc;
}

/* Make sure no server runs on datadir, whatever state it is in.  Used by the
 * guardian and as the fallback of a failed graceful stop. */
static void pgh_server_kill(const sa_pgh *h)
{
    long pid = pgh_read_pid(h->datadir);
    if (pid <= 0)
        return;
    if (pgh_pid_alive((pid_t)pid))
        pgh_ctl_stop(h, "immediate", NULL);
    /* pg_ctl can fail (timeout, binaries gone): the postmaster must not
     * outlive its directory, so insist. */
    for (int i = 0; i < 50 && pgh_pid_alive((pid_t)pid); i++) {
        kill((pid_t)pid, i < 20 ? SIGQUIT : SIGKILL);
        pgh_sleep_ms(100);
    }
}

static void pgh_remove_dirs(const sa_pgh *h)
{
    pgh_rmtree(h->dir);
    if (h->own_sockdir)
        pgh_rmtree(h->sockdir);
}

/* ======================================================================
 * The guardian
 *
 * A double-forked process in its own session.  It blocks in read() on the
 * wake pipe; the only write end is in the test process (CLOEXEC, and every
 * command we run closes all fds above 2), so read() returns EOF exactly when
 * the test process is gone — or closed it on purpose.  SIGUSR1 also wakes it
 * (used by our signal handler, in case a fork()ed child still holds a copy
 * of the write end).  It then makes sure the server is down and the
 * directory gone, and exits; its exit closes the ack pipe, which is how the
 * test process learns it is done.
 * ====================================================================== */

static volatile sig_atomic_t pgh_guard_woken;

static void pgh_guard_on_usr1(int sig)
{
    (void)sig;
    pgh_guard_woken = 1;
}

static void pgh_close_all_but(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    if (lo > 3)
        close_range(3, (unsigned)lo - 1, 0);
    if (hi > lo + 1)
        close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
    close_range((unsigned)hi + 1, ~0U, 0);
}

static void pgh_guardian_main(const sa_pgh *h, int wake_rfd, int ack_wfd)
{
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        /* Don't hold the test's stdout: ctest waits for EOF on it. */
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    pgh_close_all_but(wake_rfd, ack_wfd);

    /* Only EOF (or our SIGUSR1) ends the guardian: a Ctrl-C, or a
     * `pkill <test name>` that matches this forked copy too, must not leave
     * the cluster unguarded.  SIGKILL still works. */
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGABRT, &sa, NULL);
    sa.sa_handler = pgh_guard_on_usr1; /* no SA_RESTART: read() must return */
    sigaction(SIGUSR1, &sa, NULL);

    pid_t self = getpid();
    if (write(ack_wfd, &self, sizeof self) != (ssize_t)sizeof self)
        _exit(1);

    char c;
    while (!pgh_guard_woken) {
        ssize_t n = read(wake_rfd, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    pgh_server_kill(h);
    pgh_remove_dirs(h);
    _exit(0); /* never run the test's atexit handlers */
}

static int pgh_guardian_start(sa_pgh *h, sa_err *err)
{
    int wake[2] = {-1, -1}, ack[2] = {-1, -1};
    int rc = 0;
    if (pipe2(wake, O_CLOEXEC) != 0 || pipe2(ack, O_CLOEXEC) != 0) {
        rc = sa_err_set(err, SA_ESYS, "pipe: %s", strerror(errno));
        goto done;
    }
    pid_t mid = fork();
    if (mid < 0) {
        rc = sa_err_set(err, SA_ESYS, "fork: %s", strerror(errno));
        goto done;
    }
    if (mid == 0) {
        /* Own session, then re-parented to init: neither Ctrl-C nor a
         * process-tree kill of the test reaches the guardian. */
        setsid();
        pid_t g = fork();
        if (g != 0)
            _exit(g < 0 ? 1 : 0);
        close(wake[1]);
        close(ack[0]);
        pgh_guardian_main(h, wake[0], ack[1]);
    }
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    close(wake[0]);
    close(ack[1]);
    wake[0] = ack[1] = -1;
    pid_t gpid = -1;
    ssize_t n;
    while ((n = read(ack[0], &gpid, sizeof gpid)) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof gpid) {
        rc = sa_err_set(err, SA_ESYS, "guardian process did not start");
        goto done;
    }
    h->guard_wfd = wake[1];
    h->guard_ackfd = ack[0];
    h->guard_pid = gpid;
    wake[1] = ack[0] = -1;
done:
    for (int i = 0; i < 2; i++) {
        if (wake[i] >= 0)
            close(wake[i]);
        if (ack[i] >= 0)
            close(ack[i]);
    }
    return rc;
}

/* Wait until the guardian exits (EOF on the ack pipe).  Only
 * async-signal-safe calls: the signal handler uses it too. */
static void pgh_guardian_wait(sa_pgh *h)
{
    if (h->guard_ackfd < 0)
        return;
    int left = SA_PGH_GUARD_WAIT_MS;
    char buf[16];
    while (left > 0) {
        struct pollfd p = {.fd = h->guard_ackfd, .events = POLLIN};
        int n = poll(&p, 1, 100);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0) {
            ssize_t r = read(h->guard_ackfd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                break;
        }
        left -= 100;
    }
    if (left <= 0 && h->guard_pid > 0)
        kill(h->guard_pid, SIGKILL); /* stuck: don't leave it behind */
    close(h->guard_ackfd);
    h->guard_ackfd = -1;
}

/* Tell the guardian to act now (normal stop: to exit, nothing left to do).
 * A fork()ed child stopping its parent's cluster only drops its copies: the
 * guardian keeps watching the parent, which still holds the write end. */
static void pgh_guardian_finish(sa_pgh *h)
{
    if (h->guard_wfd >= 0) {
        close(h->guard_wfd);
        h->guard_wfd = -1;
    }
    if (h->owner == getpid()) {
        pgh_guardian_wait(h);
    } else if (h->guard_ackfd >= 0) {
        close(h->guard_ackfd);
        h->guard_ackfd = -1;
    }
}

/* ======================================================================
 * Exit and signal handlers
 * ====================================================================== */

static const int pgh_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT};

static void pgh_unregister(sa_pgh *h)
{
    for (sa_pgh **p = &pgh_live; *p != NULL; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    h->next = NULL;
}

/* exit() — including cmocka giving up — stops what this process started. */
static void pgh_atexit(void)
{
    pid_t self = getpid();
    for (;;) {
        sa_pgh *h = pgh_live;
        while (h != NULL && h->owner != self)
            h = h->next;
        if (h == NULL)
            break;
        sa_pgh_stop(h);
    }
}

/* A fatal signal: hand every cluster of ours to its guardian (all at once,
 * so they clean up in parallel), wait for them, then die of the signal.
 * Async-signal-safe: close, kill, poll, read, sigaction, raise. */
static void pgh_on_signal(int sig)
{
    pid_t self = getpid();
    for (sa_pgh *h = pgh_live; h != NULL; h = h->next)
        if (h->owner == self && h->guard_pid > 0) {
            kill(h->guard_pid, SIGUSR1);
            if (h->guard_wfd >= 0) {
                close(h->guard_wfd);
                h->guard_wfd = -1;
            }
        }
    for (sa_pgh *h = pgh_live; h != NULL; h = h->next)
        if (h->owner == self)
            pgh_guardian_wait(h);
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigaction(sig, &sa, NULL);
    raise(sig); /* pending until we return: the signal is blocked in here */
}

/* Once per process: atexit, and handlers for the catchable fatal signals
 * whose disposition is still the default (a test's own handlers win). */
static void pgh_install_handlers(void)
{
    if (pgh_handlers_installed)
        return;
    pgh_handlers_installed = 1;
    atexit(pgh_atexit);
    for (size_t i = 0; i < sizeof pgh_signals / sizeof pgh_signals[0]; i++) {
        struct sigaction old;
        if (sigaction(pgh_signals[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL ||
            (old.sa_flags & SA_SIGINFO))
            continue;
        struct sigaction sa = {.sa_handler = pgh_on_signal};
        sigfillset(&sa.sa_mask); /* no second signal in the middle of cleanup */
        sigaction(pgh_signals[i], &sa, NULL);
    }
}

/* ======================================================================
 * Cluster setup
 * ====================================================================== */

/* Does this server build know `output_plugin_libraries` (a Debian patch)?
 * Asked once per process: -1 unknown, 0 no, 1 yes. */
static int pgh_has_plugin_setting = -1;

static int pgh_detect_settings(const sa_pgh *h, sa_err *err)
{
    if (pgh_has_plugin_setting >= 0)
        return 0;
    char *pg = pgh_strf("%s/postgres", h->bindir);
    char *out = pgh_strf("%s/describe-config.txt", h->dir);
    int rc = 0;
    if (pg == NULL || out == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    char *argv[] = {pg, "--describe-config", NULL};
    rc = pgh_run(h, argv, out, err);
    if (rc != 0) {
        rc = rc < 0 ? rc : sa_err_set(err, SA_EIO, "%s --describe-config failed (exit %d)", pg, rc);
        goto done;
    }
    pgh_has_plugin_setting = pgh_file_has(out, 0, "output_plugin_libraries\t");
    unlink(out);
done:
    sa_free(pg);
    sa_free(out);
    return rc;
}

static int pgh_initdb(const sa_pgh *h, sa_err *err)
{
    char *initdb = pgh_strf("%s/initdb", h->bindir);
    if (initdb == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    char *argv[] = {initdb, "-D",       h->datadir, "-A", "trust", "-U",         "postgres",
                    "-E",   "UTF8",     "--locale=C", "--no-sync", "--no-instructions", NULL};
    int rc = pgh_run(h, argv, h->cmdlog, err);
    if (rc > 0) {
        char tail[360];
        pgh_tail(h->cmdlog, tail, sizeof tail);
        rc = sa_err_set(err, SA_EIO, "initdb failed (exit %d): %s", rc, tail);
    }
    sa_free(initdb);
    return rc;
}

/* pg_hba: trust everything local, replication included (tests only). */
static const char pgh_hba[] = "local all all trust\n"
                              "local replication all trust\n"
                              "host all all 127.0.0.1/32 trust\n"
                              "host replication all 127.0.0.1/32 trust\n";

/* (Re)write data/sa_pgh.conf for the current port. */
static int pgh_write_conf(const sa_pgh *h, const char *extra, sa_err *err)
{
    char *path = pgh_strf("%s/sa_pgh.conf", h->datadir);
    char *text = pgh_strf(
        "# written by the Softadastra test harness\n"
        "listen_addresses = '127.0.0.1'\n"
        "port = %d\n"
        "unix_socket_directories = '%s'\n"
        "wal_level = logical\n"
        "max_replication_slots = 32\n"
        "max_wal_senders = 32\n"
        /* Throwaway data: durability would only slow the tests down. */
        "fsync = off\n"
        "full_page_writes = off\n"
        /* The minimum, so even small test transactions exercise the
         * spill-to-disk path of logical decoding. */
        "logical_decoding_work_mem = '64kB'\n"
        /* apply_ops' last-writer-wins knows when plain SQL wrote a row. */
        "track_commit_timestamp = on\n"
        "%s"
        "%s\n",
        h->port, h->sockdir,
        pgh_has_plugin_setting ? "output_plugin_libraries = 'pgoutput, test_decoding'\n" : "",
        extra != NULL ? extra : "");
    int rc = 0;
    if (path == NULL || text == NULL)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    else
        rc = pgh_write_file(h, path, text, 0, err);
    sa_free(path);
    sa_free(text);
    return rc;
}

/* pg_ctl start -w.  Returns 0, SA_EBUSY when the port was taken (retry with
 * another), or another error with the tail of the server log. */
static int pgh_ctl_start(sa_pgh *h, sa_err *err)
{
    char *ctl = pgh_strf("%s/pg_ctl", h->bindir);
    if (ctl == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    long logpos = pgh_file_size(h->logfile);
    char *argv[] = {ctl,  "start", "-D", h->datadir, "-l", h->logfile,
                    "-w", "-t",    "60", "-s",       NULL};
    int rc = pgh_run(h, argv, h->cmdlog, err);
    if (rc == 0) {
        h->running = 1;
    } else if (rc > 0) {
        pgh_server_kill(h); /* a -t timeout leaves it starting: stop it */
        if (pgh_file_has(h->logfile, logpos, "could not bind") ||
            pgh_file_has(h->logfile, logpos, "Address already in use")) {
            rc = sa_err_set(err, SA_EBUSY, "port %d is taken", h->port);
        } else {
            char tail[380];
            pgh_tail(h->logfile, tail, sizeof tail);
            rc = sa_err_set(err, SA_EIO, "pg_ctl start failed (exit %d); server log: %s", rc, tail);
        }
    }
    sa_free(ctl);
    return rc;
}

/* Frees everything; the guardian must already be finished. */
static void pgh_free(sa_pgh *h)
{
    sa_free(h->dir);
    sa_free(h->sockdir);
    sa_free(h->datadir);
    sa_free(h->logfile);
    sa_free(h->cmdlog);
    sa_free(h->conninfo);
    sa_free(h->conninfo_tcp);
    sa_free(h);
}

/* mkdtemp under SA_TEST_TMPDIR (else /tmp), falling back to /tmp when the
 * server user cannot reach the configured place (e.g. a repo under /root). */
static int pgh_make_dir(sa_pgh *h, sa_err *err)
{
    const char *parent = getenv("SA_TEST_TMPDIR");
    if (parent == NULL || parent[0] == '\0')
        parent = "/tmp";
    int rc = pgh_mkdir_p(parent, err);
    if (rc != 0)
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *tmpl = pgh_strf("%s/sa_pgh.XXXXXX", attempt == 0 ? parent : "/tmp");
        if (tmpl == NULL)
            return sa_err_set(err, SA_ENOMEM, "out of memory");
        if (mkdtemp(tmpl) == NULL) {
            rc = sa_err_set(err, SA_ESYS, "mkdtemp %s: %s", tmpl, strerror(errno));
            sa_free(tmpl);
            return rc;
        }
        if (h->drop && chown(tmpl, h->uid, h->gid) != 0) {
            rc = sa_err_set(err, SA_ESYS, "chown %s: %s", tmpl, strerror(errno));
            rmdir(tmpl);
            sa_free(tmpl);
            return rc;
        }
        if (pgh_dir_usable(h, tmpl)) {
            h->dir = tmpl;
            return 0;
        }
        rmdir(tmpl);
        sa_free(tmpl);
    }
    return sa_err_set(err, SA_ESYS, "the postgres user cannot write to %s nor /tmp", parent);
}

/* The socket dir: the temp dir itself if its path is short enough. */
static int pgh_make_sockdir(sa_pgh *h, sa_err *err)
{
    if (strlen(h->dir) + sizeof "/.s.PGSQL.65535.lock" <= SA_PGH_SOCK_MAX) {
        h->sockdir = sa_strdup(h->dir);
        return h->sockdir != NULL ? 0 : sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    char *tmpl = sa_strdup("/tmp/sa_pghs.XXXXXX");
    if (tmpl == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    if (mkdtemp(tmpl) == NULL || (h->drop && chown(tmpl, h->uid, h->gid) != 0)) {
        int rc = sa_err_set(err, SA_ESYS, "socket dir %s: %s", tmpl, strerror(errno));
        rmdir(tmpl);
        sa_free(tmpl);
        return rc;
    }
    h->sockdir = tmpl;
    h->own_sockdir = 1;
    /* So `pgh.sh stop DIR` can find it too. */
    char *note = pgh_strf("%s/sockdir", h->dir);
    if (note == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    int rc = pgh_write_file(h, note, tmpl, 0, err);
    sa_free(note);
    return rc;
}

/* ======================================================================
 * Public API
 * ====================================================================== */

int sa_pgh_start(const sa_pgh_options *opt, sa_pgh **out, sa_err *err)
{
    const char *extra = opt != NULL ? opt->extra_conf : NULL;
    int rc = 0;
    sa_pgh *h = sa_calloc(1, sizeof *h);
    if (h == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    h->guard_wfd = h->guard_ackfd = -1;
    h->owner = getpid();
    h->bindir = pgh_bindir();
    if (geteuid() == 0) {
        /* PostgreSQL refuses to run as root. */
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL) {
            rc = sa_err_set(err, SA_ENOTFOUND, "running as root but there is no 'postgres' user");
            goto done;
        }
        h->drop = 1;
        h->uid = pw->pw_uid;
        h->gid = pw->pw_gid;
    }
    if ((rc = pgh_make_dir(h, err)) != 0)
        goto done;
    h->datadir = pgh_strf("%s/data", h->dir);
    h->logfile = pgh_strf("%s/postgres.log", h->dir);
    h->cmdlog = pgh_strf("%s/cmd.log", h->dir);
    char *marker = pgh_strf("%s/.sa_pgh", h->dir);
    if (h->datadir == NULL || h->logfile == NULL || h->cmdlog == NULL || marker == NULL) {
        sa_free(marker);
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    rc = pgh_write_file(h, marker, "", 0, err);
    sa_free(marker);
    if (rc != 0 || (rc = pgh_make_sockdir(h, err)) != 0)
        goto done;

    /* From here on something may run: the guardian watches from the start. */
    pgh_install_handlers();
    if ((rc = pgh_guardian_start(h, err)) != 0)
        goto done;
    h->next = pgh_live;
    pgh_live = h;

    if ((rc = pgh_detect_settings(h, err)) != 0 || (rc = pgh_initdb(h, err)) != 0)
        goto done;
    char *hba = pgh_strf("%s/pg_hba.conf", h->datadir);
    char *conf = pgh_strf("%s/postgresql.conf", h->datadir);
    if (hba == NULL || conf == NULL)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    if (rc == 0)
        rc = pgh_write_file(h, hba, pgh_hba, 0, err);
    if (rc == 0)
        rc = pgh_write_file(h, conf, "\ninclude 'sa_pgh.conf'\n", 1, err);
    sa_free(hba);
    sa_free(conf);
    if (rc != 0)
        goto done;

    for (int attempt = 0; attempt < SA_PGH_PORT_TRIES; attempt++) {
        if ((rc = pgh_free_port(err)) < 0)
            goto done;
        h->port = rc;
        if ((rc = pgh_write_conf(h, extra, err)) != 0)
            goto done;
        if ((rc = pgh_ctl_start(h, err)) != SA_EBUSY)
            break;
    }
    if (rc != 0)
        goto done;
    h->conninfo = pgh_strf("host=%s port=%d user=postgres dbname=postgres", h->sockdir, h->port);
    h->conninfo_tcp = pgh_strf("host=127.0.0.1 port=%d user=postgres dbname=postgres", h->port);
    if (h->conninfo == NULL || h->conninfo_tcp == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    *out = h;
    h = NULL;
done:
    if (h != NULL) {
        if (h->dir != NULL)
            sa_pgh_stop(h);
        else
            pgh_free(h);
    }
    return rc;
}

void sa_pgh_stop(sa_pgh *h)
{
    if (h == NULL)
        return;
    pgh_unregister(h);
    if (h->conn != NULL) {
        PQfinish(h->conn);
        h->conn = NULL;
    }
    /* Graceful first; then make sure, whatever state it was left in. */
    if (h->running)
        pgh_ctl_stop(h, "fast", NULL);
    pgh_server_kill(h);
    h->running = 0;
    pgh_remove_dirs(h);
    pgh_guardian_finish(h);
    pgh_free(h);
}

int sa_pgh_stop_server(sa_pgh *h, int immediate, sa_err *err)
{
    if (h->conn != NULL) {
        PQfinish(h->conn);
        h->conn = NULL;
    }
    int rc = pgh_ctl_stop(h, immediate ? "immediate" : "fast", err);
    if (rc == 0)
        h->running = 0;
    return rc;
}

int sa_pgh_start_server(sa_pgh *h, sa_err *err)
{
    int rc = pgh_ctl_start(h, err);
    if (rc == SA_EBUSY)
        rc = sa_err_wrap(err, "restarting on the same port");
    return rc;
}

int sa_pgh_restart(sa_pgh *h, sa_err *err)
{
    int rc = sa_pgh_stop_server(h, 0, err);
    if (rc == 0)
        rc = sa_pgh_start_server(h, err);
    return rc;
}

const char *sa_pgh_conninfo(const sa_pgh *h) { return h->conninfo; }
const char *sa_pgh_conninfo_tcp(const sa_pgh *h) { return h->conninfo_tcp; }
const char *sa_pgh_datadir(const sa_pgh *h) { return h->datadir; }
const char *sa_pgh_dir(const sa_pgh *h) { return h->dir; }
const char *sa_pgh_logfile(const sa_pgh *h) { return h->logfile; }
const char *sa_pgh_sockdir(const sa_pgh *h) { return h->sockdir; }
int sa_pgh_port(const sa_pgh *h) { return h->port; }

long sa_pgh_server_pid(const sa_pgh *h)
{
    long pid = pgh_read_pid(h->datadir);
    return pid > 0 && pgh_pid_alive((pid_t)pid) ? pid : -1;
}

/* The library never prints: swallow NOTICEs. */
static void pgh_notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* The server's message without libpq's trailing newline. */
static int pgh_pg_error(sa_err *err, const char *what, const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    return sa_err_set(err, SA_EPG, "%s: %.*s", what, (int)n, msg);
}

/* psql -At style text of a result; sa_malloc'd, NULL on out of memory. */
static char *pgh_result_text(const PGresult *r)
{
    int rows = PQntuples(r), cols = PQnfields(r);
    size_t len = 1;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            len += (size_t)PQgetlength(r, i, j) + 1;
    char *s = sa_malloc(len);
    if (s == NULL)
        return NULL;
    char *p = s;
    for (int i = 0; i < rows; i++) {
        if (i > 0)
            *p++ = '\n';
        for (int j = 0; j < cols; j++) {
            if (j > 0)
                *p++ = '|';
            size_t n = (size_t)PQgetlength(r, i, j);
            memcpy(p, PQgetvalue(r, i, j), n);
            p += n;
        }
    }
    *p = '\0';
    return s;
}

int sa_pgh_exec(sa_pgh *h, const char *sql, char **out_text, sa_err *err)
{
    int rc = 0;
    PGresult *r = NULL;
    if (h->conn == NULL || PQstatus(h->conn) != CONNECTION_OK) {
        PQfinish(h->conn);
        h->conn = PQconnectdb(h->conninfo);
        if (h->conn == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        if (PQstatus(h->conn) != CONNECTION_OK) {
            rc = pgh_pg_error(err, "connecting", PQerrorMessage(h->conn));
            goto done;
        }
        PQsetNoticeProcessor(h->conn, pgh_notice_quiet, NULL);
    }
    r = PQexec(h->conn, sql);
    switch (r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        /* The connection now sits in COPY mode: drop it below. */
        PQfinish(h->conn);
        h->conn = NULL;
        rc = sa_err_set(err, SA_EINVAL, "COPY is not supported by sa_pgh_exec");
        goto done;
    default:
        rc = pgh_pg_error(err, "SQL error",
                          r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(h->conn));
        goto done;
    }
    if (out_text != NULL) {
        char *text = pgh_result_text(r);
        if (text == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        *out_text = text;
    }
done:
    PQclear(r);
    if (h->conn != NULL && PQstatus(h->conn) != CONNECTION_OK) {
        /* The server went away (killed, restarted behind our back): reopen
         * on the next call rather than fail forever. */
        PQfinish(h->conn);
        h->conn = NULL;
    }
    return rc;
}
