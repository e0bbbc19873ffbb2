/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <strings.h>

#include "cli.h"
#include "util.h"

/* Options a command takes, beyond the global ones. */
enum {
        OPT_STATE = 1 << 0,
        OPT_SINCE = 1 << 1,
        OPT_LIMIT = 1 << 2,
        OPT_MATCH = 1 << 3,
        OPT_FS_TYPE = 1 << 4,
        OPT_FS_LABEL = 1 << 5,
        OPT_MIN_SIZE = 1 << 6,
        OPT_REMOVE = 1 << 7,
        OPT_SIZE = 1 << 8,
        OPT_FS = 1 << 9,
        OPT_LABEL = 1 << 10,
        OPT_FORCE = 1 << 11,
        OPT_KEEP_FILE = 1 << 12,
        OPT_UNFINISHED = 1 << 13,
        OPT_KEY = 1 << 14,
        OPT_ON_APPEAR = 1 << 15,
        OPT_YES = 1 << 16,
};

static const struct command {
        const char *name;
        enum cli_command cmd;
        unsigned min_args, max_args;
        unsigned options;
        const char *usage; /* arguments and options */
        const char *help;  /* what it does */
} commands[] = {
        { "list", CMD_LIST, 0, 0, OPT_STATE, "[--state present|gone]",
          "Every device the ledger knows, present or gone: name, facts, state (? when not yet\n"
          "verified since the daemon started) and the kinds of its open drift." },
        { "show", CMD_SHOW, 1, 1, 0, "DEVICE|ID",
          "One device, by ledger id, ledger name, kernel name, /dev path or MAJ:MIN." },
        { "history", CMD_HISTORY, 0, 1, OPT_SINCE | OPT_LIMIT, "[DEVICE|ID] [--since SEQ] [--limit N]",
          "Recorded events, oldest first: of one device, or all (of the daemon too)." },
        { "watch", CMD_WATCH, 0, 0, OPT_SINCE, "[--since SEQ]",
          "Follow events as they are committed until interrupted; --since replays from a seq." },
        { "status", CMD_STATUS, 0, 0, 0, "", "What the daemon is doing." },
        { "reconcile", CMD_RECONCILE, 0, 0, 0, "",
          "Run a full pass now (every device observed again, drift evaluated) and print its\n"
          "summary. Exits 0 when the pass completed, whatever drift it found. Root only." },
        { "name", CMD_NAME, 1, 2, OPT_REMOVE, "DEVICE|ID NAME | DEVICE|ID --remove",
          "Give a device a unique name that follows its identity (or remove it). Root only." },
        { "expect", CMD_EXPECT, 1, 1, OPT_MATCH | OPT_FS_TYPE | OPT_FS_LABEL | OPT_MIN_SIZE | OPT_ON_APPEAR,
          "NAME --match serial=S|wwn=W|fs-uuid=U|loop-file=PATH [--fs-type T] [--fs-label L]\n"
          "                [--min-size SIZE] [--on-appear format-if-blank:TYPE|run:/PROGRAM]",
          "Record a desired state; the reconciler reports where reality differs (drift).\n"
          "SIZE takes K, M, G, T suffixes. The same NAME replaces the expectation.\n"
          "--on-appear acts each time the device appears: format-if-blank:TYPE makes a\n"
          "filesystem on a truly blank device, run:/PROGRAM runs a root-owned program with\n"
          "BLKLEDGER_* variables (see blkledgerd --hook-timeout). Root only." },
        { "unexpect", CMD_UNEXPECT, 1, 1, 0, "NAME", "Remove an expectation; its drift closes. Root only." },
        { "expectations", CMD_EXPECTATIONS, 0, 0, 0, "", "The recorded expectations." },
        { "drift", CMD_DRIFT, 0, 0, 0, "",
          "Every open difference between desired and actual state, or between the ledger and\n"
          "the devices: missing, unexpected_fs, label_mismatch, too_small, identity_conflict,\n"
          "duplicate_uuid, unresponsive; of volumes: orphan_file, orphan_loop,\n"
          "volume_file_missing, intent_failed." },
        { "volume create", CMD_VOLUME_CREATE, 1, 1, OPT_SIZE | OPT_FS | OPT_LABEL | OPT_KEY,
          "NAME --size SIZE [--fs TYPE] [--label LABEL] [--idempotency-key KEY]",
          "Create a managed volume: a sparse file in the daemon's volume directory, attached\n"
          "as a loop device, made with mkfs.TYPE (ext2, ext3, ext4, xfs, btrfs, vfat, exfat)\n"
          "or mkswap (swap). The same command again returns the volume; with the same\n"
          "--idempotency-key any repeat answers with the first call's outcome. Root only." },
        { "volume list", CMD_VOLUME_LIST, 0, 0, 0, "", "The managed volumes." },
        { "volume show", CMD_VOLUME_SHOW, 1, 1, 0, "NAME", "One managed volume." },
        { "volume resize", CMD_VOLUME_RESIZE, 1, 1, OPT_SIZE | OPT_KEY, "NAME --size SIZE [--idempotency-key KEY]",
          "Grow a volume: the file, the loop device, and the filesystem where its tool can\n"
          "(ext2/3/4 on or off line, xfs and btrfs while mounted). Volumes never shrink. Root only." },
        { "volume attach", CMD_VOLUME_ATTACH, 1, 1, OPT_KEY, "NAME [--idempotency-key KEY]",
          "Attach a detached volume. Root only." },
        { "volume detach", CMD_VOLUME_DETACH, 1, 1, OPT_FORCE | OPT_KEY, "NAME [--force] [--idempotency-key KEY]",
          "Detach a volume's loop device; a mounted or written volume needs --force. Root only." },
        { "volume delete", CMD_VOLUME_DELETE, 1, 1, OPT_FORCE | OPT_KEEP_FILE | OPT_KEY,
          "NAME [--keep-file] [--force] [--idempotency-key KEY]",
          "Detach a volume and remove its file (kept with --keep-file); a mounted or written\n"
          "volume needs --force. Root only." },
        { "volume adopt", CMD_VOLUME_ADOPT, 1, 1, OPT_KEY, "DIR/NAME.img [--idempotency-key KEY]",
          "Make a file in the volume directory that no volume claims (drift orphan_file) a\n"
          "volume; its name comes from the file's (NAME.img). Nothing is written to it. Root only." },
        { "volume forget", CMD_VOLUME_FORGET, 1, 1, OPT_KEY, "NAME [--idempotency-key KEY]",
          "Drop a volume's record, leaving its file and loop device alone (for a volume whose\n"
          "file is gone: drift volume_file_missing). Root only." },
        { "backup", CMD_BACKUP, 0, 0, 0, "",
          "Write an online backup of the ledger into the daemon's state directory (backups/)\n"
          "and print its path; the daemon keeps the newest --backup-keep. Root only." },
        { "check", CMD_CHECK, 0, 0, 0, "",
          "Run SQLite's integrity_check on the daemon's ledger (every page is read) and print\n"
          "ok or what is wrong; exits 1 when something is. Root only." },
        { "export", CMD_EXPORT, 0, 0, 0, "[--json]",
          "Write the ledger's own truths (names, expectations, volumes, and unfinished\n"
          "intents for the record) to standard output as JSON in the versioned export\n"
          "format of blkledger(1), EXPORT FORMAT. Root only." },
        { "import", CMD_IMPORT, 1, 1, OPT_YES | OPT_FORCE, "FILE [--yes] [--force]",
          "Show what importing an export (FILE, or - for standard input) would change: each\n"
          "name, expectation and volume is added, the same, or a conflict. It is applied\n"
          "only when confirmed: --yes, or answering y on a terminal. Conflicts refuse the\n"
          "import unless --force, which replaces what is here. Intents are not imported. Root only." },
        { "intents", CMD_INTENTS, 0, 0, OPT_LIMIT | OPT_UNFINISHED, "[--unfinished] [--limit N]",
          "The newest actions (volume create, resize, ...) with their state: pending, running,\n"
          "succeeded, failed, rolled_back." },
};

