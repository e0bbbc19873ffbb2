/* SPDX-License-Identifier: GPL-2.0-or-later */
/* blkledgerd: setup in data-flow order, the event loop, and teardown in reverse. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "backup.h"
#include "config-file.h"
#include "daemon.h"
#include "identity.h"
#include "log.h"
#include "observe.h"
#include "probe-engine.h"
#include "probe.h"
#include "privilege.h"
#include "recovery.h"
#include "retention.h"
#include "crashpoint.h"
#include "util.h"
#include "volumes.h"

#define TICK_USEC USEC_PER_SEC
/* The ledger is corrupt and no backup could replace it (blkledgerd(8), EXIT STATUS):
 * restarting cannot help, so the unit does not (RestartPreventExitStatus=). */
#define EXIT_CORRUPT 3
#define SOURCE_CHECK_USEC (5 * USEC_PER_SEC)

extern const char io_blkledger_varlink[];

static int mkdir_parents(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* One daemon per state directory: the lock lives as long as the process. */
static int lock_state_dir(const char *dir, int *ret_fd) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        char buf[32];

        if (asprintf(&path, "%s/lock", dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return log_error_errno(errno, "cannot open %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                ssize_t n;
                if (errno != EWOULDBLOCK)
                        return log_error_errno(errno, "cannot lock %s", path);
                n = pread(fd, buf, sizeof(buf) - 1, 0);
                buf[n > 0 ? n : 0] = 0;
                log_error("another blkledgerd (pid %s) is using %s", isempty(buf) ? "?" : strtok(buf, "\n"), dir);
                return -EBUSY;
        }
        snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, strlen(buf), 0) < 0)
                log_warning_errno(errno, "cannot record our pid in %s", path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static void on_device(struct udev_device *dev, void *userdata) {
        reconcile_queue_device(userdata, dev);
}

static void on_overflow(void *userdata) {
        struct daemon *d = userdata;
        d->overflows++;
        reconcile_request_pass(d, NULL);
}

static void on_answered(dev_t devnum, void *userdata) {
        reconcile_device_answered(userdata, devnum);
}

static void on_source_changed(void *userdata) {
        reconcile_request_pass(userdata, NULL);
}

static void on_signal(struct ev_io *io, uint32_t revents, void *userdata) {
        struct daemon *d = userdata;
        struct signalfd_siginfo si;

        while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                        log_info("received %s, stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                        ev_loop_exit(d->loop, 0);
                        break;
                case SIGHUP:
                        log_info("received SIGHUP: reloading the configuration");
                        (void) config_reload(d);
                        break;
                }
        }
}

static void check_degraded(struct daemon *d);

static void on_tick(struct ev_timer *t, void *userdata) {
        struct daemon *d = userdata;
        int64_t now = now_monotonic_usec();

        if (d->server)
                server_tick(d->server, now);
        probe_engine_tick(d->probes, now);
        volumes_tick(d->volumes);
        if (now >= d->next_source_check) {
                d->next_source_check = now + SOURCE_CHECK_USEC;
                monitor_check_source(d->monitor);
        }
        if (d->opts.backup_interval > 0) {
                int64_t real = now_realtime_usec();
                /* One interval after the last backup (or after the first start). */
                if (!d->next_backup)
                        d->next_backup = (d->last_backup ? d->last_backup : real) + d->opts.backup_interval;
                if (real >= d->next_backup)
                        d->next_backup = real + (daemon_backup(d, NULL) < 0 ? 3600 * USEC_PER_SEC
                                                                              : d->opts.backup_interval);
        }
        check_degraded(d);
        retention_tick(d->retention, now_realtime_usec(), now);
        if (d->next_full_scan && now >= d->next_full_scan) {
                d->next_full_scan = d->opts.rescan_interval ? now + d->opts.rescan_interval : 0;
                reconcile_request_pass(d, NULL);
        }
        if (ev_timer_arm(t, TICK_USEC) < 0) {
                log_error("cannot re-arm the timer; stopping");
                ev_loop_exit(d->loop, -ENOMEM);
        }
}

static int record_daemon_event(struct daemon *d, const char *kind, json_object *after) {
        int r = journal_begin(d->journal);

        if (r == 0)
                r = journal_append_event(d->journal, now_realtime_usec(), 0, kind, NULL, after, NULL);
        if (r == 0)
                r = journal_commit(d->journal);
        if (r < 0)
                journal_rollback(d->journal);
        return r;
}

/* The storage refusing writes and accepting them again: said once each way, the second
 * time also in the history (the first cannot be written, by its nature). */
static void check_degraded(struct daemon *d) {
        int now = journal_degraded(d->journal, NULL), seen = journal_degraded_seen(d->journal);

        if (seen && !d->degraded_logged) {
                log_msg_id(LOG_LEVEL_WARNING, MSGID_STORAGE_DEGRADED,
                           "degraded: the journal cannot be written (%s); serving what it holds, retrying",
                           journal_degraded_reason(seen));
                d->degraded_logged = seen;
        }
        if (now || !d->degraded_logged)
                return;
        {
                json_object *after = json_object_new_object();
                int r;
                if (after)
                        json_object_object_add(after, "reason",
                                               json_object_new_string(journal_degraded_reason(d->degraded_logged)));
                r = record_daemon_event(d, "storage_recovered", after);
                json_object_put(after);
                if (r < 0)
                        return; /* refused again: still degraded, said already */
        }
        log_msg_id(LOG_LEVEL_INFO, MSGID_STORAGE_RECOVERED, "the journal can be written again; no longer degraded");
        journal_degraded_ack(d->journal);
        d->degraded_logged = 0;
}

static int backup_before_migration(struct journal *j, int old_version, void *userdata) {
        struct daemon *d = userdata;

        log_info("writing a backup of the ledger at schema %d before migrating it", old_version);
        return backup_journal(j, d->opts.state_dir, d->opts.backup_keep, now_realtime_usec(), NULL);
}

static void close_ledger(struct daemon *d) {
        drift_done(&d->drift);
        ledger_done(&d->ledger);
        d->journal = journal_close(d->journal);
}

/* Opens the journal and loads the ledger, the expectations and the drift from it. A
 * journal found corrupt, by quick_check before it is opened or by reading it, is moved
 * aside and replaced by the newest sound backup (recovery.c); -EBADMSG when none is. */
static int open_ledger(struct daemon *d, const char *path) {
        const struct journal_options jo = { .before_migration = backup_before_migration, .userdata = d };
        struct recovery rec = {};

        for (int attempt = 0;; attempt++) {
                _cleanup_free_ char *reason = NULL, *error = NULL;
                int r = ledger_file_check(path, false, &reason);

                if (r == 0 || r == -ENOENT) {
                        r = journal_open_with(path, &jo, &d->journal, &error);
                        if (r == 0) {
                                r = ledger_load(&d->ledger, d->journal);
                                if (r == 0)
                                        r = drift_load(&d->drift, d->journal);
                                if (r < 0) {
                                        (void) asprintf_or_null(&error, "cannot load the ledger from %s: %s", path,
                                                                strerror(-r));
                                        close_ledger(d);
                                }
                        }
                        if (r == 0)
                                break;
                        if (r != -EBADMSG || attempt > 0) {
                                log_error("%s", error ? error : strerror(-r));
                                recovery_done(&rec);
                                return r == -EBADMSG ? -EIO : r;
                        }
                        free(reason);
                        reason = recovery_clean_text(error ? error : "unreadable");
                } else if (r != -EBADMSG) {
                        log_error_errno(r, "cannot check the ledger %s", path);
                        recovery_done(&rec);
                        return r;
                }
                if (attempt > 0) {
                        log_error("the ledger restored from %s is corrupt too (%s)", rec.restored_from,
                                  reason ? reason : "?");
                        recovery_done(&rec);
                        return -EIO;
                }
                log_error("ledger %s is corrupt: %s", path, reason ? reason : "?");
                free(error);
                error = NULL;
                r = recovery_restore(d->opts.state_dir, path, reason ? reason : "corrupt", now_realtime_usec(),
                                     &rec, &error);
                if (r < 0) {
                        /* The one line an admin reads in the journal or on the terminal. Under
                         * systemd stderr is the journal too: write it there only for a terminal. */
                        log_error("%s", error ? error : strerror(-r));
                        if (!d->opts.foreground && isatty(STDERR_FILENO))
                                fprintf(stderr, "blkledgerd: %s\n", error ? error : strerror(-r));
                        recovery_done(&rec);
                        return r;
                }
        }
        if (rec.restored_from) {
                json_object *o = recovery_to_json(&rec);
                int r = -ENOMEM;

                if (o) {
                        log_msg_id(LOG_LEVEL_WARNING, MSGID_LEDGER_RESTORED,
                                   "ledger restored from backup %s (the corrupt one is %s); a full pass rebuilds "
                                   "the device facts",
                                   rec.restored_from, rec.moved_to);
                        r = journal_meta_set(d->journal, "last_recovery",
                                             json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        if (r == 0)
                                r = record_daemon_event(d, "ledger_restored", o);
                        json_object_put(o);
                }
                if (r < 0)
                        log_warning_errno(r, "cannot record the restore in the journal");
        }
        recovery_done(&rec);
        {
                _cleanup_free_ char *text = NULL;
                if (journal_meta_get(d->journal, "last_recovery", &text) == 0 && text)
                        d->last_recovery = json_tokener_parse(text);
        }
        return 0;
}

static int record_start(struct daemon *d) {
        _cleanup_free_ char *last = NULL;
        json_object *after = json_object_new_object();
        int r;

        if (!after)
                return -ENOMEM;
        r = journal_last_daemon_event(d->journal, &last);
        json_object_object_add(after, "version", json_object_new_string(PACKAGE_VERSION));
        json_object_object_add(after, "pid", json_object_new_int64(getpid()));
        /* A start without a stop before it: the previous run was killed or crashed. */
        if (r == 0 && last)
                json_object_object_add(after, "previous_run",
                                       json_object_new_string(streq(last, "daemon_stopped") ? "clean" : "unclean"));
        r = record_daemon_event(d, "daemon_started", after);
        json_object_put(after);
        return r;
}

static const struct server_info server_info = {
        .interface = "io.blkledger",
        .interface_description = io_blkledger_varlink,
        .version = PACKAGE_VERSION,
};

static int start_serving(struct daemon *d) {
        int r;

        r = server_new(d->loop, d->socket_fd, &d->opts.limits, &server_info, daemon_methods, &daemon_history, d,
                       &d->server);
        if (r < 0)
                return log_error_errno(r, "cannot serve %s", d->opts.socket_path);
        log_info("serving %s (%zu devices in the ledger, %zu verified; events from %s)",
                 d->socket_activated ? "the passed socket" : d->opts.socket_path,
                 d->ledger.n_recs, ledger_count_verified(&d->ledger), monitor_source_name(d->monitor));
        sd_notifyf(0, "READY=1\nSTATUS=Serving %zu devices\nMAINPID=%d", d->ledger.n_recs, (int) getpid());
        return 0;
}

static void initial_pass_done(struct daemon *d) {
        if (!d->server && start_serving(d) < 0)
                ev_loop_exit(d->loop, -EIO);
        else
                sd_notifyf(0, "STATUS=Serving %zu devices, all verified", d->ledger.n_recs);
}

static int observe_one(const char *name) {
        _cleanup_free_ char *text = NULL, *identity = NULL;
        struct udev *udev = udev_new();
        struct udev_device *dev = NULL;
        struct observation o = {};
        struct device_facts f;
        struct stat st;
        int r;

        if (!udev)
                return log_error_errno(ENOMEM, "cannot use libudev");
        if (stat(name, &st) == 0 && S_ISBLK(st.st_mode))
                dev = udev_device_new_from_devnum(udev, 'b', st.st_rdev);
        else
                dev = udev_device_new_from_subsystem_sysname(udev, "block", name);
        if (!dev) {
                udev_unref(udev);
                return log_error_errno(ENODEV, "no block device %s", name);
        }
        r = observe_udev_device(dev, &o);
        if (r == 0 && observation_get(&o, "X:devnode") && observation_is_device(&o))
                probe_content(observation_get(&o, "X:devnode"), &o);
        if (r == 0)
                r = observation_format(&o, &text);
        if (r == 0) {
                fputs(text, stdout);
                if (observation_is_device(&o) && device_facts_from_observation(&o, &f) == 0) {
                        identity = identity_from_observation(&o, &f);
                        printf("# identity: %s\n", identity ? identity : "?");
                        device_facts_done(&f);
                } else
                        printf("# not a device (an empty loop slot)\n");
        }
        observation_done(&o);
        udev_device_unref(dev);
        udev_unref(udev);
        return r;
}

int main(int argc, char **argv) {
        struct daemon d = { .signal_fd = -1, .state_lock_fd = -1, .socket_fd = -1, .socket_lock_fd = -1 };
        _cleanup_free_ char *error = NULL, *journal_file = NULL;
        struct monitor_callbacks mcb = { .device = on_device, .overflow = on_overflow,
                                         .source_changed = on_source_changed };
        sigset_t mask;
        int r, ret = EXIT_FAILURE;

        r = options_parse(argc, argv, &d.opts, &error);
        if (r != 0) {
                if (r < 0)
                        fprintf(stderr, "blkledgerd: %s\n", error ? error : strerror(-r));
                options_done(&d.opts);
                return r > 0 ? EXIT_SUCCESS : 2;
        }
        log_setup(d.opts.foreground || d.opts.observe, d.opts.log_level);
        if (d.opts.list_crash_points) {
                options_done(&d.opts);
                if (!CRASHPOINTS_BUILT) {
                        fprintf(stderr, "blkledgerd: built without crash points (configure --enable-fault-injection)\n");
                        return EXIT_FAILURE;
                }
                crashpoint_list();
                return EXIT_SUCCESS;
        }
        crashpoint_setup();
        if (d.opts.observe) {
                r = observe_one(d.opts.observe);
                options_done(&d.opts);
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        d.started_at = now_realtime_usec();

        r = mkdir_parents(d.opts.state_dir, 0755);
        if (r < 0) {
                log_error_errno(r, "cannot create state directory %s", d.opts.state_dir);
                goto out_options;
        }
        r = lock_state_dir(d.opts.state_dir, &d.state_lock_fd);
        if (r < 0)
                goto out_options;

        if (asprintf(&journal_file, "%s/ledger.db", d.opts.state_dir) < 0)
                goto out_lock;
        r = open_ledger(&d, journal_file);
        if (r < 0) {
                ret = r == -EBADMSG ? EXIT_CORRUPT : EXIT_FAILURE;
                goto out_lock;
        }
        {
                _cleanup_free_ char *ts = NULL;
                if (journal_meta_get(d.journal, "last_full_scan", &ts) == 0 && ts)
                        (void) parse_rfc3339(ts, &d.last_full_scan);
                free(ts);
                ts = NULL;
                if (journal_meta_get(d.journal, "last_backup", &ts) == 0 && ts)
                        (void) parse_rfc3339(ts, &d.last_backup);
        }

        r = ev_loop_new(256, &d.loop);
        if (r < 0) {
                log_error_errno(r, "cannot set up io_uring");
                goto out_ledger;
        }
        r = volumes_new(&d, d.opts.volume_dir, &d.volumes);
        if (r < 0)
                goto out_loop;
        if (scope_is_set(&d.opts.scope) && !scope_covers_dir(&d.opts.scope, volumes_dir(d.volumes))) {
                /* The daemon's own volumes are always in its scope. */
                const char *why = NULL;
                char spec[PATH_MAX + 8], **n;
                snprintf(spec, sizeof(spec), "loop:%s", volumes_dir(d.volumes));
                r = scope_add(&d.opts.scope, spec, &why);
                n = r < 0 ? NULL : realloc(d.opts.scope_specs, (d.opts.n_scope_specs + 1) * sizeof(char *));
                if (!n || !(d.opts.scope_specs = n, n[d.opts.n_scope_specs] = strdup(spec))) {
                        log_error("cannot add the volume directory to the scope: %s", why ? why : "out of memory");
                        goto out_loop;
                }
                d.opts.n_scope_specs++;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        d.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (d.signal_fd < 0) {
                log_error_errno(errno, "cannot watch signals");
                goto out_loop;
        }
        r = ev_io_new(d.loop, d.signal_fd, POLLIN, on_signal, &d, &d.signal_io);
        if (r < 0) {
                log_error_errno(r, "cannot watch signals");
                goto out_signals;
        }

        {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                struct probe_engine_config pc = {
                        .workers = d.opts.probe_workers ? d.opts.probe_workers
                                                        : (unsigned) MIN(MAX(cpus, 1L), 8L),
                        .max_inflight = d.opts.probe_concurrency,
                        .timeout = d.opts.probe_timeout,
                };
                r = probe_engine_new(d.loop, &pc, on_answered, &d, &d.probes);
                if (r < 0) {
                        log_error_errno(r, "cannot start the probe engine");
                        goto out_signals;
                }
        }

        d.udev = udev_new();
        if (!d.udev) {
                log_error_errno(errno ?: ENOMEM, "cannot use libudev");
                goto out_signals;
        }
        /* Follow events before enumerating, so nothing that happens during the initial
         * scan is missed; events that repeat what the scan saw change nothing. */
        r = monitor_new(d.udev, d.loop, d.opts.event_source, d.opts.rcvbuf, &mcb, &d, &d.monitor);
        if (r < 0)
                goto out_udev;

        /* Claim the socket before any work, so a second daemon fails at once; it
         * answers from start_serving() on. */
        {
                _cleanup_free_ char *dir = strdup(d.opts.socket_path);
                char *slash = dir ? strrchr(dir, '/') : NULL;
                if (slash && slash != dir) {
                        *slash = 0;
                        r = mkdir_parents(dir, 0755);
                        if (r < 0) {
                                log_error_errno(r, "cannot create %s", dir);
                                goto out_monitor;
                        }
                }
        }
        free(error);
        error = NULL;
        /* Socket activation (blkledgerd.socket): systemd owns the path and passes the
         * listening socket; it is ours to serve, not to bind, lock or remove. */
        r = sd_listen_fds(1);
        if (r > 1) {
                log_error("%d sockets were passed; blkledgerd serves one", r);
                goto out_monitor;
        }
        if (r == 1) {
                if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) <= 0) {
                        log_error("the socket passed by the service manager is not a listening Unix stream socket");
                        goto out_monitor;
                }
                d.socket_fd = SD_LISTEN_FDS_START;
                (void) fcntl(d.socket_fd, F_SETFD, FD_CLOEXEC);
                /* The server accepts until EAGAIN: a blocking listener would hang it. */
                if (fcntl(d.socket_fd, F_SETFL, fcntl(d.socket_fd, F_GETFL) | O_NONBLOCK) < 0) {
                        log_error_errno(errno, "cannot make the passed socket non-blocking");
                        goto out_monitor;
                }
                d.socket_activated = true;
                log_info("serving the socket passed by the service manager");
        } else {
                r = server_bind(d.opts.socket_path, &d.socket_fd, &d.socket_lock_fd, &error);
                if (r < 0) {
                        log_error("%s", error ? error : strerror(-r));
                        goto out_monitor;
                }
        }
        if (privilege_drop() < 0)
                goto out_socket;
        r = record_start(&d);
        if (r < 0) {
                log_error_errno(r, "cannot write to the journal");
                goto out_socket;
        }
        r = retention_new(d.journal,
                          &(struct retention_policy) { .max_age = d.opts.event_max_age,
                                                       .max_count = d.opts.event_max_count },
                          &d.retention);
        if (r < 0) {
                log_error_errno(r, "cannot set up the pruning of old events");
                goto out_timer;
        }
        if (scope_is_set(&d.opts.scope))
                for (unsigned i = 0; i < d.opts.n_scope_specs; i++)
                        log_info("scope: %s", d.opts.scope_specs[i]);
        r = ev_timer_new(d.loop, on_tick, &d, &d.tick);
        if (r == 0)
                r = ev_timer_arm(d.tick, TICK_USEC);
        if (r < 0) {
                log_error_errno(r, "cannot arm the timer");
                goto out_timer;
        }
        d.next_source_check = now_monotonic_usec() + SOURCE_CHECK_USEC;
        if (d.opts.rescan_interval)
                d.next_full_scan = now_monotonic_usec() + d.opts.rescan_interval;

        /* With a ledger from an earlier run, serve it at once, marked unverified until
         * the first pass has checked each record; with none, there is nothing to serve
         * before the first pass. */
        if (d.ledger.n_recs > 0) {
                r = start_serving(&d);
                if (r < 0)
                        goto out_timer;
        }
        d.on_initial_pass = initial_pass_done;
        volumes_start(d.volumes);
        if (d.opts.initial_pass_delay > 0)
                d.next_full_scan = now_monotonic_usec() + d.opts.initial_pass_delay;
        else
                reconcile_request_pass(&d, NULL);

        r = ev_loop_run(d.loop);
        if (r < 0)
                log_error_errno(r, "event loop failed");
        else
                ret = EXIT_SUCCESS;
        sd_notify(0, "STOPPING=1");

out_timer:
        ev_timer_free(d.tick);
        d.volumes = volumes_free(d.volumes);
        reconcile_done(&d);
        d.server = server_free(d.server);
        if (record_daemon_event(&d, "daemon_stopped", NULL) < 0)
                log_warning("cannot record the stop in the journal");
        d.retention = retention_free(d.retention);
out_socket:
        /* The socket path is ours while we hold its lock (not when systemd passed it). */
        if (!d.socket_activated)
                unlink(d.opts.socket_path);
        close(d.socket_fd);
        if (d.socket_lock_fd >= 0)
                close(d.socket_lock_fd);
out_monitor:
        monitor_free(d.monitor);
out_udev:
        udev_unref(d.udev);
out_signals:
        d.probes = probe_engine_free(d.probes);
        reconcile_free_probes(&d);
        ev_io_free(d.signal_io);
        if (d.signal_fd >= 0)
                close(d.signal_fd);
out_loop:
        d.volumes = volumes_free(d.volumes);
        ev_loop_free(d.loop);
out_ledger:
        close_ledger(&d);
        json_object_put(d.last_recovery);
out_lock:
        close(d.state_lock_fd);
out_options:
        options_done(&d.opts);
        return ret;
}
