/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <strings.h>

#include "drift.h"
#include "identity.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

void expectation_free(struct expectation *e) {
        if (!e)
                return;
        free(e->name);
        free(e->match_kind);
        free(e->match_value);
        free(e->fs_type);
        free(e->fs_label);
        free(e->on_appear);
        free(e);
}

bool expectation_match_kind_valid(const char *kind) {
        return kind && (streq(kind, "serial") || streq(kind, "wwn") || streq(kind, "fs_uuid") ||
                        streq(kind, "loop_file"));
}

bool expectation_matches(const struct expectation *e, const struct device_record *r) {
        const struct device_facts *f = &r->facts;

        if (streq(e->match_kind, "serial"))
                return streq_ptr(f->serial, e->match_value);
        if (streq(e->match_kind, "wwn")) {
                _cleanup_free_ char *w = wwn_normalize(e->match_value);
                return w && streq_ptr(f->wwn, w);
        }
        if (streq(e->match_kind, "fs_uuid"))
                /* vfat spells its serial in capitals, blkid's others in lower case. */
                return f->fs_uuid && strcasecmp(f->fs_uuid, e->match_value) == 0;
        if (streq(e->match_kind, "loop_file")) {
                const char *b = f->loop_backing_file, *rest;
                /* An attached file that was deleted is still the file. */
                return b && (streq(b, e->match_value) ||
                             ((rest = startswith(b, e->match_value)) && streq(rest, " (deleted)")));
        }
        return false;
}

json_object *expectation_to_json(const struct expectation *e) {
        json_object *o = json_object_new_object(), *m = json_object_new_object();
        char ts[RFC3339_MAX];

        if (!o || !m) {
                json_object_put(o);
                json_object_put(m);
                return NULL;
        }
        json_object_object_add(m, e->match_kind, json_object_new_string(e->match_value));
        json_object_object_add(o, "name", json_object_new_string(e->name));
        json_object_object_add(o, "match", m);
        json_object_object_add(o, "fs_type", e->fs_type ? json_object_new_string(e->fs_type) : NULL);
        json_object_object_add(o, "fs_label", e->fs_label ? json_object_new_string(e->fs_label) : NULL);
        json_object_object_add(o, "min_size", e->min_size == FIELD_NULL ? NULL : json_object_new_int64(e->min_size));
        json_object_object_add(o, "created", json_object_new_string(format_rfc3339(e->created, ts)));
        json_object_object_add(o, "on_appear", e->on_appear ? json_object_new_string(e->on_appear) : NULL);
        return o;
}

void drift_item_free(struct drift_item *d) {
        if (!d)
                return;
        free(d->kind);
        free(d->name);
        json_object_put(d->detail);
        free(d);
}

json_object *drift_item_to_json(const struct drift_item *d) {
        json_object *o = json_object_new_object();
        char ts[RFC3339_MAX];

        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_object_new_int64(d->id));
        json_object_object_add(o, "kind", json_object_new_string(d->kind));
        json_object_object_add(o, "name", d->name ? json_object_new_string(d->name) : NULL);
        json_object_object_add(o, "device_id", d->device_id > 0 ? json_object_new_int64(d->device_id) : NULL);
        json_object_object_add(o, "since", json_object_new_string(format_rfc3339(d->since, ts)));
        json_object_object_add(o, "detail", json_object_get(d->detail));
        return o;
}

static int append_ptr(void ***array, size_t *n, void *p) {
        void **a = realloc(*array, (*n + 1) * sizeof(void *));

        if (!a)
                return -ENOMEM;
        a[(*n)++] = p;
        *array = a;
        return 0;
}

static int add_expectation(struct expectation *e, void *userdata) {
        struct drift_state *ds = userdata;
        int r = append_ptr((void ***) &ds->exps, &ds->n_exps, e);

        if (r < 0)
                expectation_free(e);
        return r;
}

static int add_open(struct drift_item *d, void *userdata) {
        struct drift_state *ds = userdata;
        int r = append_ptr((void ***) &ds->open, &ds->n_open, d);

        if (r < 0)
                drift_item_free(d);
        return r;
}

