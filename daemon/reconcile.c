/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The reconciler: the one code path that compares the ledger with what is present.
 *
 * Two ways in, one way through. Device events are coalesced per kernel name until the end
 * of the loop iteration and become a batch; a pass enumerates every block device and cuts
 * them into chunks (--pass-chunk), a few chunks out at a time. Each device of a batch is
 * observed at once (udev, sysfs) and its content probed by the probe engine, many devices
 * in parallel, none able to stall the loop. Batches are applied to the ledger strictly in
 * the order they were made, each once all of its probes are back, and after each the
 * drift is evaluated. A pass ends with a sweep of what it did not see.
 *
 * Events only say where to look: each device is observed afresh, so a stale or repeated
 * event cannot write stale facts. Passes run at start, every --rescan-interval, after
 * events were lost (netlink overflow, an event source switch) and on request
 * (Reconcile), which waits for a pass that starts after it asked. */
#include "config.h"

#include <fcntl.h>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "daemon.h"
#include "identity.h"
#include "log.h"
#include "observe.h"
#include "probe-engine.h"
#include "util.h"
#include "volumes.h"

/* Progress replies to a waiting Reconcile at most this often. */
#define PROGRESS_USEC (250 * USEC_PER_MSEC)
/* Chunks of a pass being probed at once: enough to keep the engine busy. */
#define CHUNKS_OUT 2

struct pass_waiter {
        struct server_call *call;
        struct pass_waiter *next;
};

struct pass {
        bool enumerated;        /* syspaths made (on a worker: it takes ~150 ms for 1000) */
        char **syspaths;
        size_t n, next;
        unsigned chunks_out;    /* chunks made and not yet applied */
        int failed;             /* a chunk could not be recorded: no sweep */
        struct ledger_stats stats;
        int64_t started;        /* monotonic usec */
        int64_t last_progress;  /* monotonic usec */
        struct pass_waiter *waiters;
};

/* Observations waiting for their probes, and then for their turn. */
struct batch {
        struct batch *next;
        struct ledger_item *items;
        size_t n;
        unsigned outstanding; /* probes not back yet */
        bool sealed;          /* complete but for the identity closure */
        struct pass *pass;    /* a chunk of it, or NULL for events */
};

/* One device being probed for a batch. */
struct probing {
        struct probe_request req;
        struct daemon *daemon;
        struct batch *batch; /* NULL once the batch is gone (shutdown) */
        size_t index;
        struct observation obs;
        struct probing *prev, *next;
};

static void try_apply(struct daemon *d);
static void end_pass(struct daemon *d, int error);

/* Changes the journal did not take (a full or read-only disk): the full pass that
 * records them again comes after 1, 2, 4 ... 60 seconds, and at once on a reconcile. */
static void retry_later(struct daemon *d) {
        unsigned n = MIN(d->commit_failures, 6u);
        int64_t delay = MIN((int64_t) 1 << n, (int64_t) 60) * USEC_PER_SEC;

        d->commit_failures++;
        d->next_full_scan = now_monotonic_usec() + delay;
}

static void free_probing(struct probing *p) {
        free(p->req.devnode);
        observation_done(&p->req.result);
        observation_done(&p->obs);
        free(p);
}

/* udev's flags for "do not open this device": device-mapper devices in transition or
 * reserved, and sites' own rules. Such a device is recorded from sysfs alone. */
static bool must_not_probe(const struct observation *o) {
        static const char *const flags[] = {
                "E:DM_UDEV_DISABLE_OTHER_RULES_FLAG", "E:DM_UDEV_DISABLE_DISK_RULES_FLAG", "E:DM_SUSPENDED",
                "E:UDEV_DISABLE_PERSISTENT_STORAGE_BLKID_FLAG", "E:BLKLEDGER_NO_PROBE",
        };

        for (size_t i = 0; i < ELEMENTSOF(flags); i++)
                if (streq_ptr(observation_get(o, flags[i]), "1"))
                        return true;
        return false;
}

