/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Managed volumes: the actions as step lists, the runner, recovery, and the methods.
 * See volumes.h for the model and crashpoint.h for the names of the crash points. */
#include "config.h"

#include <blkid/blkid.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "child.h"
#include "crashpoint.h"
#include "daemon.h"
#include "log.h"
#include "loopdev.h"
#include "util.h"
#include "volumes.h"

#define MAX_ATTEMPTS 5
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)
#define TOOL_TIMEOUT_USEC (600 * USEC_PER_SEC)
#define LABEL_MAX 64
#define INTENTS_PAGE_DEFAULT 100
#define INTENTS_PAGE_MAX 10000

static char *const child_env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };

struct action;
struct volumes;

/* Returns 0 when the step's effect exists, 1 when a child process was started (the step
 * goes on in step_child_done), or negative errno with a->error set. */
typedef int (*step_fn)(struct volumes *vs, struct action *a);

struct step_def {
        const char *name;
        step_fn fn;
        bool runs_child;
};

struct op_def {
        const char *name;
        const struct step_def *steps;
        unsigned n_steps;
        /* The row as it is once the intent succeeded (NULL row: deleted). */
        void (*finish)(struct volumes *vs, struct action *a, struct volume *v);
        /* Undoes what the steps did, for an intent that cannot succeed; NULL: the state
         * before the intent is restored as far as the steps allow. */
        int (*undo)(struct volumes *vs, struct action *a);
        /* The row after a failure half-way (NULL: state "failed"). */
        void (*partial)(struct volumes *vs, struct action *a, struct volume *v);
        /* Not repeated after a failure (hooks: a program may not be idempotent). */
        bool no_retry;
        /* The intent made the row: failing before any step is done removes it. */
        bool new_row;
};

struct action {
        struct intent *it;
        const struct op_def *op;
        struct child *child;
        int stage;        /* within a step that runs several children */
        char prog[64];    /* the tool the child runs, for messages */
        char *error;      /* why the current step failed */
        bool permanent;   /* a retry would fail the same way */
};

struct waiter {
        int64_t intent_id;
        struct server_call *call;
        bool delete_reply; /* the volume is gone on success: reply {} */
        struct waiter *next;
};

struct volumes {
        struct daemon *d;
        char *dir;
        struct volume **vols;
        size_t n_vols;
        struct intent **open; /* unfinished, by id */
        size_t n_open;
        struct action *running;
        struct waiter *waiters;
        struct ev_defer kick;
        bool started;
        int64_t event_cursor; /* events up to here were looked at for on_appear actions */
};

/* ---- the model in memory (a write-through cache of the tables) ---- */

static struct volume *find_volume(struct volumes *vs, const char *name) {
        for (size_t i = 0; i < vs->n_vols; i++)
                if (streq(vs->vols[i]->name, name))
                        return vs->vols[i];
        return NULL;
}

static struct intent *find_open_intent(struct volumes *vs, const char *target) {
        for (size_t i = 0; i < vs->n_open; i++)
                if (streq(vs->open[i]->target, target))
                        return vs->open[i];
        return NULL;
}

static int add_volume(struct volume *v, void *userdata) {
        struct volumes *vs = userdata;
        struct volume **n = realloc(vs->vols, (vs->n_vols + 1) * sizeof(*n));

        if (!n) {
                volume_free(v);
                return -ENOMEM;
        }
        vs->vols = n;
        vs->vols[vs->n_vols++] = v;
        return 0;
}

static void remove_volume(struct volumes *vs, const char *name) {
        for (size_t i = 0; i < vs->n_vols; i++)
                if (streq(vs->vols[i]->name, name)) {
                        volume_free(vs->vols[i]);
                        memmove(vs->vols + i, vs->vols + i + 1, (vs->n_vols - i - 1) * sizeof(*vs->vols));
                        vs->n_vols--;
                        return;
                }
}

static int add_open(struct intent *it, void *userdata) {
        struct volumes *vs = userdata;
        struct intent **n = realloc(vs->open, (vs->n_open + 1) * sizeof(*n));

        if (!n) {
                intent_free(it);
                return -ENOMEM;
        }
        vs->open = n;
        vs->open[vs->n_open++] = it;
        return 0;
}

static void remove_open(struct volumes *vs, struct intent *it) {
        for (size_t i = 0; i < vs->n_open; i++)
                if (vs->open[i] == it) {
                        memmove(vs->open + i, vs->open + i + 1, (vs->n_open - i - 1) * sizeof(*vs->open));
                        vs->n_open--;
                        return;
                }
}

static struct volume *volume_copy(const struct volume *v) {
        struct volume *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        *c = *v;
        c->name = strdup(v->name);
        c->state = strdup(v->state);
        c->backing_file = strdup(v->backing_file);
        c->fs_type = v->fs_type ? strdup(v->fs_type) : NULL;
        c->fs_label = v->fs_label ? strdup(v->fs_label) : NULL;
        if (!c->name || !c->state || !c->backing_file || (v->fs_type && !c->fs_type) || (v->fs_label && !c->fs_label)) {
                volume_free(c);
                return NULL;
        }
        return c;
}

static int set_str(char **field, const char *value) {
        char *n = value ? strdup(value) : NULL;

        if (value && !n)
                return -ENOMEM;
        free(*field);
        *field = n;
        return 0;
}

static const char *param_str(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v ? json_object_get_string(v) : NULL;
}

static int64_t param_int(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v ? json_object_get_int64(v) : 0;
}

static bool param_bool(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v && json_object_get_boolean(v);
}

static void set_error(struct action *a, bool permanent, const char *fmt, ...) _printf_(3, 4);
static void set_error(struct action *a, bool permanent, const char *fmt, ...) {
        va_list ap;

        free(a->error);
        va_start(ap, fmt);
        if (vasprintf(&a->error, fmt, ap) < 0)
                a->error = NULL;
        va_end(ap);
        a->permanent = permanent;
}

static void set_result(struct action *a, const char *key, json_object *value) {
        if (!a->it->result)
                a->it->result = json_object_new_object();
        if (a->it->result)
                json_object_object_add(a->it->result, key, value);
        else
                json_object_put(value);
}

/* ---- tools ---- */

static char *find_program(const char *name) {
        static const char *const dirs[] = { "/usr/sbin", "/usr/bin", "/sbin", "/bin" };

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                char *p;
                if (asprintf(&p, "%s/%s", dirs[i], name) < 0)
                        return NULL;
                if (access(p, X_OK) == 0)
                        return p;
                free(p);
        }
        return NULL;
}

static const struct fs_tool {
        const char *type, *mkfs, *force, *quiet, *label_opt;
} fs_tools[] = {
        { "ext2", "mkfs.ext2", "-F", "-q", "-L" },   { "ext3", "mkfs.ext3", "-F", "-q", "-L" },
        { "ext4", "mkfs.ext4", "-F", "-q", "-L" },   { "xfs", "mkfs.xfs", "-f", "-q", "-L" },
        { "btrfs", "mkfs.btrfs", "-f", "-q", "-L" }, { "vfat", "mkfs.vfat", NULL, NULL, "-n" },
        { "exfat", "mkfs.exfat", NULL, NULL, "-L" }, { "swap", "mkswap", "-f", NULL, "-L" },
};

static const struct fs_tool *fs_tool(const char *type) {
        for (size_t i = 0; type && i < ELEMENTSOF(fs_tools); i++)
                if (streq(fs_tools[i].type, type))
                        return &fs_tools[i];
        return NULL;
}

/* The one loop device that holds the volume's file: 1 with kname set, 0 when none. */
static int attached_kname(const struct volume *v, char kname[static 32]) {
        char found[LOOPDEV_MAX][32];
        int n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);

        if (n > 0)
                snprintf(kname, 32, "%s", found[0]);
        return n;
}

/* ---- steps ---- */

static struct volume *target_volume(struct volumes *vs, struct action *a) {
        struct volume *v = find_volume(vs, a->it->target);
        if (!v)
                set_error(a, true, "the volume's record is gone");
        return v;
}

static int fsync_dir(const char *dir) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

