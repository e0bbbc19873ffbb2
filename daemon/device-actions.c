/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Actions on devices: an expectation's on_appear (format-if-blank, run), started for
 * devices that appear, carried out as intents by the runner in volumes.c. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "crashpoint.h"
#include "log.h"
#include "volumes-internal.h"

/* ---- actions on devices: an expectation's on_appear ---- */

int volumes_check_action(const char *spec, char **ret_why) {
        const char *rest;
        struct stat st;

        *ret_why = NULL;
        if ((rest = startswith(spec, "format-if-blank:"))) {
                if (!vol_fs_tool(rest)) {
                        *ret_why = strdup("format-if-blank: needs ext2, ext3, ext4, xfs, btrfs, vfat, exfat or swap");
                        return -EINVAL;
                }
                return 0;
        }
        if ((rest = startswith(spec, "run:"))) {
                /* Run as root with the device: only a program only root can change. */
                if (rest[0] != '/' || strlen(rest) >= PATH_MAX)
                        *ret_why = strdup("run: needs an absolute path");
                else if (lstat(rest, &st) < 0)
                        (void) asprintf_or_null(ret_why, "run: %s: %s", rest, strerror(errno));
                else if (!S_ISREG(st.st_mode))
                        (void) asprintf_or_null(ret_why, "run: %s is not a regular file", rest);
                else if (st.st_uid != 0 || (st.st_mode & 022))
                        (void) asprintf_or_null(ret_why, "run: %s must be owned by root and writable by no one else", rest);
                else if (!(st.st_mode & 0100))
                        (void) asprintf_or_null(ret_why, "run: %s is not executable", rest);
                else
                        return 0;
                if (!*ret_why)
                        *ret_why = strdup("run: the program is not usable");
                return -EINVAL;
        }
        *ret_why = strdup("the action must be format-if-blank:TYPE or run:/PROGRAM");
        return -EINVAL;
}

/* The device an action is about, present now, or NULL (error set). */
static struct device_record *action_device(struct volumes *vs, struct action *a) {
        struct device_record *rec = ledger_find_by_id(&vs->d->ledger, vol_param_int(a->it, "device_id"));

        if (!rec || rec->state != DEVICE_PRESENT || !rec->facts.devnode) {
                vol_set_error(a, true, "device %" PRId64 " is not present any more", vol_param_int(a->it, "device_id"));
                return NULL;
        }
        return rec;
}

struct blank_arg {
        char devnode[64];
        uint64_t size;
};

/* The child's buffer: allocated before the fork (the child may not call malloc). */
static char blank_buf[65536];

static void put_str(const char *s) {
        size_t l = 0;
        while (s[l])
                l++;
        (void) !write(STDERR_FILENO, s, l);
}

static void put_u64(uint64_t v) {
        char b[24];
        int i = 23;

        b[i] = 0;
        do
                b[--i] = (char) ('0' + v % 10);
        while ((v /= 10) && i > 0);
        put_str(b + i);
}

/* In a forked child (async-signal-safe calls only): the first and last MiB, where the
 * signatures libblkid looks for live, read as zeros, and an exclusive open succeeds (no
 * mount, no holder). Exit 0 blank, 1 data found, 2 in use, 3 cannot read. */
static int blank_check(void *arg) {
        const struct blank_arg *b = arg;
        const uint64_t mib = 1 << 20;
        uint64_t regions[2][2] = { { 0, b->size < mib ? b->size : mib }, { b->size > mib ? b->size - mib : 0, b->size } };
        int fd = open(b->devnode, O_RDONLY | O_EXCL | O_CLOEXEC);

        if (fd < 0) {
                put_str(errno == EBUSY ? "blank check: the device is in use (an exclusive open failed)\n"
                                       : "blank check: cannot open the device\n");
                return errno == EBUSY ? 2 : 3;
        }
        for (int r = 0; r < 2; r++)
                for (uint64_t off = regions[r][0]; off < regions[r][1];) {
                        size_t want = regions[r][1] - off < sizeof(blank_buf) ? regions[r][1] - off : sizeof(blank_buf);
                        ssize_t n = pread(fd, blank_buf, want, (off_t) off);

                        if (n <= 0) {
                                put_str("blank check: cannot read the device\n");
                                return 3;
                        }
                        for (ssize_t i = 0; i < n; i++)
                                if (blank_buf[i]) {
                                        put_str("blank check: not blank: data at byte ");
                                        put_u64(off + (uint64_t) i);
                                        put_str("\n");
                                        return 1;
                                }
                        off += (uint64_t) n;
                }
        close(fd);
        return 0;
}

