/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Managed volumes: the actions as step lists, the runner, recovery, drift. The methods
 * are in volume-methods.c, the actions on devices (on_appear) in device-actions.c. See
 * volumes.h for the model and crashpoint.h for the names of the crash points. */
#include "config.h"

#include <blkid/blkid.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "crashpoint.h"
#include "log.h"
#include "loopdev.h"
#include "util.h"
#include "volumes-internal.h"

#define MAX_ATTEMPTS 5
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)

static char *const child_env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };

/* ---- the model in memory (a write-through cache of the tables) ---- */

struct volume *vol_find(struct volumes *vs, const char *name) {
        for (size_t i = 0; i < vs->n_vols; i++)
                if (streq(vs->vols[i]->name, name))
                        return vs->vols[i];
        return NULL;
}

struct intent *vol_open_intent(struct volumes *vs, const char *target) {
        for (size_t i = 0; i < vs->n_open; i++)
                if (streq(vs->open[i]->target, target))
                        return vs->open[i];
        return NULL;
}

int vol_add(struct volume *v, void *userdata) {
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

void vol_remove(struct volumes *vs, const char *name) {
        for (size_t i = 0; i < vs->n_vols; i++)
                if (streq(vs->vols[i]->name, name)) {
                        volume_free(vs->vols[i]);
                        memmove(vs->vols + i, vs->vols + i + 1, (vs->n_vols - i - 1) * sizeof(*vs->vols));
                        vs->n_vols--;
                        return;
                }
}

int vol_add_open(struct intent *it, void *userdata) {
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

struct volume *vol_copy(const struct volume *v) {
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

int vol_set_str(char **field, const char *value) {
        char *n = value ? strdup(value) : NULL;

        if (value && !n)
                return -ENOMEM;
        free(*field);
        *field = n;
        return 0;
}

const char *vol_param_str(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v ? json_object_get_string(v) : NULL;
}

int64_t vol_param_int(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v ? json_object_get_int64(v) : 0;
}

bool vol_param_bool(const struct intent *it, const char *key) {
        json_object *v;
        return json_object_object_get_ex(it->params, key, &v) && v && json_object_get_boolean(v);
}

void vol_set_error(struct action *a, bool permanent, const char *fmt, ...) {
        va_list ap;

        free(a->error);
        va_start(ap, fmt);
        if (vasprintf(&a->error, fmt, ap) < 0)
                a->error = NULL;
        va_end(ap);
        a->permanent = permanent;
}

void vol_set_result(struct action *a, const char *key, json_object *value) {
        if (!a->it->result)
                a->it->result = json_object_new_object();
        if (a->it->result)
                json_object_object_add(a->it->result, key, value);
        else
                json_object_put(value);
}

/* ---- tools ---- */

char *vol_find_program(const char *name) {
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

static const struct vol_fs_tool fs_tools[] = {
        { "ext2", "mkfs.ext2", "-F", "-q", "-L" },   { "ext3", "mkfs.ext3", "-F", "-q", "-L" },
        { "ext4", "mkfs.ext4", "-F", "-q", "-L" },   { "xfs", "mkfs.xfs", "-f", "-q", "-L" },
        { "btrfs", "mkfs.btrfs", "-f", "-q", "-L" }, { "vfat", "mkfs.vfat", NULL, NULL, "-n" },
        { "exfat", "mkfs.exfat", NULL, NULL, "-L" }, { "swap", "mkswap", "-f", NULL, "-L" },
};

const struct vol_fs_tool *vol_fs_tool(const char *type) {
        for (size_t i = 0; type && i < ELEMENTSOF(fs_tools); i++)
                if (streq(fs_tools[i].type, type))
                        return &fs_tools[i];
        return NULL;
}

/* The one loop device that holds the volume's file: 1 with kname set, 0 when none. */
int vol_attached_kname(const struct volume *v, char kname[static 32]) {
        char found[LOOPDEV_MAX][32];
        int n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);

        if (n > 0)
                snprintf(kname, 32, "%s", found[0]);
        return n;
}

/* ---- steps ---- */

static struct volume *target_volume(struct volumes *vs, struct action *a) {
        struct volume *v = vol_find(vs, a->it->target);
        if (!v)
                vol_set_error(a, true, "the volume's record is gone");
        return v;
}

/* create: a sparse file of the size; resize: grown to the size (never shrunk). */
static int step_file(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        bool create = streq(a->it->op, "volume.create");
        uint64_t size = (uint64_t) vol_param_int(a->it, "size_bytes");
        struct stat st;
        int fd;

        if (!v)
                return -ENOENT;
        fd = open(v->backing_file, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
        if (fd < 0) {
                int e = errno;
                vol_set_error(a, e == ENOENT || e == ELOOP, "cannot open %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                vol_set_error(a, true, "%s is not a regular file", v->backing_file);
                return -EINVAL;
        }
        if ((uint64_t) st.st_size < size && ftruncate(fd, (off_t) size) < 0) {
                int e = errno;
                close(fd);
                vol_set_error(a, e == EFBIG || e == EINVAL, "cannot grow %s to %" PRIu64 " bytes: %s", v->backing_file,
                          size, strerror(e));
                return -e;
        }
        if (fsync(fd) < 0) {
                int e = errno;
                close(fd);
                vol_set_error(a, false, "cannot sync %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        close(fd);
        (void) fsync_path(vs->dir, O_RDONLY | O_DIRECTORY);
        return 0;
}

static int step_attach(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        char kname[32];
        int n, r;

        if (!v)
                return -ENOENT;
        n = vol_attached_kname(v, kname);
        if (n < 0) {
                vol_set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        if (n > 0) {
                log_debug("volume %s: already attached as %s", v->name, kname);
                return 0;
        }
        r = loopdev_attach(v->backing_file, kname);
        if (r < 0) {
                vol_set_error(a, false, "cannot attach %s: %s", v->backing_file, strerror(-r));
                return r;
        }
        log_info("volume %s: attached %s as /dev/%s", v->name, v->backing_file, kname);
        return 0;
}

/* Detaches every loop device of the file; refuses a busy one unless forced. */
static int step_detach(struct volumes *vs, struct action *a) {
        struct volume *v = target_volume(vs, a);
        char found[LOOPDEV_MAX][32];
        bool force = vol_param_bool(a->it, "force");
        int n;

        if (!v)
                return -ENOENT;
        n = loopdev_find(v->backing_file, found, LOOPDEV_MAX);
        if (n == -ENOENT)
                return 0; /* no file, no loop device of it */
        if (n < 0) {
                vol_set_error(a, false, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *why = NULL;
                int r;

                if (loopdev_in_use(found[i], &why, NULL) && !force) {
                        vol_set_error(a, true, "/dev/%s is in use (%s); use --force", found[i], why ? why : "busy");
                        return -EBUSY;
                }
                r = loopdev_detach(found[i]);
                if (r < 0 && r != -ENXIO) {
                        vol_set_error(a, false, "cannot detach /dev/%s: %s", found[i], strerror(-r));
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
        if (vol_param_bool(a->it, "keep_file"))
                return 0;
        if (unlink(v->backing_file) < 0 && errno != ENOENT) {
                int e = errno;
                vol_set_error(a, false, "cannot remove %s: %s", v->backing_file, strerror(e));
                return -e;
        }
        (void) fsync_path(vs->dir, O_RDONLY | O_DIRECTORY);
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
                vol_set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                int r = loopdev_set_capacity(found[i]);
                if (r < 0) {
                        vol_set_error(a, false, "cannot tell /dev/%s its new size: %s", found[i], strerror(-r));
                        return r;
                }
        }
        return 0;
}


int vol_run_tool(struct volumes *vs, struct action *a, char **argv) {
        const char *path = argv[0];
        int r;

        /* Tools name themselves by argv[0] in their messages: the short name. */
        snprintf(a->prog, sizeof(a->prog), "%s", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
        argv[0] = a->prog;
        r = child_spawn(vs->d->loop, path, argv, child_env, TOOL_TIMEOUT_USEC, vol_step_child_done, vs, &a->child);
        if (r < 0) {
                vol_set_error(a, false, "cannot run %s: %s", path, strerror(-r));
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
        const struct vol_fs_tool *t;
        _cleanup_free_ char *prog = NULL;
        char kname[32], devnode[48];
        char *argv[8];
        int n, k = 0;

        if (!v)
                return -ENOENT;
        if (!v->fs_type)
                return 0;
        t = vol_fs_tool(v->fs_type);
        if (!t) {
                vol_set_error(a, true, "no known tool makes %s", v->fs_type);
                return -EOPNOTSUPP;
        }
        prog = vol_find_program(t->mkfs);
        if (!prog) {
                vol_set_error(a, true, "%s is not installed", t->mkfs);
                return -ENOENT;
        }
        /* After a reboot the attach step's effect is gone: it is redone here. */
        n = vol_attached_kname(v, kname);
        if (n == 0) {
                n = step_attach(vs, a);
                if (n < 0)
                        return n;
                n = vol_attached_kname(v, kname);
        }
        if (n <= 0) {
                vol_set_error(a, false, "%s is not attached", v->backing_file);
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
        return vol_run_tool(vs, a, argv);
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
        n = vol_attached_kname(v, kname);
        if (n < 0) {
                vol_set_error(a, n == -ENOENT, "cannot look at %s: %s", v->backing_file, strerror(-n));
                return n;
        }
        if (n == 0) {
                n = step_attach(vs, a); /* its step's effect is gone (a reboot) */
                if (n < 0)
                        return n;
                if (vol_attached_kname(v, kname) <= 0) {
                        vol_set_error(a, false, "%s is not attached", v->backing_file);
                        return -ENXIO;
                }
        }
        snprintf(devnode, sizeof(devnode), "/dev/%s", kname);
        mounted = loopdev_in_use(kname, &why, &mp) && mp;
        if (!mounted && why && a->stage == 0) {
                /* Not mounted but open for writing or held: no offline check under it. */
                vol_set_error(a, true, "/dev/%s is in use (%s); the filesystem was not grown", kname, why);
                return -EBUSY;
        }
        ext = startswith(v->fs_type, "ext") != NULL;
        if (ext) {
                if (!mounted && a->stage == 0) {
                        /* resize2fs wants a freshly checked filesystem when offline. */
                        prog = vol_find_program("e2fsck");
                        if (!prog) {
                                vol_set_error(a, true, "e2fsck is not installed");
                                return -ENOENT;
                        }
                        argv[0] = prog, argv[1] = "-f", argv[2] = "-p", argv[3] = devnode, argv[4] = NULL;
                        return vol_run_tool(vs, a, argv);
                }
                prog = vol_find_program("resize2fs");
                if (!prog) {
                        vol_set_error(a, true, "resize2fs is not installed");
                        return -ENOENT;
                }
                a->stage = 1;
                argv[0] = prog, argv[1] = devnode, argv[2] = NULL;
                return vol_run_tool(vs, a, argv);
        }
        if ((streq(v->fs_type, "xfs") || streq(v->fs_type, "btrfs")) && mounted) {
                prog = vol_find_program(streq(v->fs_type, "xfs") ? "xfs_growfs" : "btrfs");
                if (!prog) {
                        vol_set_error(a, true, "the tool that grows %s is not installed", v->fs_type);
                        return -ENOENT;
                }
                a->stage = 1;
                if (streq(v->fs_type, "xfs"))
                        argv[0] = prog, argv[1] = mp, argv[2] = NULL;
                else
                        argv[0] = prog, argv[1] = "filesystem", argv[2] = "resize", argv[3] = "max", argv[4] = mp,
                        argv[5] = NULL;
                return vol_run_tool(vs, a, argv);
        }
        vol_set_result(a, "fs_grown", json_object_new_boolean(false));
        vol_set_result(a, "fs_reason",
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
        const char *prev = vol_param_str(a->it, "prev_state");

        if (!prev || !streq(prev, "detached"))
                return 0;
        return step_detach(vs, a);
}


/* ---- the actions ---- */

static void finish_create(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) vol_set_str(&v->state, "attached");
}

static void finish_resize(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs;
        v->size_bytes = (uint64_t) vol_param_int(a->it, "size_bytes");
        (void) vol_set_str(&v->state, vol_param_str(a->it, "prev_state") ?: "detached");
        if (v->fs_type && !a->it->result)
                vol_set_result(a, "fs_grown", json_object_new_boolean(!streq(v->fs_type, "swap")));
}

/* The file and the device may have grown, the filesystem not: the volume keeps its
 * recorded size, so the same resize again carries on from where this one stopped. */
static void partial_resize(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs;
        (void) vol_set_str(&v->state, vol_param_str(a->it, "prev_state") ?: "detached");
}

static void finish_attach(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) vol_set_str(&v->state, "attached");
}

static void finish_detach(struct volumes *vs, struct action *a, struct volume *v) {
        (void) vs, (void) a;
        (void) vol_set_str(&v->state, "detached");
}

/* A create that cannot succeed leaves nothing: no loop device, no file, no row. */
static int undo_create(struct volumes *vs, struct action *a) {
        struct volume *v = vol_find(vs, a->it->target);
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
        (void) fsync_path(vs->dir, O_RDONLY | O_DIRECTORY);
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
                vol_set_error(a, true, "%s is no longer a regular file", v->backing_file);
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
        (void) vol_set_str(&v->state, vol_attached_kname(v, kname) > 0 ? "attached" : "detached");
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
static const struct step_def format_steps[] = { { "check", dev_step_blank, true }, { "mkfs", dev_step_format, true } };
static const struct step_def run_steps[] = { { "run", dev_step_run, true } };
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
        { "device.format-if-blank", format_steps, ELEMENTSOF(format_steps), dev_finish_nothing, NULL },
        { "device.run", run_steps, ELEMENTSOF(run_steps), dev_finish_nothing, NULL, NULL, true },
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

json_object *vol_to_json(struct volumes *vs, const struct volume *v) {
        json_object *o = json_object_new_object();
        struct intent *open = vol_open_intent(vs, v->name);
        char ts[RFC3339_MAX], kname[32] = "", devnode[48];
        int n = vol_attached_kname(v, kname);

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
                        v = vol_find(vs, it->target);
                        if (o && v && !x->delete_reply)
                                json_object_object_add(o, "volume", vol_to_json(vs, v));
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
int vol_commit_intent(struct volumes *vs, struct intent *it, const struct volume *v, const char *delete_name,
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

static void update_drift(struct volumes *vs);

static void action_free(struct action *a) {
        if (!a)
                return;
        child_abandon(a->child);
        free(a->error);
        free(a);
}

void vol_crash_step(const struct action *a, unsigned step, const char *when) {
        char cp[256];

        snprintf(cp, sizeof(cp), "%s.%s.%s", a->op->name, a->op->steps[step].name, when);
        crashpoint(cp);
}

/* The intent has ended (succeeded, failed, rolled back): out of the open list. */
static void end_action(struct volumes *vs, struct action *a) {
        struct intent *it = a->it;

        log_msg_id(it->state == INTENT_SUCCEEDED ? LOG_LEVEL_INFO : LOG_LEVEL_WARNING,
                   it->state == INTENT_SUCCEEDED ? NULL : MSGID_INTENT_FAILED, "intent %" PRId64 " (%s %s) %s%s%s",
                   it->id, it->op, it->target, intent_state_to_string(it->state), it->last_error ? ": " : "",
                   it->last_error ?: "");
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
        struct volume *v = vol_find(vs, a->it->target);
        struct udev_device *dev;
        char kname[32] = "";

        if (v)
                (void) vol_attached_kname(v, kname);
        else if (vol_param_str(a->it, "kname"))
                snprintf(kname, sizeof(kname), "%s", vol_param_str(a->it, "kname"));
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
        struct volume *v = vol_find(vs, it->target), *nv = NULL;
        int r;

        it->state = INTENT_SUCCEEDED;
        it->step = (int) a->op->n_steps;
        it->updated = now_realtime_usec();
        free(it->last_error);
        it->last_error = NULL;
        if (v && a->op->finish) {
                nv = vol_copy(v);
                if (!nv) {
                        r = -ENOMEM;
                        goto fail;
                }
                a->op->finish(vs, a, nv);
                nv->updated = it->updated;
        }
        r = vol_commit_intent(vs, it, nv, a->op->finish ? NULL : it->target, true);
        if (r < 0)
                goto fail;
        if (nv) {
                vol_remove(vs, nv->name);
                (void) vol_add(nv, vs);
        } else
                vol_remove(vs, it->target);
        vol_crash_step(a, a->op->n_steps - 1, "recorded");
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
                vol_set_result(a, "rolling_back", json_object_new_boolean(true));
                r = vol_commit_intent(vs, it, NULL, NULL, false);
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
                (void) vol_commit_intent(vs, it, NULL, NULL, false);
                vs->running = NULL;
                action_free(a);
                return;
        }
        snprintf(cp, sizeof(cp), "%s.undo.done", a->op->name);
        crashpoint(cp);
        it->state = INTENT_ROLLED_BACK;
        it->updated = now_realtime_usec();
        r = vol_commit_intent(vs, it, NULL, it->target, true);
        if (r < 0) {
                log_error_errno(r, "intent %" PRId64 ": cannot record its end; retrying", it->id);
                it->state = INTENT_PENDING;
                vs->running = NULL;
                action_free(a);
                return;
        }
        vol_remove(vs, it->target);
        end_action(vs, a);
}

/* The current step failed. */
static void fail(struct volumes *vs, struct action *a, int err) {
        struct intent *it = a->it;
        struct volume *v = vol_find(vs, it->target), *nv = NULL;
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
                r = vol_commit_intent(vs, it, NULL, NULL, false);
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
                        r = vol_commit_intent(vs, it, NULL, it->target, true);
                        if (r == 0)
                                vol_remove(vs, it->target);
                        goto ended;
                }
                if (v) {
                        nv = vol_copy(v);
                        if (nv) {
                                if (it->step == 0)
                                        (void) vol_set_str(&nv->state, vol_param_str(it, "prev_state") ?: v->state);
                                else if (a->op->partial)
                                        a->op->partial(vs, a, nv);
                                else
                                        (void) vol_set_str(&nv->state, "failed");
                                nv->updated = it->updated;
                        }
                }
                r = vol_commit_intent(vs, it, nv, NULL, true);
                if (r == 0 && nv) {
                        vol_remove(vs, nv->name);
                        (void) vol_add(nv, vs);
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

        vol_crash_step(a, (unsigned) a->it->step, "done");
        if ((unsigned) a->it->step + 1 >= a->op->n_steps) {
                complete(vs, a);
                return;
        }
        a->it->step++;
        a->stage = 0;
        a->it->updated = now_realtime_usec();
        r = vol_commit_intent(vs, a->it, NULL, NULL, false);
        if (r < 0) {
                a->it->step--;
                vol_set_error(a, false, "cannot record the step: %s", strerror(-r));
                fail(vs, a, r);
                return;
        }
        vol_crash_step(a, (unsigned) a->it->step - 1, "recorded");
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

void vol_step_child_done(struct child *c, int status, bool timed_out, const char *output, void *userdata) {
        struct volumes *vs = userdata;
        struct action *a = vs->running;
        const char *last;
        bool ok;

        if (!a || a->child != c)
                return;
        a->child = NULL;
        if (a->op->no_retry) {
                /* A hook's outcome is part of its record. */
                vol_set_result(a, "timed_out", json_object_new_boolean(timed_out));
                vol_set_result(a, "exit_status", !timed_out && WIFEXITED(status) ? json_object_new_int(WEXITSTATUS(status))
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
                vol_set_error(a, a->op->no_retry || (!timed_out && WIFEXITED(status)), "%s %s%s%.*s", a->prog,
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
                vol_set_error(a, true, "unknown operation or step");
                a->op = &ops[0];
                it->attempts = MAX_ATTEMPTS;
                it->state = INTENT_FAILED;
                free(it->last_error);
                it->last_error = strdup("unknown operation or step");
                {
                        struct volume *v = vol_find(vs, it->target), *nv = v ? vol_copy(v) : NULL;
                        if (nv)
                                (void) vol_set_str(&nv->state, "failed");
                        if (vol_commit_intent(vs, it, nv, NULL, true) == 0 && nv) {
                                vol_remove(vs, nv->name);
                                (void) vol_add(nv, vs);
                        } else
                                volume_free(nv);
                }
                end_action(vs, a);
                return;
        }
        it->state = INTENT_RUNNING;
        it->attempts++;
        it->updated = now;
        r = vol_commit_intent(vs, it, NULL, NULL, false);
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

                if (vol_open_intent(vs, v->name))
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
        r = vstore_load_volumes(d->journal, vol_add, vs);
        if (r == 0)
                r = vstore_load_intents(d->journal, true, 0, vol_add_open, vs);
        if (r == 0) {
                _cleanup_free_ char *cur = NULL;
                /* Events since the last run's cursor include what appeared meanwhile. */
                if (journal_meta_get(d->journal, "on_appear_seq", &cur) < 0 || !cur ||
                    parse_int64(cur, &vs->event_cursor) < 0 || !dev_any_on_appear(vs))
                        vs->event_cursor = journal_last_seq(d->journal);
        }
        if (r < 0) {
                volumes_free(vs);
                return log_error_errno(r, "cannot load volumes and intents");
        }
        *ret = vs;
        return 0;
}

int volumes_reload(struct volumes *vs) {
        struct volumes fresh = { .d = vs->d };
        int r;

        if (vs->running || vs->n_open > 0)
                return -EBUSY;
        r = vstore_load_volumes(vs->d->journal, vol_add, &fresh);
        if (r < 0) {
                for (size_t i = 0; i < fresh.n_vols; i++)
                        volume_free(fresh.vols[i]);
                free(fresh.vols);
                return r;
        }
        for (size_t i = 0; i < vs->n_vols; i++)
                volume_free(vs->vols[i]);
        free(vs->vols);
        vs->vols = fresh.vols;
        vs->n_vols = fresh.n_vols;
        update_drift(vs);
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

                if (!streq(v->state, "attached") || vol_open_intent(vs, v->name) || vol_attached_kname(v, kname) != 0)
                        continue;
                /* Once per failure, not once per pass: a failed re-attach stays visible in
                 * the intents until an action on the volume succeeds. */
                if (vstore_last_intent(vs->d->journal, v->name, NULL, &last) < 0 ||
                    (last && streq(last->op, "volume.attach") && last->state != INTENT_SUCCEEDED))
                        continue;
                log_info("volume %s should be attached and is not: attaching it", v->name);
                (void) vol_start_intent(vs, "volume.attach", v->name, NULL, NULL, NULL, NULL);
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

/* ---- starting intents ---- */

int vol_start_intent(struct volumes *vs, const char *op, const char *target, json_object *params,
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
        r = vol_commit_intent(vs, it, row, NULL, false);
        if (r < 0) {
                intent_free(it);
                volume_free(row);
                return r;
        }
        if (row) {
                vol_remove(vs, row->name);
                r = vol_add(row, vs);
        }
        r = vol_add_open(it, vs);
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