static void help(void) {
        printf("Usage: blkledger [OPTION]... COMMAND [ARG]...\n"
               "       blkledger [OPTION]... volume SUBCOMMAND [ARG]...\n"
               "Ask blkledgerd what it knows about the host's block devices.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                const char *nl = strchr(commands[i].help, '\n');
                printf("  %-15s %.*s\n", commands[i].name,
                       (int) (nl ? (size_t) (nl - commands[i].help) : strlen(commands[i].help)), commands[i].help);
        }
        printf("\n"
               "Options:\n"
               "  -s, --socket PATH   daemon socket (default $BLKLEDGER_SOCKET or %s)\n"
               "  -j, --json          JSON output for scripts (watch: one object per line)\n"
               "  -n, --no-legend     tables without a header line\n"
               "  -h, --help          show this help, or a command's with COMMAND --help\n"
               "  -V, --version       show the version\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 bad command line.\n"
               "See blkledger(1).\n",
               BL_DEFAULT_SOCKET);
}

static void command_help(const struct command *c) {
        printf("Usage: blkledger [OPTION]... %s %s\n\n%s\n\n"
               "Options: -s/--socket PATH, -j/--json, -n/--no-legend (see blkledger --help).\n",
               c->name, c->usage, c->help);
}

int cli_parse_size(const char *s, int64_t *ret) {
        static const char units[] = "KMGTPE";
        const char *u;
        char *end;
        double v;
        int shift = 0;

        /* Digits with at most one decimal point: strtod alone would take hex and
         * exponents ("0x1B" is not one byte, "1e3" not a size anyone types). */
        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        for (end = (char *) s; isdigit((unsigned char) *end); end++)
                ;
        if (*end == '.') {
                if (!isdigit((unsigned char) end[1]))
                        return -EINVAL;
                for (end++; isdigit((unsigned char) *end); end++)
                        ;
        }
        errno = 0;
        v = strtod(s, NULL);
        if (errno != 0)
                return -EINVAL;
        /* 512, 512B, 64K, 64M, 64MiB, 1.5G, 1.5GB: binary units, like lsblk prints. */
        if (*end && (u = strchr(units, toupper((unsigned char) *end)))) {
                shift = (int) (u - units + 1) * 10;
                end++;
        }
        if (*end && strcasecmp(end, "B") != 0 && !(shift && strcasecmp(end, "iB") == 0))
                return -EINVAL;
        v *= (double) (1ULL << shift);
        if (v >= 9.2e18)
                return -ERANGE;
        *ret = (int64_t) v;
        return 0;
}

