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

/* Weak keys (hardware path, kernel name) name a slot, not a device. */
bool identity_is_weak(const char *key);
/* Keys of the disk itself (WWN, serial, loop backing file), which its partitions extend. */
bool identity_is_hardware(const char *key);
