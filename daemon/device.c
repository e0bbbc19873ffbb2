/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ctype.h>
#include <stddef.h>

#include "device.h"
#include "identity.h"
#include "util.h"

const struct field_desc device_fields[] = {
#define X(name, type) { #name, FIELD_##type, offsetof(struct device_facts, name) },
        DEVICE_FIELDS(X)
#undef X
};
const size_t device_fields_count = ELEMENTSOF(device_fields);

/* The loop driver's block major (Documentation/admin-guide/devices.txt). */
#define LOOP_MAJOR_STR "7"

const char *device_state_to_string(enum device_state s) {
        return s == DEVICE_PRESENT ? "present" : "gone";
}

const char *device_record_state_string(const struct device_record *r) {
        if (r->state == DEVICE_PRESENT && r->unresponsive_since)
                return "unresponsive";
        return device_state_to_string(r->state);
}

int device_state_from_string(const char *s) {
        if (streq(s, "present"))
                return DEVICE_PRESENT;
        if (streq(s, "gone"))
                return DEVICE_GONE;
        return -EINVAL;
}

size_t strv_length(char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

char **strv_copy(char *const *v) {
        size_t n = strv_length(v);
        char **c = calloc(n + 1, sizeof(char *));

        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        strv_free(c);
                        return NULL;
                }
        return c;
}

bool strv_equal(char *const *a, char *const *b) {
        size_t n = strv_length(a);

        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

void device_facts_init(struct device_facts *f) {
        memset(f, 0, sizeof(*f));
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                if (d->type == FIELD_INT || d->type == FIELD_BOOL)
                        *(int64_t *) device_field_ptr(f, d) = FIELD_NULL;
        }
}

void device_facts_done(struct device_facts *f) {
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                if (d->type == FIELD_STR)
                        free(*(char **) device_field_ptr(f, d));
                else if (d->type == FIELD_STRV)
                        strv_free(*(char ***) device_field_ptr(f, d));
        }
        device_facts_init(f);
}

int device_facts_copy(struct device_facts *dst, const struct device_facts *src) {
        device_facts_init(dst);
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                const void *s = device_field_cptr(src, d);
                void *t = device_field_ptr(dst, d);

                switch (d->type) {
                case FIELD_STR:
                        if (*(char *const *) s && !(*(char **) t = strdup(*(char *const *) s)))
                                goto oom;
                        break;
                case FIELD_STRV:
                        if (!(*(char ***) t = strv_copy(*(char **const *) s)))
                                goto oom;
                        break;
                default:
                        *(int64_t *) t = *(const int64_t *) s;
                }
        }
        return 0;
oom:
        device_facts_done(dst);
        return -ENOMEM;
}

void device_record_free(struct device_record *r) {
        if (!r)
                return;
        free(r->identity);
        free(r->identity_aux);
        free(r->name);
        free(r->udev_name);
        device_facts_done(&r->facts);
        free(r);
}

/* Every string the ledger stores is valid UTF-8: hostile or broken values cannot make its
 * JSON invalid. Control characters are kept (JSON escapes them) and escaped on terminals. */
static int set_str(char **field, const char *value) {
        free(*field);
        *field = NULL;
        if (isempty(value))
                return 0;
        *field = utf8_sanitize(value, strlen(value));
        return *field ? 0 : -ENOMEM;
}

static int set_str_stripped(char **field, const char *value) {
        _cleanup_free_ char *s = NULL;

        if (isempty(value))
                return set_str(field, NULL);
        s = strdup_strip(value);
        if (!s)
                return -ENOMEM;
        return set_str(field, s);
}

static void set_int(int64_t *field, const char *value) {
        int64_t v;
        *field = (value && parse_int64(value, &v) == 0) ? v : FIELD_NULL;
}

static void set_bool(int64_t *field, const char *value) {
        if (value && streq(value, "1"))
                *field = 1;
        else if (value && streq(value, "0"))
                *field = 0;
        else
                *field = FIELD_NULL;
}

