/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The reconciler: the one code path that compares the ledger with what is present.
 *
 * Two ways in, one way through: device events are coalesced per kernel name until the
 * end of the loop iteration and then observed as a batch; a pass enumerates every block
 * device and observes them a chunk (--pass-chunk) per loop iteration, so clients and
 * events are served in between, then sweeps what it did not see. Both hand their observations to
 * ledger_apply(), and after either the drift is evaluated. Events only say where to
 * look: each device is observed afresh, so a stale or repeated event cannot write stale
 * facts.
 *
 * Passes run at start, every --rescan-interval, after events were lost (netlink
 * overflow, an event source switch) and on request (Reconcile), which waits for a pass
 * that starts after it asked. */
#include "config.h"

#include <sys/stat.h>

#include "daemon.h"
#include "identity.h"
#include "log.h"
#include "observe.h"
#include "probe.h"
#include "util.h"

/* Progress replies to a waiting Reconcile at most this often. */
#define PROGRESS_USEC (250 * USEC_PER_MSEC)

struct pass_waiter {
        struct server_call *call;
        struct pass_waiter *next;
};

struct pass {
        char **syspaths;
        size_t n, next;
        struct ledger_stats stats;
        int64_t started;        /* monotonic usec */
        int64_t last_progress;  /* monotonic usec */
        struct pass_waiter *waiters;
};

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
                                r = 0;
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
        r = identity_aux_from_observation(&o, rec->identity, &rec->identity_aux);
        if (r < 0)
                goto out;
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

struct batch {
        struct ledger_item *items;
        size_t n;
};

static void batch_done(struct batch *b) {
        for (size_t i = 0; i < b->n; i++)
                ledger_item_done(&b->items[i]);
        free(b->items);
        *b = (struct batch) {};
}

static bool batch_has(const struct batch *b, const char *kname) {
        for (size_t i = 0; i < b->n; i++)
                if (streq_ptr(b->items[i].kname, kname))
                        return true;
        return false;
}

/* Observes dev into the batch (once per kernel name). */
static int batch_add(struct daemon *d, struct batch *b, struct udev_device *dev, const char *kname) {
        struct ledger_item *grown;
        int r;

        if (batch_has(b, kname))
                return 0;
        grown = realloc(b->items, (b->n + 1) * sizeof(*grown));
        if (!grown)
                return -ENOMEM;
        b->items = grown;
        if (!dev) {
                b->items[b->n] = (struct ledger_item) { .kname = strdup(kname) };
                if (!b->items[b->n].kname)
                        return -ENOMEM;
                b->n++;
                return 0;
        }
        r = make_item(d, dev, &b->items[b->n]);
        if (r < 0)
                return log_warning_errno(r, "cannot observe %s", kname);
        b->n++;
        return 0;
}

static int batch_add_kname(struct daemon *d, struct batch *b, const char *kname) {
        struct udev_device *dev = udev_device_new_from_subsystem_sysname(d->udev, "block", kname);
        int r = batch_add(d, b, dev, kname);

        udev_device_unref(dev);
        return r;
}

/* A device seen at a new name may have moved, or may be a second device with the same
 * identity. Only its old place can tell: observe that too, so the ledger decides on
 * what is there now rather than on what it remembers. */
static int batch_close_over_identities(struct daemon *d, struct batch *b) {
        for (size_t i = 0; i < b->n; i++) {
                const struct device_record *obs = b->items[i].observed;

                if (!obs)
                        continue;
                for (size_t k = 0; k < d->ledger.n_recs; k++) {
                        const struct device_record *rec = d->ledger.recs[k];
                        int r;

                        if (rec->state != DEVICE_PRESENT || !streq(rec->identity, obs->identity) ||
                            !rec->facts.kname || batch_has(b, rec->facts.kname))
                                continue;
                        r = batch_add_kname(d, b, rec->facts.kname);
                        if (r == -ENOMEM)
                                return r;
                }
        }
        return 0;
}

static void after_commit(struct daemon *d) {
        if (d->server)
                server_notify_events(d->server);
}

void reconcile_evaluate_drift(struct daemon *d) {
        unsigned opened = 0, closed = 0;
        int r;

        /* Before the first pass the records are last run's, unverified: drift judged on
         * them would open and close things that are not so. */
        if (!d->initial_pass_done)
                return;
        r = drift_sync(&d->drift, d->journal, &d->ledger, now_realtime_usec(), &opened, &closed);
        if (r < 0)
                log_error_errno(r, "cannot record drift; the next pass retries");
        if (opened || closed)
                after_commit(d);
}

/* Applies a batch; on failure a full pass is scheduled, since the ledger must not
 * stay behind reality. */
static int apply_batch(struct daemon *d, struct batch *b, struct ledger_stats *stats) {
        int r = batch_close_over_identities(d, b);

        if (r == 0)
                r = ledger_apply(&d->ledger, b->items, b->n, now_realtime_usec(), stats);
        if (r < 0) {
                log_error_errno(r, "cannot record device changes; retrying with a full pass");
                d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                return r;
        }
        after_commit(d);
        return 0;
}