/* The record the ledger gets from a finished observation. */
static int finish_item(struct batch *b, size_t index, struct observation *o, bool unresponsive) {
        struct device_record *rec = calloc(1, sizeof(*rec));
        int r;

        if (!rec)
                return -ENOMEM;
        r = device_facts_from_observation(o, &rec->facts);
        if (r < 0)
                goto fail;
        rec->identity = identity_from_observation(o, &rec->facts);
        if (!rec->identity) {
                r = -ENOMEM;
                goto fail;
        }
        r = identity_aux_from_observation(o, rec->identity, &rec->identity_aux);
        if (r < 0)
                goto fail;
        rec->state = DEVICE_PRESENT;
        /* Only a flag here: the ledger keeps the time the silence began. */
        rec->unresponsive_since = unresponsive ? 1 : 0;
        b->items[index].observed = rec;
        return 0;
fail:
        device_record_free(rec);
        return r;
}

static void probed(struct probe_request *req, void *userdata) {
        struct probing *p = userdata;
        struct daemon *d = p->daemon;
        struct batch *b = p->batch;
        bool unresponsive = req->error == -ETIMEDOUT || req->error == -EBUSY;

        if (p->prev)
                p->prev->next = p->next;
        else
                d->probing = p->next;
        if (p->next)
                p->next->prev = p->prev;
        if (b) {
                /* The probe's findings join what sysfs and udev said. */
                for (size_t i = 0; i < req->result.n_entries; i++)
                        observation_set(&p->obs, req->result.entries[i].key, req->result.entries[i].value);
                if (req->error < 0 && !unresponsive) {
                        const char *syspath = observation_get(&p->obs, "X:syspath");
                        /* Gone while we looked: nothing is at its name any more. */
                        if (syspath && access(syspath, F_OK) < 0)
                                log_debug("%s disappeared while being probed", p->obs.kname);
                        else
                                log_warning_errno(req->error, "cannot probe %s; its content is unknown", req->devnode);
                        if (!syspath || access(syspath, F_OK) == 0)
                                (void) finish_item(b, p->index, &p->obs, false);
                } else if (finish_item(b, p->index, &p->obs, unresponsive) < 0)
                        log_error("cannot record %s: out of memory", p->obs.kname);
                b->outstanding--;
        }
        free_probing(p);
        try_apply(d);
}

static bool batch_has(const struct batch *b, const char *kname) {
        for (size_t i = 0; i < b->n; i++)
                if (streq_ptr(b->items[i].kname, kname))
                        return true;
        return false;
}

/* A slot for kname in the batch, or -EEXIST when it has one. */
static int batch_slot(struct batch *b, const char *kname, size_t *ret_index) {
        struct ledger_item *grown;

        if (batch_has(b, kname))
                return -EEXIST;
        grown = realloc(b->items, (b->n + 1) * sizeof(*grown));
        if (!grown)
                return -ENOMEM;
        b->items = grown;
        b->items[b->n] = (struct ledger_item) { .kname = strdup(kname) };
        if (!b->items[b->n].kname)
                return -ENOMEM;
        *ret_index = b->n++;
        return 0;
}

/* What was observed at a slot: nothing for us, a device recorded from sysfs alone, or a
 * device whose content is probed (coming back later). o is consumed. */
static int batch_observed(struct daemon *d, struct batch *b, size_t index, struct observation *o) {
        const char *devnode, *major, *minor, *size;
        struct probing *p;
        int r;

        if (!observation_is_device(o) || !scope_match(&d->opts.scope, o)) {
                observation_done(o);
                return 0; /* nothing at this name for us */
        }
        devnode = observation_get(o, "X:devnode");
        major = observation_get(o, "E:MAJOR");
        minor = observation_get(o, "E:MINOR");
        size = observation_get(o, "A:size");
        if (!devnode || !major || !minor || must_not_probe(o)) {
                if (devnode && must_not_probe(o))
                        observation_set(o, "X:probe_skipped", "udev says it must not be opened");
                r = finish_item(b, index, o, false);
                observation_done(o);
                return r;
        }
        p = calloc(1, sizeof(*p));
        if (!p) {
                observation_done(o);
                return -ENOMEM;
        }
        p->daemon = d;
        p->batch = b;
        p->index = index;
        p->obs = *o;
        *o = (struct observation) {};
        p->req.devnode = strdup(devnode);
        p->req.devnum = makedev((unsigned) atoi(major), (unsigned) atoi(minor));
        p->req.size = size ? strtoull(size, NULL, 10) * 512 : 0;
        p->req.done = probed;
        p->req.userdata = p;
        if (!p->req.devnode) {
                free_probing(p);
                return -ENOMEM;
        }
        p->next = d->probing;
        if (d->probing)
                d->probing->prev = p;
        d->probing = p;
        b->outstanding++;
        probe_engine_submit(d->probes, &p->req);
        return 0;
}