/* udev's *_ENC properties escape unsafe bytes as \xNN. */
static char *udev_decode(const char *s) {
        char *out = malloc(strlen(s) + 1), *o = out;

        if (!out)
                return NULL;
        while (*s) {
                if (s[0] == '\\' && s[1] == 'x' && isxdigit((unsigned char) s[2]) &&
                    isxdigit((unsigned char) s[3])) {
                        char hex[3] = { s[2], s[3], 0 };
                        char c = (char) strtoul(hex, NULL, 16);
                        if (c != 0)
                                *o++ = c;
                        s += 4;
                } else
                        *o++ = *s++;
        }
        *o = 0;
        return out;
}

static const char *first_of(const struct observation *o, const char *const *keys) {
        for (; *keys; keys++) {
                const char *v = observation_get(o, *keys);
                if (!isempty(v))
                        return v;
        }
        return NULL;
}

/* WWNs read from sysfs ("naa.5000c500a1b2c3d4") and from udev ("0x5000c500a1b2c3d4") name
 * the same thing; one spelling keeps identities stable whichever source was used. */
char *wwn_normalize(const char *w) {
        _cleanup_free_ char *s = strdup_strip(w);
        char *out;

        if (!s || !*s)
                return NULL;
        for (char *p = s; *p; p++)
                *p = (char) tolower((unsigned char) *p);
        if (startswith(s, "naa.")) {
                if (asprintf(&out, "0x%s", s + 4) < 0)
                        return NULL;
                return out;
        }
        return TAKE_PTR(s);
}

bool observation_is_device(const struct observation *o) {
        const char *major = observation_get(o, "E:MAJOR");
        const char *devtype = observation_get(o, "E:DEVTYPE");

        /* A loop node with no file attached is only a slot; losetup -d leaves the node
         * in place and sends "change", not "remove". */
        if (major && streq(major, LOOP_MAJOR_STR) && streq_ptr(devtype, "disk"))
                return !isempty(observation_get(o, "A:loop/backing_file"));
        return true;
}