static json_object *summary(struct daemon *d, const struct pass *p, bool done) {
        const struct ledger_stats *st = &p->stats;
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "done", json_object_new_boolean(done));
        json_object_object_add(o, "devices_done", json_object_new_int64((int64_t) p->next));
        json_object_object_add(o, "devices_total", json_object_new_int64((int64_t) p->n));
        json_object_object_add(o, "checked", json_object_new_int64(st->checked));
        json_object_object_add(o, "appeared", json_object_new_int64(st->appeared));
        json_object_object_add(o, "changed", json_object_new_int64(st->changed));
        json_object_object_add(o, "renamed", json_object_new_int64(st->renamed));
        json_object_object_add(o, "disappeared", json_object_new_int64(st->disappeared));
        /* Probes do not time out yet (the probe engine will mark hung devices). */
        json_object_object_add(o, "unresponsive", json_object_new_int64(0));
        json_object_object_add(o, "drift_open", json_object_new_int64((int64_t) d->drift.n_open));
        json_object_object_add(o, "duration_ms",
                               json_object_new_int64((now_monotonic_usec() - p->started) / USEC_PER_MSEC));
        return o;
}

static void free_pass(struct pass *p) {
        for (size_t i = 0; i < p->n; i++)
                free(p->syspaths[i]);
        free(p->syspaths);
        free(p);
}

static void answer_waiters(struct daemon *d, struct pass *p, int error) {
        json_object *o = error < 0 ? NULL : summary(d, p, true);

        while (p->waiters) {
                struct pass_waiter *w = p->waiters;
                p->waiters = w->next;
                if (error == -ESHUTDOWN)
                        server_call_error(w->call, "io.blkledger.ShuttingDown", NULL);
                else if (error < 0 || !o) {
                        json_object *e = json_object_new_object();
                        if (e)
                                json_object_object_add(e, "reason", json_object_new_string(strerror(error < 0 ? -error : ENOMEM)));
                        server_call_error(w->call, "io.blkledger.InternalError", e);
                        json_object_put(e);
                } else
                        server_call_reply(w->call, o, false);
                free(w);
        }
        json_object_put(o);
}

static void progress(struct daemon *d, struct pass *p) {
        json_object *o;
        int64_t now = now_monotonic_usec();

        if (!p->waiters || now - p->last_progress < PROGRESS_USEC)
                return;
        p->last_progress = now;
        o = summary(d, p, false);
        if (!o)
                return;
        for (struct pass_waiter *w = p->waiters; w; w = w->next)
                server_call_reply(w->call, o, true);
        json_object_put(o);
}

static int start_pass(struct daemon *d) {
        struct udev_enumerate *e;
        struct udev_list_entry *le;
        struct pass *p = calloc(1, sizeof(*p));
        int r;

        if (!p)
                return -ENOMEM;
        p->started = p->last_progress = now_monotonic_usec();
        e = udev_enumerate_new(d->udev);
        if (!e) {
                free(p);
                return -ENOMEM;
        }
        r = udev_enumerate_add_match_subsystem(e, "block");
        if (r >= 0)
                r = udev_enumerate_scan_devices(e);
        if (r < 0) {
                udev_enumerate_unref(e);
                free(p);
                return log_error_errno(r, "cannot enumerate block devices");
        }
        udev_list_entry_foreach(le, udev_enumerate_get_list_entry(e)) {
                char **grown = realloc(p->syspaths, (p->n + 1) * sizeof(char *));
                if (!grown || !(grown[p->n] = strdup(udev_list_entry_get_name(le)))) {
                        if (grown)
                                p->syspaths = grown;
                        udev_enumerate_unref(e);
                        free_pass(p);
                        return -ENOMEM;
                }
                p->syspaths = grown;
                p->n++;
        }
        udev_enumerate_unref(e);

        /* Waiters that asked before now are answered by this pass. */
        p->waiters = d->next_waiters;
        d->next_waiters = NULL;
        d->pass_requested = false;
        ledger_begin_pass(&d->ledger);
        d->pass = p;
        log_debug("pass started: %zu block devices", p->n);
        return 0;
}