/* create: a sparse file of the size; resize: grown to the size (never shrunk). */
static int step_file(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        bool create = streq(a->it->op, "volume.create");
        uint64_t size = (uint64_t) param_int(a->it, "size_bytes");
        struct stat st;
        int fd;

        if (!v)
                return -ENOENT;
        fd = open(v->backing_file, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
        if (fd < 0) {
                int e = errno;
                set_error(a, e == ENOENT || e == ELOOP, "cannot open %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                set_error(a, true, "%s is not a regular file", v->backing_file);
                return -EINVAL;
        }
        if ((uint64_t) st.st_size < size && ftruncate(fd, (off_t) size) < 0) {
                int e = errno;
                close(fd);
                set_error(a, e == EFBIG || e == EINVAL, "cannot grow %s to %" PRIu64 " bytes: %s", v->backing_file,
                          size, strerror(e));
                return -e;
        }
        if (fsync(fd) < 0) {
                int e = errno;
                close(fd);
                set_error(a, false, "cannot sync %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        close(fd);
        (void) fsync_dir(vs->dir);
        return 0;
}

static int step_attach(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        char kname[32];
        int n, r;

        if (!v)
                return -ENOENT;
        n = attached_kname(v, kname);
        if (n < 0) {
                set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        if (n > 0) {
                log_debug("volume %s: already attached as %s", v->name, kname);
                return 0;
        }
        r = loopdev_attach(v->backing_file, kname);
        if (r < 0) {
                set_error(a, false, "cannot attach %s: %s", v->backing_file, strerror(-r));
                return r;
        }
        log_info("volume %s: attached %s as /dev/%s", v->name, v->backing_file, kname);
        return 0;
}

/* Detaches every loop device of the file; refuses a busy one unless forced. */
static int step_detach(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        char found[LOOPDEV_MAX][32];
        bool force = param_bool(a->it, "force");
        int n;

        if (!v)
                return -ENOENT;
        n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);
        if (n == -ENOENT)
                return 0; /* no file, no loop device of it */
        if (n < 0) {
                set_error(a, false, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *why = NULL;
                int r;

                if (loopdev_in_use(found[i], &why, NULL) && !force) {
                        set_error(a, true, "/dev/%s is in use (%s); use --force", found[i], why ? why : "busy");
                        return -EBUSY;
                }
                r = loopdev_detach(found[i]);
                if (r < 0 && r != -ENXIO) {
                        set_error(a, false, "cannot detach /dev/%s: %s", found[i], strerror(-r));
                        return r;
                }
                log_info("volume %s: detached /dev/%s%s", v->name, found[i], why ? " (forced)" : "");
        }
        return 0;
}

static int step_unlink(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);

        if (!v)
                return -ENOENT;
        if (param_bool(a->it, "keep_file"))
                return 0;
        if (unlink(v->backing_file) < 0 && errno != ENOENT) {
                int e = errno;
                set_error(a, false, "cannot remove %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        (void) fsync_dir(vs->dir);
        return 0;
}

static int step_capacity(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        char found[LOOPDEV_MAX][32];
        int n;

        if (!v)
                return -ENOENT;
        n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);
        if (n < 0) {
                set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                int r = loopdev_set_capacity(found[i]);
                if (r < 0) {
                        set_error(a, false, "cannot tell /dev/%s its new size: %s", found[i], strerror(-r));
                        return r;
                }
        }
        return 0;
}

static void step_child_done(struct child *c, int status, bool timed_out, const char *output, void *userdata);
static void crash_step(const struct action *a, unsigned step, const char *when);

static int run_tool(struct volumes *vs, struct action *a, char **argv) {
        const char *path = argv[0];
        int r;

        /* Tools name themselves by argv[0] in their messages: the short name. */
        snprintf(a->prog, sizeof(a->prog), "%s", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
        argv[0] = a->prog;
        r = child_spawn(vs->d->loop, path, argv, child_env, TOOL_TIMEOUT_USEC, step_child_done, vs, &a->child);
        if (r < 0) {
                set_error(a, false, "cannot run %s: %s", path, strerror(-r));
                return r;
        }
        log_info("volume %s: running %s", a->it->target, path);
        {
                char cp[256];
                snprintf(cp, sizeof(cp), "%s.%s.running", a->op->name, a->op->steps[a->it->step].name);
                crashpoint(cp);
        }
        return 1;
}

static int step_mkfs(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        const struct fs_tool *t;
        _cleanup_free_ char *prog = NULL;
        char kname[32], devnode[48];
        char *argv[8];
        int n, k = 0;

        if (!v)
                return -ENOENT;
        if (!v->fs_type)
                return 0;
        t = fs_tool(v->fs_type);
        if (!t) {
                set_error(a, true, "no known tool makes %s", v->fs_type);
                return -EOPNOTSUPP;
        }
        prog = find_program(t->mkfs);
        if (!prog) {
                set_error(a, true, "%s is not installed", t->mkfs);
                return -ENOENT;
        }
        /* After a reboot the attach step's effect is gone: it is redone here. */
        n = attached_kname(v, kname);
        if (n == 0) {
                n = step_attach(vs, a);
                if (n < 0)
                        return n;
                n = attached_kname(v, kname);
        }
        if (n <= 0) {
                set_error(a, false, "%s is not attached", v->backing_file);
                return -ENXIO;
        }
        snprintf(devnode, sizeof(devnode), "/dev/%s", kname);
        /* The device is ours and new (the intent is a create that has not ended): a
         * signature left by an interrupted earlier run is overwritten. */
        argv[k++] = prog;
        if (t->force)
                argv[k++] = (char *) t->force;
        if (t->quiet)
                argv[k++] = (char *) t->quiet;
        if (v->fs_label) {
                argv[k++] = (char *) t->label_opt;
                argv[k++] = v->fs_label;
        }
        argv[k++] = devnode;
        argv[k] = NULL;
        return run_tool(vs, a, argv);
}

/* Grows the filesystem to the device: ext* on or off line (after a forced check),
 * xfs and btrfs only while mounted (their tools need the mount point). */
static int step_growfs(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        _cleanup_free_ char *why = NULL, *mp = NULL, *prog = NULL;
        char kname[32], devnode[48];
        char *argv[8];
        bool mounted, ext;
        int n;

        if (!v)
                return -ENOENT;
        if (!v->fs_type || streq(v->fs_type, "swap") || a->stage == 2)
                return 0;
        n = attached_kname(v, kname);
        if (n < 0) {
                set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        if (n == 0) {
                n = step_attach(vs, a); /* its step's effect is gone (a reboot) */
                if (n < 0)
                        return n;
                if (attached_kname(v, kname) <= 0) {
                        set_error(a, false, "%s is not attached", v->backing_file);
                        return -ENXIO;
                }
        }
        snprintf(devnode, sizeof(devnode), "/dev/%s", kname);
        mounted = loopdev_in_use(kname, &why, &mp) && mp;
        if (!mounted && why && a->stage == 0) {
                /* Not mounted but open for writing or held: no offline check under it. */
                set_error(a, true, "/dev/%s is in use (%s); the filesystem was not grown", kname, why);
                return -EBUSY;
        }
        ext = startswith(v->fs_type, "ext") != NULL;
        if (ext) {
                if (!mounted && a->stage == 0) {
                        /* resize2fs wants a freshly checked filesystem when offline. */
                        prog = find_program("e2fsck");
                        if (!prog) {
                                set_error(a, true, "e2fsck is not installed");
                                return -ENOENT;
                        }
                        argv[0] = prog, argv[1] = "-f", argv[2] = "-p", argv[3] = devnode, argv[4] = NULL;
                        return run_tool(vs, a, argv);
                }
                prog = find_program("resize2fs");
                if (!prog) {
                        set_error(a, true, "resize2fs is not installed");
                        return -ENOENT;
                }
                a->stage = 1;
                argv[0] = prog, argv[1] = devnode, argv[2] = NULL;
                return run_tool(vs, a, argv);
        }
        if ((streq(v->fs_type, "xfs") || streq(v->fs_type, "btrfs")) && mounted) {
                prog = find_program(streq(v->fs_type, "xfs") ? "xfs_growfs" : "btrfs");
                if (!prog) {
                        set_error(a, true, "the tool that grows %s is not installed", v->fs_type);
                        return -ENOENT;
                }
                a->stage = 1;
                if (streq(v->fs_type, "xfs"))
                        argv[0] = prog, argv[1] = mp, argv[2] = NULL;
                else
                        argv[0] = prog, argv[1] = "filesystem", argv[2] = "resize", argv[3] = "max", argv[4] = mp,
                        argv[5] = NULL;
                return run_tool(vs, a, argv);
        }
        set_result(a, "fs_grown", json_object_new_boolean(false));
        set_result(a, "fs_reason",
                   json_object_new_string(streq(v->fs_type, "xfs") || streq(v->fs_type, "btrfs")
                                                  ? "this filesystem grows only while mounted"
                                                  : "no tool grows this filesystem"));
        return 0;
}

/* resize: a filesystem grows only on a device; a detached volume is attached for it. */
static int step_attach_to_grow(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);

        if (!v)
                return -ENOENT;
        if (!v->fs_type || streq(v->fs_type, "swap"))
                return 0;
        return step_attach(vs, a);
}

/* resize: a volume that was detached is detached again. */
static int step_settle(struct volumes *vs, struct action *a) {
        const char *prev = param_str(a->it, "prev_state");

        if (!prev || !streq(prev, "detached"))
                return 0;
        return step_detach(vs, a);
}


/* ---- actions on devices: an expectation's on_appear ---- */

int volumes_check_action(const char *spec, char **ret_why) {
        const char *rest;
        struct stat st;

        *ret_why = NULL;
        if ((rest = startswith(spec, "format-if-blank:"))) {
                if (!fs_tool(rest)) {
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
                        (void) asprintf(ret_why, "run: %s: %s", rest, strerror(errno));
                else if (!S_ISREG(st.st_mode))
                        (void) asprintf(ret_why, "run: %s is not a regular file", rest);
                else if (st.st_uid != 0 || (st.st_mode & 022))
                        (void) asprintf(ret_why, "run: %s must be owned by root and writable by no one else", rest);
                else if (!(st.st_mode & 0100))
                        (void) asprintf(ret_why, "run: %s is not executable", rest);
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
        struct device_record *rec = ledger_find_by_id(&vs->d->ledger, param_int(a->it, "device_id"));

        if (!rec || rec->state != DEVICE_PRESENT || !rec->facts.devnode) {
                set_error(a, true, "device %" PRId64 " is not present any more", param_int(a->it, "device_id"));
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

static int step_blank(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        struct blank_arg b = {};
        const char *found;
        int r;

        if (!rec)
                return -ENODEV;
        if (rec->unresponsive_since) {
                set_error(a, false, "%s does not answer reads", rec->facts.devnode);
                return -EIO;
        }
        /* "Blank" is more than libblkid finding nothing: data it cannot recognise is
         * still data. This is the first half; the child reads the rest. */
        found = rec->facts.fs_type ?: rec->facts.pt_type ?: rec->facts.fs_usage;
        if (found) {
                set_error(a, true, "not blank: %s holds %s", rec->facts.devnode, found);
                return -EEXIST;
        }
        snprintf(b.devnode, sizeof(b.devnode), "%s", rec->facts.devnode);
        b.size = rec->facts.size_bytes > 0 ? (uint64_t) rec->facts.size_bytes : 0;
        snprintf(a->prog, sizeof(a->prog), "blank check");
        r = child_fork(vs->d->loop, blank_check, &b, TOOL_TIMEOUT_USEC, step_child_done, vs, &a->child);
        if (r < 0) {
                set_error(a, false, "cannot start the blank check: %s", strerror(-r));
                return r;
        }
        crash_step(a, (unsigned) a->it->step, "running");
        return 1;
}

static int step_format(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        const struct fs_tool *t = fs_tool(param_str(a->it, "fs_type"));
        _cleanup_free_ char *prog = NULL;
        char devnode[64], *argv[8];
        int k = 0;

        if (!rec)
                return -ENODEV;
        if (!t) {
                set_error(a, true, "no known tool makes %s", param_str(a->it, "fs_type") ?: "?");
                return -EOPNOTSUPP;
        }
        prog = find_program(t->mkfs);
        if (!prog) {
                set_error(a, true, "%s is not installed", t->mkfs);
                return -ENOENT;
        }
        snprintf(devnode, sizeof(devnode), "%s", rec->facts.devnode);
        /* Without the force flags: should a signature have appeared since the check,
         * the tool refuses instead of overwriting it. */
        argv[k++] = prog;
        if (t->quiet)
                argv[k++] = (char *) t->quiet;
        if (param_str(a->it, "fs_label")) {
                argv[k++] = (char *) t->label_opt;
                argv[k++] = (char *) param_str(a->it, "fs_label");
        }
        argv[k++] = devnode;
        argv[k] = NULL;
        return run_tool(vs, a, argv);
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
        r |= asprintf(&env[k++], "BLKLEDGER_EXPECTATION=%s", param_str(a->it, "expectation") ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_DEVICE_ID=%" PRId64, rec->id) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_DEVNODE=%s", f->devnode ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_KNAME=%s", f->kname ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_TYPE=%s", f->fs_type ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_UUID=%s", f->fs_uuid ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_FS_LABEL=%s", f->fs_label ?: "") < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_SIZE_BYTES=%" PRId64, f->size_bytes > 0 ? f->size_bytes : 0) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_EVENT_SEQ=%" PRId64, param_int(a->it, "event_seq")) < 0;
        r |= asprintf(&env[k++], "BLKLEDGER_INTENT_ID=%" PRId64, a->it->id) < 0;
        if (r) {
                strv_free(env);
                return NULL;
        }
        (void) vs;
        return env;
}

static int step_run(struct volumes *vs, struct action *a) {
        struct device_record *rec = action_device(vs, a);
        const char *program = param_str(a->it, "program");
        _cleanup_free_ char *why = NULL, *spec = NULL;
        char **env, *argv[2];
        int r;

        if (!rec)
                return -ENODEV;
        /* Checked again now: the file may have changed since the expectation was set. */
        if (!program || asprintf(&spec, "run:%s", program) < 0 || volumes_check_action(spec, &why) < 0) {
                set_error(a, true, "%s", why ? why : "no program");
                return -EPERM;
        }
        env = run_env(vs, a, rec);
        if (!env) {
                set_error(a, false, "out of memory");
                return -ENOMEM;
        }
        snprintf(a->prog, sizeof(a->prog), "%s", strrchr(program, '/') + 1);
        argv[0] = a->prog;
        argv[1] = NULL;
        r = child_spawn(vs->d->loop, program, argv, env, vs->d->opts.hook_timeout, step_child_done, vs, &a->child);
        strv_free(env);
        if (r < 0) {
                set_error(a, true, "cannot run %s: %s", program, strerror(-r));
                return r;
        }
        log_info("%s: running %s for device %" PRId64, a->it->target, program, rec->id);
        crash_step(a, (unsigned) a->it->step, "running");
        return 1;
}

static void finish_nothing(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a, (void) v;
}

/* ---- the actions ---- */

static void finish_create(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) set_str(&v->state, "attached");
}

static void finish_resize(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs;
        v->size_bytes = (uint64_t) param_int(a->it, "size_bytes");
        (void) set_str(&v->state, param_str(a->it, "prev_state") ?: "detached");
        if (v->fs_type && !a->it->result)
                set_result(a, "fs_grown", json_object_new_boolean(!streq(v->fs_type, "swap")));
}

/* The file and the device may have grown, the filesystem not: the volume keeps its
 * recorded size, so the same resize again carries on from where this one stopped. */
static void partial_resize(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs;
        (void) set_str(&v->state, param_str(a->it, "prev_state") ?: "detached");
}

static void finish_attach(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) set_str(&v->state, "attached");
}

static void finish_detach(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) set_str(&v->state, "detached");
}

/* A create that cannot succeed leaves nothing: no loop device, no file, no row. */
static int undo_create(struct volumes *vs, struct action *a) {
        struct volume *v = find_volume(vs, a->it->target);
        char found[LOOPDEV_MAX][32];
        int n;

        if (!v)
                return 0;
        n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);
        for (int i = 0; i < n; i++) {
                int r = loopdev_detach(found[i]);
                if (r < 0 && r != -ENXIO)
                        return r;
        }
        if (unlink(v->backing_file) < 0 && errno != ENOENT)
                return -errno;
        (void) fsync_dir(vs->dir);
        return 0;
}

/* adopt: the file is still there and still ours to take; forget: nothing to do but
 * the row. Neither touches the file or a loop device. */
static int step_check(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        struct stat st;

        if (!v)
                return -ENOENT;
        if (streq(a->it->op, "volume.forget"))
                return 0;
        if (lstat(v->backing_file, &st) < 0 || !S_ISREG(st.st_mode)) {
                set_error(a, true, "%s is no longer a regular file", v->backing_file);
                return -ENOENT;
        }
        return 0;
}

static void finish_adopt(struct volumes *vs, struct action *a, struct volume *v) {
        char kname[32];
        struct stat st;

        (void) vs, (void) a;
        if (stat(v->backing_file, &st) == 0)
                v->size_bytes = (uint64_t) st.st_size;
        (void) set_str(&v->state, attached_kname(v, kname) > 0 ? "attached" : "detached");
}

static const struct step_def create_steps[] = {
        { "file", step_file }, { "attach", step_attach }, { "mkfs", step_mkfs, true }
};
static const struct step_def resize_steps[] = {
        { "file", step_file },          { "attach", step_attach_to_grow }, { "capacity", step_capacity },
        { "growfs", step_growfs, true }, { "settle", step_settle },
};
static const struct step_def attach_steps[] = { { "attach", step_attach } };
static const struct step_def detach_steps[] = { { "detach", step_detach } };
static const struct step_def delete_steps[] = { { "detach", step_detach }, { "unlink", step_unlink } };
static const struct step_def adopt_steps[] = { { "check", step_check } };
static const struct step_def format_steps[] = { { "check", step_blank, true }, { "mkfs", step_format, true } };
static const struct step_def run_steps[] = { { "run", step_run, true } };
static const struct step_def forget_steps[] = { { "check", step_check } };

static const struct op_def ops[] = {
        { "volume.create", create_steps, ELEMENTSOF(create_steps), finish_create, undo_create },
        { "volume.resize", resize_steps, ELEMENTSOF(resize_steps), finish_resize, NULL, partial_resize },
        { "volume.attach", attach_steps, ELEMENTSOF(attach_steps), finish_attach, NULL },
        { "volume.detach", detach_steps, ELEMENTSOF(detach_steps), finish_detach, NULL },
        { "volume.delete", delete_steps, ELEMENTSOF(delete_steps), NULL, NULL },
        /* A failed adoption drops the row it made; the file stays, as it was. */
        { "volume.adopt", adopt_steps, ELEMENTSOF(adopt_steps), finish_adopt, NULL, NULL, false, true },
        { "volume.forget", forget_steps, ELEMENTSOF(forget_steps), NULL, NULL },
        /* Expectations' on_appear actions; the target is "device/ID". */
        { "device.format-if-blank", format_steps, ELEMENTSOF(format_steps), finish_nothing, NULL },
        { "device.run", run_steps, ELEMENTSOF(run_steps), finish_nothing, NULL, NULL, true },
};

static const struct op_def *find_op(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (streq(ops[i].name, name))
                        return &ops[i];
        return NULL;
}

void volumes_crash_points(void (*fn)(const char *name)) {
        char buf[256];

        fn("recovery.begin");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                snprintf(buf, sizeof(buf), "%s.intent", ops[i].name);
                fn(buf);
                for (unsigned s = 0; s < ops[i].n_steps; s++) {
                        if (ops[i].steps[s].runs_child) {
                                snprintf(buf, sizeof(buf), "%s.%s.running", ops[i].name, ops[i].steps[s].name);
                                fn(buf);
                        }
                        snprintf(buf, sizeof(buf), "%s.%s.done", ops[i].name, ops[i].steps[s].name);
                        fn(buf);
                        snprintf(buf, sizeof(buf), "%s.%s.recorded", ops[i].name, ops[i].steps[s].name);
                        fn(buf);
                }
                if (ops[i].undo) {
                        snprintf(buf, sizeof(buf), "%s.undo.recorded", ops[i].name);
                        fn(buf);
                        snprintf(buf, sizeof(buf), "%s.undo.done", ops[i].name);
                        fn(buf);
                }
        }
}

/* ---- JSON ---- */

static json_object *volume_to_json(struct volumes *vs, const struct volume *v) {
        json_object *o = json_object_new_object();
        struct intent *open = find_open_intent(vs, v->name);
        char ts[RFC3339_MAX], kname[32] = "", devnode[48];
        int n = attached_kname(v, kname);

        if (!o)
                return NULL;
        snprintf(devnode, sizeof(devnode), "/dev/%s", kname);
        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(o, "state", json_object_new_string(v->state));
        json_object_object_add(o, "size_bytes", json_object_new_int64((int64_t) v->size_bytes));
        json_object_object_add(o, "backing_file", json_object_new_string(v->backing_file));
        json_object_object_add(o, "devnode", n > 0 ? json_object_new_string(devnode) : NULL);
        json_object_object_add(o, "fs_type", v->fs_type ? json_object_new_string(v->fs_type) : NULL);
        json_object_object_add(o, "fs_label", v->fs_label ? json_object_new_string(v->fs_label) : NULL);
        json_object_object_add(o, "intent_id", open ? json_object_new_int64(open->id) : NULL);
        json_object_object_add(o, "created", json_object_new_string(format_rfc3339(v->created, ts)));
        json_object_object_add(o, "updated", json_object_new_string(format_rfc3339(v->updated, ts)));
        return o;
}

/* ---- the runner ---- */

static void reply_waiters(struct volumes *vs, const struct intent *it) {
        for (struct waiter **w = &vs->waiters; *w;) {
                struct waiter *x = *w;
                struct volume *v;
                json_object *o;

                if (x->intent_id != it->id) {
                        w = &x->next;
                        continue;
                }
                *w = x->next;
                o = json_object_new_object();
                if (it->state == INTENT_SUCCEEDED) {
                        v = find_volume(vs, it->target);
                        if (o && v && !x->delete_reply)
                                json_object_object_add(o, "volume", volume_to_json(vs, v));
                        server_call_reply(x->call, o, false);
                } else {
                        if (o) {
                                json_object_object_add(o, "intent_id", json_object_new_int64(it->id));
                                json_object_object_add(o, "op", json_object_new_string(it->op));
                                json_object_object_add(o, "target", json_object_new_string(it->target));
                                json_object_object_add(o, "state",
                                                       json_object_new_string(intent_state_to_string(it->state)));
                                json_object_object_add(o, "error", json_object_new_string(it->last_error ?: "?"));
                        }
                        server_call_error(x->call, "io.blkledger.ActionFailed", o);
                }
                json_object_put(o);
                free(x);
        }
}

static void notify(struct volumes *vs) {
        if (vs->d->server)
                server_notify_events(vs->d->server);
}

static int append_intent_event(struct volumes *vs, const struct intent *it) {
        char kind[32];
        json_object *after = intent_to_json(it);
        int r;

        if (!after)
                return -ENOMEM;
        snprintf(kind, sizeof(kind), "intent_%s", intent_state_to_string(it->state));
        r = journal_append_event(vs->d->journal, it->updated, 0, kind, NULL, after, NULL);
        json_object_put(after);
        return r;
}

/* Writes the intent (and the volume row, or its removal) in one transaction. */
static int commit_intent(struct volumes *vs, struct intent *it, const struct volume *v, const char *delete_name,
                         bool event) {
        struct journal *j = vs->d->journal;
        int r = journal_begin(j);

        if (r == 0 && v)
                r = vstore_put_volume(j, v);
        if (r == 0 && delete_name)
                r = vstore_delete_volume(j, delete_name);
        if (r == 0)
                r = it->id ? vstore_update_intent(j, it) : vstore_insert_intent(j, it);
        if (r == 0 && event)
                r = append_intent_event(vs, it);
        if (r == 0)
                r = journal_commit(j);
        else
                journal_rollback(j);
        if (r == 0 && event)
                notify(vs);
        return r;
}

/* Writes the intent with row (the volume as it is while the intent runs; taken over,
 * also on failure) and queues it. */
static int start_intent(struct volumes *vs, const char *op, const char *target, json_object *params,
                        const char *key, struct volume *row, struct intent **ret);
static void update_drift(struct volumes *vs);

static void action_free(struct action *a) {
        if (!a)
                return;
        child_abandon(a->child);
        free(a->error);
        free(a);
}

static void crash_step(const struct action *a, unsigned step, const char *when) {
        char cp[256];

        snprintf(cp, sizeof(cp), "%s.%s.%s", a->op->name, a->op->steps[step].name, when);
        crashpoint(cp);
}

/* The intent has ended (succeeded, failed, rolled back): out of the open list. */
static void end_action(struct volumes *vs, struct action *a) {
        struct intent *it = a->it;

        log_info("intent %" PRId64 " (%s %s) %s%s%s", it->id, it->op, it->target, intent_state_to_string(it->state),
                 it->last_error ? ": " : "", it->last_error ?: "");
        vs->running = NULL;
        remove_open(vs, it);
        reply_waiters(vs, it);
        action_free(a);
        intent_free(it);
        update_drift(vs);
        volumes_name_devices(vs);
        ev_defer_queue(vs->d->loop, &vs->kick);
}

/* What an action wrote to a device (mkfs, a grown filesystem) is looked at again now:
 * without udevd there is no change event for a close after write. */
static void observe_again(struct volumes *vs, const struct action *a) {
        struct volume *v = find_volume(vs, a->it->target);
        struct udev_device *dev;
        char kname[32] = "";

        if (v)
                (void) attached_kname(v, kname);
        else if (param_str(a->it, "kname"))
                snprintf(kname, sizeof(kname), "%s", param_str(a->it, "kname"));
        if (!kname[0] || !vs->d->udev)
                return;
        dev = udev_device_new_from_subsystem_sysname(vs->d->udev, "block", kname);
        if (dev) {
                reconcile_queue_device(vs->d, dev);
                udev_device_unref(dev);
        }
}

static void complete(struct volumes *vs, struct action *a) {
        struct intent *it = a->it;
        struct volume *v = find_volume(vs, it->target), *nv = NULL;
        int r;

        it->state = INTENT_SUCCEEDED;
        it->step = (int) a->op->n_steps;
        it->updated = now_realtime_usec();
        free(it->last_error);
        it->last_error = NULL;
        if (v && a->op->finish) {
                nv = volume_copy(v);
                if (!nv) {
                        r = -ENOMEM;
                        goto fail;
                }
                a->op->finish(vs, a, nv);
                nv->updated = it->updated;
        }
        r = commit_intent(vs, it, nv, a->op->finish ? NULL : it->target, true);
        if (r < 0)
                goto fail;
        if (nv) {
                remove_volume(vs, nv->name);
                (void) add_volume(nv, vs);
        } else
                remove_volume(vs, it->target);
        crash_step(a, a->op->n_steps - 1, "recorded");
        observe_again(vs, a);
        end_action(vs, a);
        return;
fail:
        volume_free(nv);
        log_error_errno(r, "intent %" PRId64 ": cannot record its end; retrying", it->id);
        it->state = INTENT_RUNNING;
        it->step = (int) a->op->n_steps - 1;
        vs->running = NULL;
        it->next_attempt = now_realtime_usec() + USEC_PER_SEC;
        action_free(a);
}

static int64_t backoff(int attempts) {
        int64_t d = USEC_PER_SEC << MIN(attempts > 0 ? attempts - 1 : 0, 6);
        return MIN(d, BACKOFF_MAX_USEC);
}

static bool rolling_back(const struct intent *it) {
        json_object *v;
        return it->result && json_object_object_get_ex(it->result, "rolling_back", &v) && json_object_get_boolean(v);
}

/* An intent that cannot succeed and has an undo: the decision is committed first
 * ("rolling_back" in its result), so a crash during the undo resumes the undo, never the
 * forward steps; then the undo; then the end, rolled_back, with the row gone. */
static void roll_back(struct volumes *vs, struct action *a) {
        struct intent *it = a->it;
        char cp[256];
        int r;

        if (!rolling_back(it)) {
                set_result(a, "rolling_back", json_object_new_boolean(true));
                r = commit_intent(vs, it, NULL, NULL, false);
                if (r < 0) {
                        log_error_errno(r, "intent %" PRId64 ": cannot record the roll back; retrying", it->id);
                        it->state = INTENT_PENDING;
                        it->next_attempt = now_realtime_usec() + backoff(it->attempts);
                        vs->running = NULL;
                        action_free(a);
                        return;
                }
        }
        snprintf(cp, sizeof(cp), "%s.undo.recorded", a->op->name);
        crashpoint(cp);
        r = a->op->undo(vs, a);
        if (r < 0) {
                log_error_errno(r, "intent %" PRId64 ": cannot undo it; retrying", it->id);
                it->state = INTENT_PENDING;
                it->next_attempt = now_realtime_usec() + backoff(it->attempts);
                (void) commit_intent(vs, it, NULL, NULL, false);
                vs->running = NULL;
                action_free(a);
                return;
        }
        snprintf(cp, sizeof(cp), "%s.undo.done", a->op->name);
        crashpoint(cp);
        it->state = INTENT_ROLLED_BACK;
        it->updated = now_realtime_usec();
        r = commit_intent(vs, it, NULL, it->target, true);
        if (r < 0) {
                log_error_errno(r, "intent %" PRId64 ": cannot record its end; retrying", it->id);
                it->state = INTENT_PENDING;
                vs->running = NULL;
                action_free(a);
                return;
        }
        remove_volume(vs, it->target);
        end_action(vs, a);
}

/* The current step failed. */
static void fail(struct volumes *vs, struct action *a, int err) {
        struct intent *it = a->it;
        struct volume *v = find_volume(vs, it->target), *nv = NULL;
        bool final = a->permanent || it->attempts >= MAX_ATTEMPTS;
        int r;

        free(it->last_error);
        it->last_error = strdup(a->error ?: strerror(-err));
        it->updated = now_realtime_usec();
        log_warning("intent %" PRId64 " (%s %s), step %s: %s", it->id, it->op, it->target,
                    a->op->steps[MIN((unsigned) it->step, a->op->n_steps - 1)].name, it->last_error ?: "?");
        if (!final) {
                it->state = INTENT_PENDING;
                it->next_attempt = it->updated + backoff(it->attempts);
                r = commit_intent(vs, it, NULL, NULL, false);
                if (r < 0)
                        log_error_errno(r, "intent %" PRId64 ": cannot record the failure", it->id);
                /* Waiting callers wait for the end: a retry may still succeed. */
                vs->running = NULL;
                action_free(a);
                return;
        }
        if (a->op->undo) {
                roll_back(vs, a);
                return;
        } else {
                /* Nothing done yet: as before the intent. Half done: the volume says so.
                 * An action on a device (a hook that ran, a refused format) failed. */
                it->state = it->step == 0 && !startswith(it->target, "device/") ? INTENT_ROLLED_BACK : INTENT_FAILED;
                if (v && it->step == 0 && a->op->new_row) {
                        r = commit_intent(vs, it, NULL, it->target, true);
                        if (r == 0)
                                remove_volume(vs, it->target);
                        goto ended;
                }
                if (v) {
                        nv = volume_copy(v);
                        if (nv) {
                                if (it->step == 0)
                                        (void) set_str(&nv->state, param_str(it, "prev_state") ?: v->state);
                                else if (a->op->partial)
                                        a->op->partial(vs, a, nv);
                                else
                                        (void) set_str(&nv->state, "failed");
                                nv->updated = it->updated;
                        }
                }
                r = commit_intent(vs, it, nv, NULL, true);
                if (r == 0 && nv) {
                        remove_volume(vs, nv->name);
                        (void) add_volume(nv, vs);
                        nv = NULL;
                }
                volume_free(nv);
        }
ended:
        if (r < 0) {
                log_error_errno(r, "intent %" PRId64 ": cannot record its end; retrying", it->id);
                it->state = INTENT_PENDING;
                vs->running = NULL;
                action_free(a);
                return;
        }
        end_action(vs, a);
}

static void advance(struct volumes *vs, struct action *a);

/* The step's effect exists: crash point, record, next. */
static void step_done(struct volumes *vs, struct action *a) {
        int r;

        crash_step(a, (unsigned) a->it->step, "done");
        if ((unsigned) a->it->step + 1 >= a->op->n_steps) {
                complete(vs, a);
                return;
        }
        a->it->step++;
        a->stage = 0;
        a->it->updated = now_realtime_usec();
        r = commit_intent(vs, a->it, NULL, NULL, false);
        if (r < 0) {
                a->it->step--;
                set_error(a, false, "cannot record the step: %s", strerror(-r));
                fail(vs, a, r);
                return;
        }
        crash_step(a, (unsigned) a->it->step - 1, "recorded");
        advance(vs, a);
}

static void advance(struct volumes *vs, struct action *a) {
        int r;

        r = a->op->steps[a->it->step].fn(vs, a);
        if (r == 1)
                return; /* a child runs */
        if (r < 0) {
                fail(vs, a, r);
                return;
        }
        step_done(vs, a);
}

static void step_child_done(struct child *c, int status, bool timed_out, const char *output, void *userdata) {
        struct volumes *vs = userdata;
        struct action *a = vs->running;
        const char *last;
        bool ok;

        if (!a || a->child != c)
                return;
        a->child = NULL;
        if (a->op->no_retry) {
                /* A hook's outcome is part of its record. */
                set_result(a, "timed_out", json_object_new_boolean(timed_out));
                set_result(a, "exit_status", !timed_out && WIFEXITED(status) ? json_object_new_int(WEXITSTATUS(status))
                                                                            : NULL);
        }
        /* e2fsck: 1 means it corrected something, which is fine before a resize. */
        ok = !timed_out && WIFEXITED(status) &&
             (WEXITSTATUS(status) == 0 || (a->stage == 0 && streq(a->op->steps[a->it->step].name, "growfs") &&
                                           WEXITSTATUS(status) == 1));
        if (!ok) {
                _cleanup_free_ char *what = child_describe(status, timed_out, child_timeout(c));
                size_t pl = strlen(a->prog), len = 0;
                const char *why = NULL;

                /* Why: the tool's own "PROG: reason" line, else its first line that is not
                 * a version banner ("PROG 1.47.0 ..."), else its last line. */
                for (int pass = 0; pass < 3 && !why; pass++)
                        for (const char *line = output; *line;) {
                                const char *end = strchrnul(line, '\n');
                                size_t ll = (size_t) (end - line);
                                bool prefixed = ll > pl + 2 && strncmp(line, a->prog, pl) == 0;
                                if (pass == 0 && prefixed && line[pl] == ':' && line[pl + 1] == ' ') {
                                        why = line + pl + 2, len = ll - pl - 2;
                                        break;
                                }
                                if (pass == 1 && ll > 0 && !(prefixed && line[pl] == ' ')) {
                                        why = line, len = ll;
                                        break;
                                }
                                if (pass == 2 && ll > 0)
                                        why = line, len = ll;
                                line = *end ? end + 1 : end;
                        }
                last = why;
                /* A tool that says no will say it again; one killed (OOM, timeout) may not. */
                set_error(a, a->op->no_retry || (!timed_out && WIFEXITED(status)), "%s %s%s%.*s", a->prog,
                          what ? what : "failed", last ? ": " : "", (int) MIN(len, 512), last ? last : "");
                fail(vs, a, -EIO);
                return;
        }
        if (streq(a->op->steps[a->it->step].name, "growfs") && a->stage == 0) {
                a->stage = 1;
                advance(vs, a);
                return;
        }
        a->stage = 2;
        step_done(vs, a);
}

static void run_next(void *userdata) {
        struct volumes *vs = userdata;
        int64_t now = now_realtime_usec();
        struct intent *it = NULL;
        struct action *a;
        int r;

        if (vs->running || !vs->started)
                return;
        for (size_t i = 0; i < vs->n_open && !it; i++)
                if (vs->open[i]->next_attempt <= now)
                        it = vs->open[i];
        if (!it)
                return;
        a = calloc(1, sizeof(*a));
        if (!a)
                return;
        a->it = it;
        a->op = find_op(it->op);
        vs->running = a;
        if (!a->op || it->step < 0 || (unsigned) it->step >= a->op->n_steps) {
                /* Written by a newer version, or damaged: say so instead of guessing. */
                set_error(a, true, "unknown operation or step");
                a->op = &ops[0];
                it->attempts = MAX_ATTEMPTS;
                it->state = INTENT_FAILED;
                free(it->last_error);
                it->last_error = strdup("unknown operation or step");
                {
                        struct volume *v = find_volume(vs, it->target), *nv = v ? volume_copy(v) : NULL;
                        if (nv)
                                (void) set_str(&nv->state, "failed");
                        if (commit_intent(vs, it, nv, NULL, true) == 0 && nv) {
                                remove_volume(vs, nv->name);
                                (void) add_volume(nv, vs);
                        } else
                                volume_free(nv);
                }
                end_action(vs, a);
                return;
        }
        it->state = INTENT_RUNNING;
        it->attempts++;
        it->updated = now;
        r = commit_intent(vs, it, NULL, NULL, false);
        if (r < 0) {
                log_error_errno(r, "intent %" PRId64 ": cannot record its start", it->id);
                it->next_attempt = now + USEC_PER_SEC;
                vs->running = NULL;
                action_free(a);
                return;
        }
        if (rolling_back(it) && a->op->undo) {
                log_info("intent %" PRId64 ": %s %s, rolling back, attempt %d", it->id, it->op, it->target,
                         it->attempts);
                roll_back(vs, a);
                return;
        }
        log_info("intent %" PRId64 ": %s %s, attempt %d, from step %s", it->id, it->op, it->target, it->attempts,
                 a->op->steps[it->step].name);
        advance(vs, a);
}

/* ---- drift and names ---- */

static int push_item(struct drift_item ***items, size_t *n, struct drift_item *d) {
        struct drift_item **x;

        if (!d)
                return -ENOMEM;
        x = realloc(*items, (*n + 1) * sizeof(*x));
        if (!x) {
                drift_item_free(d);
                return -ENOMEM;
        }
        *items = x;
        (*items)[(*n)++] = d;
        return 0;
}

static struct device_record *present_record_of(struct volumes *vs, const char *file) {
        for (size_t i = 0; i < vs->d->ledger.n_recs; i++) {
                struct device_record *r = vs->d->ledger.recs[i];
                if (r->state == DEVICE_PRESENT && streq_ptr(r->facts.loop_backing_file, file))
                        return r;
        }
        return NULL;
}

/* What differs between the three sources of truth, each way: a file in the volume
 * directory no row claims, a loop device on such a file, a row whose file is gone, and
 * an action that ended failed. Shown as drift; adopting or forgetting is deliberate. */
static void update_drift(struct volumes *vs) {
        struct drift_item **items = NULL;
        size_t n = 0;
        DIR *dir;
        struct dirent *de;
        int r = 0;

        for (size_t i = 0; r == 0 && i < vs->n_vols; i++) {
                struct volume *v = vs->vols[i];
                _cleanup_(intent_freep) struct intent *last = NULL;
                json_object *d;

                if (find_open_intent(vs, v->name))
                        continue;
                if (access(v->backing_file, F_OK) < 0 && errno == ENOENT) {
                        d = json_object_new_object();
                        if (d)
                                json_object_object_add(d, "backing_file", json_object_new_string(v->backing_file));
                        r = push_item(&items, &n, drift_item_new("volume_file_missing", v->name, 0, d));
                }
                if (r == 0 && vstore_last_intent(vs->d->journal, v->name, NULL, &last) == 0 && last &&
                    last->state == INTENT_FAILED) {
                        d = json_object_new_object();
                        if (d) {
                                json_object_object_add(d, "intent_id", json_object_new_int64(last->id));
                                json_object_object_add(d, "op", json_object_new_string(last->op));
                                json_object_object_add(d, "error", json_object_new_string(last->last_error ?: "?"));
                        }
                        r = push_item(&items, &n, drift_item_new("intent_failed", v->name, 0, d));
                }
        }
        dir = opendir(vs->dir);
        while (r == 0 && dir && (de = readdir(dir))) {
                char path[PATH_MAX];
                json_object *d;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", vs->dir, de->d_name);
                if (volumes_name_of_file(vs, path))
                        continue;
                d = json_object_new_object();
                if (d)
                        json_object_object_add(d, "path", json_object_new_string(path));
                r = push_item(&items, &n, drift_item_new("orphan_file", de->d_name, 0, d));
        }
        if (dir)
                closedir(dir);
        dir = opendir("/sys/block");
        while (r == 0 && dir && (de = readdir(dir))) {
                _cleanup_free_ char *backing = NULL;
                char attr[PATH_MAX];
                struct device_record *rec;
                json_object *d;
                size_t l;

                if (!startswith(de->d_name, "loop") || strlen(de->d_name) > 32)
                        continue;
                snprintf(attr, sizeof(attr), "/sys/block/%s/loop/backing_file", de->d_name);
                if (read_one_line(attr, &backing) < 0)
                        continue;
                l = strlen(backing);
                if (l > 10 && streq(backing + l - 10, " (deleted)"))
                        backing[l - 10] = 0;
                if (!path_is_under(backing, vs->dir) || volumes_name_of_file(vs, backing))
                        continue;
                rec = present_record_of(vs, backing);
                d = json_object_new_object();
                if (d) {
                        char devnode[64];
                        snprintf(devnode, sizeof(devnode), "/dev/%s", de->d_name);
                        json_object_object_add(d, "devnode", json_object_new_string(devnode));
                        json_object_object_add(d, "backing_file", json_object_new_string(backing));
                }
                r = push_item(&items, &n, drift_item_new("orphan_loop", de->d_name, rec ? rec->id : 0, d));
        }
        if (dir)
                closedir(dir);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        drift_item_free(items[i]);
                free(items);
                log_warning("cannot evaluate the volumes' drift: out of memory");
                return;
        }
        drift_set_extra(&vs->d->drift, items, n);
        reconcile_evaluate_drift(vs->d);
}

/* The ledger's record of an attached volume's device carries the volume's name (its
 * identity is the file, so the name follows it across re-attachments and reboots). */
void volumes_name_devices(struct volumes *vs) {
        for (size_t i = 0; vs && i < vs->n_vols; i++) {
                struct volume *v = vs->vols[i];
                struct device_record *rec = present_record_of(vs, v->backing_file);
                int r;

                if (!rec || rec->name)
                        continue;
                r = ledger_set_name(&vs->d->ledger, rec, v->name, now_realtime_usec());
                if (r == -EEXIST)
                        log_debug("volume %s: another device has the name", v->name);
                else if (r < 0)
                        log_warning_errno(r, "volume %s: cannot name its device", v->name);
                else
                        log_info("volume %s: device %s named after it", v->name, rec->facts.kname ?: "?");
        }
}

/* ---- on_appear: devices that appeared, matched to expectations ---- */

static bool any_on_appear(struct volumes *vs) {
        for (size_t i = 0; i < vs->d->drift.n_exps; i++)
                if (vs->d->drift.exps[i]->on_appear)
                        return true;
        return false;
}

static void start_device_action(struct volumes *vs, const struct expectation *e, const struct device_record *rec,
                                int64_t seq) {
        const char *rest;
        json_object *p = json_object_new_object();
        char target[48], key[128];
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
        snprintf(key, sizeof(key), "on_appear:%.64s:%" PRId64, e->name, seq);
        r = start_intent(vs, op, target, p, key, NULL, NULL);
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
        if (!any_on_appear(vs)) {
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
                        start_device_action(vs, x, rec, seq);
        }
        return 0;
}

void volumes_expectations_changed(struct volumes *vs) {
        /* Only appearances from now on: a device present already does not "appear". */
        if (!vs || !any_on_appear(vs))
                return;
        vs->event_cursor = journal_last_seq(vs->d->journal);
        save_cursor(vs);
}

/* ---- lifecycle ---- */

int volumes_new(struct daemon *d, const char *dir, struct volumes **ret) {
        struct volumes *vs = calloc(1, sizeof(*vs));
        int r;

        if (!vs)
                return -ENOMEM;
        vs->d = d;
        vs->kick = (struct ev_defer) { .fn = run_next, .userdata = vs };
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                r = log_error_errno(errno, "cannot create the volume directory %s", dir);
                free(vs);
                return r;
        }
        vs->dir = realpath(dir, NULL);
        if (!vs->dir) {
                r = log_error_errno(errno, "cannot resolve the volume directory %s", dir);
                free(vs);
                return r;
        }
        r = vstore_load_volumes(d->journal, add_volume, vs);
        if (r == 0)
                r = vstore_load_intents(d->journal, true, 0, add_open, vs);
        if (r == 0) {
                _cleanup_free_ char *cur = NULL;
                /* Events since the last run's cursor include what appeared meanwhile. */
                if (journal_meta_get(d->journal, "on_appear_seq", &cur) < 0 || !cur ||
                    parse_int64(cur, &vs->event_cursor) < 0 || !any_on_appear(vs))
                        vs->event_cursor = journal_last_seq(d->journal);
        }
        if (r < 0) {
                volumes_free(vs);
                return log_error_errno(r, "cannot load volumes and intents");
        }
        *ret = vs;
        return 0;
}

struct volumes *volumes_free(struct volumes *vs) {
        if (!vs)
                return NULL;
        if (vs->d->loop)
                ev_defer_cancel(vs->d->loop, &vs->kick);
        /* A child is killed; its intent stays running in the journal and is carried on
         * at the next start. */
        action_free(vs->running);
        while (vs->waiters) {
                struct waiter *w = vs->waiters;
                vs->waiters = w->next;
                server_call_error(w->call, "io.blkledger.ShuttingDown", NULL);
                free(w);
        }
        for (size_t i = 0; i < vs->n_vols; i++)
                volume_free(vs->vols[i]);
        free(vs->vols);
        for (size_t i = 0; i < vs->n_open; i++)
                intent_free(vs->open[i]);
        free(vs->open);
        free(vs->dir);
        free(vs);
        return NULL;
}

/* Desired state "attached" without a loop device (after a reboot, or a detach behind
 * our back): deferred work that reconciles, through an intent like any other. */

static void reattach_missing(struct volumes *vs) {
        for (size_t i = 0; i < vs->n_vols; i++) {
                struct volume *v = vs->vols[i];
                char kname[32];

                _cleanup_(intent_freep) struct intent *last = NULL;

                if (!streq(v->state, "attached") || find_open_intent(vs, v->name) || attached_kname(v, kname) != 0)
                        continue;
                /* Once per failure, not once per pass: a failed re-attach stays visible in
                 * the intents until an action on the volume succeeds. */
                if (vstore_last_intent(vs->d->journal, v->name, NULL, &last) < 0 ||
                    (last && streq(last->op, "volume.attach") && last->state != INTENT_SUCCEEDED))
                        continue;
                log_info("volume %s should be attached and is not: attaching it", v->name);
                (void) start_intent(vs, "volume.attach", v->name, NULL, NULL, NULL, NULL);
        }
}

void volumes_start(struct volumes *vs) {
        vs->started = true;
        if (vs->n_open > 0) {
                log_info("carrying on %zu unfinished intents", vs->n_open);
                crashpoint("recovery.begin");
        }
        reattach_missing(vs);
        ev_defer_queue(vs->d->loop, &vs->kick);
}

void volumes_tick(struct volumes *vs) {
        if (vs && vs->started && !vs->running && vs->n_open > 0)
                ev_defer_queue(vs->d->loop, &vs->kick);
}

void volumes_after_pass(struct volumes *vs) {
        if (!vs || !vs->started)
                return;
        reattach_missing(vs);
        update_drift(vs);
        volumes_name_devices(vs);
        volumes_tick(vs);
}

void volumes_retry_now(struct volumes *vs) {
        if (!vs)
                return;
        for (size_t i = 0; i < vs->n_open; i++)
                vs->open[i]->next_attempt = 0;
        volumes_tick(vs);
}

const char *volumes_name_of_file(struct volumes *vs, const char *path) {
        for (size_t i = 0; vs && path && i < vs->n_vols; i++)
                if (streq(vs->vols[i]->backing_file, path))
                        return vs->vols[i]->name;
        return NULL;
}

size_t volumes_count(const struct volumes *vs) {
        return vs ? vs->n_vols : 0;
}

size_t volumes_unfinished(const struct volumes *vs) {
        return vs ? vs->n_open : 0;
}

const char *volumes_dir(const struct volumes *vs) {
        return vs->dir;
}

/* ---- methods ---- */

static int reply_and_put(struct client *c, json_object *p) {
        int r;

        if (!p)
                return -ENOMEM;
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int reply_error2(struct client *c, const char *error, const char *k1, const char *v1, const char *k2,
                        const char *v2) {
        json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, k1, json_object_new_string(v1));
        if (k2)
                json_object_object_add(o, k2, v2 ? json_object_new_string(v2) : NULL);
        r = server_reply_error(c, error, o);
        json_object_put(o);
        return r;
}

static int reply_volume(struct volumes *vs, struct client *c, const struct volume *v) {
        json_object *o = json_object_new_object();

        if (o)
                json_object_object_add(o, "volume", volume_to_json(vs, v));
        return reply_and_put(c, o);
}

static int add_waiter(struct volumes *vs, struct client *c, int64_t intent_id, bool delete_reply) {
        struct waiter *w = calloc(1, sizeof(*w));

        if (!w)
                return -ENOMEM;
        w->call = server_call_defer(c);
        if (!w->call) {
                free(w);
                return -ENOMEM;
        }
        w->intent_id = intent_id;
        w->delete_reply = delete_reply;
        w->next = vs->waiters;
        vs->waiters = w;
        return 0;
}

static int start_intent(struct volumes *vs, const char *op, const char *target, json_object *params,
                        const char *key, struct volume *row, struct intent **ret) {
        struct intent *it = calloc(1, sizeof(*it));
        char cp[256];
        int r;

        if (!it)
                return -ENOMEM;
        it->op = strdup(op);
        it->target = strdup(target);
        it->params = params ? json_object_get(params) : json_object_new_object();
        it->key = key ? strdup(key) : NULL;
        it->state = INTENT_PENDING;
        it->created = it->updated = now_realtime_usec();
        if (!it->op || !it->target || !it->params || (key && !it->key)) {
                intent_free(it);
                volume_free(row);
                return -ENOMEM;
        }
        if (row)
                row->updated = it->created;
        r = commit_intent(vs, it, row, NULL, false);
        if (r < 0) {
                intent_free(it);
                volume_free(row);
                return r;
        }
        if (row) {
                remove_volume(vs, row->name);
                r = add_volume(row, vs);
        }
        r = add_open(it, vs);
        if (r < 0)
                return r;
        log_info("intent %" PRId64 ": %s %s", it->id, it->op, it->target); /* target may be freed */
        snprintf(cp, sizeof(cp), "%s.intent", op);
        crashpoint(cp);
        if (ret)
                *ret = it;
        ev_defer_queue(vs->d->loop, &vs->kick);
        return 0;
}

static struct volumes *get_vs(void *userdata) {
        return ((struct daemon *) userdata)->volumes;
}

/* With an idempotency key seen before: the earlier intent answers (0 when handled). */
static int check_key(struct volumes *vs, struct client *c, const char *op, const char *target, const char *key,
                     bool delete_reply) {
        _cleanup_(intent_freep) struct intent *it = NULL;
        int r;

        if (!key)
                return 1;
        r = vstore_intent_by_key(vs->d->journal, key, &it);
        if (r < 0)
                return r;
        if (!it)
                return 1;
        if (!streq(it->op, op) || !streq(it->target, target))
                return server_reply_invalid_parameter(c, "idempotency_key");
        if (!intent_state_is_final(it->state))
                return add_waiter(vs, c, it->id, delete_reply);
        if (it->state == INTENT_SUCCEEDED) {
                struct volume *v = find_volume(vs, target);
                if (delete_reply || !v)
                        return reply_and_put(c, json_object_new_object());
                return reply_volume(vs, c, v);
        }
        {
                json_object *o = json_object_new_object();
                if (!o)
                        return -ENOMEM;
                json_object_object_add(o, "intent_id", json_object_new_int64(it->id));
                json_object_object_add(o, "op", json_object_new_string(it->op));
                json_object_object_add(o, "target", json_object_new_string(it->target));
                json_object_object_add(o, "state", json_object_new_string(intent_state_to_string(it->state)));
                json_object_object_add(o, "error", json_object_new_string(it->last_error ?: "?"));
                r = server_reply_error(c, "io.blkledger.ActionFailed", o);
                json_object_put(o);
                return r;
        }
}

/* A volume's name may not read as a kernel name: lookups by name would be ambiguous,
 * and loopN may be the name of its own device one day. */
static bool kernel_like(struct volumes *vs, const char *name) {
        char path[128];
        const char *n = startswith(name, "loop");

        if (n && *n && strspn(n, "0123456789") == strlen(n))
                return true;
        snprintf(path, sizeof(path), "/sys/class/block/%s", name);
        if (access(path, F_OK) == 0)
                return true;
        for (size_t i = 0; i < vs->d->ledger.n_recs; i++)
                if (streq_ptr(vs->d->ledger.recs[i]->facts.kname, name))
                        return true;
        return false;
}

static bool label_valid(const char *s) {
        size_t l = strlen(s);

        if (l == 0 || l > LABEL_MAX || !utf8_is_valid(s, l))
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

/* No action of its own under way: a new one may start ("failed" included: an action
 * stopped half-way, which a new action, or a delete, takes from there). */
static bool settled(const struct volume *v) {
        return streq(v->state, "attached") || streq(v->state, "detached") || streq(v->state, "failed");
}

static int reply_busy_state(struct client *c, const struct volume *v) {
        char why[128];
        snprintf(why, sizeof(why), "volume %s is %s", v->name, v->state);
        return reply_error2(c, "io.blkledger.VolumeBusy", "name", v->name, "reason", why);
}

/* Common checks of a call on an existing volume. NULL after replying. */
static struct volume *lookup(struct volumes *vs, struct client *c, json_object *params, int *r) {
        json_object *name = param_get(params, "name");
        struct volume *v;

        *r = 0;
        if (!name || !ledger_name_valid(json_object_get_string(name))) {
                *r = server_reply_invalid_parameter(c, "name");
                return NULL;
        }
        v = find_volume(vs, json_object_get_string(name));
        if (!v)
                *r = reply_error2(c, "io.blkledger.NoSuchVolume", "name", json_object_get_string(name), NULL, NULL);
        return v;
}

/* Another action on the volume is under way: the same one is joined, others refused. */
static bool same_param(const struct intent *it, json_object *params, const char *key) {
        json_object *a = NULL, *b = param_get(params, key);

        (void) json_object_object_get_ex(it->params, key, &a);
        /* Absent and false (or 0) are the same request. */
        if (!a || !b)
                return (!a || !json_object_get_int64(a)) == (!b || !json_object_get_int64(b));
        return json_object_get_int64(a) == json_object_get_int64(b);
}

/* Joins the open intent on the volume when it is the same request (same op, same
 * size_bytes, force, keep_file); anything else waits its turn, refused as busy. */
static int busy_or_join(struct volumes *vs, struct client *c, const char *op, const char *name, bool delete_reply,
                        json_object *params) {
        static const char *const keys[] = { "size_bytes", "force", "keep_file" };
        struct intent *open = find_open_intent(vs, name);
        bool same;
        char why[128];

        if (!open)
                return 1;
        same = streq(open->op, op);
        for (size_t i = 0; same && params && i < ELEMENTSOF(keys); i++)
                if (!streq(op, "volume.create") || !streq(keys[i], "size_bytes"))
                        same = same_param(open, params, keys[i]);
        if (same)
                return add_waiter(vs, c, open->id, delete_reply);
        snprintf(why, sizeof(why), "intent %" PRId64 " (%s) is not finished", open->id, open->op);
        return reply_error2(c, "io.blkledger.VolumeBusy", "name", name, "reason", why);
}

int method_create_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "name", PARAM_STRING },     { "size_bytes", PARAM_INT },          { "fs_type", PARAM_STRING },
                { "fs_label", PARAM_STRING }, { "idempotency_key", PARAM_STRING }, {},
        };
        struct volumes *vs = get_vs(userdata);
        json_object *name_o = param_get(params, "name"), *size_o = param_get(params, "size_bytes"),
                    *fs_o = param_get(params, "fs_type"), *label_o = param_get(params, "fs_label"),
                    *key_o = param_get(params, "idempotency_key"), *ip;
        const char *name, *fs = fs_o ? json_object_get_string(fs_o) : NULL,
                          *label = label_o ? json_object_get_string(label_o) : NULL,
                          *key = key_o ? json_object_get_string(key_o) : NULL;
        struct volume *v, *row;
        struct stat st;
        int64_t size;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!name_o || !ledger_name_valid(json_object_get_string(name_o)) ||
            kernel_like(vs, json_object_get_string(name_o)))
                return server_reply_invalid_parameter(c, "name");
        name = json_object_get_string(name_o);
        size = size_o ? json_object_get_int64(size_o) : 0;
        if (size <= 0 || size % 512 != 0)
                return server_reply_invalid_parameter(c, "size_bytes");
        if (fs && !fs_tool(fs))
                return server_reply_invalid_parameter(c, "fs_type");
        if (label && (!fs || !label_valid(label)))
                return server_reply_invalid_parameter(c, "fs_label");
        if (key && (isempty(key) || strlen(key) > 256))
                return server_reply_invalid_parameter(c, "idempotency_key");
        r = check_key(vs, c, "volume.create", name, key, false);
        if (r <= 0)
                return r;
        v = find_volume(vs, name);
        if (v) {
                /* The same create again (after a crash, or twice): its result. */
                if (v->size_bytes == (uint64_t) size && streq_ptr(v->fs_type, fs) && streq_ptr(v->fs_label, label) &&
                    !streq(v->state, "deleting") && !streq(v->state, "failed")) {
                        r = busy_or_join(vs, c, "volume.create", name, false, NULL);
                        if (r <= 0)
                                return r;
                        if (!find_open_intent(vs, name))
                                return reply_volume(vs, c, v);
                }
                {
                        char why[256];
                        snprintf(why, sizeof(why), "volume %s exists with other parameters or in state %s", name,
                                 v->state);
                        return reply_error2(c, "io.blkledger.VolumeExists", "name", name, "reason", why);
                }
        }
        row = calloc(1, sizeof(*row));
        if (!row)
                return -ENOMEM;
        row->name = strdup(name);
        row->state = strdup("creating");
        row->size_bytes = (uint64_t) size;
        r = asprintf(&row->backing_file, "%s/%s.img", vs->dir, name);
        if (r < 0)
                row->backing_file = NULL;
        row->fs_type = fs ? strdup(fs) : NULL;
        row->fs_label = label ? strdup(label) : NULL;
        row->created = now_realtime_usec();
        if (!row->name || !row->state || !row->backing_file || (fs && !row->fs_type) || (label && !row->fs_label)) {
                volume_free(row);
                return -ENOMEM;
        }
        /* A file nobody's row claims is not ours to overwrite. */
        if (lstat(row->backing_file, &st) == 0) {
                char why[PATH_MAX + 128];
                snprintf(why, sizeof(why), "%s exists but belongs to no volume (adopt or remove it)",
                         row->backing_file);
                volume_free(row);
                return reply_error2(c, "io.blkledger.VolumeExists", "name", name, "reason", why);
        }
        ip = json_object_new_object();
        if (!ip) {
                volume_free(row);
                return -ENOMEM;
        }
        json_object_object_add(ip, "size_bytes", json_object_new_int64(size));
        {
                struct intent *it;
                r = start_intent(vs, "volume.create", name, ip, key, row, &it);
                json_object_put(ip);
                if (r < 0)
                        return r;
                log_info("volume %s: create requested by uid %d", name, (int) client_uid(c));
                return add_waiter(vs, c, it->id, false);
        }
}