static void free_open(struct drift_state *ds) {
        for (size_t i = 0; i < ds->n_open; i++)
                drift_item_free(ds->open[i]);
        free(ds->open);
        ds->open = NULL;
        ds->n_open = 0;
}

int drift_load(struct drift_state *ds, struct journal *j) {
        int r;

        drift_done(ds);
        r = journal_load_expectations(j, add_expectation, ds);
        if (r >= 0)
                r = journal_load_open_drift(j, add_open, ds);
        return r;
}

void drift_set_extra(struct drift_state *ds, struct drift_item **items, size_t n) {
        for (size_t i = 0; i < ds->n_extra; i++)
                drift_item_free(ds->extra[i]);
        free(ds->extra);
        ds->extra = items;
        ds->n_extra = n;
}

struct drift_item *drift_item_new(const char *kind, const char *name, int64_t device_id, json_object *detail) {
        struct drift_item *d = calloc(1, sizeof(*d));

        if (!d || !detail) {
                free(d);
                json_object_put(detail);
                return NULL;
        }
        d->kind = strdup(kind);
        d->name = name ? strdup(name) : NULL;
        d->device_id = device_id;
        d->detail = detail;
        if (!d->kind || (name && !d->name)) {
                drift_item_free(d);
                return NULL;
        }
        return d;
}

void drift_done(struct drift_state *ds) {
        for (size_t i = 0; i < ds->n_exps; i++)
                expectation_free(ds->exps[i]);
        free(ds->exps);
        ds->exps = NULL;
        ds->n_exps = 0;
        free_open(ds);
        drift_set_extra(ds, NULL, 0);
}

struct expectation *drift_find_expectation(const struct drift_state *ds, const char *name) {
        for (size_t i = 0; i < ds->n_exps; i++)
                if (streq(ds->exps[i]->name, name))
                        return ds->exps[i];
        return NULL;
}

