/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Reconciliation: turning what the system shows into ledger batches.
 *
 * Device events are coalesced per kernel name until the end of the loop iteration and
 * then applied as one batch; a full scan enumerates every block device and lets the
 * ledger mark whatever it did not see as gone. Events only say where to look: each
 * device is observed afresh, so a stale or repeated event cannot write stale facts. */
#include "config.h"

#include <sys/stat.h>

#include "daemon.h"
#include "identity.h"
#include "log.h"
#include "observe.h"
#include "probe.h"
#include "util.h"

/* Observes one device and decides what the ledger gets for its kernel name. */
static int make_item(struct daemon *d, struct udev_device *dev, struct ledger_item *ret) {
        struct observation o = {};
        struct device_record *rec = NULL;
        const char *devnode;
        int r;

        *ret = (struct ledger_item) {};
        r = observe_udev_device(dev, &o);
        if (r < 0)
                return r;
        ret->kname = strdup(o.kname);
        if (!ret->kname) {
                r = -ENOMEM;
                goto out;
        }
        if (!observation_is_device(&o) || !scope_match(&d->opts.scope, &o))
                goto out; /* nothing at this name for us */

        devnode = observation_get(&o, "X:devnode");
        if (devnode) {
                r = probe_content(devnode, &o);
                if (r < 0) {
                        const char *syspath = observation_get(&o, "X:syspath");
                        /* Gone while we looked: the removal event will follow, but the
                         * ledger need not wait for it. */
                        if (syspath && access(syspath, F_OK) < 0) {
                                log_debug("%s disappeared while being probed", o.kname);
                                goto out;
                        }
                        log_warning_errno(r, "cannot probe %s; its content is unknown", devnode);
                }
        }

        rec = calloc(1, sizeof(*rec));
        if (!rec) {
                r = -ENOMEM;
                goto out;
        }
        r = device_facts_from_observation(&o, &rec->facts);
        if (r < 0)
                goto out;
        rec->identity = identity_from_observation(&o, &rec->facts);
        if (!rec->identity) {
                r = -ENOMEM;
                goto out;
        }
        rec->state = DEVICE_PRESENT;
        ret->observed = TAKE_PTR(rec);
        r = 0;
out:
        device_record_free(rec);
        observation_done(&o);
        if (r < 0)
                ledger_item_done(ret);
        return r;
}

static void free_items(struct ledger_item *items, size_t n) {
        for (size_t i = 0; i < n; i++)
                ledger_item_done(&items[i]);
        free(items);
}

static void after_commit(struct daemon *d) {
        if (d->server)
                server_notify_events(d->server);
}

int reconcile_full_scan(struct daemon *d, struct ledger_stats *ret_stats) {
        struct udev_enumerate *e;
        struct udev_list_entry *le;
        struct ledger_item *items = NULL;
        struct ledger_stats st = {};
        size_t n = 0;
        int64_t start = now_monotonic_usec();
        int r;

        e = udev_enumerate_new(d->udev);
        if (!e)
                return -ENOMEM;
        r = udev_enumerate_add_match_subsystem(e, "block");
        if (r >= 0)
                r = udev_enumerate_scan_devices(e);
        if (r < 0) {
                udev_enumerate_unref(e);
                return log_error_errno(r, "cannot enumerate block devices");
        }
        udev_list_entry_foreach(le, udev_enumerate_get_list_entry(e)) {
                struct udev_device *dev = udev_device_new_from_syspath(d->udev, udev_list_entry_get_name(le));
                struct ledger_item *grown;

                if (!dev)
                        continue; /* removed since the enumeration */
                grown = realloc(items, (n + 1) * sizeof(*items));
                if (!grown) {
                        udev_device_unref(dev);
                        r = -ENOMEM;
                        break;
                }
                items = grown;
                r = make_item(d, dev, &items[n]);
                udev_device_unref(dev);
                if (r < 0) {
                        log_warning_errno(r, "cannot observe %s", udev_list_entry_get_name(le));
                        r = 0;
                        continue;
                }
                n++;
        }
        udev_enumerate_unref(e);
        if (r < 0) {
                free_items(items, n);
                return r;
        }

        r = ledger_apply(&d->ledger, items, n, true, now_realtime_usec(), &st);
        free_items(items, n);
        if (r < 0)
                return log_error_errno(r, "cannot record the full scan");
        d->last_full_scan = now_realtime_usec();
        {
                char ts[RFC3339_MAX];
                /* Best effort: status survives a restart, the ledger does not depend on it. */
                if (journal_meta_set(d->journal, "last_full_scan", format_rfc3339(d->last_full_scan, ts)) < 0)
                        log_warning("cannot record the time of the full scan");
        }
        log_debug("full scan: %u devices checked, %u appeared, %u changed, %u disappeared in %lld ms",
                  st.checked, st.appeared, st.changed, st.disappeared,
                  (long long) ((now_monotonic_usec() - start) / USEC_PER_MSEC));
        if (ret_stats)
                *ret_stats = st;
        after_commit(d);
        return 0;
}