int method_list_volumes(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct volumes *vs = get_vs(userdata);
        json_object *p, *arr;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        p = json_object_new_object();
        arr = json_object_new_array();
        if (!p || !arr) {
                json_object_put(p);
                json_object_put(arr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < vs->n_vols; i++)
                json_object_array_add(arr, volume_to_json(vs, vs->vols[i]));
        json_object_object_add(p, "volumes", arr);
        return reply_and_put(c, p);
}

int method_get_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "name", PARAM_STRING }, {} };
        struct volumes *vs = get_vs(userdata);
        struct volume *v;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        v = lookup(vs, c, params, &r);
        return v ? reply_volume(vs, c, v) : r;
}

/* Resize, attach, detach: the volume's state becomes new_state for the intent's time. */
static int start_on_volume(struct volumes *vs, struct client *c, struct volume *v, const char *op,
                           const char *new_state, json_object *ip, const char *key, bool delete_reply) {
        struct volume *row = ip ? volume_copy(v) : NULL;
        struct intent *it;
        int r;

        if (!row) {
                json_object_put(ip);
                return -ENOMEM;
        }
        json_object_object_add(ip, "prev_state", json_object_new_string(v->state));
        if (new_state)
                (void) set_str(&row->state, new_state);
        r = start_intent(vs, op, v->name, ip, key, row, &it);
        json_object_put(ip);
        if (r < 0)
                return r;
        log_info("volume %s: %s requested by uid %d", it->target, op, (int) client_uid(c));
        return add_waiter(vs, c, it->id, delete_reply);
}