static void finish_pass(struct daemon *d) {
        struct pass *p = d->pass;
        char ts[RFC3339_MAX];
        int r;

        r = ledger_sweep(&d->ledger, now_realtime_usec(), &p->stats);
        if (r < 0) {
                log_error_errno(r, "cannot complete the pass; retrying");
                d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                answer_waiters(d, p, r);
                d->pass = NULL;
                free_pass(p);
                return;
        }
        after_commit(d);
        /* Devices, not observations: the identity closure may look at one twice. */
        p->stats.checked = 0;
        for (size_t i = 0; i < d->ledger.n_recs; i++)
                p->stats.checked += d->ledger.recs[i]->state == DEVICE_PRESENT &&
                                    d->ledger.recs[i]->verified_pass == d->ledger.generation;
        d->rescans++;
        d->last_full_scan = now_realtime_usec();
        if (journal_meta_set(d->journal, "last_full_scan", format_rfc3339(d->last_full_scan, ts)) < 0)
                log_warning("cannot record the time of the pass");
        if (!d->initial_pass_done) {
                d->initial_pass_done = true;
                log_info("initial pass: %zu devices present, %zu in the ledger", ledger_count_present(&d->ledger),
                         d->ledger.n_recs);
                if (d->on_initial_pass)
                        d->on_initial_pass(d);
        }
        reconcile_evaluate_drift(d);
        log_debug("pass: %u checked, %u appeared, %u changed, %u renamed, %u disappeared in %lld ms",
                  p->stats.checked, p->stats.appeared, p->stats.changed, p->stats.renamed, p->stats.disappeared,
                  (long long) ((now_monotonic_usec() - p->started) / USEC_PER_MSEC));
        d->pass = NULL;
        answer_waiters(d, p, 0);
        free_pass(p);
}

static void pass_step(void *userdata) {
        struct daemon *d = userdata;
        struct batch b = {};
        struct pass *p;
        size_t end;
        int r;

        if (!d->pass) {
                if (!d->pass_requested)
                        return;
                r = start_pass(d);
                if (r < 0) {
                        d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                        return;
                }
        }
        p = d->pass;
        end = MIN(p->n, p->next + d->opts.pass_chunk);
        for (; p->next < end; p->next++) {
                const char *syspath = p->syspaths[p->next];
                struct udev_device *dev = udev_device_new_from_syspath(d->udev, syspath);
                const char *slash = strrchr(syspath, '/');

                /* Gone since the enumeration: nothing is at its name any more. */
                r = batch_add(d, &b, dev, slash ? slash + 1 : syspath);
                udev_device_unref(dev);
                if (r == -ENOMEM)
                        break;
        }
        r = apply_batch(d, &b, &p->stats);
        batch_done(&b);
        if (r < 0) {
                ledger_abort_pass(&d->ledger);
                d->pass = NULL;
                answer_waiters(d, p, r);
                free_pass(p);
                return;
        }
        if (p->next < p->n) {
                progress(d, p);
                /* The rest next iteration: clients and events are served in between. */
                ev_defer_queue(d->loop, &d->pass_defer);
                return;
        }
        finish_pass(d);
        if (d->pass_requested)
                ev_defer_queue(d->loop, &d->pass_defer);
}

void reconcile_request_pass(struct daemon *d, struct server_call *waiter) {
        if (waiter) {
                struct pass_waiter *w = calloc(1, sizeof(*w)), **tail = &d->next_waiters;
                if (!w) {
                        server_call_error(waiter, "io.blkledger.InternalError", NULL);
                        return;
                }
                w->call = waiter;
                while (*tail)
                        tail = &(*tail)->next;
                *tail = w;
        }
        d->pass_requested = true;
        d->pass_defer.fn = pass_step;
        d->pass_defer.userdata = d;
        /* A running pass finishes first; the next one starts after it. */
        if (!d->pass)
                ev_defer_queue(d->loop, &d->pass_defer);
}

bool reconcile_pass_running(const struct daemon *d) {
        return d->pass != NULL;
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
        struct batch b = {};
        int r = 0;

        for (size_t i = 0; i < d->n_pending && r != -ENOMEM; i++)
                r = batch_add(d, &b, d->pending[i].dev, d->pending[i].kname);
        clear_pending(d);
        if (r == -ENOMEM) {
                batch_done(&b);
                reconcile_request_pass(d, NULL);
                return;
        }
        if (b.n > 0 && apply_batch(d, &b, NULL) == 0)
                reconcile_evaluate_drift(d);
        batch_done(&b);
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
                        reconcile_request_pass(d, NULL);
                        return;
                }
                d->pending = grown;
                p = &d->pending[d->n_pending];
                *p = (struct pending_event) { .kname = strdup(kname) };
                if (!p->kname) {
                        reconcile_request_pass(d, NULL);
                        return;
                }
                d->n_pending++;
        }
        p->dev = remove ? NULL : udev_device_ref(dev);
        d->batch_defer.fn = run_batch;
        d->batch_defer.userdata = d;
        ev_defer_queue(d->loop, &d->batch_defer);
}

void reconcile_done(struct daemon *d) {
        struct pass_waiter *w;

        ev_defer_cancel(d->loop, &d->batch_defer);
        ev_defer_cancel(d->loop, &d->pass_defer);
        clear_pending(d);
        if (d->pass) {
                answer_waiters(d, d->pass, -ESHUTDOWN);
                free_pass(d->pass);
                d->pass = NULL;
        }
        while ((w = d->next_waiters)) {
                d->next_waiters = w->next;
                server_call_error(w->call, "io.blkledger.ShuttingDown", NULL);
                free(w);
        }
}
