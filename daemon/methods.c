/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The methods of interface io.blkledger (see lib/io.blkledger.varlink). */
#include "config.h"

#include "daemon.h"
#include "log.h"
#include "retention.h"
#include "transfer.h"
#include "util.h"
#include "volumes.h"

#define EVENTS_PAGE_DEFAULT 1000
#define EVENTS_PAGE_MAX 10000

/* A record as clients see it: its facts, its drift, and the volume it is. */
static json_object *device_json(struct daemon *d, const struct device_record *r, json_object *drift) {
        json_object *o = device_record_to_json(r, drift);
        const char *vol = r->state == DEVICE_PRESENT ? volumes_name_of_file(d->volumes, r->facts.loop_backing_file) : NULL;

        if (o)
                json_object_object_add(o, "volume", vol ? json_object_new_string(vol) : NULL);
        return o;
}

static int reply_and_put(struct client *c, json_object *p) {
        int r;

        if (!p)
                return -ENOMEM;
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int method_get_status(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        json_object *p, *scope;
        char ts[RFC3339_MAX];

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        p = json_object_new_object();
        scope = json_object_new_array();
        if (!p || !scope) {
                json_object_put(p);
                json_object_put(scope);
                return -ENOMEM;
        }
        for (unsigned i = 0; i < d->opts.n_scope_specs; i++)
                json_object_array_add(scope, json_object_new_string(d->opts.scope_specs[i]));
        json_object_object_add(p, "version", json_object_new_string(PACKAGE_VERSION));
        json_object_object_add(p, "pid", json_object_new_int64(getpid()));
        json_object_object_add(p, "started_at", json_object_new_string(format_rfc3339(d->started_at, ts)));
        json_object_object_add(p, "devices", json_object_new_int64((int64_t) d->ledger.n_recs));
        json_object_object_add(p, "devices_present", json_object_new_int64((int64_t) ledger_count_present(&d->ledger)));
        json_object_object_add(p, "event_source", json_object_new_string(monitor_source_name(d->monitor)));
        json_object_object_add(p, "last_full_scan",
                               d->last_full_scan ? json_object_new_string(format_rfc3339(d->last_full_scan, ts)) : NULL);
        json_object_object_add(p, "devices_verified", json_object_new_int64((int64_t) ledger_count_verified(&d->ledger)));
        json_object_object_add(p, "initial_pass_done", json_object_new_boolean(d->initial_pass_done));
        json_object_object_add(p, "pass_running", json_object_new_boolean(reconcile_pass_running(d)));
        json_object_object_add(p, "rescans", json_object_new_int64((int64_t) d->rescans));
        json_object_object_add(p, "overflows", json_object_new_int64((int64_t) d->overflows));
        json_object_object_add(p, "drift_open", json_object_new_int64((int64_t) d->drift.n_open));
        json_object_object_add(p, "expectations", json_object_new_int64((int64_t) d->drift.n_exps));
        json_object_object_add(p, "last_seq", json_object_new_int64(journal_last_seq(d->journal)));
        json_object_object_add(p, "events_pruned", json_object_new_int64((int64_t) retention_pruned_total(d->retention)));
        json_object_object_add(p, "last_prune", retention_last_prune(d->retention)
                                                        ? json_object_new_string(format_rfc3339(retention_last_prune(d->retention), ts))
                                                        : NULL);
        json_object_object_add(p, "schema_version", json_object_new_int64(journal_schema_version(d->journal)));
        json_object_object_add(p, "state_dir", json_object_new_string(d->opts.state_dir));
        json_object_object_add(p, "config_file",
                               d->opts.config_loaded ? json_object_new_string(d->opts.config_path) : NULL);
        json_object_object_add(p, "scope", scope);
        json_object_object_add(p, "clients", json_object_new_int64(server_n_clients(d->server)));
        json_object_object_add(p, "last_backup",
                               d->last_backup ? json_object_new_string(format_rfc3339(d->last_backup, ts)) : NULL);
        {
                int64_t since;
                int why = journal_degraded(d->journal, &since);
                json_object_object_add(p, "degraded", why ? json_object_new_string(journal_degraded_reason(why)) : NULL);
                json_object_object_add(p, "degraded_since",
                                       why ? json_object_new_string(format_rfc3339(since, ts)) : NULL);
        }
        json_object_object_add(p, "recovery", d->last_recovery ? json_object_get(d->last_recovery) : NULL);
        json_object_object_add(p, "volumes", json_object_new_int64((int64_t) volumes_count(d->volumes)));
        json_object_object_add(p, "intents_unfinished", json_object_new_int64((int64_t) volumes_unfinished(d->volumes)));
        json_object_object_add(p, "volume_dir", json_object_new_string(d->volumes ? volumes_dir(d->volumes) : d->opts.volume_dir));
        return reply_and_put(c, p);
}

static int method_list_devices(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "state", PARAM_STRING }, {} };
        struct daemon *d = userdata;
        json_object *p, *arr, *st;
        int state = -1;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        st = param_get(params, "state");
        if (st) {
                state = device_state_from_string(json_object_get_string(st));
                if (state < 0)
                        return server_reply_invalid_parameter(c, "state");
        }
        p = json_object_new_object();
        arr = json_object_new_array_ext((int) d->ledger.n_recs);
        if (!p || !arr) {
                json_object_put(p);
                json_object_put(arr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < d->ledger.n_recs; i++) {
                const struct device_record *r = d->ledger.recs[i];
                if (state >= 0 && (int) r->state != state)
                        continue;
                json_object *drift = drift_kinds_of_device(&d->drift, r->id);
                json_object_array_add(arr, device_json(d, r, drift));
                json_object_put(drift);
        }
        json_object_object_add(p, "devices", arr);
        return reply_and_put(c, p);
}