int dev_step_blank(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        struct blank_arg b = {};
        const char *found;
        int r;

        if (!rec)
                return -ENODEV;
        if (rec->unresponsive_since) {
                vol_set_error(a, false, "%s does not answer reads", rec->facts.devnode);
                return -EIO;
        }
        /* "Blank" is more than libblkid finding nothing: data it cannot recognise is
         * still data. This is the first half; the child reads the rest. */
        found = rec->facts.fs_type ?: rec->facts.pt_type ?: rec->facts.fs_usage;
        if (found) {
                vol_set_error(a, true, "not blank: %s holds %s", rec->facts.devnode, found);
                return -EEXIST;
        }
        snprintf(b.devnode, sizeof(b.devnode), "%s", rec->facts.devnode);
        b.size = rec->facts.size_bytes > 0 ? (uint64_t) rec->facts.size_bytes : 0;
        snprintf(a->prog, sizeof(a->prog), "blank check");
        r = child_fork(vs->d->loop, blank_check, &b, TOOL_TIMEOUT_USEC, vol_step_child_done, vs, &a->child);
        if (r < 0) {
                vol_set_error(a, false, "cannot start the blank check: %s", strerror(-r));
                return r;
        }
        vol_crash_step(a, (unsigned) a->it->step, "running");
        return 1;
}

int dev_step_format(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        const struct vol_fs_tool *t = vol_fs_tool(vol_param_str(a->it, "fs_type"));
        _cleanup_free_ char *prog = NULL;
        char devnode[64], *argv[8];
        int k = 0;

        if (!rec)
                return -ENODEV;
        if (!t) {
                vol_set_error(a, true, "no known tool makes %s", vol_param_str(a->it, "fs_type") ?: "?");
                return -EOPNOTSUPP;
        }
        prog = vol_find_program(t->mkfs);
        if (!prog) {
                vol_set_error(a, true, "%s is not installed", t->mkfs);
                return -ENOENT;
        }
        snprintf(devnode, sizeof(devnode), "%s", rec->facts.devnode);
        /* Without the force flags: should a signature have appeared since the check,
         * the tool refuses instead of overwriting it. */
        argv[k++] = prog;
        if (t->quiet)
                argv[k++] = (char *) t->quiet;
        if (vol_param_str(a->it, "fs_label")) {
                argv[k++] = (char *) t->label_opt;
                argv[k++] = (char *) vol_param_str(a->it, "fs_label");
        }
        argv[k++] = devnode;
        argv[k] = NULL;
        return vol_run_tool(vs, a, argv);
}

/* The environment of a run: program: what the daemon knows of the device. Values come
 * from the device and udev (untrusted): they go into the environment as they are,
 * never through a shell. */
static char **run_env(struct volumes *vs, struct action *a, const struct device_record *rec) {
        const struct device_facts *f = &rec->facts;
        char **env = calloc(16, sizeof(char *));
        int k = 0, r = 0;

        if (!env)
                return NULL;
        r |= asprintf(&env[k++], "PATH=/usr/sbin:/usr/bin:/sbin:/bin") < 0;
        r |= asprintf(&env[k++], "LC_ALL=C") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_ACTION=on_appear") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_EXPECTATION=%s", vol_param_str(a->it, "expectation") ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_DEVICE_ID=%" PRId64, rec->id) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_DEVNODE=%s", f->devnode ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_KNAME=%s", f->kname ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_TYPE=%s", f->fs_type ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_UUID=%s", f->fs_uuid ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_LABEL=%s", f->fs_label ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_SIZE_BYTES=%" PRId64, f->size_bytes > 0 ? f->size_bytes : 0) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_EVENT_SEQ=%" PRId64, vol_param_int(a->it, "event_seq")) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_INTENT_ID=%" PRId64, a->it->id) < 0;
        if (r) {
                strv_free(env);
                return NULL;
        }
        (void) vs;
        return env;
}

