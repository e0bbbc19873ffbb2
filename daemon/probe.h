/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Content probing: what is written on a device (filesystem, swap, LUKS, partition
 * table), decided by libblkid. The device is opened read-only and closed again at once:
 * a close after a write would make udev re-probe, and a descriptor kept open would block
 * loop detach and keep removed disks alive. */
#pragma once

#include <stdbool.h>

#include "observation.h"

/* Probes devnode and stores libblkid's results as B:KEY entries of o; sets X:probed.
 * On failure records X:probe_error and returns negative errno. Blocking: the daemon's
 * loop uses the probe engine (probe-engine.c); this is for --observe and tests. */
int probe_content(const char *devnode, struct observation *o);
/* The same on an open descriptor; thread-safe (the engine's workers call it, each with
 * its own observation). skip_zfs leaves out libblkid's ZFS prober, for a device whose
 * four label positions hold no ZFS label header (see probe-engine.c). */
int probe_content_fd(int fd, bool skip_zfs, struct observation *o);
