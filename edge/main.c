/*
 * main.c — sa-edge's command line: the edge replica as a tool over
 * libsa_edge.  Only the dispatch exists yet; each command arrives with
 * libsa_edge and until then says plainly that it is not built and did nothing.
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
    /* Why it cannot run yet, printed after "sa-edge: <name> ", or NULL once
     * the command exists (it then gets a function here). */
    const char *unavailable;
} command;

static const command commands[] = {
#define NOT_BUILT "is not built yet (libsa_edge is not written); nothing was done"
    {"put", "write a row locally and queue it for push", NOT_BUILT},
    {"delete", "delete a row locally and queue it for push", NOT_BUILT},
    {"get", "read a row from the local replica", NOT_BUILT},
    {"list", "list rows of a table from the local replica", NOT_BUILT},
    {"sync", "push queued writes and pull changes, once or following", NOT_BUILT},
    {"status", "show the cursor, outbox depth and last sync", NOT_BUILT},
    {"conflicts", "show conflicts reported for this edge's writes", NOT_BUILT},
#undef NOT_BUILT
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: sa-edge [--help | --version] <command> [arguments]\n"
               "\n"
               "Softadastra edge replica: a local copy that keeps working offline.\n"
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
        fprintf(stderr, "sa-edge: could not write to standard output\n");
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
        printf("sa-edge %s\n", SA_VERSION);
        return finish_stdout();
    }
    if (arg[0] == '-') {
        fprintf(stderr, "sa-edge: unknown option '%s' (see sa-edge --help)\n", arg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(arg, commands[i].name) == 0) {
            fprintf(stderr, "sa-edge: %s %s\n", arg, commands[i].unavailable);
            return EXIT_UNAVAILABLE;
        }
    }
    fprintf(stderr, "sa-edge: unknown command '%s' (see sa-edge --help)\n", arg);
    return EXIT_USAGE;
}