int dev_step_run(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        const char *program = vol_param_str(a->it, "program");
        _cleanup_free_ char *why = NULL, *spec = NULL;
        char **env, *argv[2];
        int r;

        if (!rec)
                return -ENODEV;
        /* Checked again now: the file may have changed since the expectation was set. */
        if (!program || asprintf(&spec, "run:%s", program) < 0 || volumes_check_action(spec, &why) < 0) {
                vol_set_error(a, true, "%s", why ? why : "no program");
                return -EPERM;
        }
        env = run_env(vs, a, rec);
        if (!env) {
                vol_set_error(a, false, "out of memory");
                return -ENOMEM;
        }
        snprintf(a->prog, sizeof(a->prog), "%s", strrchr(program, '/') + 1);
        argv[0] = a->prog;
        argv[1] = NULL;
        r = child_spawn(vs->d->loop, program, argv, env, vs->d->opts.hook_timeout, vol_step_child_done, vs, &a->child);
        strv_free(env);
        if (r < 0) {
                vol_set_error(a, true, "cannot run %s: %s", program, strerror(-r));
                return r;
        }
        log_info("%s: running %s for device %" PRId64, a->it->target, program, rec->id);
        vol_crash_step(a, (unsigned) a->it->step, "running");
        return 1;
}

void dev_finish_nothing(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a, (void) v;
}

/* ---- on_appear: devices that appeared, matched to expectations ---- */

bool dev_any_on_appear(struct volumes *vs) {
        for (size_t i = 0; i < vs->d->drift.n_exps; i++)
                if (vs->d->drift.exps[i]->on_appear)
                        return true;
        return false;
}

static void start_device_action(struct volumes *vs, const struct expectation *e, const struct device_record *rec,
                                int64_t seq, const char *key_override) {
        const char *rest;
        json_object *p = json_object_new_object();
        char target[48], key[192];
        const char *op;
        int r;

        if (!p)
                return;
        json_object_object_add(p, "device_id", json_object_new_int64(rec->id));
        json_object_object_add(p, "kname", rec->facts.kname ? json_object_new_string(rec->facts.kname) : NULL);
        json_object_object_add(p, "expectation", json_object_new_string(e->name));
        json_object_object_add(p, "event_seq", json_object_new_int64(seq));
        if ((rest = startswith(e->on_appear, "format-if-blank:"))) {
                op = "device.format-if-blank";
                json_object_object_add(p, "fs_type", json_object_new_string(rest));
                if (e->fs_label)
                        json_object_object_add(p, "fs_label", json_object_new_string(e->fs_label));
        } else if ((rest = startswith(e->on_appear, "run:"))) {
                op = "device.run";
                json_object_object_add(p, "program", json_object_new_string(rest));
        } else {
                json_object_put(p);
                return;
        }
        snprintf(target, sizeof(target), "device/%" PRId64, rec->id);
        /* One action per expectation and appearance, also when this is seen twice (a
         * crash before the cursor was saved): the key makes the second insert fail. */
        if (key_override)
                snprintf(key, sizeof(key), "%s", key_override);
        else
                snprintf(key, sizeof(key), "on_appear:%.64s:%" PRId64, e->name, seq);
        r = vol_start_intent(vs, op, target, p, key, NULL, NULL);
        json_object_put(p);
        if (r == -EEXIST)
                log_debug("%s: action for event %" PRId64 " exists already", e->name, seq);
        else if (r < 0)
                log_error_errno(r, "%s: cannot record the action for device %" PRId64, e->name, rec->id);
        else
                log_info("expectation %s: device %" PRId64 " appeared, %s", e->name, rec->id, e->on_appear);
}

static void save_cursor(struct volumes *vs) {
        char buf[32];

        snprintf(buf, sizeof(buf), "%" PRId64, vs->event_cursor);
        if (journal_meta_set(vs->d->journal, "on_appear_seq", buf) < 0)
                log_warning("cannot record how far device events were looked at");
}

static int scan_event(json_object *e, void *userdata);

