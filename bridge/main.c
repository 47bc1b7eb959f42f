/*
 * main.c — sa-bridge's command line: dispatches to the daemon and admin
 * commands.  Only the dispatch exists yet; each command arrives with its
 * issue and until then says plainly that it is not built and did nothing.
 *
 * Exit status: 0 success, 1 could not write output, 2 command not available
 * yet, 64 usage error (EX_USAGE, as sysexits.h numbers it).
 */
#include <stdio.h>
#include <string.h>

#ifndef SA_VERSION
#define SA_VERSION "0.1.0" /* CMake passes the project version */
#endif

#define EXIT_UNAVAILABLE 2
#define EXIT_USAGE 64

typedef struct command {
    const char *name;
    const char *summary;
    /* What the stub prints to stderr, after "sa-bridge: ", when run; NULL
     * once the command exists (it then gets a function here). */
    const char *unavailable;
} command;

static const command commands[] = {
    {"run", "stream changes from PostgreSQL and serve edges over HTTP",
     "ingest is not built yet (see the ingest issue); nothing was started"},
    {"drop-slot", "drop the bridge's replication slot and publication",
     "drop-slot is not built yet; nothing was dropped"},
    {"status", "show replication lag and per-edge progress",
     "status is not built yet; nothing was read"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: sa-bridge [--help | --version] <command> [arguments]\n"
               "\n"
               "Softadastra bridge: syncs a PostgreSQL database with edge replicas.\n"
               "\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s  %s%s\n", commands[i].name, commands[i].summary,
                commands[i].unavailable != NULL ? " (not yet available)" : "");
}

/* Flush stdout and report a failed write (a full disk, a closed pipe) instead
 * of exiting 0 with the output lost. */
static int finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "sa-bridge: could not write to standard output\n");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "help") == 0) {
        usage(stdout);
        return finish_stdout();
    }
    if (strcmp(arg, "--version") == 0) {
        printf("sa-bridge %s\n", SA_VERSION);
        return finish_stdout();
    }
    if (arg[0] == '-') {
        fprintf(stderr, "sa-bridge: unknown option '%s' (see sa-bridge --help)\n", arg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(arg, commands[i].name) == 0) {
            fprintf(stderr, "sa-bridge: %s\n", commands[i].unavailable);
            return EXIT_UNAVAILABLE;
        }
    }
    fprintf(stderr, "sa-bridge: unknown command '%s' (see sa-bridge --help)\n", arg);
    return EXIT_USAGE;
}
