/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Reading an observation from the system: udev properties, sysfs attributes, the backing
 * file of loop devices. Nothing here opens the device itself; content is probe.c's job. */
#pragma once

#include <libudev.h>

#include "observation.h"

int observe_udev_device(struct udev_device *d, struct observation *ret);

/* A libudev context of the calling thread (libudev objects must not cross threads);
 * freed when the thread ends. NULL without memory. */
struct udev *observe_thread_udev(void);