/* --match serial=S | wwn=W | fs-uuid=U | loop-file=PATH */
static int parse_match(const char *arg, struct cli_args *a) {
        static const struct {
                const char *key, *kind;
        } keys[] = { { "serial", "serial" }, { "wwn", "wwn" }, { "fs-uuid", "fs_uuid" }, { "loop-file", "loop_file" } };
        const char *eq = strchr(arg, '=');

        if (!eq || !eq[1])
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (strlen(keys[i].key) != (size_t) (eq - arg) || strncmp(arg, keys[i].key, (size_t) (eq - arg)) != 0)
                        continue;
                free(a->match_kind);
                free(a->match_value);
                a->match_kind = strdup(keys[i].kind);
                if (streq(keys[i].kind, "loop_file") && eq[1] != '/') {
                        /* The daemon runs elsewhere: make a relative path absolute here. */
                        char cwd[PATH_MAX];
                        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&a->match_value, "%s/%s", cwd, eq + 1) < 0)
                                a->match_value = NULL;
                } else
                        a->match_value = strdup(eq + 1);
                return a->match_kind && a->match_value ? 0 : -ENOMEM;
        }
        return -EINVAL;
}

static char *replace(char **field, const char *value) {
        free(*field);
        *field = strdup(value);
        return *field;
}

