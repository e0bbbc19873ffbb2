/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Identity: the key that matches what is observed now to a record of the ledger, across
 * renames (sdb comes back as sdc), re-attachment and restarts. Kernel names and dev_t are
 * never identity, except as the last, weak resort. */
#pragma once

#include <stdbool.h>

#include "device.h"
#include "observation.h"

/* Returns an allocated key such as "wwn:0x5000c500a1b2c3d4" (see identity.c for the
 * order), or NULL when out of memory. */
char *identity_from_observation(const struct observation *o, const struct device_facts *f);

/* What qualifies the key where it can be reused: a loop file's device and inode are
 * recycled when the file is deleted and another created, its birth time is not. NULL
 * when there is none or it is unknown (allocated otherwise; *ret_aux is set either way). */
int identity_aux_from_observation(const struct observation *o, const char *key, char **ret_aux);
/* Two qualifiers name the same device unless both are known and differ. */
bool identity_aux_compatible(const char *a, const char *b);

/* Which key identifies the device: "wwn", "serial", "loop", "part_uuid", "fs_uuid",
 * "pt_uuid", or "weak" (hardware path or kernel name). */
const char *identity_kind(const char *key);

/* Weak keys (hardware path, kernel name) name a slot, not a device. */
bool identity_is_weak(const char *key);
/* Keys of the disk itself (WWN, serial, loop backing file), which its partitions extend. */
bool identity_is_hardware(const char *key);
