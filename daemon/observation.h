/* SPDX-License-Identifier: GPL-2.0-or-later */
/* An observation: the raw facts read about one block device at one moment, as key/value
 * pairs, before any interpretation. Keys are namespaced by where they came from:
 *   E:KEY   udev property (from the event or udev's database)
 *   A:attr  sysfs attribute, relative to the device's sysfs directory
 *   B:KEY   libblkid probe result
 *   X:key   derived by the daemon (devnode, parent, holders, backing file's inode, ...)
 * Interpretation (device.c) is a pure function of this, so unit tests feed it recorded
 * observations of hardware that loop devices cannot imitate. The text form (one
 * "KEY=VALUE" per line, '#' comments) is what `blkledgerd --observe DEV` prints. */
#pragma once

#include <stddef.h>

/* Bounds against hostile or broken sources: values longer than this are cut, keys or
 * entries beyond these limits are dropped. */
#define OBS_VALUE_MAX 4096
#define OBS_KEY_MAX 256
#define OBS_ENTRIES_MAX 512
/* Entries kept free of udev properties for sysfs attributes and derived keys. */
#define OBS_RESERVED 64

struct obs_entry {
        char *key;
        char *value;
};

struct observation {
        char *kname;
        struct obs_entry *entries;
        size_t n_entries;
};

/* Adds or replaces key. Returns 0, -E2BIG when the observation is full, -EINVAL for
 * a malformed key. Values are copied and cut at OBS_VALUE_MAX bytes. */
int observation_set(struct observation *o, const char *key, const char *value);
const char *observation_get(const struct observation *o, const char *key);
/* Adds udev property name=value as "E:name", within the bounds for what udev (or a
 * hostile rule) hands us: a name that cannot be a key is dropped (0), and once the
 * entries for udev properties are used up it returns -ENOSPC, so the caller stops
 * (the rest stays free for sysfs and derived keys). -ENOMEM is the only failure. */
int observation_add_udev_property(struct observation *o, const char *name, const char *value);
void observation_done(struct observation *o);

/* Text form. Parse errors name the line in *ret_line. */
int observation_parse(const char *text, struct observation *ret, unsigned *ret_line);
int observation_format(const struct observation *o, char **ret);
