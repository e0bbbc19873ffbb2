/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <getopt.h>

#include "config-file.h"
#include "log.h"
#include "options.h"
#include "retention.h"
#include "util.h"

static void help(void) {
        printf("Usage: blkledgerd [OPTION]...\n"
               "Keep a ledger of the host's block devices, reconciled against the devices present.\n"
               "\n"
               "  -f, --foreground           log to stderr instead of the journal\n"
               "  -s, --state-dir DIR        journal and lock directory (default %s)\n"
               "  -S, --socket PATH          Varlink socket to serve (default %s)\n"
               "      --scope loop:DIR       only observe loop devices backed by files under DIR\n"
               "                             (repeatable; default: every block device, read-only;\n"
               "                             the volume directory is always in scope)\n"
               "      --volume-dir DIR       backing files of managed volumes (default: volumes/\n"
               "                             in the state directory)\n"
               "      --hook-timeout SEC     an expectation's run: program is killed after SEC\n"
               "                             seconds (default 60)\n"
               "      --backup-interval SEC  online backup of the ledger every SEC seconds into\n"
               "                             STATE/backups (default 86400, 0 = only on demand)\n"
               "      --backup-keep N        backups kept (default 7, 0 = all)\n"
               "      --event-max-age AGE    prune events older than AGE: seconds, or with s, m, h,\n"
               "                             d or w (default 90d, 0 = no limit)\n"
               "      --event-max-count N    prune events beyond the newest N (default 1000000,\n"
               "                             0 = no limit); events of open drift and unfinished\n"
               "                             intents and each device's newest are kept\n"
               "      --event-source SOURCE  auto (default), udev or kernel\n"
               "      --rescan-interval SEC  full pass every SEC seconds, 0 = never (default 300)\n"
               "      --pass-chunk N         devices a pass hands to the ledger at once (default 64)\n"
               "      --probe-timeout SEC    a device read taking longer marks it unresponsive\n"
               "                             (default 5)\n"
               "      --probe-workers N      threads running libblkid (default: one per CPU, at most 8)\n"
               "      --probe-concurrency N  devices read at once (default 64)\n"
               "      --receive-buffer BYTES netlink receive buffer for device events\n"
               "                             (default 134217728; 0 = the kernel's default;\n"
               "                             tests make it small to force event loss)\n"
               "      --max-clients N        connections served at once (default %u)\n"
               "      --watch-max-lag N      events a blocked watcher may fall behind (default %lld)\n"
               "      --log-level LEVEL      error, warning, info (default) or debug\n"
               "      --observe DEVICE       print what the daemon reads about DEVICE and exit\n"
               "      --initial-pass-delay SEC  start the first pass SEC seconds late (for tests:\n"
               "                             the ledger is served unverified meanwhile)\n"
               "      --config FILE          settings, one KEY = VALUE per line, KEY a long option\n"
               "                             (default %s;\n"
               "                             the command line overrides it)\n"
               "      --list-crash-points    print the fault-injection crash points and exit (builds\n"
               "                             with --enable-fault-injection; BLKLEDGER_CRASH_AT=NAME)\n"
               "  -h, --help                 show this help\n"
               "  -V, --version              show the version\n"
               "\n"
               "blkledgerd never forks; it signals readiness through $NOTIFY_SOCKET.\n"
               "See blkledgerd(8).\n",
               BL_DEFAULT_STATE_DIR, BL_DEFAULT_SOCKET, server_default_limits.max_clients,
               (long long) server_default_limits.watch_max_lag, BL_DEFAULT_CONFIG);
}

