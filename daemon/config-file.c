/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "config-file.h"
#include "daemon.h"
#include "log.h"
#include "probe-engine.h"
#include "retention.h"
#include "util.h"

static int fail(char **ret_error, int r, const char *filename, size_t line, const char *fmt, ...) _printf_(5, 6);
static int fail(char **ret_error, int r, const char *filename, size_t line, const char *fmt, ...) {
        _cleanup_free_ char *why = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&why, fmt, ap) < 0)
                why = NULL;
        va_end(ap);
        if (asprintf(ret_error, "%s:%zu: %s", filename, line, why ? why : strerror(-r)) < 0)
                *ret_error = NULL;
        return r;
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *strip(char *s) {
        size_t n;

        while (is_blank(*s))
                s++;
        n = strlen(s);
        while (n > 0 && is_blank(s[n - 1]))
                s[--n] = 0;
        return s;
}

/* Keys are long option names; anything else is refused before it reaches a message. */
static bool is_key(const char *s) {
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
                        return false;
        return true;
}

int config_parse_text(const char *text, size_t len, const char *filename, struct options *o, char **ret_error) {
        char line[CONFIG_LINE_MAX + 1];
        size_t pos = 0, lineno = 0;

        *ret_error = NULL;
        if (!filename)
                filename = "(text)";
        while (pos < len) {
                const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
                size_t n = nl ? (size_t) (nl - start) : len - pos;
                _cleanup_free_ char *why = NULL;
                char *key, *value, *eq;
                int r;

                pos += n + (nl ? 1 : 0);
                lineno++;
                if (n > CONFIG_LINE_MAX)
                        return fail(ret_error, -EINVAL, filename, lineno, "line longer than %d bytes",
                                    CONFIG_LINE_MAX);
                if (memchr(start, 0, n))
                        return fail(ret_error, -EINVAL, filename, lineno, "NUL byte in the line");
                memcpy(line, start, n);
                line[n] = 0;
                key = strip(line);
                if (!*key || *key == '#')
                        continue;
                eq = strchr(key, '=');
                if (!eq)
                        return fail(ret_error, -EINVAL, filename, lineno, "missing '=' (lines are KEY = VALUE)");
                *eq = 0;
                value = strip(eq + 1);
                key = strip(key);
                if (!*key)
                        return fail(ret_error, -EINVAL, filename, lineno, "missing key before '='");
                if (!is_key(key))
                        return fail(ret_error, -EINVAL, filename, lineno,
                                    "invalid key (keys are long option names: a-z, 0-9 and '-')");
                r = options_set(o, key, value, &why);
                if (r < 0)
                        return fail(ret_error, r == -ENOENT ? -EINVAL : r, filename, lineno, "%s",
                                    why ? why : strerror(-r));
        }
        return 0;
}