/* Observes dev into the batch, here (once per kernel name). dev NULL: nothing is at
 * kname. */
static int batch_add(struct daemon *d, struct batch *b, struct udev_device *dev, const char *kname) {
        struct observation o = {};
        size_t index;
        int r;

        r = batch_slot(b, kname, &index);
        if (r < 0)
                return r == -EEXIST ? 0 : r;
        if (!dev)
                return 0;
        r = observe_udev_device(dev, &o);
        if (r < 0) {
                /* Unknown is not absent: leave the name out of the batch. */
                ledger_item_done(&b->items[--b->n]);
                return log_warning_errno(r, "cannot observe %s", kname);
        }
        return batch_observed(d, b, index, &o);
}

/* The same on a worker thread, for a pass's devices: sysfs and udev's database are read
 * in parallel, the loop only decides. */
struct observing {
        struct probe_work work;
        struct daemon *daemon;
        struct batch *batch; /* NULL once the batch is gone (shutdown) */
        size_t index;
        char *syspath;
        struct observation obs;
        int result; /* 0, -ENODEV (gone since enumerated), -errno */
        struct observing *prev, *next;
};

static void observing_run(struct probe_work *w) {
        struct observing *o = (struct observing *) w;
        struct udev *udev = observe_thread_udev();
        struct udev_device *dev = udev ? udev_device_new_from_syspath(udev, o->syspath) : NULL;

        if (!udev)
                o->result = -ENOMEM;
        else if (!dev)
                o->result = -ENODEV;
        else
                o->result = observe_udev_device(dev, &o->obs);
        udev_device_unref(dev);
}

static void observing_done(struct probe_work *w) {
        struct observing *o = (struct observing *) w;
        struct daemon *d = o->daemon;
        struct batch *b = o->batch;

        if (o->prev)
                o->prev->next = o->next;
        else
                d->observing = o->next;
        if (o->next)
                o->next->prev = o->prev;
        if (b) {
                b->outstanding--;
                if (o->result == 0)
                        (void) batch_observed(d, b, o->index, &o->obs);
                else if (o->result != -ENODEV) {
                        /* Unknown is not absent: the slot says nothing, and a pass that
                         * could not look everywhere must not sweep. */
                        log_warning_errno(o->result, "cannot observe %s", o->syspath);
                        free(b->items[o->index].kname);
                        b->items[o->index].kname = NULL;
                        if (b->pass)
                                b->pass->failed = o->result;
                }
        }
        observation_done(&o->obs);
        free(o->syspath);
        free(o);
        try_apply(d);
}

static int batch_add_syspath(struct daemon *d, struct batch *b, const char *syspath) {
        const char *slash = strrchr(syspath, '/');
        struct observing *o;
        size_t index;
        int r;

        r = batch_slot(b, slash ? slash + 1 : syspath, &index);
        if (r < 0)
                return r == -EEXIST ? 0 : r;
        o = calloc(1, sizeof(*o));
        if (!o || !(o->syspath = strdup(syspath))) {
                free(o);
                return -ENOMEM;
        }
        o->work = (struct probe_work) { .run = observing_run, .done = observing_done };
        o->daemon = d;
        o->batch = b;
        o->index = index;
        r = probe_engine_run(d->probes, &o->work);
        if (r < 0) {
                free(o->syspath);
                free(o);
                return r;
        }
        o->next = d->observing;
        if (d->observing)
                d->observing->prev = o;
        d->observing = o;
        b->outstanding++;
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
 * what is there now rather than on what it remembers. Returns how many were added. */
static int batch_close_over_identities(struct daemon *d, struct batch *b) {
        int added = 0;

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
                        added++;
                }
        }
        return added;
}

static void batch_free(struct batch *b) {
        for (size_t i = 0; i < b->n; i++)
                ledger_item_done(&b->items[i]);
        free(b->items);
        free(b);
}

static struct batch *batch_new(struct daemon *d, struct pass *pass) {
        struct batch *b = calloc(1, sizeof(*b)), **tail;

        if (!b)
                return NULL;
        b->pass = pass;
        /* Applied in the order made: a later observation never lands before an earlier. */
        for (tail = &d->batches; *tail; tail = &(*tail)->next)
                ;
        *tail = b;
        return b;
}