static int method_get_device(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "id", PARAM_INT }, { "name", PARAM_STRING }, {} };
        struct daemon *d = userdata;
        json_object *id, *name, *p, *err;
        struct device_record *rec = NULL;
        char buf[32];
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        id = param_get(params, "id");
        name = param_get(params, "name");
        if ((!id) == (!name))
                return server_reply_invalid_parameter(c, id ? "name" : "id");
        if (id)
                rec = ledger_find_by_id(&d->ledger, json_object_get_int64(id));
        else
                rec = ledger_find_by_name(&d->ledger, json_object_get_string(name));
        if (!rec) {
                err = json_object_new_object();
                if (!err)
                        return -ENOMEM;
                if (id)
                        snprintf(buf, sizeof(buf), "%lld", (long long) json_object_get_int64(id));
                json_object_object_add(err, "name", json_object_new_string(id ? buf : json_object_get_string(name)));
                r = server_reply_error(c, "io.blkledger.NoSuchDevice", err);
                json_object_put(err);
                return r;
        }
        p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        {
                json_object *drift = drift_kinds_of_device(&d->drift, rec->id);
                json_object_object_add(p, "device", device_json(d, rec, drift));
                json_object_put(drift);
        }
        return reply_and_put(c, p);
}

static int get_nonneg(struct client *c, json_object *params, const char *name, int64_t def, int64_t *ret) {
        json_object *v = param_get(params, name);

        *ret = def;
        if (!v)
                return 0;
        *ret = json_object_get_int64(v);
        if (*ret < 0) {
                server_reply_invalid_parameter(c, name);
                return -EINVAL;
        }
        return 0;
}

