/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <getopt.h>

#include "cli.h"
#include "util.h"

static void help(void) {
        printf("Usage: blkledger [OPTION]... COMMAND [ARG]...\n"
               "Ask blkledgerd what it knows about the host's block devices.\n"
               "\n"
               "Commands:\n"
               "  list [--state present|gone]      every device the ledger knows\n"
               "  show DEVICE|ID                   one device: kernel name, /dev path, MAJ:MIN or id\n"
               "  history [DEVICE|ID] [--since SEQ] [--limit N]\n"
               "                                   recorded events, oldest first\n"
               "  watch [--since SEQ]              follow new events until interrupted\n"
               "  status                           what the daemon is doing\n"
               "  rescan                           re-read every device now (root)\n"
               "\n"
               "Options:\n"
               "  -s, --socket PATH   daemon socket (default $BLKLEDGER_SOCKET or %s)\n"
               "  -j, --json          JSON output for scripts (watch: one object per line)\n"
               "  -n, --no-legend     tables without a header line\n"
               "  -h, --help          show this help\n"
               "  -V, --version       show the version\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 bad command line.\n"
               "See blkledger(1).\n",
               BL_DEFAULT_SOCKET);
}

static const struct {
        const char *name;
        enum cli_command cmd;
        unsigned min_args, max_args;
} commands[] = {
        { "list", CMD_LIST, 0, 0 },       { "show", CMD_SHOW, 1, 1 },
        { "history", CMD_HISTORY, 0, 1 }, { "watch", CMD_WATCH, 0, 0 },
        { "status", CMD_STATUS, 0, 0 },   { "rescan", CMD_RESCAN, 0, 0 },
};

int cli_parse(int argc, char **argv, struct cli_args *a, char **ret_error) {
        enum { ARG_STATE = 0x100, ARG_SINCE, ARG_LIMIT };
        static const struct option longopts[] = {
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "no-legend", no_argument, NULL, 'n' },
                { "state", required_argument, NULL, ARG_STATE },
                { "since", required_argument, NULL, ARG_SINCE },
                { "limit", required_argument, NULL, ARG_LIMIT },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        char *positional[4];
        unsigned n_pos = 0;
        bool have_cmd = false;
        int c;

        *ret_error = NULL;
        *a = (struct cli_args) { .since = -1 };

#define FAIL(...)                                                                         \
        do {                                                                              \
                if (asprintf(ret_error, __VA_ARGS__) < 0)                                 \
                        *ret_error = NULL;                                                \
                return -EINVAL;                                                           \
        } while (0)

        /* Options may come before or after the command ("blkledger list --json"). */
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "-:s:jnhV", longopts, NULL)) >= 0) {
                int64_t v;

                switch (c) {
                case 1: /* a positional argument, in order */
                        if (n_pos >= ELEMENTSOF(positional))
                                FAIL("too many arguments (see --help)");
                        positional[n_pos++] = optarg;
                        break;
                case 's':
                        if (isempty(optarg))
                                FAIL("--socket needs a path");
                        free(a->socket);
                        a->socket = strdup(optarg);
                        break;
                case 'j':
                        a->json = true;
                        break;
                case 'n':
                        a->no_legend = true;
                        break;
                case ARG_STATE:
                        if (!streq(optarg, "present") && !streq(optarg, "gone"))
                                FAIL("--state must be 'present' or 'gone'");
                        free(a->state);
                        a->state = strdup(optarg);
                        break;
                case ARG_SINCE:
                        if (parse_int64(optarg, &v) < 0 || v < 0)
                                FAIL("--since needs a sequence number, not '%s'", optarg);
                        a->since = v;
                        break;
                case ARG_LIMIT:
                        if (parse_int64(optarg, &v) < 0 || v <= 0)
                                FAIL("--limit needs a positive number, not '%s'", optarg);
                        a->limit = v;
                        break;
                case 'h':
                        help();
                        return 1;
                case 'V':
                        printf("blkledger %s\n", PACKAGE_VERSION);
                        return 1;
                case ':':
                        FAIL("option '%s' needs an argument", argv[optind - 1]);
                default:
                        *ret_error = getopt_error_message(argv[optind - 1], optopt);
                        return -EINVAL;
                }
        }
        /* Whatever follows "--" is positional too. */
        for (; optind < argc; optind++) {
                if (n_pos >= ELEMENTSOF(positional))
                        FAIL("too many arguments (see --help)");
                positional[n_pos++] = argv[optind];
        }
        if (n_pos == 0)
                FAIL("no command given (see --help)");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                if (!streq(positional[0], commands[i].name))
                        continue;
                if (n_pos - 1 < commands[i].min_args)
                        FAIL("'%s' needs an argument (see --help)", commands[i].name);
                if (n_pos - 1 > commands[i].max_args)
                        FAIL("too many arguments for '%s' (see --help)", commands[i].name);
                a->command = commands[i].cmd;
                have_cmd = true;
                break;
        }
        if (!have_cmd) {
                if (streq(positional[0], "help")) {
                        help();
                        return 1;
                }
                FAIL("unknown command '%s' (see --help)", positional[0]);
        }
        if (a->state && a->command != CMD_LIST)
                FAIL("--state applies to 'list' only");
        if (a->since >= 0 && a->command != CMD_HISTORY && a->command != CMD_WATCH)
                FAIL("--since applies to 'history' and 'watch' only");
        if (a->limit > 0 && a->command != CMD_HISTORY)
                FAIL("--limit applies to 'history' only");
        if (n_pos > 1) {
                a->device = strdup(positional[1]);
                if (!a->device)
                        return -ENOMEM;
        }
#undef FAIL
        return 0;
}

void cli_args_done(struct cli_args *a) {
        free(a->socket);
        free(a->device);
        free(a->state);
        *a = (struct cli_args) {};
}