/* udev learns a name through blkledger-udev when it processes an event of the device;
 * a name the ledger gives or changes later (a volume's device, SetName, a device that
 * came back) needs one: a "change" uevent, asked for through sysfs. Only with udevd. */
static void push_names_to_udev(struct daemon *d) {
        if (!d->monitor || !streq(monitor_source_name(d->monitor), "udev"))
                return;
        for (size_t i = 0; i < d->ledger.n_recs; i++) {
                struct device_record *r = d->ledger.recs[i];
                char path[128];
                int fd;

                if (r->state != DEVICE_PRESENT || !r->facts.kname) {
                        r->udev_synced = false; /* when it comes back, tell udev again */
                        continue;
                }
                if (r->udev_synced && streq_ptr(r->udev_name, r->name))
                        continue;
                if (!r->udev_synced && !r->name) {
                        r->udev_synced = true; /* nothing udev would not know */
                        continue;
                }
                snprintf(path, sizeof(path), "/sys/class/block/%s/uevent", r->facts.kname);
                fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0 || write(fd, "change", 6) != 6)
                        log_debug("cannot ask udev to re-read %s: %m", r->facts.kname);
                if (fd >= 0)
                        close(fd);
                r->udev_synced = true;
                free(r->udev_name);
                r->udev_name = r->name ? strdup(r->name) : NULL;
        }
}

/* Actions udev rules asked for that no appearance took within 30 s. */
static void expire_udev_actions(struct daemon *d) {
        int64_t now = now_monotonic_usec();

        for (size_t i = 0; i < d->n_udev_actions;) {
                struct udev_action *a = &d->udev_actions[i];

                if (now < a->expires) {
                        i++;
                        continue;
                }
                log_info("device %s: its udev rule's action %s was not used (the device did not appear)", a->kname,
                         a->action);
                free(a->kname);
                free(a->action);
                memmove(a, a + 1, (d->n_udev_actions - i - 1) * sizeof(*a));
                d->n_udev_actions--;
        }
}

void reconcile_names_changed(struct daemon *d) {
        push_names_to_udev(d);
}