int device_facts_from_observation(const struct observation *o, struct device_facts *ret) {
        static const char *const model_keys[] = { "A:device/model", NULL };
        static const char *const serial_keys[] = { "A:device/serial", "A:serial", NULL };
        static const char *const wwn_sys_keys[] = { "A:wwid", "A:device/wwid", NULL };
        static const char *const wwn_udev_keys[] = { "E:ID_WWN_WITH_EXTENSION", "E:ID_WWN", NULL };
        struct device_facts f;
        const char *v, *major, *minor;
        bool partition, probed;
        int r = -ENOMEM;

        device_facts_init(&f);
        partition = streq_ptr(observation_get(o, "E:DEVTYPE"), "partition");
        probed = !isempty(observation_get(o, "X:probed"));

        if (set_str(&f.kname, o->kname) < 0)
                goto fail;
        v = observation_get(o, "X:devnode");
        if (!v && (v = observation_get(o, "E:DEVNAME")) && v[0] != '/') {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "/dev/%s", v) < 0 || set_str(&f.devnode, p) < 0)
                        goto fail;
        } else if (set_str(&f.devnode, v) < 0)
                goto fail;

        major = observation_get(o, "E:MAJOR");
        minor = observation_get(o, "E:MINOR");
        if (major && minor) {
                int64_t ma, mi;
                _cleanup_free_ char *dev = NULL;
                if (parse_int64(major, &ma) == 0 && parse_int64(minor, &mi) == 0 && ma >= 0 && mi >= 0) {
                        if (asprintf(&dev, "%lld:%lld", (long long) ma, (long long) mi) < 0)
                                goto fail;
                        if (set_str(&f.dev, dev) < 0)
                                goto fail;
                }
        }
        if (set_str(&f.devtype, observation_get(o, "E:DEVTYPE")) < 0)
                goto fail;

        /* sysfs counts 512-byte sectors whatever the device's block size. */
        set_int(&f.size_bytes, observation_get(o, "A:size"));
        if (f.size_bytes != FIELD_NULL) {
                if (f.size_bytes < 0 || f.size_bytes > INT64_MAX / 512)
                        f.size_bytes = FIELD_NULL;
                else
                        f.size_bytes *= 512;
        }
        set_bool(&f.read_only, observation_get(o, "A:ro"));
        set_bool(&f.removable, observation_get(o, "A:removable"));
        set_bool(&f.rotational, observation_get(o, "A:queue/rotational"));
        set_int(&f.logical_block_size, observation_get(o, "A:queue/logical_block_size"));
        set_int(&f.physical_block_size, observation_get(o, "A:queue/physical_block_size"));
        set_int(&f.diskseq, first_of(o, (const char *const[]) { "A:diskseq", "E:DISKSEQ", NULL }));

        /* Model, serial and WWN describe the disk; partitions inherit udev's copies of
         * them, which identity.c uses, but they are not facts of the partition itself. */
        if (!partition) {
                v = first_of(o, model_keys);
                if (v) {
                        if (set_str_stripped(&f.model, v) < 0)
                                goto fail;
                } else if ((v = observation_get(o, "E:ID_MODEL_ENC"))) {
                        _cleanup_free_ char *d = udev_decode(v);
                        if (!d || set_str_stripped(&f.model, d) < 0)
                                goto fail;
                } else if (set_str_stripped(&f.model, observation_get(o, "E:ID_MODEL")) < 0)
                        goto fail;

                v = first_of(o, serial_keys);
                if (!v)
                        v = observation_get(o, "E:ID_SERIAL_SHORT");
                if (set_str_stripped(&f.serial, v) < 0)
                        goto fail;

                v = first_of(o, wwn_sys_keys);
                if (!v)
                        v = first_of(o, wwn_udev_keys);
                if (v) {
                        _cleanup_free_ char *w = wwn_normalize(v);
                        if (set_str(&f.wwn, w) < 0)
                                goto fail;
                }
        }

        /* Content: our own libblkid probe when it ran, else what udev's probe recorded. */
        {
                const char *const *keys;
                static const char *const blkid_keys[] = {
                        "B:TYPE", "B:UUID", "B:LABEL", "B:VERSION", "B:USAGE",
                        "B:PTTYPE", "B:PTUUID", "B:PART_ENTRY_UUID",
                };
                static const char *const udev_keys[] = {
                        "E:ID_FS_TYPE", "E:ID_FS_UUID", "E:ID_FS_LABEL_ENC", "E:ID_FS_VERSION",
                        "E:ID_FS_USAGE", "E:ID_PART_TABLE_TYPE", "E:ID_PART_TABLE_UUID",
                        "E:ID_PART_ENTRY_UUID",
                };
                char **targets[] = {
                        &f.fs_type, &f.fs_uuid, &f.fs_label, &f.fs_version,
                        &f.fs_usage, &f.pt_type, &f.pt_uuid, &f.part_uuid,
                };

                keys = probed ? blkid_keys : udev_keys;
                for (size_t i = 0; i < ELEMENTSOF(targets); i++) {
                        v = observation_get(o, keys[i]);
                        if (!probed && v && streq(keys[i], "E:ID_FS_LABEL_ENC")) {
                                _cleanup_free_ char *d = udev_decode(v);
                                if (!d || set_str(targets[i], d) < 0)
                                        goto fail;
                        } else if (set_str(targets[i], v) < 0)
                                goto fail;
                }
                /* On partitions udev copies the disk's table type; it is not the
                 * partition's own. */
                if (partition && !probed) {
                        set_str(&f.pt_type, NULL);
                        set_str(&f.pt_uuid, NULL);
                }
        }

        if (partition)
                set_int(&f.part_number, first_of(o, (const char *const[]) { "A:partition", "E:PARTN", NULL }));
        if (set_str(&f.parent, observation_get(o, "X:parent")) < 0)
                goto fail;

        v = observation_get(o, "X:holders");
        {
                size_t n = 0;
                char **h = calloc(1, sizeof(char *));
                if (!h)
                        goto fail;
                f.holders = h;
                if (!isempty(v)) {
                        _cleanup_free_ char *copy = strdup(v);
                        char *save = NULL;
                        if (!copy)
                                goto fail;
                        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                                h = realloc(f.holders, (n + 2) * sizeof(char *));
                                if (!h)
                                        goto fail;
                                f.holders = h;
                                h[n] = utf8_sanitize(t, strlen(t));
                                h[n + 1] = NULL;
                                if (!h[n])
                                        goto fail;
                                n++;
                        }
                }
        }

        if (set_str(&f.loop_backing_file, observation_get(o, "A:loop/backing_file")) < 0)
                goto fail;
        if (set_str(&f.id_path, observation_get(o, "E:ID_PATH")) < 0)
                goto fail;

        *ret = f;
        return 0;