static const char *key_of(json_object *params) {
        json_object *k = param_get(params, "idempotency_key");
        return k ? json_object_get_string(k) : NULL;
}

int method_resize_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "name", PARAM_STRING }, { "size_bytes", PARAM_INT }, { "idempotency_key", PARAM_STRING }, {}
        };
        struct volumes *vs = get_vs(userdata);
        json_object *size_o = param_get(params, "size_bytes"), *ip;
        struct volume *v;
        int64_t size;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        v = lookup(vs, c, params, &r);
        if (!v)
                return r;
        size = size_o ? json_object_get_int64(size_o) : 0;
        if (size <= 0 || size % 512 != 0)
                return server_reply_invalid_parameter(c, "size_bytes");
        r = check_key(vs, c, "volume.resize", v->name, key_of(params), false);
        if (r <= 0)
                return r;
        r = busy_or_join(vs, c, "volume.resize", v->name, false, params);
        if (r <= 0)
                return r;
        if ((uint64_t) size == v->size_bytes && !streq(v->state, "failed"))
                return reply_volume(vs, c, v); /* done already */
        if ((uint64_t) size < v->size_bytes)
                return reply_error2(c, "io.blkledger.Refused", "reason",
                                    "volumes only grow: shrinking would cut off the filesystem's data", NULL, NULL);
        if (!settled(v))
                return reply_busy_state(c, v);
        ip = json_object_new_object();
        if (!ip)
                return -ENOMEM;
        json_object_object_add(ip, "size_bytes", json_object_new_int64(size));
        return start_on_volume(vs, c, v, "volume.resize", "resizing", ip, key_of(params), false);
}