static void clear_pending(struct daemon *d) {
        for (size_t i = 0; i < d->n_pending; i++) {
                free(d->pending[i].kname);
                udev_device_unref(d->pending[i].dev);
        }
        free(d->pending);
        d->pending = NULL;
        d->n_pending = 0;
}

static void run_batch(void *userdata) {
        struct daemon *d = userdata;
        struct ledger_item *items;
        size_t n = 0;
        int r;

        if (d->full_scan_requested) {
                /* A full scan sees everything the pending events pointed at. */
                d->full_scan_requested = false;
                clear_pending(d);
                r = reconcile_full_scan(d, NULL);
                if (r < 0) {
                        /* Retry soon: the ledger must not stay behind reality. */
                        d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                }
                return;
        }
        if (d->n_pending == 0)
                return;
        items = calloc(d->n_pending, sizeof(*items));
        if (!items) {
                reconcile_request_full_scan(d);
                return;
        }
        for (size_t i = 0; i < d->n_pending; i++) {
                struct pending_event *p = &d->pending[i];
                if (!p->dev) {
                        items[n].kname = TAKE_PTR(p->kname);
                        n++;
                        continue;
                }
                r = make_item(d, p->dev, &items[n]);
                if (r < 0) {
                        log_warning_errno(r, "cannot observe %s", p->kname);
                        continue;
                }
                n++;
        }
        clear_pending(d);
        r = ledger_apply(&d->ledger, items, n, false, now_realtime_usec(), NULL);
        free_items(items, n);
        if (r < 0) {
                log_error_errno(r, "cannot record device events; a full scan will retry");
                d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                return;
        }
        after_commit(d);
}

void reconcile_queue_device(struct daemon *d, struct udev_device *dev) {
        const char *kname = udev_device_get_sysname(dev);
        const char *action = udev_device_get_action(dev);
        bool remove = action && streq(action, "remove");
        struct pending_event *p = NULL;

        if (!kname)
                return;
        log_debug("event: %s %s", action ? action : "?", kname);
        /* The newest event of a name replaces older ones: the device is observed anyway. */
        for (size_t i = 0; i < d->n_pending; i++)
                if (streq(d->pending[i].kname, kname)) {
                        p = &d->pending[i];
                        udev_device_unref(p->dev);
                        p->dev = NULL;
                        break;
                }
        if (!p) {
                struct pending_event *grown = realloc(d->pending, (d->n_pending + 1) * sizeof(*grown));
                if (!grown) {
                        reconcile_request_full_scan(d);
                        return;
                }
                d->pending = grown;
                p = &d->pending[d->n_pending];
                *p = (struct pending_event) { .kname = strdup(kname) };
                if (!p->kname) {
                        reconcile_request_full_scan(d);
                        return;
                }
                d->n_pending++;
        }
        p->dev = remove ? NULL : udev_device_ref(dev);
        d->batch_defer.fn = run_batch;
        d->batch_defer.userdata = d;
        ev_defer_queue(d->loop, &d->batch_defer);
}

void reconcile_request_full_scan(struct daemon *d) {
        d->full_scan_requested = true;
        d->batch_defer.fn = run_batch;
        d->batch_defer.userdata = d;
        ev_defer_queue(d->loop, &d->batch_defer);
}

void reconcile_done(struct daemon *d) {
        ev_defer_cancel(d->loop, &d->batch_defer);
        clear_pending(d);
}