/* After a commit: devices that appeared or reappeared, for expectations with on_appear
 * actions. Level of work: one page of new events per commit, nothing without such an
 * expectation. */
void volumes_after_commit(struct volumes *vs) {
        int64_t last;

        if (!vs)
                return;
        last = journal_last_seq(vs->d->journal);
        if (last <= vs->event_cursor)
                return;
        if (!dev_any_on_appear(vs) && vs->d->n_udev_actions == 0) {
                vs->event_cursor = last;
                return;
        }
        while (vs->event_cursor < last) {
                json_object *arr = json_object_new_array();
                int n;

                if (!arr)
                        return;
                n = journal_list_events(vs->d->journal, vs->event_cursor, 1000, 0, arr);
                if (n <= 0) {
                        json_object_put(arr);
                        break;
                }
                for (int i = 0; i < n; i++)
                        (void) scan_event(json_object_array_get_idx(arr, (size_t) i), vs);
                json_object_put(arr);
        }
        save_cursor(vs);
}

static int scan_event(json_object *e, void *userdata) {
        struct volumes *vs = userdata;
        json_object *v;
        const char *kind;
        int64_t seq, dev;
        struct device_record *rec;

        seq = json_object_object_get_ex(e, "seq", &v) ? json_object_get_int64(v) : 0;
        if (seq > vs->event_cursor)
                vs->event_cursor = seq;
        kind = json_object_object_get_ex(e, "kind", &v) && v ? json_object_get_string(v) : "";
        if (!streq(kind, "appeared") && !streq(kind, "reappeared"))
                return 0;
        dev = json_object_object_get_ex(e, "device_id", &v) && v ? json_object_get_int64(v) : 0;
        rec = ledger_find_by_id(&vs->d->ledger, dev);
        if (!rec || rec->state != DEVICE_PRESENT)
                return 0;
        for (size_t i = 0; i < vs->d->drift.n_exps; i++) {
                const struct expectation *x = vs->d->drift.exps[i];
                if (x->on_appear && expectation_matches(x, rec))
                        start_device_action(vs, x, rec, seq, NULL);
        }
        /* A udev rule's request for the device that just appeared. */
        for (size_t i = 0; i < vs->d->n_udev_actions; i++) {
                struct udev_action *a = &vs->d->udev_actions[i];
                if (!streq_ptr(a->kname, rec->facts.kname))
                        continue;
                (void) volumes_udev_action(vs, rec, a->action, a->seqnum);
                free(a->kname);
                free(a->action);
                memmove(a, a + 1, (vs->d->n_udev_actions - i - 1) * sizeof(*a));
                vs->d->n_udev_actions--;
                break;
        }
        return 0;
}

void volumes_expectations_changed(struct volumes *vs) {
        /* Only appearances from now on: a device present already does not "appear". */
        if (!vs || !dev_any_on_appear(vs))
                return;
        vs->event_cursor = journal_last_seq(vs->d->journal);
        save_cursor(vs);
}

/* A site's udev rule asked for an action (ENV{BLKLEDGER_ON_ADD}) on a device it saw
 * added. The same checks as an expectation's on_appear; the key is the udev event's
 * (sequence number of this boot), so the action runs once per event. */
int volumes_udev_action(struct volumes *vs, const struct device_record *rec, const char *action, uint64_t seqnum) {
        static char boot_id[40];
        _cleanup_free_ char *why = NULL;
        struct expectation e = { .name = (char *) "udev-rule", .on_appear = (char *) action };
        char key[192];

        if (!vs)
                return -ENOENT;
        if (volumes_check_action(action, &why) < 0) {
                log_warning("device %s: the udev rule's BLKLEDGER_ON_ADD is refused: %s", rec->facts.kname ?: "?",
                            why ? why : "invalid");
                return -EINVAL;
        }
        if (!boot_id[0]) {
                _cleanup_free_ char *b = NULL;
                if (read_one_line("/proc/sys/kernel/random/boot_id", &b) == 0)
                        snprintf(boot_id, sizeof(boot_id), "%s", b);
        }
        snprintf(key, sizeof(key), "udev:%s:%" PRIu64, boot_id, seqnum);
        start_device_action(vs, &e, rec, (int64_t) seqnum, key);
        return 0;
}
