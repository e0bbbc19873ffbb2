/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's shared state: one instance, owned by main.c, reached by the modules that
 * make up the data flow (event -> observe/probe -> reconcile -> ledger/journal -> server). */
#pragma once

#include <libudev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "drift.h"
#include "evloop.h"
#include "ledger.h"
#include "monitor.h"
#include "options.h"
#include "server.h"

struct pending_event {
        char *kname;
        struct udev_device *dev; /* NULL for "remove" */
};

/* An action a udev rule asked for (ENV{BLKLEDGER_ON_ADD}), waiting for the device's
 * record. */
struct udev_action {
        char *kname;
        char *action;
        uint64_t seqnum;
        int64_t expires; /* monotonic usec */
};

struct pass;
struct pass_waiter;
struct batch;
struct probing;
struct observing;
struct enumerating;
struct probe_engine;
struct volumes;
struct retention;

struct daemon {
        struct options opts;
        struct ev_loop *loop;
        struct journal *journal;
        struct ledger ledger;
        struct drift_state drift;
        struct udev *udev;
        struct monitor *monitor;
        struct server *server;
        struct ev_io *signal_io;
        struct ev_timer *tick;
        int signal_fd;
        int state_lock_fd;
        int socket_fd;
        int socket_lock_fd;
        bool socket_activated; /* the listening socket came from the service manager */

        /* Events waiting for the end of the loop iteration (one reconcile per batch). */
        struct pending_event *pending;
        size_t n_pending;
        struct udev_action *udev_actions;
        size_t n_udev_actions;
        struct ev_defer batch_defer;

        /* Observations waiting for probes, applied in order; the probes themselves. */
        struct probe_engine *probes;
        struct volumes *volumes; /* managed volumes and the intents on them */
        struct retention *retention; /* pruning of old events (retention.c) */
        struct batch *batches;
        struct probing *probing;
        struct observing *observing;
        struct enumerating *enumerating; /* a pass's list of devices, being made */

        /* Full passes: the running one, whether another is wanted, who waits for it. */
        struct pass *pass;
        bool pass_requested;
        struct pass_waiter *next_waiters;
        struct ev_defer pass_defer;
        bool initial_pass_done;
        /* Called once the first pass is in the journal (main.c starts serving). */
        void (*on_initial_pass)(struct daemon *d);

        int64_t started_at;      /* realtime usec */
        int64_t last_full_scan;  /* realtime usec, 0 = never */
        int64_t last_backup;     /* realtime usec, 0 = never */
        int64_t next_backup;     /* realtime usec of the next scheduled one, 0 = not planned */
        int64_t next_full_scan;  /* monotonic usec, 0 = none planned */
        int64_t next_source_check;
        json_object *last_recovery; /* the last restore of a corrupt ledger (meta), or NULL */
        int degraded_logged;     /* the journal's degraded state as last logged */
        unsigned commit_failures; /* device changes not recorded in a row: the retry's backoff */
        uint64_t rescans;        /* passes completed since start */
        uint64_t overflows;      /* netlink overflows since start */
};

/* reconcile.c */
void reconcile_queue_device(struct daemon *d, struct udev_device *dev);
/* Asks for a full pass; waiter (may be NULL) is answered when a pass that started after
 * this call completes. */
void reconcile_request_pass(struct daemon *d, struct server_call *waiter);
bool reconcile_pass_running(const struct daemon *d);
/* Brings the recorded drift in line with the ledger (after the first pass). */
void reconcile_evaluate_drift(struct daemon *d);
/* Names changed outside a batch (SetName): udev is told, for its by-ledger links. */
void reconcile_names_changed(struct daemon *d);
/* A device that did not answer reads answers again: look at it. */
void reconcile_device_answered(struct daemon *d, dev_t devnum);
/* Shutdown: reconcile_done() before the probe engine goes, reconcile_free_probes() after. */
void reconcile_done(struct daemon *d);
void reconcile_free_probes(struct daemon *d);

/* backup.c: an online backup now (records its time); *ret_path may be NULL. */
int daemon_backup(struct daemon *d, char **ret_path);

/* methods.c */
extern const struct method daemon_methods[];
extern const struct server_history daemon_history;
