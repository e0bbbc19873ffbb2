/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Content probing: what is written on a device (filesystem, swap, LUKS, partition
 * table), decided by libblkid. The device is opened read-only and closed again at once:
 * a close after a write would make udev re-probe, and a descriptor kept open would block
 * loop detach and keep removed disks alive. */
#pragma once

#include "observation.h"

/* Probes devnode and stores libblkid's results as B:KEY entries of o; sets X:probed.
 * On failure records X:probe_error and returns negative errno. */
int probe_content(const char *devnode, struct observation *o);