static int method_list_events(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "since", PARAM_INT }, { "limit", PARAM_INT }, { "device_id", PARAM_INT }, {},
        };
        struct daemon *d = userdata;
        int64_t since, limit, device_id;
        json_object *p, *arr;
        int n;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (get_nonneg(c, params, "since", 0, &since) < 0 ||
            get_nonneg(c, params, "limit", EVENTS_PAGE_DEFAULT, &limit) < 0 ||
            get_nonneg(c, params, "device_id", 0, &device_id) < 0)
                return 0;
        if (limit == 0 || limit > EVENTS_PAGE_MAX)
                return server_reply_invalid_parameter(c, "limit");
        arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        n = journal_list_events(d->journal, since, limit, device_id, arr);
        if (n < 0) {
                json_object_put(arr);
                return n;
        }
        p = json_object_new_object();
        if (!p) {
                json_object_put(arr);
                return -ENOMEM;
        }
        json_object_object_add(p, "events", arr);
        json_object_object_add(p, "last_seq", json_object_new_int64(journal_last_seq(d->journal)));
        json_object_object_add(p, "has_more", json_object_new_boolean(n == limit));
        return reply_and_put(c, p);
}

static int method_watch(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "since", PARAM_INT }, {} };
        struct daemon *d = userdata;
        json_object *since_o;
        int64_t since = -1;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        since_o = param_get(params, "since");
        if (since_o) {
                since = json_object_get_int64(since_o);
                if (since < 0 || since > journal_last_seq(d->journal))
                        return server_reply_invalid_parameter(c, "since");
        }
        return server_start_watch(c, since);
}

static int method_reconcile(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        struct server_call *call;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        call = server_call_defer(c);
        if (!call)
                return -ENOMEM;
        log_info("pass requested by uid %d", (int) client_uid(c));
        reconcile_request_pass(d, call);
        volumes_retry_now(d->volumes);
        return 0;
}

static int method_set_name(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "device", PARAM_STRING }, { "name", PARAM_STRING }, {} };
        struct daemon *d = userdata;
        json_object *dev_o = param_get(params, "device"), *name_o = param_get(params, "name");
        const char *name = name_o ? json_object_get_string(name_o) : NULL;
        struct device_record *rec;
        int64_t id;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!dev_o)
                return server_reply_invalid_parameter(c, "device");
        if (name && !ledger_name_valid(name))
                return server_reply_invalid_parameter(c, "name");
        rec = parse_int64(json_object_get_string(dev_o), &id) == 0 ? ledger_find_by_id(&d->ledger, id)
                                                                   : ledger_find_by_name(&d->ledger, json_object_get_string(dev_o));
        if (!rec)
                return server_reply_error_string(c, "io.blkledger.NoSuchDevice", "name",
                                                 json_object_get_string(dev_o));
        r = ledger_set_name(&d->ledger, rec, name, now_realtime_usec());
        if (r == -EEXIST) {
                json_object *err = json_object_new_object();
                struct device_record *holder = ledger_find_by_name(&d->ledger, name);
                if (!err)
                        return -ENOMEM;
                json_object_object_add(err, "name", json_object_new_string(name));
                json_object_object_add(err, "device_id", json_object_new_int64(holder ? holder->id : 0));
                r = server_reply_error(c, "io.blkledger.NameTaken", err);
                json_object_put(err);
                return r;
        }
        if (r < 0)
                return r;
        server_notify_events(d->server);
        reconcile_evaluate_drift(d);
        reconcile_names_changed(d);
        {
                json_object *p = json_object_new_object(), *drift = drift_kinds_of_device(&d->drift, rec->id);
                if (p)
                        json_object_object_add(p, "device", device_json(d, rec, drift));
                json_object_put(drift);
                return reply_and_put(c, p);
        }
}