int config_load_file(const char *path, bool must_exist, struct options *o, char **ret_error) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        struct stat st;
        int r;

        *ret_error = NULL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = -errno;
                if (r == -ENOENT && !must_exist)
                        return 0;
                goto fail;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto fail;
        }
        /* Not a FIFO or a device: a read there could block the daemon's loop on SIGHUP. */
        if (!S_ISREG(st.st_mode)) {
                if (asprintf(ret_error, "%s: not a regular file", path) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        /* The file chooses the devices the daemon acts on (scope, volume directory) and
         * where it keeps its ledger: only root (or the user the daemon runs as) may be
         * able to change it, as sshd's StrictModes asks of its files. */
        if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & S_IWOTH) ||
            ((st.st_mode & S_IWGRP) && st.st_gid != 0)) {
                if (asprintf(ret_error,
                             "%s: refused: others than root can change it (owner %u, group %u, mode %04o); "
                             "make it root's and not writable by group or others",
                             path, (unsigned) st.st_uid, (unsigned) st.st_gid, (unsigned) (st.st_mode & 07777)) < 0)
                        *ret_error = NULL;
                return -EPERM;
        }
        buf = malloc(CONFIG_FILE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        while (len <= CONFIG_FILE_MAX) {
                ssize_t n = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        goto fail;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        if (len > CONFIG_FILE_MAX) {
                if (asprintf(ret_error, "%s: larger than %d bytes", path, CONFIG_FILE_MAX) < 0)
                        *ret_error = NULL;
                return -EFBIG;
        }
        r = config_parse_text(buf, len, path, o, ret_error);
        return r < 0 ? r : 1;
fail:
        if (asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
                *ret_error = NULL;
        return r;
}

/* ---- SIGHUP ---------------------------------------------------------------------- */

/* Each returns whether the value in force changed (a line removed that set the default
 * changes nothing). */
static bool apply_log_level(struct daemon *d, const struct options *n) {
        bool changed = d->opts.log_level != n->log_level;
        /* Set last (see config_reload()), so the summary is logged at the old level. */
        d->opts.log_level = n->log_level;
        return changed;
}

static bool apply_rescan_interval(struct daemon *d, const struct options *n) {
        if (d->opts.rescan_interval == n->rescan_interval)
                return false;
        d->opts.rescan_interval = n->rescan_interval;
        /* A first pass held back by --initial-pass-delay keeps its time. */
        if (d->initial_pass_done || !d->opts.initial_pass_delay)
                d->next_full_scan = n->rescan_interval ? now_monotonic_usec() + n->rescan_interval : 0;
        return true;
}

static bool apply_backup_interval(struct daemon *d, const struct options *n) {
        if (d->opts.backup_interval == n->backup_interval)
                return false;
        d->opts.backup_interval = n->backup_interval;
        d->next_backup = 0; /* planned again by the tick, from the last backup */
        return true;
}

static bool apply_backup_keep(struct daemon *d, const struct options *n) {
        bool changed = d->opts.backup_keep != n->backup_keep;
        d->opts.backup_keep = n->backup_keep;
        return changed;
}

static bool apply_probe_timeout(struct daemon *d, const struct options *n) {
        if (d->opts.probe_timeout == n->probe_timeout)
                return false;
        d->opts.probe_timeout = n->probe_timeout;
        if (d->probes)
                probe_engine_set_timeout(d->probes, n->probe_timeout);
        return true;
}

static bool apply_hook_timeout(struct daemon *d, const struct options *n) {
        bool changed = d->opts.hook_timeout != n->hook_timeout;
        d->opts.hook_timeout = n->hook_timeout;
        return changed;
}

static bool apply_event_max_age(struct daemon *d, const struct options *n) {
        if (d->opts.event_max_age == n->event_max_age)
                return false;
        d->opts.event_max_age = n->event_max_age;
        if (d->retention)
                retention_set_limits(d->retention, d->opts.event_max_age, d->opts.event_max_count);
        return true;
}

static bool apply_event_max_count(struct daemon *d, const struct options *n) {
        if (d->opts.event_max_count == n->event_max_count)
                return false;
        d->opts.event_max_count = n->event_max_count;
        if (d->retention)
                retention_set_limits(d->retention, d->opts.event_max_age, d->opts.event_max_count);
        return true;
}

static bool apply_max_clients(struct daemon *d, const struct options *n) {
        if (d->opts.limits.max_clients == n->limits.max_clients)
                return false;
        d->opts.limits.max_clients = n->limits.max_clients;
        if (d->server)
                server_set_limits(d->server, &d->opts.limits);
        return true;
}

static bool apply_watch_max_lag(struct daemon *d, const struct options *n) {
        if (d->opts.limits.watch_max_lag == n->limits.watch_max_lag)
                return false;
        d->opts.limits.watch_max_lag = n->limits.watch_max_lag;
        if (d->server)
                server_set_limits(d->server, &d->opts.limits);
        return true;
}

/* What a reload changes in the running daemon. Every other setting is read once, at
 * start (directories, the socket, the scope, the event source, thread and buffer
 * sizes): a change of one is reported and waits for a restart. */
static const struct live_setting {
        const char *name;
        bool (*apply)(struct daemon *d, const struct options *n);
} live_settings[] = {
        { "log-level", apply_log_level },
        { "rescan-interval", apply_rescan_interval },
        { "backup-interval", apply_backup_interval },
        { "backup-keep", apply_backup_keep },
        { "probe-timeout", apply_probe_timeout },
        { "hook-timeout", apply_hook_timeout },
        { "event-max-age", apply_event_max_age },
        { "event-max-count", apply_event_max_count },
        { "max-clients", apply_max_clients },
        { "watch-max-lag", apply_watch_max_lag },
};

static const struct live_setting *find_live(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(live_settings); i++)
                if (streq(live_settings[i].name, name))
                        return &live_settings[i];
        return NULL;
}

/* Whether name has the same values, in the same order, in both. */
static bool same_setting(const struct options *a, const struct options *b, const char *name) {
        unsigned i = 0, j = 0;

        for (;;) {
                while (i < a->n_settings && !streq(a->settings[i].name, name))
                        i++;
                while (j < b->n_settings && !streq(b->settings[j].name, name))
                        j++;
                if (i == a->n_settings || j == b->n_settings)
                        return i == a->n_settings && j == b->n_settings;
                if (!streq_ptr(a->settings[i].value, b->settings[j].value))
                        return false;
                i++;
                j++;
        }
}

static bool seen_before(const struct option_setting *s, unsigned n, const char *name) {
        for (unsigned i = 0; i < n; i++)
                if (streq(s[i].name, name))
                        return true;
        return false;
}

static int append_name(char **list, const char *name) {
        char *n;

        if (asprintf(&n, "%s%s%s", *list ? *list : "", *list ? ", " : "", name) < 0)
                return -ENOMEM;
        free(*list);
        *list = n;
        return 0;
}

/* The settings now in force: the new ones, except those kept until a restart. */
static int take_settings(struct options *cur, struct options *n, char **kept, unsigned n_kept) {
        struct option_setting *all = calloc(cur->n_settings + n->n_settings + 1, sizeof(*all));
        unsigned k = 0;

        if (!all)
                return -ENOMEM;
        for (unsigned i = 0; i < n->n_settings; i++) {
                bool keep = false;
                for (unsigned j = 0; j < n_kept; j++)
                        keep = keep || streq(kept[j], n->settings[i].name);
                if (!keep) {
                        all[k++] = n->settings[i];
                        n->settings[i].value = NULL;
                }
        }
        for (unsigned i = 0; i < cur->n_settings; i++) {
                bool keep = false;
                for (unsigned j = 0; j < n_kept; j++)
                        keep = keep || streq(kept[j], cur->settings[i].name);
                if (keep) {
                        all[k++] = cur->settings[i];
                        cur->settings[i].value = NULL;
                }
        }
        for (unsigned i = 0; i < cur->n_settings; i++)
                free(cur->settings[i].value);
        free(cur->settings);
        cur->settings = all;
        cur->n_settings = k;
        return 0;
}

int config_reload(struct daemon *d) {
        _cleanup_free_ char *error = NULL, *changed = NULL, *restart = NULL;
        _cleanup_free_ char **kept = NULL;
        struct options n;
        unsigned n_kept = 0;
        int r;

        r = options_reload(&d->opts, &n, &error);
        if (r < 0) {
                log_error("cannot reload the configuration: %s; nothing changed",
                          error ? error : strerror(-r));
                options_done(&n);
                return r;
        }
        kept = calloc(d->opts.n_settings + n.n_settings + 1, sizeof(char *));
        if (!kept) {
                options_done(&n);
                return log_error_errno(ENOMEM, "cannot reload the configuration");
        }

        /* Every setting named on either side, once. */
        for (unsigned side = 0; side < 2; side++) {
                const struct options *o = side == 0 ? &d->opts : &n;
                for (unsigned i = 0; i < o->n_settings; i++) {
                        const char *name = o->settings[i].name;
                        const struct live_setting *live;

                        if (seen_before(o->settings, i, name) ||
                            (side == 1 && seen_before(d->opts.settings, d->opts.n_settings, name)))
                                continue;
                        if (same_setting(&d->opts, &n, name))
                                continue;
                        live = find_live(name);
                        if (live) {
                                r = live->apply(d, &n) ? append_name(&changed, name) : 0;
                        } else {
                                log_warning("configuration: '%s' changed, which takes effect at the next start; "
                                            "the running value stays", name);
                                kept[n_kept++] = (char *) name;
                                r = append_name(&restart, name);
                        }
                        if (r < 0) {
                                options_done(&n);
                                return log_error_errno(ENOMEM, "cannot reload the configuration");
                        }
                }
        }
        d->opts.config_loaded = n.config_loaded;
        r = take_settings(&d->opts, &n, kept, n_kept);
        options_done(&n);
        if (r < 0)
                return log_error_errno(r, "cannot reload the configuration");

        log_info("configuration reloaded from %s%s: %s%s%s%s", d->opts.config_path,
                 d->opts.config_loaded ? "" : " (missing: defaults)", changed ? "changed " : "nothing changed",
                 changed ? changed : "", restart ? "; needs a restart: " : "", restart ? restart : "");
        if (log_get_level() != d->opts.log_level)
                log_setup(d->opts.foreground, d->opts.log_level);
        return 0;
}
