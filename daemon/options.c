/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <getopt.h>

#include "log.h"
#include "options.h"
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
               "      --list-crash-points    print the fault-injection crash points and exit (builds\n"
               "                             with --enable-fault-injection; BLKLEDGER_CRASH_AT=NAME)\n"
               "  -h, --help                 show this help\n"
               "  -V, --version              show the version\n"
               "\n"
               "blkledgerd never forks; it signals readiness through $NOTIFY_SOCKET.\n"
               "See blkledgerd(8).\n",
               BL_DEFAULT_STATE_DIR, BL_DEFAULT_SOCKET, server_default_limits.max_clients,
               (long long) server_default_limits.watch_max_lag);
}

static int parse_bounded(const char *arg, int64_t min, int64_t max, int64_t *ret) {
        int64_t v;

        if (parse_int64(arg, &v) < 0 || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int options_parse(int argc, char **argv, struct options *o, char **ret_error) {
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
                ARG_LIST_CRASH_POINTS,
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
                { "list-crash-points", no_argument, NULL, ARG_LIST_CRASH_POINTS },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c, r;
        int64_t v;

        *ret_error = NULL;
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
                .probe_concurrency = 64,
                .limits = server_default_limits,
        };

#define FAIL(...)                                                                         \
        do {                                                                              \
                if (asprintf(ret_error, __VA_ARGS__) < 0)                                 \
                        *ret_error = NULL;                                                \
                return -EINVAL;                                                           \
        } while (0)

        optind = 0; /* full re-initialization, so tests may parse twice */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":fs:S:hV", longopts, NULL)) >= 0) {
                switch (c) {
                case 'f':
                        o->foreground = true;
                        break;
                case 's':
                        if (isempty(optarg))
                                FAIL("--state-dir needs a directory");
                        free(o->state_dir);
                        o->state_dir = strdup(optarg);
                        break;
                case 'S':
                        if (isempty(optarg))
                                FAIL("--socket needs a path");
                        free(o->socket_path);
                        o->socket_path = strdup(optarg);
                        break;
                case ARG_SCOPE: {
                        const char *why = NULL;
                        char **n;
                        r = scope_add(&o->scope, optarg, &why);
                        if (r < 0)
                                FAIL("invalid --scope '%s': %s", optarg, why ? why : strerror(-r));
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
                        r = event_source_from_string(optarg);
                        if (r < 0)
                                FAIL("invalid --event-source '%s': use auto, udev or kernel", optarg);
                        o->event_source = r;
                        break;
                case ARG_RESCAN_INTERVAL:
                        if (parse_bounded(optarg, 0, 365LL * 24 * 3600, &v) < 0)
                                FAIL("invalid --rescan-interval '%s': seconds, 0 to disable", optarg);
                        o->rescan_interval = v * USEC_PER_SEC;
                        break;
                case ARG_RECEIVE_BUFFER:
                        if (parse_bounded(optarg, 0, INT32_MAX, &v) < 0)
                                FAIL("invalid --receive-buffer '%s'", optarg);
                        o->rcvbuf = (int) v;
                        break;
                case ARG_MAX_CLIENTS:
                        if (parse_bounded(optarg, 1, 65536, &v) < 0)
                                FAIL("invalid --max-clients '%s': 1 to 65536", optarg);
                        o->limits.max_clients = (unsigned) v;
                        break;
                case ARG_WATCH_MAX_LAG:
                        if (parse_bounded(optarg, 1, INT64_MAX, &v) < 0)
                                FAIL("invalid --watch-max-lag '%s'", optarg);
                        o->limits.watch_max_lag = v;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_parse_level(optarg);
                        if (r < 0)
                                FAIL("invalid --log-level '%s': use error, warning, info or debug", optarg);
                        o->log_level = r;
                        break;
                case ARG_INITIAL_PASS_DELAY:
                        if (parse_bounded(optarg, 0, 3600, &v) < 0)
                                FAIL("invalid --initial-pass-delay '%s': seconds", optarg);
                        o->initial_pass_delay = v * USEC_PER_SEC;
                        break;
                case ARG_PASS_CHUNK:
                        if (parse_bounded(optarg, 1, 65536, &v) < 0)
                                FAIL("invalid --pass-chunk '%s': 1 to 65536", optarg);
                        o->pass_chunk = (unsigned) v;
                        break;
                case ARG_PROBE_TIMEOUT:
                        if (parse_bounded(optarg, 1, 3600, &v) < 0)
                                FAIL("invalid --probe-timeout '%s': 1 to 3600 seconds", optarg);
                        o->probe_timeout = v * USEC_PER_SEC;
                        break;
                case ARG_PROBE_WORKERS:
                        if (parse_bounded(optarg, 1, 64, &v) < 0)
                                FAIL("invalid --probe-workers '%s': 1 to 64", optarg);
                        o->probe_workers = (unsigned) v;
                        break;
                case ARG_PROBE_CONCURRENCY:
                        if (parse_bounded(optarg, 1, 4096, &v) < 0)
                                FAIL("invalid --probe-concurrency '%s': 1 to 4096", optarg);
                        o->probe_concurrency = (unsigned) v;
                        break;
                case ARG_VOLUME_DIR:
                        if (isempty(optarg) || optarg[0] != '/')
                                FAIL("--volume-dir needs an absolute path");
                        free(o->volume_dir);
                        o->volume_dir = strdup(optarg);
                        if (!o->volume_dir)
                                return -ENOMEM;
                        break;
                case ARG_HOOK_TIMEOUT:
                        if (parse_bounded(optarg, 1, 86400, &v) < 0)
                                FAIL("invalid --hook-timeout '%s': 1 to 86400 seconds", optarg);
                        o->hook_timeout = v * USEC_PER_SEC;
                        break;
                case ARG_BACKUP_INTERVAL:
                        if (parse_bounded(optarg, 0, 365 * 86400, &v) < 0)
                                FAIL("invalid --backup-interval '%s': 0 (never) to 31536000 seconds", optarg);
                        o->backup_interval = v * USEC_PER_SEC;
                        break;
                case ARG_BACKUP_KEEP:
                        if (parse_bounded(optarg, 0, 10000, &v) < 0)
                                FAIL("invalid --backup-keep '%s': 0 (all) to 10000", optarg);
                        o->backup_keep = (unsigned) v;
                        break;
                case ARG_LIST_CRASH_POINTS:
                        o->list_crash_points = true;
                        break;
                case ARG_OBSERVE:
                        free(o->observe);
                        o->observe = strdup(optarg);
                        break;
                case 'h':
                        help();
                        return 1;
                case 'V':
                        printf("blkledgerd %s\n", PACKAGE_VERSION);
                        return 1;
                case ':':
                        FAIL("option '%s' needs an argument", argv[optind - 1]);
                default:
                        *ret_error = getopt_error_message(argv[optind - 1], optopt);
                        return -EINVAL;
                }
        }
        if (optind < argc)
                FAIL("unexpected argument '%s' (see --help)", argv[optind]);
#undef FAIL
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

void options_done(struct options *o) {
        free(o->state_dir);
        free(o->socket_path);
        free(o->observe);
        free(o->volume_dir);
        for (unsigned i = 0; i < o->n_scope_specs; i++)
                free(o->scope_specs[i]);
        free(o->scope_specs);
        scope_done(&o->scope);
        *o = (struct options) {};
}
