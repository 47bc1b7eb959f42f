/*
 * main.c — sa-edge, the edge replica as a command-line tool over libsa_edge
 * (edge/include/sa/sa_edge.h).  Every command opens the data directory,
 * does one thing and closes it; `sync --follow` keeps it open until
 * SIGINT/SIGTERM.  Only one process can hold a data directory at a time.
 *
 * Output is for scripts: rows are one JSON object per line; with --json,
 * every other command prints one JSON object per line too.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "sa/sa_edge.h"

#ifndef SA_VERSION
#define SA_VERSION "0.1.0" /* CMake passes the project version */
#endif

#define EXIT_RUNTIME 1
#define EXIT_OFFLINE 2
#define EXIT_USAGE 64 /* EX_USAGE, as sysexits.h numbers it */

static void usage(FILE *f)
{
    fprintf(f, "usage: sa-edge --data DIR [--bridge URL] [--token TOKEN] COMMAND [ARGS]\n"
               "\n"
               "Softadastra edge replica: a local copy of PostgreSQL tables that keeps\n"
               "working offline and syncs with sa-bridge when it can.\n"
               "\n"
               "commands:\n"
               "  init --peer NAME        create the store in DIR (NAME: the token's peer)\n"
               "  put TABLE JSON          insert or update a row locally, e.g.\n"
               "                          put items '{\"id\": 7, \"name\": \"pen\"}'\n"
               "  delete TABLE KEYJSON    delete a row locally, e.g. delete items '{\"id\": 7}'\n"
               "  get TABLE KEYJSON       print the row (pending local writes included)\n"
               "  list TABLE              print every row, one JSON object per line\n"
               "  sync [--follow]         push local writes, pull changes; --follow keeps\n"
               "                          going (long polls) until SIGINT/SIGTERM\n"
               "  status [--json]         instance, cursor, head, pending ops, last error\n"
               "  conflicts [--json]      conflicts and rejections of this edge's writes\n"
               "\n"
               "environment (a flag wins over its variable):\n"
               "  SA_EDGE_DATA, SA_EDGE_BRIDGE, SA_EDGE_TOKEN, SA_EDGE_PEER (init)\n"
               "  stand for --data, --bridge, --token, --peer: a token kept out of the\n"
               "  command line stays out of `ps`.\n"
               "\n"
               "--bridge and --token given with any command are stored in DIR.  Tables are\n"
               "\"schema.name\" (a bare name means public.name).  put/delete/get/list never\n"
               "touch the network; their writes are durable when the command returns.\n"
               "\n"
               "exit status:\n"
               "  0   success\n"
               "  1   runtime error (bad data, no such row, storage error, bridge refused)\n"
               "  2   the bridge is unreachable or unavailable (any local write succeeded;\n"
               "      it is kept and pushed by a later sync)\n"
               "  64  usage error\n");
}

static sa_edge *g_edge;

static int is_init_cmd(const char *cmd) { return strcmp(cmd, "init") == 0; }

static void on_signal(int sig)
{
    (void)sig;
    sa_edge_stop(g_edge); /* an atomic store: async-signal-safe */
}

static int finish_stdout(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "sa-edge: could not write to standard output\n");
        return EXIT_RUNTIME;
    }
    return rc;
}

static int fail(const char *what, int rc, const sa_err *err)
{
    fprintf(stderr, "sa-edge: %s: %s\n", what, err->msg[0] ? err->msg : sa_err_str(rc));
    return rc == SA_EIO ? EXIT_OFFLINE : EXIT_RUNTIME;
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s != NULL)
        printf("%s\n", s);
    free(s);
}

static json_t *parse_arg(const char *what, const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        fprintf(stderr, "sa-edge: %s: not valid JSON: %s (column %d)\n", what, je.text, je.column);
    return j;
}

static int list_cb(const json_t *row, void *ctx)
{
    (void)ctx;
    print_json(row);
    return 0;
}

