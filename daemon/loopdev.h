/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Loop devices of the daemon's own volumes: finding the device that holds a file,
 * attaching, detaching, growing, and telling whether a device is in use.
 *
 * The kernel is the only source of truth for which loop device holds a file: nothing
 * here is cached. A file is matched by the path the kernel reports in sysfs (computed
 * when read, so it follows renames; " (deleted)" once unlinked) and then, while the file
 * exists, by its device and inode (LOOP_GET_STATUS64): a path reused by another file
 * does not match. Paths in another mount namespace are not seen. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define LOOPDEV_MAX 8

/* Kernel names ("loop3") of every loop device attached to file, at most LOOPDEV_MAX.
 * Returns how many, 0 when none, negative errno when file cannot be examined. */
int loopdev_find(const char *file, char knames[][32], unsigned max);

/* Attaches file read-write to a free loop device; *ret_kname is set ("loop7"). */
int loopdev_attach(const char *file, char ret_kname[static 32]);

/* Detaches; a device that is open elsewhere is detached by the kernel when it is last
 * closed (autoclear). -ENXIO when nothing is attached. */
int loopdev_detach(const char *kname);

/* Tells the loop driver that the backing file changed size. */
int loopdev_set_capacity(const char *kname);

/* Size in bytes the kernel gives the device. */
int loopdev_size(const char *kname, uint64_t *ret);

/* Whether the device is busy: mounted, held by another device, claimed exclusively
 * (O_EXCL fails: a mount this namespace does not show, such as btrfs with its anonymous
 * device numbers, or a device-mapper holder), or open for writing by a process. On true,
 * *ret_why (allocated) says how. Also fills *ret_mountpoint with the first mount point
 * found, if any (may be NULL). */
bool loopdev_in_use(const char *kname, char **ret_why, char **ret_mountpoint);