static void after_commit(struct daemon *d) {
        volumes_name_devices(d->volumes);
        volumes_after_commit(d->volumes);
        push_names_to_udev(d);
        expire_udev_actions(d);
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
        json_object_object_add(o, "unresponsive", json_object_new_int64(st->unresponsive));
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

/* The list of block devices, made on a worker: libudev reads sysfs for each, ~150 ms
 * for a thousand devices, which the loop (and every client) would otherwise wait for. */
struct enumerating {
        struct probe_work work;
        struct daemon *daemon;
        char **syspaths;
        size_t n;
        int result;
};

static void free_syspaths(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static void enumerating_run(struct probe_work *w) {
        struct enumerating *en = (struct enumerating *) w;
        struct udev *udev = observe_thread_udev();
        struct udev_enumerate *e = udev ? udev_enumerate_new(udev) : NULL;
        struct udev_list_entry *le;
        int r;

        if (!e) {
                en->result = -ENOMEM;
                return;
        }
        r = udev_enumerate_add_match_subsystem(e, "block");
        if (r >= 0)
                r = udev_enumerate_scan_devices(e);
        udev_list_entry_foreach(le, r >= 0 ? udev_enumerate_get_list_entry(e) : NULL) {
                char **grown = realloc(en->syspaths, (en->n + 1) * sizeof(char *));
                if (!grown) {
                        r = -ENOMEM;
                        break;
                }
                en->syspaths = grown;
                if (!(en->syspaths[en->n] = strdup(udev_list_entry_get_name(le)))) {
                        r = -ENOMEM;
                        break;
                }
                en->n++;
        }
        udev_enumerate_unref(e);
        en->result = MIN(r, 0);
}

static void enumerating_done(struct probe_work *w) {
        struct enumerating *en = (struct enumerating *) w;
        struct daemon *d = en->daemon;
        struct pass *p = d->pass; /* NULL once the daemon stops */

        d->enumerating = NULL;
        if (!p) {
                free_syspaths(en->syspaths, en->n);
                free(en);
                return;
        }
        if (en->result < 0) {
                int r = en->result;
                log_error_errno(r, "cannot enumerate block devices");
                free_syspaths(en->syspaths, en->n);
                free(en);
                d->next_full_scan = now_monotonic_usec() + 5 * USEC_PER_SEC;
                end_pass(d, r);
                return;
        }
        p->syspaths = en->syspaths;
        p->n = en->n;
        p->enumerated = true;
        free(en);
        log_debug("pass started: %zu block devices", p->n);
        ev_defer_queue(d->loop, &d->pass_defer);
}

static int start_pass(struct daemon *d) {
        struct pass *p = calloc(1, sizeof(*p));
        struct enumerating *en = calloc(1, sizeof(*en));
        int r;

        if (!p || !en) {
                free(p);
                free(en);
                return -ENOMEM;
        }
        en->work = (struct probe_work) { .run = enumerating_run, .done = enumerating_done };
        en->daemon = d;
        r = probe_engine_run(d->probes, &en->work);
        if (r < 0) {
                free(p);
                free(en);
                return log_error_errno(r, "cannot enumerate block devices");
        }
        d->enumerating = en;
        p->started = p->last_progress = now_monotonic_usec();
        /* Waiters that asked before now are answered by this pass. */
        p->waiters = d->next_waiters;
        d->next_waiters = NULL;
        d->pass_requested = false;
        /* From here on, events meet a ledger in a pass (displaced, not gone). */
        ledger_begin_pass(&d->ledger);
        d->pass = p;
        return 0;
}

static void end_pass(struct daemon *d, int error) {
        struct pass *p = d->pass;

        d->pass = NULL;
        if (error < 0) {
                ledger_abort_pass(&d->ledger);
                retry_later(d);
        }
        answer_waiters(d, p, error);
        free_pass(p);
        if (d->pass_requested)
                ev_defer_queue(d->loop, &d->pass_defer);
}

static void finish_pass(struct daemon *d) {
        struct pass *p = d->pass;
        char ts[RFC3339_MAX];
        int r;

        r = ledger_sweep(&d->ledger, now_realtime_usec(), &p->stats);
        if (r < 0) {
                log_error_errno(r, "cannot complete the pass; retrying");
                end_pass(d, r);
                return;
        }
        d->commit_failures = 0;
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
        volumes_after_pass(d->volumes);
        log_debug("pass: %u checked, %u appeared, %u changed, %u renamed, %u disappeared, %u unresponsive in %lld ms",
                  p->stats.checked, p->stats.appeared, p->stats.changed, p->stats.renamed, p->stats.disappeared,
                  p->stats.unresponsive, (long long) ((now_monotonic_usec() - p->started) / USEC_PER_MSEC));
        end_pass(d, 0);
}

/* Makes chunks while few are out; ends the pass when all are applied. */
static void pass_step(void *userdata) {
        struct daemon *d = userdata;
        struct pass *p;
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
        if (!p->enumerated)
                return; /* enumerating_done steps on */
        while (p->next < p->n && p->chunks_out < CHUNKS_OUT) {
                struct batch *b = batch_new(d, p);
                size_t end = MIN(p->n, p->next + d->opts.pass_chunk);

                if (!b) {
                        end_pass(d, -ENOMEM);
                        return;
                }
                p->chunks_out++;
                for (; p->next < end; p->next++) {
                        r = batch_add_syspath(d, b, p->syspaths[p->next]);
                        if (r == -ENOMEM)
                                break;
                }
                b->sealed = true;
        }
        if (p->next >= p->n && p->chunks_out == 0) {
                /* A pass with a chunk missing must not sweep: it did not see everything. */
                if (p->failed < 0)
                        end_pass(d, p->failed);
                else
                        finish_pass(d);
                return;
        }
        try_apply(d);
}

/* Applies finished batches from the head of the queue, in order. */
static void try_apply(struct daemon *d) {
        struct batch *b;

        while ((b = d->batches) && b->sealed && b->outstanding == 0) {
                struct pass *pass = b->pass;
                int r;

                /* The identity closure may need more observations (and probes). */
                r = batch_close_over_identities(d, b);
                if (r > 0 && b->outstanding > 0)
                        return;
                if (r > 0)
                        continue; /* added without probes: close over those too */
                if (r == 0)
                        /* Changes that events bring while a pass runs are the pass's
                         * findings too: the summary says what changed during it. */
                        r = ledger_apply(&d->ledger, b->items, b->n, now_realtime_usec(),
                                         pass ? &pass->stats : d->pass ? &d->pass->stats : NULL);
                d->batches = b->next;
                batch_free(b);
                if (r < 0) {
                        log_error_errno(r, "cannot record device changes; retrying with a full pass");
                        retry_later(d);
                } else {
                        d->commit_failures = 0;
                        after_commit(d);
                }
                if (pass) {
                        pass->chunks_out--;
                        if (r < 0 && d->pass == pass) {
                                /* Its other chunks may still be out; they apply, then the
                                 * pass ends failed. */
                                pass->next = pass->n;
                                pass->failed = r;
                        }
                        progress(d, pass);
                        ev_defer_queue(d->loop, &d->pass_defer);
                } else if (r == 0)
                        reconcile_evaluate_drift(d);
        }
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
        struct batch *b;
        int r = 0;

        if (d->n_pending == 0)
                return;
        b = batch_new(d, NULL);
        if (!b) {
                clear_pending(d);
                reconcile_request_pass(d, NULL);
                return;
        }
        for (size_t i = 0; i < d->n_pending && r != -ENOMEM; i++)
                r = batch_add(d, b, d->pending[i].dev, d->pending[i].kname);
        clear_pending(d);
        b->sealed = true;
        if (r == -ENOMEM)
                reconcile_request_pass(d, NULL);
        try_apply(d);
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
        /* A site's rule asks for an action on a device (only events udevd processed
         * carry it). It is taken when the ledger sees the device appear, in
         * device-actions.c; the newest request of a name replaces an older one. */
        if (!remove) {
                const char *want = udev_device_get_property_value(dev, "BLKLEDGER_ON_ADD");
                struct udev_action *n = NULL;

                for (size_t i = 0; !isempty(want) && i < d->n_udev_actions; i++)
                        if (streq(d->udev_actions[i].kname, kname)) {
                                n = &d->udev_actions[i];
                                free(n->kname);
                                free(n->action);
                                break;
                        }
                if (!n && !isempty(want) && strlen(want) < 4096 &&
                    (n = realloc(d->udev_actions, (d->n_udev_actions + 1) * sizeof(*n)))) {
                        d->udev_actions = n;
                        n = &d->udev_actions[d->n_udev_actions++];
                }
                if (n) {
                        *n = (struct udev_action) {
                                .kname = strdup(kname),
                                .action = strdup(want),
                                .seqnum = udev_device_get_seqnum(dev),
                                .expires = now_monotonic_usec() + 30 * USEC_PER_SEC,
                        };
                        if (!n->kname || !n->action) {
                                free(n->kname);
                                free(n->action);
                                *n = d->udev_actions[--d->n_udev_actions];
                        }
                }
        }
        d->batch_defer.fn = run_batch;
        d->batch_defer.userdata = d;
        ev_defer_queue(d->loop, &d->batch_defer);
}

void reconcile_device_answered(struct daemon *d, dev_t devnum) {
        struct udev_device *dev = udev_device_new_from_devnum(d->udev, 'b', devnum);

        /* Looked at like after an event: probed again, and the drift follows. */
        if (dev) {
                reconcile_queue_device(d, dev);
                udev_device_unref(dev);
        }
}

void reconcile_done(struct daemon *d) {
        struct pass_waiter *w;

        ev_defer_cancel(d->loop, &d->batch_defer);
        ev_defer_cancel(d->loop, &d->pass_defer);
        clear_pending(d);
        /* Probes and observations still out belong to batches that will never apply. */
        for (struct probing *p = d->probing; p; p = p->next)
                p->batch = NULL;
        for (struct observing *o = d->observing; o; o = o->next)
                o->batch = NULL;
        while (d->batches) {
                struct batch *b = d->batches;
                d->batches = b->next;
                batch_free(b);
        }
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

static void free_udev_actions(struct daemon *d) {
        for (size_t i = 0; i < d->n_udev_actions; i++) {
                free(d->udev_actions[i].kname);
                free(d->udev_actions[i].action);
        }
        free(d->udev_actions);
        d->udev_actions = NULL;
        d->n_udev_actions = 0;
}

void reconcile_free_probes(struct daemon *d) {
        free_udev_actions(d);
        /* After the engine is gone no probe will come back: free what is left. */
        if (d->enumerating) {
                free_syspaths(d->enumerating->syspaths, d->enumerating->n);
                free(d->enumerating);
                d->enumerating = NULL;
        }
        while (d->probing) {
                struct probing *p = d->probing;
                d->probing = p->next;
                free_probing(p);
        }
        while (d->observing) {
                struct observing *o = d->observing;
                d->observing = o->next;
                observation_done(&o->obs);
                free(o->syspath);
                free(o);
        }
}