static int outcome_cb(const json_t *o, void *ctx)
{
    int as_json = *(int *)ctx;
    if (as_json) {
        print_json(o);
        return 0;
    }
    char *key = json_dumps(json_object_get(o, "key"), JSON_COMPACT);
    const char *res = json_string_value(json_object_get(o, "resolution"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    printf("seq %lld  %-9s %s %s %s%s%s%s%s\n",
           (long long)json_integer_value(json_object_get(o, "seq")),
           json_string_value(json_object_get(o, "status")),
           json_string_value(json_object_get(o, "kind"))
               ? json_string_value(json_object_get(o, "kind"))
               : "",
           json_string_value(json_object_get(o, "table"))
               ? json_string_value(json_object_get(o, "table"))
               : "",
           key ? key : "", res ? "  resolution " : "", res ? res : "", msg ? "  " : "",
           msg ? msg : "");
    free(key);
    return 0;
}

static void print_status(const sa_edge_status *st, int as_json)
{
    if (as_json) {
        json_t *j = NULL;
        sa_err err;
        if (sa_edge_status_json(st, &j, &err) == 0)
            print_json(j);
        json_decref(j);
        return;
    }
    printf("peer        %s\n", st->peer);
    printf("epoch       %llu\n", (unsigned long long)st->epoch);
    printf("bridge      %s\n", st->bridge[0] ? st->bridge : "(none)");
    printf("instance    %s\n", st->instance[0] ? st->instance : "(not bootstrapped)");
    printf("cursor      %llu\n", (unsigned long long)st->cursor);
    printf("head        %llu\n", (unsigned long long)st->head);
    printf("last seq    %llu\n", (unsigned long long)st->last_seq);
    printf("accepted    %llu\n", (unsigned long long)st->accepted);
    printf("applied     %llu\n", (unsigned long long)st->applied);
    printf("pending     %llu\n", (unsigned long long)st->pending);
    printf("overlay     %llu\n", (unsigned long long)st->overlay);
    printf("outcomes    %llu\n", (unsigned long long)st->outcomes);
    printf("attempts    %u\n", st->attempts);
    printf("last error  %s\n", st->last_error[0] ? st->last_error : "(none)");
    if (st->next_retry_ms)
        printf("next retry  %llu ms since the epoch\n", (unsigned long long)st->next_retry_ms);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"bridge", required_argument, NULL, 'b'},
        {"token", required_argument, NULL, 't'},
        {"peer", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"follow", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *bridge = NULL, *token = NULL, *peer = NULL;
    int as_json = 0, follow = 0, c;
    while ((c = getopt_long(argc, argv, "+d:b:t:p:jfhV", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'b':
            bridge = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'p':
            peer = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'f':
            follow = 1;
            break;
        case 'h':
            usage(stdout);
            return finish_stdout(0);
        case 'V':
            printf("sa-edge %s\n", SA_VERSION);
            return finish_stdout(0);
        default:
            fprintf(stderr, "sa-edge: see sa-edge --help\n");
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind++];
    /* command options may follow the command too */
    const char *args[4] = {NULL, NULL, NULL, NULL};
    int nargs = 0;
    while (optind < argc) {
        int before = optind;
        c = getopt_long(argc, argv, "+d:b:t:p:jfhV", opts, NULL);
        if (c == -1) {
            if (nargs == 4) {
                fprintf(stderr, "sa-edge: %s: too many arguments\n", cmd);
                return EXIT_USAGE;
            }
            args[nargs++] = argv[optind++];
            continue;
        }
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'b':
            bridge = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'p':
            peer = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'f':
            follow = 1;
            break;
        default:
            (void)before;
            fprintf(stderr, "sa-edge: see sa-edge --help\n");
            return EXIT_USAGE;
        }
    }
    static const struct {
        const char *name;
        int nargs;
    } cmds[] = {{"init", 0}, {"put", 2},  {"delete", 2}, {"get", 2},
                {"list", 1}, {"sync", 0}, {"status", 0}, {"conflicts", 0}};
    int known = -1;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            known = (int)i;
    if (known < 0) {
        fprintf(stderr, "sa-edge: unknown command '%s' (see sa-edge --help)\n", cmd);
        return EXIT_USAGE;
    }
    if (nargs != cmds[known].nargs) {
        fprintf(stderr, "sa-edge: %s takes %d argument%s, got %d (see sa-edge --help)\n", cmd,
                cmds[known].nargs, cmds[known].nargs == 1 ? "" : "s", nargs);
        return EXIT_USAGE;
    }
    /* flags win over the environment */
    if (data == NULL && getenv("SA_EDGE_DATA") != NULL && getenv("SA_EDGE_DATA")[0] != '\0')
        data = getenv("SA_EDGE_DATA");
    if (bridge == NULL && getenv("SA_EDGE_BRIDGE") != NULL && getenv("SA_EDGE_BRIDGE")[0] != '\0')
        bridge = getenv("SA_EDGE_BRIDGE");
    if (token == NULL && getenv("SA_EDGE_TOKEN") != NULL && getenv("SA_EDGE_TOKEN")[0] != '\0')
        token = getenv("SA_EDGE_TOKEN");
    if (peer == NULL && is_init_cmd(cmd) && getenv("SA_EDGE_PEER") != NULL &&
        getenv("SA_EDGE_PEER")[0] != '\0')
        peer = getenv("SA_EDGE_PEER");
    if (data == NULL) {
        fprintf(stderr, "sa-edge: --data DIR is required (or set SA_EDGE_DATA)\n");
        return EXIT_USAGE;
    }
    int is_init = strcmp(cmd, "init") == 0;
    if (is_init && peer == NULL) {
        fprintf(stderr, "sa-edge: init needs --peer NAME (the peer the token belongs to)\n");
        return EXIT_USAGE;
    }
    if ((follow && strcmp(cmd, "sync") != 0) || (peer != NULL && !is_init)) {
        fprintf(stderr, "sa-edge: %s given to %s (see sa-edge --help)\n",
                follow ? "--follow" : "--peer", cmd);
        return EXIT_USAGE;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.bridge = bridge;
    o.token = token;
    o.peer = peer;
    o.create = is_init;
    sa_err err = {0};
    sa_edge *e = NULL;
    int rc = sa_edge_open(data, &o, &e, &err), code = 0;
    if (rc != 0) {
        code = fail(data, rc, &err);
        goto out;
    }
    json_t *a1 = NULL;
    uint64_t seq = 0;
    if (is_init) {
        sa_edge_status st;
        if ((rc = sa_edge_status_get(e, &st, &err)) != 0)
            code = fail("init", rc, &err);
        else if (as_json)
            print_status(&st, 1);
        else
            printf("initialised %s: peer %s, epoch %llu\n", data, st.peer,
                   (unsigned long long)st.epoch);
    } else if (strcmp(cmd, "put") == 0 || strcmp(cmd, "delete") == 0) {
        int put = cmd[0] == 'p';
        if ((a1 = parse_arg(put ? "the row" : "the key", args[1])) == NULL) {
            code = EXIT_RUNTIME;
        } else {
            rc = put ? sa_edge_put(e, args[0], a1, &seq, &err)
                     : sa_edge_delete(e, args[0], a1, &seq, &err);
            if (rc != 0)
                code = fail(cmd, rc, &err);
            else if (as_json)
                printf("{\"seq\":%llu}\n", (unsigned long long)seq);
            else if (seq == 0)
                printf("nothing to change\n");
            else
                printf("queued op %llu\n", (unsigned long long)seq);
        }
    } else if (strcmp(cmd, "get") == 0) {
        json_t *row = NULL;
        if ((a1 = parse_arg("the key", args[1])) == NULL)
            code = EXIT_RUNTIME;
        else if ((rc = sa_edge_get(e, args[0], a1, &row, &err)) != 0)
            code = fail("get", rc, &err);
        else
            print_json(row);
        json_decref(row);
    } else if (strcmp(cmd, "list") == 0) {
        if ((rc = sa_edge_list(e, args[0], list_cb, NULL, &err)) != 0)
            code = fail("list", rc, &err);
    } else if (strcmp(cmd, "sync") == 0) {
        g_edge = e;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        rc = follow ? sa_edge_follow(e, &err) : sa_edge_sync_once(e, 0, &err);
        if (rc != 0) {
            code = fail("sync", rc, &err);
        } else {
            sa_edge_status st;
            if (sa_edge_status_get(e, &st, &err) == 0) {
                if (as_json)
                    print_status(&st, 1);
                else
                    printf("synced: cursor %llu, head %llu, pending %llu, overlay %llu\n",
                           (unsigned long long)st.cursor, (unsigned long long)st.head,
                           (unsigned long long)st.pending, (unsigned long long)st.overlay);
            }
        }
    } else if (strcmp(cmd, "status") == 0) {
        sa_edge_status st;
        if ((rc = sa_edge_status_get(e, &st, &err)) != 0)
            code = fail("status", rc, &err);
        else
            print_status(&st, as_json);
    } else if (strcmp(cmd, "conflicts") == 0) {
        if ((rc = sa_edge_outcomes(e, outcome_cb, &as_json, &err)) != 0)
            code = fail("conflicts", rc, &err);
    }
    json_decref(a1);
out:
    g_edge = NULL;
    sa_edge_close(e);
    curl_global_cleanup();
    return finish_stdout(code);
}