int method_attach_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "name", PARAM_STRING }, { "idempotency_key", PARAM_STRING }, {} };
        struct volumes *vs = get_vs(userdata);
        struct volume *v;
        char kname[32];
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        v = lookup(vs, c, params, &r);
        if (!v)
                return r;
        r = check_key(vs, c, "volume.attach", v->name, key_of(params), false);
        if (r <= 0)
                return r;
        r = busy_or_join(vs, c, "volume.attach", v->name, false, params);
        if (r <= 0)
                return r;
        if (streq(v->state, "attached") && attached_kname(v, kname) > 0)
                return reply_volume(vs, c, v);
        if (!settled(v))
                return reply_busy_state(c, v);
        return start_on_volume(vs, c, v, "volume.attach", NULL, json_object_new_object(), key_of(params), false);
}

/* Refuses a busy volume without force: nothing is changed, not even an intent written. */
static int refuse_if_busy(struct volumes *vs, struct client *c, struct volume *v, bool force) {
        char found[LOOPDEV_MAX][32];
        int n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);

        if (force)
                return 1;
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *why = NULL;
                if (loopdev_in_use(found[i], &why, NULL)) {
                        char reason[512];
                        snprintf(reason, sizeof(reason), "/dev/%s is %s; use --force", found[i], why ? why : "busy");
                        return reply_error2(c, "io.blkledger.VolumeBusy", "name", v->name, "reason", reason);
                }
        }
        return 1;
}