static int parse_bounded(const char *arg, int64_t min, int64_t max, int64_t *ret) {
        int64_t v;

        if (parse_int64(arg, &v) < 0 || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Every long option is also a key of blkledgerd.conf (config-file.c) unless is_setting()
 * says otherwise: a new option needs its entry in longopts[] and its case in apply(),
 * nothing more. A repeatable one also needs its case in reset(). */
enum {
        ARG_SCOPE = 0x100,
        ARG_EVENT_SOURCE,
        ARG_RESCAN_INTERVAL,
        ARG_RECEIVE_BUFFER,
        ARG_MAX_CLIENTS,
        ARG_WATCH_MAX_LAG,
        ARG_LOG_LEVEL,
        ARG_OBSERVE,
        ARG_INITIAL_PASS_DELAY,
        ARG_PASS_CHUNK,
        ARG_PROBE_TIMEOUT,
        ARG_PROBE_WORKERS,
        ARG_PROBE_CONCURRENCY,
        ARG_VOLUME_DIR,
        ARG_HOOK_TIMEOUT,
        ARG_BACKUP_INTERVAL,
        ARG_BACKUP_KEEP,
        ARG_EVENT_MAX_AGE,
        ARG_EVENT_MAX_COUNT,
        ARG_LIST_CRASH_POINTS,
        ARG_CONFIG,
};

static const struct option longopts[] = {
        { "foreground", no_argument, NULL, 'f' },
        { "state-dir", required_argument, NULL, 's' },
        { "socket", required_argument, NULL, 'S' },
        { "scope", required_argument, NULL, ARG_SCOPE },
        { "event-source", required_argument, NULL, ARG_EVENT_SOURCE },
        { "rescan-interval", required_argument, NULL, ARG_RESCAN_INTERVAL },
        { "receive-buffer", required_argument, NULL, ARG_RECEIVE_BUFFER },
        { "max-clients", required_argument, NULL, ARG_MAX_CLIENTS },
        { "watch-max-lag", required_argument, NULL, ARG_WATCH_MAX_LAG },
        { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
        { "observe", required_argument, NULL, ARG_OBSERVE },
        { "initial-pass-delay", required_argument, NULL, ARG_INITIAL_PASS_DELAY },
        { "pass-chunk", required_argument, NULL, ARG_PASS_CHUNK },
        { "probe-timeout", required_argument, NULL, ARG_PROBE_TIMEOUT },
        { "probe-workers", required_argument, NULL, ARG_PROBE_WORKERS },
        { "probe-concurrency", required_argument, NULL, ARG_PROBE_CONCURRENCY },
        { "volume-dir", required_argument, NULL, ARG_VOLUME_DIR },
        { "hook-timeout", required_argument, NULL, ARG_HOOK_TIMEOUT },
        { "backup-interval", required_argument, NULL, ARG_BACKUP_INTERVAL },
        { "backup-keep", required_argument, NULL, ARG_BACKUP_KEEP },
        { "event-max-age", required_argument, NULL, ARG_EVENT_MAX_AGE },
        { "event-max-count", required_argument, NULL, ARG_EVENT_MAX_COUNT },
        { "list-crash-points", no_argument, NULL, ARG_LIST_CRASH_POINTS },
        { "config", required_argument, NULL, ARG_CONFIG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {},
};

/* Not settings: they make the daemon do something else once, or name the file itself. */
static bool is_setting(int c) {
        return c != 'h' && c != 'V' && c != ARG_OBSERVE && c != ARG_LIST_CRASH_POINTS && c != ARG_CONFIG;
}

void options_init(struct options *o) {
        *o = (struct options) {
                .log_level = LOG_LEVEL_INFO,
                .event_source = EVENT_SOURCE_AUTO,
                .rcvbuf = 128 * 1024 * 1024,
                .rescan_interval = 300 * USEC_PER_SEC,
                .pass_chunk = 64,
                .probe_timeout = 5 * USEC_PER_SEC,
                .hook_timeout = 60 * USEC_PER_SEC,
                .backup_interval = 86400 * USEC_PER_SEC,
                .backup_keep = 7,
                .event_max_age = RETENTION_DEFAULT_MAX_AGE,
                .event_max_count = RETENTION_DEFAULT_MAX_COUNT,
                .probe_concurrency = 64,
                .limits = server_default_limits,
        };
}

#define FAIL(...)                                                                         \
        do {                                                                              \
                if (asprintf(ret_error, __VA_ARGS__) < 0)                                 \
                        *ret_error = NULL;                                                \
                return -EINVAL;                                                           \
        } while (0)

/* One option, as getopt_long() returns it: the same checks for the command line and
 * the configuration file. */
static int apply(struct options *o, int c, const char *arg, char **ret_error) {
        int64_t v;
        int r;

        switch (c) {
        case 'f':
                o->foreground = true;
                break;
        case 's':
                if (isempty(arg))
                        FAIL("--state-dir needs a directory");
                free(o->state_dir);
                o->state_dir = strdup(arg);
                break;
        case 'S':
                if (isempty(arg))
                        FAIL("--socket needs a path");
                free(o->socket_path);
                o->socket_path = strdup(arg);
                break;
        case ARG_SCOPE: {
                const char *why = NULL;
                char **n;
                r = scope_add(&o->scope, arg, &why);
                if (r < 0)
                        FAIL("invalid --scope '%s': %s", arg, why ? why : strerror(-r));
                n = realloc(o->scope_specs, (o->n_scope_specs + 1) * sizeof(char *));
                if (!n)
                        return -ENOMEM;
                o->scope_specs = n;
                if (asprintf(&o->scope_specs[o->n_scope_specs], "loop:%s",
                             o->scope.loop_dirs[o->scope.n_loop_dirs - 1]) < 0)
                        return -ENOMEM;
                o->n_scope_specs++;
                break;
        }
        case ARG_EVENT_SOURCE:
                r = event_source_from_string(arg);
                if (r < 0)
                        FAIL("invalid --event-source '%s': use auto, udev or kernel", arg);
                o->event_source = r;
                break;
        case ARG_RESCAN_INTERVAL:
                if (parse_bounded(arg, 0, 365LL * 24 * 3600, &v) < 0)
                        FAIL("invalid --rescan-interval '%s': seconds, 0 to disable", arg);
                o->rescan_interval = v * USEC_PER_SEC;
                break;
        case ARG_RECEIVE_BUFFER:
                if (parse_bounded(arg, 0, INT32_MAX, &v) < 0)
                        FAIL("invalid --receive-buffer '%s'", arg);
                o->rcvbuf = (int) v;
                break;
        case ARG_MAX_CLIENTS:
                if (parse_bounded(arg, 1, 65536, &v) < 0)
                        FAIL("invalid --max-clients '%s': 1 to 65536", arg);
                o->limits.max_clients = (unsigned) v;
                break;
        case ARG_WATCH_MAX_LAG:
                if (parse_bounded(arg, 1, INT64_MAX, &v) < 0)
                        FAIL("invalid --watch-max-lag '%s'", arg);
                o->limits.watch_max_lag = v;
                break;
        case ARG_LOG_LEVEL:
                r = log_parse_level(arg);
                if (r < 0)
                        FAIL("invalid --log-level '%s': use error, warning, info or debug", arg);
                o->log_level = r;
                break;
        case ARG_INITIAL_PASS_DELAY:
                if (parse_bounded(arg, 0, 3600, &v) < 0)
                        FAIL("invalid --initial-pass-delay '%s': seconds", arg);
                o->initial_pass_delay = v * USEC_PER_SEC;
                break;
        case ARG_PASS_CHUNK:
                if (parse_bounded(arg, 1, 65536, &v) < 0)
                        FAIL("invalid --pass-chunk '%s': 1 to 65536", arg);
                o->pass_chunk = (unsigned) v;
                break;
        case ARG_PROBE_TIMEOUT:
                if (parse_bounded(arg, 1, 3600, &v) < 0)
                        FAIL("invalid --probe-timeout '%s': 1 to 3600 seconds", arg);
                o->probe_timeout = v * USEC_PER_SEC;
                break;
        case ARG_PROBE_WORKERS:
                if (parse_bounded(arg, 1, 64, &v) < 0)
                        FAIL("invalid --probe-workers '%s': 1 to 64", arg);
                o->probe_workers = (unsigned) v;
                break;
        case ARG_PROBE_CONCURRENCY:
                if (parse_bounded(arg, 1, 4096, &v) < 0)
                        FAIL("invalid --probe-concurrency '%s': 1 to 4096", arg);
                o->probe_concurrency = (unsigned) v;
                break;
        case ARG_VOLUME_DIR:
                if (isempty(arg) || arg[0] != '/')
                        FAIL("--volume-dir needs an absolute path");
                free(o->volume_dir);
                o->volume_dir = strdup(arg);
                if (!o->volume_dir)
                        return -ENOMEM;
                break;
        case ARG_HOOK_TIMEOUT:
                if (parse_bounded(arg, 1, 86400, &v) < 0)
                        FAIL("invalid --hook-timeout '%s': 1 to 86400 seconds", arg);
                o->hook_timeout = v * USEC_PER_SEC;
                break;
        case ARG_BACKUP_INTERVAL:
                if (parse_bounded(arg, 0, 365 * 86400, &v) < 0)
                        FAIL("invalid --backup-interval '%s': 0 (never) to 31536000 seconds", arg);
                o->backup_interval = v * USEC_PER_SEC;
                break;
        case ARG_BACKUP_KEEP:
                if (parse_bounded(arg, 0, 10000, &v) < 0)
                        FAIL("invalid --backup-keep '%s': 0 (all) to 10000", arg);
                o->backup_keep = (unsigned) v;
                break;
        case ARG_EVENT_MAX_AGE:
                if (retention_parse_age(arg, &o->event_max_age) < 0)
                        FAIL("invalid --event-max-age '%s': seconds, or a number with s, m, h, d or w "
                             "(0 = no limit)", arg);
                break;
        case ARG_EVENT_MAX_COUNT:
                if (parse_bounded(arg, 0, INT64_C(1) << 40, &o->event_max_count) < 0)
                        FAIL("invalid --event-max-count '%s': 0 (no limit) to 1099511627776", arg);
                break;
        case ARG_LIST_CRASH_POINTS:
                o->list_crash_points = true;
                break;
        case ARG_OBSERVE:
                free(o->observe);
                o->observe = strdup(arg);
                break;
        default:
                return -ENOENT;
        }
        return 0;
}

/* Where each setting came from is kept: a reload replays the command line over the file
 * and compares the settings it finds with the ones in force. */
static int record(struct options *o, const char *name, const char *value, bool from_command_line) {
        struct option_setting *n = realloc(o->settings, (o->n_settings + 1) * sizeof(*n));

        if (!n)
                return -ENOMEM;
        o->settings = n;
        n[o->n_settings] = (struct option_setting) { .name = name, .from_command_line = from_command_line };
        if (value && !(n[o->n_settings].value = strdup(value)))
                return -ENOMEM;
        o->n_settings++;
        return 0;
}

static const struct option *find_option(const char *name, int c) {
        for (const struct option *opt = longopts; opt->name; opt++)
                if (name ? streq(opt->name, name) : opt->val == c)
                        return opt;
        return NULL;
}

int options_set(struct options *o, const char *name, const char *value, char **ret_error) {
        const struct option *opt = find_option(name, 0);
        int r;

        *ret_error = NULL;
        if (!opt || !is_setting(opt->val)) {
                if (asprintf(ret_error, opt ? "'%s' is a command-line option, not a setting" : "unknown key '%s'",
                             name) < 0)
                        *ret_error = NULL;
                return -ENOENT;
        }
        if (opt->has_arg == no_argument) {
                /* A flag of the command line is a boolean here; "no" is its default. */
                bool yes = streq(value, "yes") || streq(value, "true") || streq(value, "1");
                if (!yes && !streq(value, "no") && !streq(value, "false") && !streq(value, "0")) {
                        if (asprintf(ret_error, "invalid %s '%s': yes or no", name, value) < 0)
                                *ret_error = NULL;
                        return -EINVAL;
                }
                if (yes) {
                        r = apply(o, opt->val, NULL, ret_error);
                        if (r < 0)
                                return r;
                }
        } else {
                r = apply(o, opt->val, value, ret_error);
                if (r < 0)
                        return r;
        }
        return record(o, opt->name, value, false);
}

/* A list option given on the command line replaces the file's list. */
static void reset(struct options *o, int c) {
        switch (c) {
        case ARG_SCOPE:
                for (unsigned i = 0; i < o->n_scope_specs; i++)
                        free(o->scope_specs[i]);
                free(o->scope_specs);
                o->scope_specs = NULL;
                o->n_scope_specs = 0;
                scope_done(&o->scope);
                o->scope = (struct scope) {};
                break;
        }
}

static int finish(struct options *o) {
        if (!o->state_dir)
                o->state_dir = strdup(BL_DEFAULT_STATE_DIR);
        if (!o->socket_path)
                o->socket_path = strdup(BL_DEFAULT_SOCKET);
        if (!o->state_dir || !o->socket_path)
                return -ENOMEM;
        if (!o->volume_dir && asprintf(&o->volume_dir, "%s/volumes", o->state_dir) < 0) {
                o->volume_dir = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* The file, then the command line (already in o->settings) over it. */
static int load(struct options *o, bool read_file, char **ret_error) {
        int r = 0;

        if (read_file) {
                r = config_load_file(o->config_path, o->config_must_exist, o, ret_error);
                if (r < 0)
                        return r;
        }
        o->config_loaded = r > 0;
        for (unsigned i = 0; i < o->n_settings; i++) {
                const struct option_setting *s = &o->settings[i];
                const struct option *opt = find_option(s->name, 0);
                bool first = true;

                if (!s->from_command_line)
                        continue;
                for (unsigned j = 0; j < i; j++)
                        if (o->settings[j].from_command_line && streq(o->settings[j].name, s->name))
                                first = false;
                if (first) {
                        /* The file's values of this option no longer count. The command
                         * line's entries come first (recorded before the file was read),
                         * so dropping the file's leaves s where it is. */
                        unsigned k = 0;
                        for (unsigned j = 0; j < o->n_settings; j++) {
                                if (!o->settings[j].from_command_line && streq(o->settings[j].name, s->name))
                                        free(o->settings[j].value);
                                else
                                        o->settings[k++] = o->settings[j];
                        }
                        o->n_settings = k;
                        reset(o, opt->val);
                }
                r = apply(o, opt->val, s->value, ret_error);
                if (r < 0)
                        return r;
        }
        return finish(o);
}

int options_parse(int argc, char **argv, struct options *o, char **ret_error) {
        const struct option *opt;
        bool one_shot = false;
        int c, r;

        *ret_error = NULL;
        options_init(o);
        optind = 0; /* full re-initialization, so tests may parse twice */
        opterr = 0;
        /* Command-line settings are kept in order and applied after the file. */
        while ((c = getopt_long(argc, argv, ":fs:S:hV", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 1;
                case 'V':
                        printf("blkledgerd %s\n", PACKAGE_VERSION);
                        return 1;
                case ':':
                        FAIL("option '%s' needs an argument", argv[optind - 1]);
                case '?':
                        *ret_error = getopt_error_message(argv[optind - 1], optopt);
                        return -EINVAL;
                case ARG_CONFIG:
                        if (isempty(optarg))
                                FAIL("--config needs a file");
                        free(o->config_path);
                        o->config_path = strdup(optarg);
                        if (!o->config_path)
                                return -ENOMEM;
                        o->config_must_exist = true;
                        break;
                default:
                        opt = find_option(NULL, c);
                        if (!opt)
                                FAIL("option '%s' is not handled", argv[optind - 1]);
                        if (!is_setting(c))
                                one_shot = true;
                        r = record(o, opt->name, opt->has_arg == no_argument ? NULL : optarg, true);
                        if (r < 0)
                                return r;
                }
        }
        if (optind < argc)
                FAIL("unexpected argument '%s' (see --help)", argv[optind]);
        if (!o->config_path && !(o->config_path = strdup(BL_DEFAULT_CONFIG)))
                return -ENOMEM;
        /* --observe and --list-crash-points do not run the daemon: no file to read. */
        return load(o, !one_shot, ret_error);
}

#undef FAIL

int options_reload(const struct options *current, struct options *ret, char **ret_error) {
        *ret_error = NULL;
        options_init(ret);
        ret->config_path = strdup(current->config_path);
        if (!ret->config_path)
                return -ENOMEM;
        ret->config_must_exist = current->config_must_exist;
        for (unsigned i = 0; i < current->n_settings; i++) {
                const struct option_setting *s = &current->settings[i];
                if (s->from_command_line && record(ret, s->name, s->value, true) < 0)
                        return -ENOMEM;
        }
        return load(ret, true, ret_error);
}

void options_done(struct options *o) {
        free(o->state_dir);
        free(o->socket_path);
        free(o->observe);
        free(o->volume_dir);
        free(o->config_path);
        for (unsigned i = 0; i < o->n_settings; i++)
                free(o->settings[i].value);
        free(o->settings);
        for (unsigned i = 0; i < o->n_scope_specs; i++)
                free(o->scope_specs[i]);
        free(o->scope_specs);
        scope_done(&o->scope);
        *o = (struct options) {};
}
