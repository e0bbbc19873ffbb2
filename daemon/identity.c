/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "identity.h"
#include "util.h"

/*
 * Order, strongest first (the first that the device has wins):
 *   1. wwn:WWN                the disk's world wide name (normalized, see device.c)
 *   2. serial:MODEL:SERIAL    model and serial number
 *   3. loop:MAJ:MIN:INODE     a loop device's backing file, by device and inode
 *      loopfile:PATH          ... by path when the file cannot be looked up
 *   4. fsuuid:UUID            filesystem UUID
 *      ptuuid:UUID            partition table UUID
 *   5. path:ID_PATH           udev's hardware path (weak: names a slot)
 *   6. kname:NAME             kernel name (weak)
 * Partitions are keyed by their partition-table entry (partuuid:UUID) first, then by the
 * disk's key (steps 1 to 3) with "/partN" appended, then like disks from step 4 on. The
 * disk's key comes from X:parent_identity, which observe.c computes from the disk's own
 * observation; observations recorded without it (udevadm info) fall back to udev's
 * copies of the disk's properties on the partition.
 */

/* "kind:a" or "kind:a:b". Facts are valid UTF-8 already, but a partition's fallback
 * takes udev's raw copies of the disk's properties: a key is stored and sent to
 * clients, whose strict parser refuses a reply with one invalid byte. */
static char *key(const char *kind, const char *a, const char *b) {
        char *s, *clean;

        if (b ? asprintf(&s, "%s:%s:%s", kind, a, b) < 0 : asprintf(&s, "%s:%s", kind, a) < 0)
                return NULL;
        clean = utf8_sanitize(s, strlen(s));
        free(s);
        return clean;
}

/* A disk's hardware key from udev's copies, which partitions carry too. */
static char *disk_hw_key(const struct observation *o, const struct device_facts *f) {
        const char *wwn = f->wwn, *serial = f->serial, *model = f->model;

        if (!wwn)
                wwn = observation_get(o, "E:ID_WWN_WITH_EXTENSION");
        if (!wwn)
                wwn = observation_get(o, "E:ID_WWN");
        if (!isempty(wwn)) {
                /* Facts are normalized already; udev's spelling is the normalized one. */
                return key("wwn", wwn, NULL);
        }
        if (!serial)
                serial = observation_get(o, "E:ID_SERIAL_SHORT");
        if (!model)
                model = observation_get(o, "E:ID_MODEL");
        if (!isempty(serial))
                return key("serial", model ? model : "", serial);
        return NULL;
}

char *identity_from_observation(const struct observation *o, const struct device_facts *f) {
        bool partition = streq_ptr(f->devtype, "partition");
        const char *dev = observation_get(o, "X:backing_dev");
        const char *ino = observation_get(o, "X:backing_ino");
        char *k;

        if (partition) {
                const char *pk = observation_get(o, "X:parent_identity");
                if (f->part_uuid)
                        return key("partuuid", f->part_uuid, NULL);
                k = !isempty(pk) ? strdup(pk) : disk_hw_key(o, f);
                if (k && f->part_number != FIELD_NULL) {
                        char *s;
                        int r = asprintf(&s, "%s/part%lld", k, (long long) f->part_number);
                        free(k);
                        return r < 0 ? NULL : s;
                }
                free(k);
        } else {
                k = disk_hw_key(o, f);
                if (k)
                        return k;
                if (f->loop_backing_file) {
                        if (!isempty(dev) && !isempty(ino))
                                return key("loop", dev, ino);
                        return key("loopfile", f->loop_backing_file, NULL);
                }
        }
        if (f->fs_uuid)
                return key("fsuuid", f->fs_uuid, NULL);
        if (f->pt_uuid)
                return key("ptuuid", f->pt_uuid, NULL);
        if (f->id_path)
                return key("path", f->id_path, NULL);
        return key("kname", f->kname ? f->kname : "?", NULL);
}

bool identity_is_hardware(const char *k) {
        return startswith(k, "wwn:") || startswith(k, "serial:") || startswith(k, "loop:") ||
               startswith(k, "loopfile:");
}

bool identity_is_weak(const char *k) {
        return startswith(k, "path:") || startswith(k, "kname:");
}

int identity_aux_from_observation(const struct observation *o, const char *k, char **ret_aux) {
        const char *btime = observation_get(o, "X:backing_btime");

        *ret_aux = NULL;
        if (!startswith(k, "loop:") || isempty(btime))
                return 0;
        *ret_aux = strdup(btime);
        return *ret_aux ? 0 : -ENOMEM;
}

bool identity_aux_compatible(const char *a, const char *b) {
        return !a || !b || streq(a, b);
}

const char *identity_kind(const char *k) {
        static const struct {
                const char *prefix, *kind;
        } kinds[] = {
                { "wwn:", "wwn" },         { "serial:", "serial" },   { "loop:", "loop" },
                { "loopfile:", "loop" },   { "partuuid:", "part_uuid" }, { "fsuuid:", "fs_uuid" },
                { "ptuuid:", "pt_uuid" },
        };

        for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                if (startswith(k, kinds[i].prefix))
                        return kinds[i].kind;
        return "weak";
}