int cli_parse(int argc, char **argv, struct cli_args *a, char **ret_error) {
        enum {
                ARG_STATE = 0x100,
                ARG_SINCE,
                ARG_LIMIT,
                ARG_MATCH,
                ARG_FS_TYPE,
                ARG_FS_LABEL,
                ARG_MIN_SIZE,
                ARG_REMOVE,
                ARG_SIZE,
                ARG_FS,
                ARG_LABEL,
                ARG_FORCE,
                ARG_KEEP_FILE,
                ARG_UNFINISHED,
                ARG_KEY,
                ARG_ON_APPEAR,
                ARG_YES,
        };
        static const struct option longopts[] = {
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "no-legend", no_argument, NULL, 'n' },
                { "state", required_argument, NULL, ARG_STATE },
                { "since", required_argument, NULL, ARG_SINCE },
                { "limit", required_argument, NULL, ARG_LIMIT },
                { "match", required_argument, NULL, ARG_MATCH },
                { "fs-type", required_argument, NULL, ARG_FS_TYPE },
                { "fs-label", required_argument, NULL, ARG_FS_LABEL },
                { "min-size", required_argument, NULL, ARG_MIN_SIZE },
                { "remove", no_argument, NULL, ARG_REMOVE },
                { "size", required_argument, NULL, ARG_SIZE },
                { "fs", required_argument, NULL, ARG_FS },
                { "label", required_argument, NULL, ARG_LABEL },
                { "force", no_argument, NULL, ARG_FORCE },
                { "keep-file", no_argument, NULL, ARG_KEEP_FILE },
                { "unfinished", no_argument, NULL, ARG_UNFINISHED },
                { "idempotency-key", required_argument, NULL, ARG_KEY },
                { "on-appear", required_argument, NULL, ARG_ON_APPEAR },
                { "yes", no_argument, NULL, ARG_YES },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        static const struct {
                unsigned flag;
                const char *name;
        } option_names[] = {
                { OPT_STATE, "--state" }, { OPT_SINCE, "--since" }, { OPT_LIMIT, "--limit" },
                { OPT_MATCH, "--match" }, { OPT_FS_TYPE, "--fs-type" }, { OPT_FS_LABEL, "--fs-label" },
                { OPT_MIN_SIZE, "--min-size" }, { OPT_REMOVE, "--remove" }, { OPT_SIZE, "--size" },
                { OPT_FS, "--fs" }, { OPT_LABEL, "--label" }, { OPT_FORCE, "--force" },
                { OPT_KEEP_FILE, "--keep-file" }, { OPT_UNFINISHED, "--unfinished" },
                { OPT_KEY, "--idempotency-key" }, { OPT_ON_APPEAR, "--on-appear" }, { OPT_YES, "--yes" },
        };
        const struct command *cmd = NULL;
        char *positional[4];
        unsigned n_pos = 0, used = 0;
        bool want_help = false;
        int c;

        *ret_error = NULL;
        *a = (struct cli_args) { .since = -1, .min_size = -1, .size = -1 };

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
                        if (!replace(&a->socket, optarg))
                                return -ENOMEM;
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
                        if (!replace(&a->state, optarg))
                                return -ENOMEM;
                        used |= OPT_STATE;
                        break;
                case ARG_SINCE:
                        if (parse_int64(optarg, &v) < 0 || v < 0)
                                FAIL("--since needs a sequence number, not '%s'", optarg);
                        a->since = v;
                        used |= OPT_SINCE;
                        break;
                case ARG_LIMIT:
                        if (parse_int64(optarg, &v) < 0 || v <= 0)
                                FAIL("--limit needs a positive number, not '%s'", optarg);
                        a->limit = v;
                        used |= OPT_LIMIT;
                        break;
                case ARG_MATCH:
                        if (parse_match(optarg, a) < 0)
                                FAIL("--match needs serial=S, wwn=W, fs-uuid=U or loop-file=PATH, not '%s'", optarg);
                        used |= OPT_MATCH;
                        break;
                case ARG_FS_TYPE:
                        if (isempty(optarg) || !replace(&a->fs_type, optarg))
                                FAIL("--fs-type needs a filesystem type");
                        used |= OPT_FS_TYPE;
                        break;
                case ARG_FS_LABEL:
                        if (!replace(&a->fs_label, optarg))
                                return -ENOMEM;
                        used |= OPT_FS_LABEL;
                        break;
                case ARG_MIN_SIZE:
                        if (cli_parse_size(optarg, &v) < 0)
                                FAIL("--min-size needs a size such as 1073741824 or 1G, not '%s'", optarg);
                        a->min_size = v;
                        used |= OPT_MIN_SIZE;
                        break;
                case ARG_REMOVE:
                        a->remove = true;
                        used |= OPT_REMOVE;
                        break;
                case ARG_SIZE:
                        if (cli_parse_size(optarg, &v) < 0 || v <= 0)
                                FAIL("--size needs a size such as 67108864 or 64M, not '%s'", optarg);
                        a->size = v;
                        used |= OPT_SIZE;
                        break;
                case ARG_FS:
                        if (isempty(optarg) || !replace(&a->fs_type, optarg))
                                FAIL("--fs needs a filesystem type");
                        used |= OPT_FS;
                        break;
                case ARG_LABEL:
                        if (isempty(optarg) || !replace(&a->fs_label, optarg))
                                FAIL("--label needs a label");
                        used |= OPT_LABEL;
                        break;
                case ARG_FORCE:
                        a->force = true;
                        used |= OPT_FORCE;
                        break;
                case ARG_KEEP_FILE:
                        a->keep_file = true;
                        used |= OPT_KEEP_FILE;
                        break;
                case ARG_UNFINISHED:
                        a->unfinished = true;
                        used |= OPT_UNFINISHED;
                        break;
                case ARG_ON_APPEAR:
                        if (isempty(optarg) || !replace(&a->on_appear, optarg))
                                FAIL("--on-appear needs format-if-blank:TYPE or run:/PROGRAM");
                        used |= OPT_ON_APPEAR;
                        break;
                case ARG_YES:
                        a->yes = true;
                        used |= OPT_YES;
                        break;
                case ARG_KEY:
                        if (isempty(optarg) || !replace(&a->idempotency_key, optarg))
                                FAIL("--idempotency-key needs a value");
                        used |= OPT_KEY;
                        break;
                case 'h':
                        want_help = true;
                        break;
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
        /* "volume create NAME": the first two words name the command. */
        if (n_pos > 0 && streq(positional[0], "volume")) {
                static char joined[32];
                if (n_pos < 2)
                        FAIL("'volume' needs a subcommand: create, list, show, resize, attach, detach, delete, "
                             "adopt or forget");
                if (strlen(positional[1]) > 16)
                        FAIL("unknown command 'volume %.16s...' (see --help)", positional[1]);
                snprintf(joined, sizeof(joined), "volume %s", positional[1]);
                positional[1] = joined;
                memmove(positional, positional + 1, (n_pos - 1) * sizeof(char *));
                n_pos--;
        }
        if (n_pos > 0 && streq(positional[0], "help")) {
                char joined[32];
                if (n_pos > 2 && streq(positional[1], "volume")) {
                        snprintf(joined, sizeof(joined), "volume %.16s", positional[2]);
                        positional[1] = joined;
                }
                for (size_t i = 0; n_pos > 1 && i < ELEMENTSOF(commands); i++)
                        if (streq(positional[1], commands[i].name)) {
                                command_help(&commands[i]);
                                return 1;
                        }
                help();
                return 1;
        }
        if (n_pos == 0) {
                if (want_help) {
                        help();
                        return 1;
                }
                FAIL("no command given (see --help)");
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(positional[0], commands[i].name))
                        cmd = &commands[i];
        if (!cmd)
                FAIL("unknown command '%s' (see --help)", positional[0]);
        if (want_help) {
                command_help(cmd);
                return 1;
        }
        a->command = cmd->cmd;
        if (n_pos - 1 < cmd->min_args)
                FAIL("'%s' needs an argument: blkledger %s %s", cmd->name, cmd->name, cmd->usage);
        if (n_pos - 1 > cmd->max_args)
                FAIL("too many arguments for '%s' (see blkledger %s --help)", cmd->name, cmd->name);
        for (size_t i = 0; i < ELEMENTSOF(option_names); i++)
                if ((used & option_names[i].flag) && !(cmd->options & option_names[i].flag))
                        FAIL("%s does not apply to '%s' (see blkledger %s --help)", option_names[i].name, cmd->name,
                             cmd->name);

        switch (cmd->cmd) {
        case CMD_NAME:
                if ((n_pos == 3) == a->remove)
                        FAIL("'name' takes DEVICE and NAME, or DEVICE and --remove");
                a->device = strdup(positional[1]);
                if (n_pos == 3)
                        a->name = strdup(positional[2]);
                break;
        case CMD_EXPECT:
                if (!a->match_kind)
                        FAIL("'expect' needs --match serial=S, wwn=W, fs-uuid=U or loop-file=PATH");
                a->name = strdup(positional[1]);
                break;
        case CMD_UNEXPECT:
                a->name = strdup(positional[1]);
                break;
        case CMD_IMPORT:
                a->name = strdup(positional[1]); /* the file */
                break;
        case CMD_VOLUME_CREATE:
        case CMD_VOLUME_RESIZE:
                if (a->size < 0)
                        FAIL("'%s' needs --size SIZE", cmd->name);
                if (a->fs_label && !a->fs_type)
                        FAIL("--label needs --fs");
                a->name = strdup(positional[1]);
                break;
        case CMD_VOLUME_SHOW:
        case CMD_VOLUME_ATTACH:
        case CMD_VOLUME_DETACH:
        case CMD_VOLUME_DELETE:
        case CMD_VOLUME_FORGET:
                a->name = strdup(positional[1]);
                break;
        case CMD_VOLUME_ADOPT:
                if (positional[1][0] != '/') {
                        /* The daemon runs elsewhere: make a relative path absolute here. */
                        char cwd[PATH_MAX];
                        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&a->name, "%s/%s", cwd, positional[1]) < 0)
                                a->name = NULL;
                } else
                        a->name = strdup(positional[1]);
                break;
        default:
                if (n_pos > 1)
                        a->device = strdup(positional[1]);
        }
        if ((n_pos > 1 && !a->device && !a->name) || (n_pos == 3 && !a->name))
                return -ENOMEM;
#undef FAIL
        return 0;
}

void cli_args_done(struct cli_args *a) {
        free(a->socket);
        free(a->device);
        free(a->name);
        free(a->state);
        free(a->match_kind);
        free(a->match_value);
        free(a->fs_type);
        free(a->fs_label);
        free(a->idempotency_key);
        free(a->on_appear);
        *a = (struct cli_args) {};
}