static int method_expect(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "name", PARAM_STRING },    { "match_kind", PARAM_STRING }, { "match_value", PARAM_STRING },
                { "fs_type", PARAM_STRING }, { "fs_label", PARAM_STRING },   { "min_size", PARAM_INT },
                { "on_appear", PARAM_STRING }, {},
        };
        struct daemon *d = userdata;
        json_object *name = param_get(params, "name"), *kind = param_get(params, "match_kind"),
                    *value = param_get(params, "match_value"), *fs_type = param_get(params, "fs_type"),
                    *fs_label = param_get(params, "fs_label"), *min_size = param_get(params, "min_size"),
                    *on_appear = param_get(params, "on_appear"), *p;
        struct expectation *e;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!name || !ledger_name_valid(json_object_get_string(name)))
                return server_reply_invalid_parameter(c, "name");
        if (!kind || !expectation_match_kind_valid(json_object_get_string(kind)))
                return server_reply_invalid_parameter(c, "match_kind");
        if (!value || isempty(json_object_get_string(value)) || strlen(json_object_get_string(value)) > 4096 ||
            (streq(json_object_get_string(kind), "loop_file") && json_object_get_string(value)[0] != '/'))
                return server_reply_invalid_parameter(c, "match_value");
        if (min_size && json_object_get_int64(min_size) < 0)
                return server_reply_invalid_parameter(c, "min_size");
        if (on_appear) {
                _cleanup_free_ char *why = NULL;
                if (volumes_check_action(json_object_get_string(on_appear), &why) < 0) {
                        json_object *err = json_object_new_object();
                        if (!err)
                                return -ENOMEM;
                        json_object_object_add(err, "reason", json_object_new_string(why ? why : "invalid on_appear"));
                        r = server_reply_error(c, "io.blkledger.Refused", err);
                        json_object_put(err);
                        return r;
                }
        }
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->name = strdup(json_object_get_string(name));
        e->match_kind = strdup(json_object_get_string(kind));
        if (streq(e->match_kind, "loop_file")) {
                /* The kernel reports the canonical path of a backing file. */
                e->match_value = realpath(json_object_get_string(value), NULL);
                if (!e->match_value)
                        e->match_value = strdup(json_object_get_string(value));
        } else
                e->match_value = strdup(json_object_get_string(value));
        e->fs_type = fs_type ? strdup(json_object_get_string(fs_type)) : NULL;
        e->fs_label = fs_label ? strdup(json_object_get_string(fs_label)) : NULL;
        e->min_size = min_size ? json_object_get_int64(min_size) : FIELD_NULL;
        e->created = now_realtime_usec();
        e->on_appear = on_appear ? strdup(json_object_get_string(on_appear)) : NULL;
        if (!e->name || !e->match_kind || !e->match_value || (fs_type && !e->fs_type) || (fs_label && !e->fs_label) ||
            (on_appear && !e->on_appear)) {
                expectation_free(e);
                return -ENOMEM;
        }
        p = expectation_to_json(e);
        r = drift_put_expectation(&d->drift, d->journal, e);
        if (r < 0) {
                expectation_free(e);
                json_object_put(p);
                return r;
        }
        log_info("expectation %s set by uid %d", e->name, (int) client_uid(c));
        volumes_expectations_changed(d->volumes);
        reconcile_evaluate_drift(d);
        {
                json_object *o = json_object_new_object();
                if (o)
                        json_object_object_add(o, "expectation", p);
                else
                        json_object_put(p);
                return reply_and_put(c, o);
        }
}

static int method_unexpect(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "name", PARAM_STRING }, {} };
        struct daemon *d = userdata;
        json_object *name = param_get(params, "name");
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (!name)
                return server_reply_invalid_parameter(c, "name");
        r = drift_remove_expectation(&d->drift, d->journal, json_object_get_string(name));
        if (r == -ENOENT) {
                json_object *err = json_object_new_object();
                if (!err)
                        return -ENOMEM;
                json_object_object_add(err, "name", json_object_get(name));
                r = server_reply_error(c, "io.blkledger.NoSuchExpectation", err);
                json_object_put(err);
                return r;
        }
        if (r < 0)
                return r;
        log_info("expectation %s removed by uid %d", json_object_get_string(name), (int) client_uid(c));
        reconcile_evaluate_drift(d);
        return server_reply(c, NULL);
}