int drift_put_expectation(struct drift_state *ds, struct journal *j, struct expectation *e) {
        size_t i;
        int r;

        /* Room first, so a failure leaves neither the journal nor e changed. */
        for (i = 0; i < ds->n_exps && !streq(ds->exps[i]->name, e->name); i++)
                ;
        if (i == ds->n_exps) {
                struct expectation **a = realloc(ds->exps, (ds->n_exps + 1) * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                ds->exps = a;
        }
        r = journal_put_expectation(j, e);
        if (r < 0)
                return r;
        if (i < ds->n_exps) {
                expectation_free(ds->exps[i]);
                /* What was open against the old wish ends; the new wish opens its own. */
                for (size_t k = 0; k < ds->n_open; k++)
                        if (streq_ptr(ds->open[k]->name, e->name) && !streq(ds->open[k]->kind, "identity_conflict") &&
                            !streq(ds->open[k]->kind, "duplicate_uuid"))
                                ds->open[k]->stale = true;
        } else
                ds->n_exps++;
        ds->exps[i] = e;
        return 0;
}

int drift_remove_expectation(struct drift_state *ds, struct journal *j, const char *name) {
        int r = journal_delete_expectation(j, name);

        if (r < 0)
                return r;
        for (size_t i = 0; i < ds->n_exps; i++)
                if (streq(ds->exps[i]->name, name)) {
                        expectation_free(ds->exps[i]);
                        memmove(ds->exps + i, ds->exps + i + 1, (ds->n_exps - i - 1) * sizeof(*ds->exps));
                        ds->n_exps--;
                        break;
                }
        return 0;
}

/* Adds an item; detail is consumed. */
static int emit(struct drift_item ***items, size_t *n, const char *kind, const char *name, int64_t device_id,
                json_object *detail) {
        struct drift_item *d = calloc(1, sizeof(*d));

        if (!d || !detail)
                goto oom;
        d->kind = strdup(kind);
        d->name = name ? strdup(name) : NULL;
        d->device_id = device_id;
        d->detail = detail;
        if (!d->kind || (name && !d->name))
                goto oom;
        if (append_ptr((void ***) items, n, d) < 0)
                goto oom;
        return 0;
oom:
        if (d)
                d->detail = NULL;
        drift_item_free(d);
        json_object_put(detail);
        return -ENOMEM;
}

static json_object *mismatch(const char *expected, const char *actual) {
        json_object *o = json_object_new_object();

        if (o) {
                json_object_object_add(o, "expected", json_object_new_string(expected));
                json_object_object_add(o, "actual", actual ? json_object_new_string(actual) : NULL);
        }
        return o;
}

static int compute_expectation(const struct expectation *e, const struct ledger *l, struct drift_item ***items,
                               size_t *n) {
        bool found = false;
        int r;

        for (size_t i = 0; i < l->n_recs; i++) {
                const struct device_record *rec = l->recs[i];
                const struct device_facts *f = &rec->facts;

                if (rec->state != DEVICE_PRESENT || !expectation_matches(e, rec))
                        continue;
                found = true;
                /* Its facts are as last read: the unresponsive item says what is wrong. */
                if (rec->unresponsive_since)
                        continue;
                if (e->fs_type && !streq_ptr(f->fs_type, e->fs_type)) {
                        r = emit(items, n, "unexpected_fs", e->name, rec->id, mismatch(e->fs_type, f->fs_type));
                        if (r < 0)
                                return r;
                }
                if (e->fs_label && !streq_ptr(f->fs_label, e->fs_label)) {
                        r = emit(items, n, "label_mismatch", e->name, rec->id, mismatch(e->fs_label, f->fs_label));
                        if (r < 0)
                                return r;
                }
                if (e->min_size != FIELD_NULL && (f->size_bytes == FIELD_NULL || f->size_bytes < e->min_size)) {
                        json_object *d = json_object_new_object();
                        if (d) {
                                json_object_object_add(d, "expected_min", json_object_new_int64(e->min_size));
                                json_object_object_add(d, "actual", f->size_bytes == FIELD_NULL
                                                                            ? NULL
                                                                            : json_object_new_int64(f->size_bytes));
                        }
                        r = emit(items, n, "too_small", e->name, rec->id, d);
                        if (r < 0)
                                return r;
                }
        }
        if (!found) {
                json_object *d = json_object_new_object(), *m = json_object_new_object();
                if (!d || !m) {
                        json_object_put(d);
                        json_object_put(m);
                        return -ENOMEM;
                }
                json_object_object_add(m, e->match_kind, json_object_new_string(e->match_value));
                json_object_object_add(d, "match", m);
                return emit(items, n, "missing", e->name, 0, d);
        }
        return 0;
}

/* Ids of other devices named in the detail of a shared-key item. */
#define DRIFT_OTHERS_LISTED 8

typedef const char *(*key_fn)(const struct device_record *);

static int compare_by_key(const void *a, const void *b, void *userdata) {
        key_fn key = *(key_fn *) userdata;
        const struct device_record *x = *(const struct device_record *const *) a;
        const struct device_record *y = *(const struct device_record *const *) b;
        int c = strcasecmp(key(x), key(y));

        return c ? c : (x->id < y->id ? -1 : x->id > y->id);
}

/* Present records sharing a value of key (identity or filesystem UUID) each get an item
 * naming the others. Sorted by key, so thousands of devices cost n log n. */
static int compute_shared(const struct ledger *l, const char *kind, key_fn key, struct drift_item ***items,
                          size_t *n) {
        _cleanup_free_ const struct device_record **v = calloc(l->n_recs + 1, sizeof(*v));
        size_t m = 0;

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i]->state == DEVICE_PRESENT && key(l->recs[i]))
                        v[m++] = l->recs[i];
        if (m > 1)
                qsort_r(v, m, sizeof(*v), compare_by_key, &key);
        for (size_t start = 0, end; start < m; start = end) {
                for (end = start + 1; end < m && strcasecmp(key(v[start]), key(v[end])) == 0; end++)
                        ;
                if (end - start < 2)
                        continue;
                for (size_t i = start; i < end; i++) {
                        json_object *others = json_object_new_array(), *d = json_object_new_object();
                        size_t listed = 0;
                        if (!others || !d) {
                                json_object_put(others);
                                json_object_put(d);
                                return -ENOMEM;
                        }
                        /* A few of the others by id and how many there are: a thousand
                         * clones of one image must not make a thousand-fold detail. */
                        for (size_t k = start; k < end && listed < DRIFT_OTHERS_LISTED; k++)
                                if (k != i) {
                                        json_object_array_add(others, json_object_new_int64(v[k]->id));
                                        listed++;
                                }
                        json_object_object_add(d, streq(kind, "duplicate_uuid") ? "fs_uuid" : "identity",
                                               json_object_new_string(key(v[i])));
                        json_object_object_add(d, "kname", v[i]->facts.kname ? json_object_new_string(v[i]->facts.kname) : NULL);
                        json_object_object_add(d, "others", others);
                        json_object_object_add(d, "others_count", json_object_new_int64((int64_t) (end - start - 1)));
                        if (emit(items, n, kind, v[i]->name, v[i]->id, d) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

static const char *identity_key_of(const struct device_record *r) {
        /* A weak key names a slot; two slots are never "the same device". */
        return streq(identity_kind(r->identity), "weak") ? NULL : r->identity;
}

static const char *fs_uuid_of(const struct device_record *r) {
        return r->facts.fs_uuid;
}

int drift_compute(const struct drift_state *ds, const struct ledger *l, struct drift_item ***ret, size_t *ret_n) {
        struct drift_item **items = NULL;
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < ds->n_exps && r == 0; i++)
                r = compute_expectation(ds->exps[i], l, &items, &n);
        for (size_t i = 0; r == 0 && i < l->n_recs; i++) {
                const struct device_record *rec = l->recs[i];
                json_object *d;
                char ts[RFC3339_MAX];

                if (rec->state != DEVICE_PRESENT || !rec->unresponsive_since)
                        continue;
                d = json_object_new_object();
                if (d) {
                        json_object_object_add(d, "kname", rec->facts.kname ? json_object_new_string(rec->facts.kname) : NULL);
                        json_object_object_add(d, "unresponsive_since",
                                               json_object_new_string(format_rfc3339(rec->unresponsive_since, ts)));
                }
                r = emit(&items, &n, "unresponsive", rec->name, rec->id, d);
        }
        if (r == 0)
                r = compute_shared(l, "identity_conflict", identity_key_of, &items, &n);
        if (r == 0)
                r = compute_shared(l, "duplicate_uuid", fs_uuid_of, &items, &n);
        for (size_t i = 0; r == 0 && i < ds->n_extra; i++)
                r = emit(&items, &n, ds->extra[i]->kind, ds->extra[i]->name, ds->extra[i]->device_id,
                         json_object_get(ds->extra[i]->detail));
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        drift_item_free(items[i]);
                free(items);
                return r;
        }
        *ret = items;
        *ret_n = n;
        return 0;
}

static json_object *event_body(const struct drift_item *d) {
        json_object *o = json_object_new_object();

        if (o) {
                json_object_object_add(o, "drift_id", json_object_new_int64(d->id));
                json_object_object_add(o, "kind", json_object_new_string(d->kind));
                json_object_object_add(o, "name", d->name ? json_object_new_string(d->name) : NULL);
                json_object_object_add(o, "detail", json_object_get(d->detail));
        }
        return o;
}

/* Order for matching, and what makes two items the same: kind, device, then name for
 * items of an expectation (they follow the expectation); items about devices sharing a
 * key follow the device, whatever it is named meanwhile. */
static int compare_items(const void *a, const void *b) {
        const struct drift_item *x = *(const struct drift_item *const *) a;
        const struct drift_item *y = *(const struct drift_item *const *) b;
        int c = strcmp(x->kind, y->kind);

        if (c)
                return c;
        if (x->device_id != y->device_id)
                return x->device_id < y->device_id ? -1 : 1;
        if (streq(x->kind, "identity_conflict") || streq(x->kind, "duplicate_uuid") || streq(x->kind, "unresponsive"))
                return 0;
        return strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

static int close_item(struct journal *j, struct drift_item *o, int64_t now, unsigned *closed) {
        json_object *body = event_body(o);
        int r;

        r = journal_close_drift(j, o->id, now);
        if (r == 0)
                r = journal_append_event(j, now, o->device_id, "drift_closed", body, NULL, NULL);
        json_object_put(body);
        if (r < 0)
                return r;
        (*closed)++;
        log_msg_id(LOG_LEVEL_INFO, MSGID_DRIFT_CLOSED, "drift closed: %s%s%s", o->kind, o->name ? " " : "",
                   o->name ? o->name : "");
        return 0;
}

static int open_item(struct journal *j, struct drift_item *d, int64_t now, unsigned *opened) {
        json_object *body;
        int r;

        d->since = now;
        r = journal_insert_drift(j, d);
        if (r < 0)
                return r;
        body = event_body(d);
        r = journal_append_event(j, now, d->device_id, "drift_opened", NULL, body, NULL);
        json_object_put(body);
        if (r < 0)
                return r;
        (*opened)++;
        log_msg_id(LOG_LEVEL_INFO, MSGID_DRIFT_OPENED, "drift opened: %s%s%s", d->kind, d->name ? " " : "",
                   d->name ? d->name : "");
        return 0;
}

/* Both lists sorted, walked side by side: thousands of items cost n log n. */
static int sync_locked(struct drift_state *ds, struct journal *j, struct drift_item **now_items, size_t n_now,
                       int64_t now, unsigned *opened, unsigned *closed, unsigned *updated) {
        _cleanup_free_ struct drift_item **old = calloc(ds->n_open + 1, sizeof(*old));
        size_t i = 0, k = 0;
        int r = 0;

        if (!old)
                return -ENOMEM;
        if (ds->n_open > 0) {
                memcpy(old, ds->open, ds->n_open * sizeof(*old));
                qsort(old, ds->n_open, sizeof(*old), compare_items);
        }
        if (n_now > 0)
                qsort(now_items, n_now, sizeof(*now_items), compare_items);
        while (r == 0 && (i < ds->n_open || k < n_now)) {
                int c = i == ds->n_open ? 1 : k == n_now ? -1 : compare_items(&old[i], &now_items[k]);

                /* An item of a replaced expectation is a new wish: closed, then opened. */
                if (c == 0 && old[i]->stale) {
                        r = close_item(j, old[i++], now, closed);
                        if (r == 0)
                                r = open_item(j, now_items[k++], now, opened);
                } else if (c == 0) {
                        /* Still open: keep its start, take the current facts (and the
                         * device's current name). */
                        struct drift_item *o = old[i++], *d = now_items[k++];
                        if (!json_object_equal(o->detail, d->detail) || !streq_ptr(o->name, d->name)) {
                                r = journal_update_drift(j, o->id, d->name, d->detail);
                                (*updated)++;
                        }
                } else if (c < 0)
                        r = close_item(j, old[i++], now, closed);
                else
                        r = open_item(j, now_items[k++], now, opened);
        }
        return r;
}

int drift_sync(struct drift_state *ds, struct journal *j, const struct ledger *l, int64_t now,
               unsigned *ret_opened, unsigned *ret_closed) {
        struct drift_item **items = NULL;
        unsigned opened = 0, closed = 0, updated = 0;
        size_t n = 0;
        int r;

        r = drift_compute(ds, l, &items, &n);
        if (r < 0)
                return r;
        r = journal_begin(j);
        if (r < 0)
                goto out;
        r = sync_locked(ds, j, items, n, now, &opened, &closed, &updated);
        if (r == 0)
                r = journal_commit(j);
        if (r < 0)
                journal_rollback(j);
        if (r < 0 || opened || closed || updated) {
                /* The journal is right; take the open items from it (ids, starts). */
                int k;
                free_open(ds);
                k = journal_load_open_drift(j, add_open, ds);
                if (k < 0 && r == 0)
                        r = k;
        }
        if (ret_opened)
                *ret_opened = opened;
        if (ret_closed)
                *ret_closed = closed;
out:
        for (size_t i = 0; i < n; i++)
                drift_item_free(items[i]);
        free(items);
        return r;
}

json_object *drift_kinds_of_device(const struct drift_state *ds, int64_t device_id) {
        json_object *a = json_object_new_array();

        for (size_t i = 0; a && i < ds->n_open; i++)
                if (ds->open[i]->device_id == device_id)
                        json_object_array_add(a, json_object_new_string(ds->open[i]->kind));
        return a;
}
