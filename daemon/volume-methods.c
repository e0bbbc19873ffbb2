/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The volume methods of io.blkledger (lib/io.blkledger.varlink): checks, idempotent
 * repeats, and the intents they start. */
#include "config.h"

#include <blkid/blkid.h>
#include <limits.h>
#include <sys/stat.h>

#include "log.h"
#include "loopdev.h"
#include "volumes-internal.h"

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
                json_object_object_add(o, "volume", vol_to_json(vs, v));
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
                struct volume *v = vol_find(vs, target);
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
        v = vol_find(vs, json_object_get_string(name));
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
        struct intent *open = vol_open_intent(vs, name);
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
        if (fs && !vol_fs_tool(fs))
                return server_reply_invalid_parameter(c, "fs_type");
        if (label && (!fs || !label_valid(label)))
                return server_reply_invalid_parameter(c, "fs_label");
        if (key && (isempty(key) || strlen(key) > 256))
                return server_reply_invalid_parameter(c, "idempotency_key");
        r = check_key(vs, c, "volume.create", name, key, false);
        if (r <= 0)
                return r;
        v = vol_find(vs, name);
        if (v) {
                /* The same create again (after a crash, or twice): its result. */
                if (v->size_bytes == (uint64_t) size && streq_ptr(v->fs_type, fs) && streq_ptr(v->fs_label, label) &&
                    !streq(v->state, "deleting") && !streq(v->state, "failed")) {
                        r = busy_or_join(vs, c, "volume.create", name, false, NULL);
                        if (r <= 0)
                                return r;
                        if (!vol_open_intent(vs, name))
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
                r = vol_start_intent(vs, "volume.create", name, ip, key, row, &it);
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
                json_object_array_add(arr, vol_to_json(vs, vs->vols[i]));
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
        struct volume *row = ip ? vol_copy(v) : NULL;
        struct intent *it;
        int r;

        if (!row) {
                json_object_put(ip);
                return -ENOMEM;
        }
        json_object_object_add(ip, "prev_state", json_object_new_string(v->state));
        if (new_state)
                (void) vol_set_str(&row->state, new_state);
        r = vol_start_intent(vs, op, v->name, ip, key, row, &it);
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
        if (streq(v->state, "attached") && vol_attached_kname(v, kname) > 0)
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
        if (streq(v->state, "detached") && vol_attached_kname(v, kname) == 0)
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

/* A volume that is not there, for an action that removes its row (delete, forget):
 * when the newest intent on the name is that action and it succeeded, the repeat (after
 * a crash or a lost reply) is done already; otherwise there is no such volume. */
static int reply_removed_already(struct volumes *vs, struct client *c, const char *name, const char *op) {
        _cleanup_(intent_freep) struct intent *last = NULL;
        int r = vstore_last_intent(vs->d->journal, name, NULL, &last);

        if (r < 0)
                return r;
        if (last && streq(last->op, op) && last->state == INTENT_SUCCEEDED)
                return reply_and_put(c, json_object_new_object());
        return reply_error2(c, "io.blkledger.NoSuchVolume", "name", name, NULL, NULL);
}

/* The checks of an action that removes the row (delete, forget): 1 with *ret set to go
 * on, else replied (0) or -errno. */
static int removable(struct volumes *vs, struct client *c, json_object *params, const char *op, struct volume **ret) {
        json_object *name_o = param_get(params, "name");
        const char *name = name_o ? json_object_get_string(name_o) : NULL;
        struct volume *v;
        int r;

        if (!name || !ledger_name_valid(name))
                return server_reply_invalid_parameter(c, "name");
        r = check_key(vs, c, op, name, key_of(params), true);
        if (r <= 0)
                return r;
        v = vol_find(vs, name);
        if (!v)
                return reply_removed_already(vs, c, name, op);
        r = busy_or_join(vs, c, op, v->name, true, params);
        if (r <= 0)
                return r;
        if (!settled(v))
                return reply_busy_state(c, v);
        *ret = v;
        return 1;
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
        json_object *force_o = param_get(params, "force"), *keep_o = param_get(params, "keep_file"), *ip;
        bool force = force_o && json_object_get_boolean(force_o), keep = keep_o && json_object_get_boolean(keep_o);
        struct volume *v;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        r = removable(vs, c, params, "volume.delete", &v);
        if (r <= 0)
                return r;
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
        v = vol_find(vs, name);
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
        r = vol_start_intent(vs, "volume.adopt", name, NULL, key_of(params), row, &it);
        if (r < 0)
                return r;
        log_info("volume %s: adoption of %s requested by uid %d", name, canon, (int) client_uid(c));
        return add_waiter(vs, c, it->id, false);
}

int method_forget_volume(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "name", PARAM_STRING }, { "idempotency_key", PARAM_STRING }, {} };
        struct volumes *vs = get_vs(userdata);
        struct volume *v;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        r = removable(vs, c, params, "volume.forget", &v);
        if (r <= 0)
                return r;
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