static int method_list_expectations(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        json_object *p, *arr;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        p = json_object_new_object();
        arr = json_object_new_array();
        if (!p || !arr) {
                json_object_put(p);
                json_object_put(arr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < d->drift.n_exps; i++)
                json_object_array_add(arr, expectation_to_json(d->drift.exps[i]));
        json_object_object_add(p, "expectations", arr);
        return reply_and_put(c, p);
}

static int method_list_drift(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        json_object *p, *arr;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        p = json_object_new_object();
        arr = json_object_new_array();
        if (!p || !arr) {
                json_object_put(p);
                json_object_put(arr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < d->drift.n_open; i++)
                json_object_array_add(arr, drift_item_to_json(d->drift.open[i]));
        json_object_object_add(p, "drift", arr);
        return reply_and_put(c, p);
}

static int method_backup(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        _cleanup_free_ char *path = NULL;
        char ts[RFC3339_MAX];
        json_object *p;
        int r;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        r = daemon_backup(d, &path);
        if (r < 0) {
                json_object *err = json_object_new_object();
                if (!err)
                        return -ENOMEM;
                json_object_object_add(err, "reason", json_object_new_string(strerror(-r)));
                r = server_reply_error(c, "io.blkledger.InternalError", err);
                json_object_put(err);
                return r;
        }
        log_info("backup requested by uid %d", (int) client_uid(c));
        p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "path", json_object_new_string(path));
        json_object_object_add(p, "time", json_object_new_string(format_rfc3339(d->last_backup, ts)));
        return reply_and_put(c, p);
}

static int method_check_integrity(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        json_object *p, *problems = json_object_new_array();
        int64_t t0 = now_monotonic_usec();
        int r;

        if (!problems)
                return -ENOMEM;
        if (server_check_params(c, params, NULL) < 0) {
                json_object_put(problems);
                return 0;
        }
        r = journal_integrity_check(d->journal, 100, problems);
        if (r < 0) {
                json_object_put(problems);
                return r;
        }
        if (r > 0)
                log_error("integrity_check of the ledger found %d problems; the next start restores the newest "
                          "backup", r);
        p = json_object_new_object();
        if (!p) {
                json_object_put(problems);
                return -ENOMEM;
        }
        json_object_object_add(p, "ok", json_object_new_boolean(r == 0));
        json_object_object_add(p, "problems", problems);
        json_object_object_add(p, "duration_ms", json_object_new_int64((now_monotonic_usec() - t0) / 1000));
        return reply_and_put(c, p);
}

const struct method daemon_methods[] = {
        { "io.blkledger.GetStatus", method_get_status, 0 },
        { "io.blkledger.ListDevices", method_list_devices, 0 },
        { "io.blkledger.GetDevice", method_get_device, 0 },
        { "io.blkledger.ListEvents", method_list_events, 0 },
        { "io.blkledger.Watch", method_watch, METHOD_MORE_ONLY },
        { "io.blkledger.Reconcile", method_reconcile, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.SetName", method_set_name, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.Expect", method_expect, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.Unexpect", method_unexpect, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.ListExpectations", method_list_expectations, 0 },
        { "io.blkledger.ListDrift", method_list_drift, 0 },
        { "io.blkledger.Backup", method_backup, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.Export", method_export, METHOD_ROOT_ONLY },
        { "io.blkledger.CheckIntegrity", method_check_integrity, METHOD_ROOT_ONLY },
        { "io.blkledger.Import", method_import, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.CreateVolume", method_create_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.ListVolumes", method_list_volumes, 0 },
        { "io.blkledger.GetVolume", method_get_volume, 0 },
        { "io.blkledger.ResizeVolume", method_resize_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.AttachVolume", method_attach_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.DetachVolume", method_detach_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.DeleteVolume", method_delete_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.AdoptVolume", method_adopt_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.ForgetVolume", method_forget_volume, METHOD_ROOT_ONLY | METHOD_SIDE_EFFECTS },
        { "io.blkledger.ListIntents", method_list_intents, 0 },
        {},
};

static int64_t history_last_seq(void *userdata) {
        struct daemon *d = userdata;
        return journal_last_seq(d->journal);
}

static int history_fetch(void *userdata, int64_t since, int64_t limit, json_object *array) {
        struct daemon *d = userdata;
        return journal_list_events(d->journal, since, limit, 0, array);
}

const struct server_history daemon_history = {
        .last_seq = history_last_seq,
        .fetch = history_fetch,
};