int method_detach_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "name", PARAM_STRING }, { "force", PARAM_BOOL }, { "idempotency_key", PARAM_STRING }, {}
        };
        struct volumes *vs = get_vs(userdata);
        json_object *force_o = param_get(params, "force"), *ip;
        bool force = force_o && json_object_get_boolean(force_o);
        struct volume *v;
        char kname[32];
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        v = lookup(vs, c, params, &r);
        if (!v)
                return r;
        r = check_key(vs, c, "volume.detach", v->name, key_of(params), false);
        if (r <= 0)
                return r;
        r = busy_or_join(vs, c, "volume.detach", v->name, false, params);
        if (r <= 0)
                return r;
        if (streq(v->state, "detached") && attached_kname(v, kname) == 0)
                return reply_volume(vs, c, v);
        if (!settled(v))
                return reply_busy_state(c, v);
        r = refuse_if_busy(vs, c, v, force);
        if (r <= 0)
                return r;
        ip = json_object_new_object();
        if (!ip)
                return -ENOMEM;
        json_object_object_add(ip, "force", json_object_new_boolean(force));
        return start_on_volume(vs, c, v, "volume.detach", NULL, ip, key_of(params), false);
}

int method_delete_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "name", PARAM_STRING },
                { "keep_file", PARAM_BOOL },
                { "force", PARAM_BOOL },
                { "idempotency_key", PARAM_STRING },
                {},
        };
        struct volumes *vs = get_vs(userdata);
        json_object *force_o = param_get(params, "force"), *keep_o = param_get(params, "keep_file"),
                    *name_o = param_get(params, "name"), *ip;
        bool force = force_o && json_object_get_boolean(force_o), keep = keep_o && json_object_get_boolean(keep_o);
        struct volume *v;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!name_o || !ledger_name_valid(json_object_get_string(name_o)))
                return server_reply_invalid_parameter(c, "name");
        r = check_key(vs, c, "volume.delete", json_object_get_string(name_o), key_of(params), true);
        if (r <= 0)
                return r;
        v = find_volume(vs, json_object_get_string(name_o));
        if (!v) {
                /* Deleted already (a repeat after a crash or a lost reply): done. */
                _cleanup_(intent_freep) struct intent *last = NULL;
                r = vstore_last_intent(vs->d->journal, json_object_get_string(name_o), NULL, &last);
                if (r < 0)
                        return r;
                if (last && streq(last->op, "volume.delete") && last->state == INTENT_SUCCEEDED)
                        return reply_and_put(c, json_object_new_object());
                return reply_error2(c, "io.blkledger.NoSuchVolume", "name", json_object_get_string(name_o), NULL,
                                    NULL);
        }
        r = busy_or_join(vs, c, "volume.delete", v->name, true, params);
        if (r <= 0)
                return r;
        if (!settled(v))
                return reply_busy_state(c, v);
        r = refuse_if_busy(vs, c, v, force);
        if (r <= 0)
                return r;
        ip = json_object_new_object();
        if (!ip)
                return -ENOMEM;
        json_object_object_add(ip, "force", json_object_new_boolean(force));
        json_object_object_add(ip, "keep_file", json_object_new_boolean(keep));
        /* The tombstone: from here on the volume is on its way out, whatever happens. */
        return start_on_volume(vs, c, v, "volume.delete", "deleting", ip, key_of(params), true);
}

