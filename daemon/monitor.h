/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Device events: systemd-udevd's monitor when udevd runs (events after its rules ran,
 * with its properties), else the kernel's uevents. Events are hints that say "look at
 * this device"; the reconciler decides. A netlink overflow (ENOBUFS) means events were
 * lost, which only a full scan can heal. */
#pragma once

#include <libudev.h>
#include <stdbool.h>

#include "evloop.h"

enum event_source { EVENT_SOURCE_AUTO, EVENT_SOURCE_UDEV, EVENT_SOURCE_KERNEL };

struct monitor;

struct monitor_callbacks {
        /* dev is borrowed; take a reference to keep it. */
        void (*device)(struct udev_device *dev, void *userdata);
        void (*overflow)(void *userdata);
        /* The source switched (udevd started or stopped): events may be missing. */
        void (*source_changed)(void *userdata);
};

int monitor_new(struct udev *udev, struct ev_loop *loop, enum event_source mode, int rcvbuf,
                const struct monitor_callbacks *cb, void *userdata, struct monitor **ret);
struct monitor *monitor_free(struct monitor *m);
/* "udev" or "kernel". */
const char *monitor_source_name(const struct monitor *m);
/* In auto mode, follows udevd starting or stopping. Called periodically. */
void monitor_check_source(struct monitor *m);

/* Whether systemd-udevd answers on its control socket. */
bool udevd_is_running(void);
int event_source_from_string(const char *s);
