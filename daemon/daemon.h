/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's shared state: one instance, owned by main.c, reached by the modules that
 * make up the data flow (event -> observe/probe -> reconcile -> ledger/journal -> server). */
#pragma once

#include <libudev.h>
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "ledger.h"
#include "monitor.h"
#include "options.h"
#include "server.h"

struct pending_event {
        char *kname;
        struct udev_device *dev; /* NULL for "remove" */
};

struct daemon {
        struct options opts;
        struct ev_loop *loop;
        struct journal *journal;
        struct ledger ledger;
        struct udev *udev;
        struct monitor *monitor;
        struct server *server;
        struct ev_io *signal_io;
        struct ev_timer *tick;
        int signal_fd;
        int state_lock_fd;
        int socket_fd;
        int socket_lock_fd;

        /* Events waiting for the end of the loop iteration (one reconcile per batch). */
        struct pending_event *pending;
        size_t n_pending;
        bool full_scan_requested;
        struct ev_defer batch_defer;

        int64_t started_at;      /* realtime usec */
        int64_t last_full_scan;  /* realtime usec, 0 = never */
        int64_t next_full_scan;  /* monotonic usec */
        int64_t next_source_check;
        uint64_t event_overflows;
};

/* reconcile.c */
int reconcile_full_scan(struct daemon *d, struct ledger_stats *ret_stats);
void reconcile_queue_device(struct daemon *d, struct udev_device *dev);
void reconcile_request_full_scan(struct daemon *d);
void reconcile_done(struct daemon *d);

/* methods.c */
extern const struct method daemon_methods[];
extern const struct server_history daemon_history;