fail:
        device_facts_done(&f);
        return r;
}

static bool field_equal(const struct device_facts *a, const struct device_facts *b,
                        const struct field_desc *d) {
        const void *x = device_field_cptr(a, d), *y = device_field_cptr(b, d);

        switch (d->type) {
        case FIELD_STR:
                return streq_ptr(*(char *const *) x, *(char *const *) y);
        case FIELD_STRV:
                return strv_equal(*(char **const *) x, *(char **const *) y);
        default:
                return *(const int64_t *) x == *(const int64_t *) y;
        }
}

json_object *device_field_to_json(const struct device_facts *f, const struct field_desc *d) {
        const void *p = device_field_cptr(f, d);

        switch (d->type) {
        case FIELD_STR: {
                const char *s = *(char *const *) p;
                return s ? json_object_new_string(s) : NULL;
        }
        case FIELD_INT: {
                int64_t v = *(const int64_t *) p;
                return v == FIELD_NULL ? NULL : json_object_new_int64(v);
        }
        case FIELD_BOOL: {
                int64_t v = *(const int64_t *) p;
                return v == FIELD_NULL ? NULL : json_object_new_boolean(v != 0);
        }
        case FIELD_STRV: {
                char **v = *(char **const *) p;
                json_object *a = json_object_new_array();
                for (size_t i = 0; a && v && v[i]; i++)
                        json_object_array_add(a, json_object_new_string(v[i]));
                return a;
        }
        }
        return NULL;
}

int device_facts_diff(const struct device_facts *old, const struct device_facts *new,
                      json_object **ret_before, json_object **ret_after) {
        json_object *before = NULL, *after = NULL;
        int n = 0;

        if (ret_before && !(before = json_object_new_object()))
                return -ENOMEM;
        if (ret_after && !(after = json_object_new_object())) {
                json_object_put(before);
                return -ENOMEM;
        }
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                if (field_equal(old, new, d))
                        continue;
                n++;
                if (before)
                        json_object_object_add(before, d->name, device_field_to_json(old, d));
                if (after)
                        json_object_object_add(after, d->name, device_field_to_json(new, d));
        }
        if (ret_before)
                *ret_before = before;
        if (ret_after)
                *ret_after = after;
        return n;
}

int device_facts_to_json(const struct device_facts *f, json_object *obj) {
        for (size_t i = 0; i < device_fields_count; i++)
                json_object_object_add(obj, device_fields[i].name,
                                       device_field_to_json(f, &device_fields[i]));
        return 0;
}

json_object *device_record_to_json(const struct device_record *r, json_object *drift) {
        json_object *o = json_object_new_object();
        char ts[RFC3339_MAX];

        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_object_new_int64(r->id));
        json_object_object_add(o, "name", r->name ? json_object_new_string(r->name) : NULL);
        json_object_object_add(o, "identity", json_object_new_string(r->identity ? r->identity : ""));
        json_object_object_add(o, "identity_kind", json_object_new_string(identity_kind(r->identity ? r->identity : "")));
        json_object_object_add(o, "state", json_object_new_string(device_record_state_string(r)));
        device_facts_to_json(&r->facts, o);
        json_object_object_add(o, "first_seen", json_object_new_string(format_rfc3339(r->first_seen, ts)));
        json_object_object_add(o, "last_seen", json_object_new_string(format_rfc3339(r->last_seen, ts)));
        /* Facts are as fresh as their last check: say when that was and whether this run
         * has done it yet. */
        json_object_object_add(o, "unresponsive_since",
                               r->unresponsive_since ? json_object_new_string(format_rfc3339(r->unresponsive_since, ts))
                                                     : NULL);
        json_object_object_add(o, "verified", json_object_new_boolean(r->verified_pass != 0));
        json_object_object_add(o, "last_verified",
                               r->last_verified ? json_object_new_string(format_rfc3339(r->last_verified, ts)) : NULL);
        json_object_object_add(o, "drift", drift ? json_object_get(drift) : json_object_new_array());
        /* The ledger does not know volumes: methods.c fills it in. */
        json_object_object_add(o, "volume", NULL);
        return o;
}