/* What a file holds, by libblkid (read-only, a few reads): NULL for nothing known. */
static char *probe_file_type(const char *path) {
        blkid_probe pr = blkid_new_probe_from_filename(path);
        const char *type = NULL;
        char *r = NULL;

        if (!pr)
                return NULL;
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
        if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0 && type)
                r = strdup(type);
        blkid_free_probe(pr);
        return r;
}

int method_adopt_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "path", PARAM_STRING }, { "idempotency_key", PARAM_STRING }, {} };
        struct volumes *vs = get_vs(userdata);
        json_object *path_o = param_get(params, "path");
        _cleanup_free_ char *canon = NULL, *name = NULL;
        const char *base;
        struct volume *v, *row;
        struct intent *it;
        struct stat st;
        size_t l;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!path_o || json_object_get_string(path_o)[0] != '/')
                return server_reply_invalid_parameter(c, "path");
        /* Only a regular file directly in the volume directory, named NAME.img. */
        if (lstat(json_object_get_string(path_o), &st) < 0 || !S_ISREG(st.st_mode))
                return reply_error2(c, "io.blkledger.Refused", "reason",
                                    "not a regular file (symbolic links are not followed)", NULL, NULL);
        canon = realpath(json_object_get_string(path_o), NULL);
        base = canon ? strrchr(canon, '/') : NULL;
        if (!base || (size_t) (base - canon) != strlen(vs->dir) || strncmp(canon, vs->dir, strlen(vs->dir)) != 0)
                return reply_error2(c, "io.blkledger.Refused", "reason",
                                    "only files directly in the volume directory can be adopted", NULL, NULL);
        base++;
        l = strlen(base);
        if (l <= 4 || !streq(base + l - 4, ".img") || !(name = strndup(base, l - 4)) || !ledger_name_valid(name) ||
            kernel_like(vs, name))
                return reply_error2(c, "io.blkledger.Refused", "reason",
                                    "the file must be named NAME.img with a valid volume name", NULL, NULL);
        if (st.st_size <= 0 || st.st_size % 512 != 0)
                return reply_error2(c, "io.blkledger.Refused", "reason",
                                    "a volume's size is a positive multiple of 512 bytes", NULL, NULL);
        r = check_key(vs, c, "volume.adopt", name, key_of(params), false);
        if (r <= 0)
                return r;
        v = find_volume(vs, name);
        if (v) {
                r = busy_or_join(vs, c, "volume.adopt", name, false, NULL);
                if (r <= 0)
                        return r;
                if (streq(v->backing_file, canon))
                        return reply_volume(vs, c, v); /* adopted already */
                return reply_error2(c, "io.blkledger.VolumeExists", "name", name, "reason", "a volume has the name");
        }
        row = calloc(1, sizeof(*row));
        if (!row)
                return -ENOMEM;
        row->name = strdup(name);
        row->state = strdup("detached");
        row->size_bytes = (uint64_t) st.st_size;
        row->backing_file = strdup(canon);
        row->fs_type = probe_file_type(canon);
        row->created = now_realtime_usec();
        if (!row->name || !row->state || !row->backing_file) {
                volume_free(row);
                return -ENOMEM;
        }
        r = start_intent(vs, "volume.adopt", name, NULL, key_of(params), row, &it);
        if (r < 0)
                return r;
        log_info("volume %s: adoption of %s requested by uid %d", name, canon, (int) client_uid(c));
        return add_waiter(vs, c, it->id, false);
}

int method_forget_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "name", PARAM_STRING }, { "idempotency_key", PARAM_STRING }, {} };
        struct volumes *vs = get_vs(userdata);
        json_object *name_o = param_get(params, "name");
        struct volume *v;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!name_o || !ledger_name_valid(json_object_get_string(name_o)))
                return server_reply_invalid_parameter(c, "name");
        r = check_key(vs, c, "volume.forget", json_object_get_string(name_o), key_of(params), true);
        if (r <= 0)
                return r;
        v = find_volume(vs, json_object_get_string(name_o));
        if (!v) {
                _cleanup_(intent_freep) struct intent *last = NULL;
                r = vstore_last_intent(vs->d->journal, json_object_get_string(name_o), NULL, &last);
                if (r < 0)
                        return r;
                if (last && streq(last->op, "volume.forget") && last->state == INTENT_SUCCEEDED)
                        return reply_and_put(c, json_object_new_object());
                return reply_error2(c, "io.blkledger.NoSuchVolume", "name", json_object_get_string(name_o), NULL,
                                    NULL);
        }
        r = busy_or_join(vs, c, "volume.forget", v->name, true, NULL);
        if (r <= 0)
                return r;
        if (!settled(v))
                return reply_busy_state(c, v);
        return start_on_volume(vs, c, v, "volume.forget", NULL, json_object_new_object(), key_of(params), true);
}

static int add_intent_json(struct intent *it, void *userdata) {
        json_object_array_add(userdata, intent_to_json(it));
        intent_free(it);
        return 0;
}

int method_list_intents(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "unfinished", PARAM_BOOL }, { "limit", PARAM_INT }, {} };
        struct volumes *vs = get_vs(userdata);
        json_object *unf = param_get(params, "unfinished"), *lim = param_get(params, "limit"), *p, *arr;
        int64_t limit = lim ? json_object_get_int64(lim) : INTENTS_PAGE_DEFAULT;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (limit <= 0 || limit > INTENTS_PAGE_MAX)
                return server_reply_invalid_parameter(c, "limit");
        arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        if (unf && json_object_get_boolean(unf)) {
                for (size_t i = 0; i < vs->n_open; i++)
                        json_object_array_add(arr, intent_to_json(vs->open[i]));
        } else {
                r = vstore_load_intents(vs->d->journal, false, limit, add_intent_json, arr);
                if (r < 0) {
                        json_object_put(arr);
                        return r;
                }
        }
        p = json_object_new_object();
        if (!p) {
                json_object_put(arr);
                return -ENOMEM;
        }
        json_object_object_add(p, "intents", arr);
        return reply_and_put(c, p);
}
