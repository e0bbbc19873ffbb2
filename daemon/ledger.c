/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "ledger.h"
#include "log.h"
#include "util.h"

static int add_loaded(struct device_record *rec, void *userdata) {
        struct ledger *l = userdata;
        struct device_record **n = realloc(l->recs, (l->n_recs + 1) * sizeof(*n));

        if (!n) {
                device_record_free(rec);
                return -ENOMEM;
        }
        l->recs = n;
        l->recs[l->n_recs++] = rec;
        return 0;
}

static void free_records(struct ledger *l) {
        for (size_t i = 0; i < l->n_recs; i++)
                device_record_free(l->recs[i]);
        free(l->recs);
        l->recs = NULL;
        l->n_recs = 0;
}

int ledger_load(struct ledger *l, struct journal *j) {
        free_records(l);
        l->journal = j;
        return journal_load_devices(j, add_loaded, l);
}

void ledger_done(struct ledger *l) {
        free_records(l);
        l->journal = NULL;
}

void ledger_item_done(struct ledger_item *item) {
        free(item->kname);
        device_record_free(item->observed);
        *item = (struct ledger_item) {};
}

size_t ledger_count_present(const struct ledger *l) {
        size_t n = 0;
        for (size_t i = 0; i < l->n_recs; i++)
                n += l->recs[i]->state == DEVICE_PRESENT;
        return n;
}

struct device_record *ledger_find_by_id(const struct ledger *l, int64_t id) {
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i]->id == id)
                        return l->recs[i];
        return NULL;
}

static bool better(const struct device_record *cand, const struct device_record *best) {
        if (!best)
                return true;
        if (cand->state != best->state)
                return cand->state == DEVICE_PRESENT;
        return cand->last_seen > best->last_seen;
}

struct device_record *ledger_find_by_name(const struct ledger *l, const char *name) {
        struct device_record *best = NULL;

        for (size_t i = 0; i < l->n_recs; i++) {
                struct device_record *r = l->recs[i];
                if (streq_ptr(r->facts.kname, name) || streq_ptr(r->facts.devnode, name) ||
                    streq_ptr(r->facts.dev, name))
                        if (better(r, best))
                                best = r;
        }
        return best;
}

static struct device_record *find_present_by_kname(const struct ledger *l, const char *kname) {
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i]->state == DEVICE_PRESENT && streq_ptr(l->recs[i]->facts.kname, kname))
                        return l->recs[i];
        return NULL;
}

/* The record a gone device comes back to: same identity, most recently seen. */
static struct device_record *find_gone_by_identity(const struct ledger *l, const char *identity) {
        struct device_record *best = NULL;

        for (size_t i = 0; i < l->n_recs; i++) {
                struct device_record *r = l->recs[i];
                if (r->state == DEVICE_GONE && streq(r->identity, identity) && better(r, best))
                        best = r;
        }
        return best;
}

static json_object *state_object(enum device_state s) {
        json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, "state", json_object_new_string(device_state_to_string(s)));
        return o;
}

static int mark_gone(struct ledger *l, struct device_record *rec, int64_t now, struct ledger_stats *st) {
        json_object *before = state_object(DEVICE_PRESENT), *after = state_object(DEVICE_GONE);
        int r;

        if (!before || !after) {
                r = -ENOMEM;
                goto out;
        }
        rec->state = DEVICE_GONE;
        r = journal_update_device(l->journal, rec);
        if (r == 0)
                r = journal_append_event(l->journal, now, rec->id, "disappeared", before, after, NULL);
        if (r == 0) {
                st->disappeared++;
                log_info("device %s (id %lld, %s) disappeared", rec->facts.kname ?: "?",
                         (long long) rec->id, rec->identity);
        }
out:
        json_object_put(before);
        json_object_put(after);
        return r;
}

static int update_record(struct ledger *l, struct device_record *rec, const struct device_record *obs,
                         int64_t now, struct ledger_stats *st) {
        json_object *before = NULL, *after = NULL;
        bool was_gone = rec->state == DEVICE_GONE;
        struct device_facts copy;
        int n, r;

        n = device_facts_diff(&rec->facts, &obs->facts, &before, &after);
        if (n < 0)
                return n;
        if (n == 0 && !was_gone) {
                json_object_put(before);
                json_object_put(after);
                rec->last_seen = now;
                return journal_touch_device(l->journal, rec->id, now);
        }
        r = device_facts_copy(&copy, &obs->facts);
        if (r < 0)
                goto out;
        device_facts_done(&rec->facts);
        rec->facts = copy;
        rec->state = DEVICE_PRESENT;
        rec->last_seen = now;
        r = journal_update_device(l->journal, rec);
        if (r < 0)
                goto out;
        if (was_gone) {
                json_object_object_add(before, "state", json_object_new_string("gone"));
                json_object_object_add(after, "state", json_object_new_string("present"));
        }
        r = journal_append_event(l->journal, now, rec->id, was_gone ? "reappeared" : "changed", before,
                                 after, NULL);
        if (r < 0)
                goto out;
        if (was_gone) {
                st->appeared++;
                log_info("device %s (id %lld, %s) reappeared", rec->facts.kname ?: "?", (long long) rec->id,
                         rec->identity);
        } else {
                st->changed++;
                log_info("device %s (id %lld) changed: %s", rec->facts.kname ?: "?", (long long) rec->id,
                         json_object_to_json_string_ext(after, JSON_C_TO_STRING_PLAIN));
        }
out:
        json_object_put(before);
        json_object_put(after);
        return r;
}

static int insert_record(struct ledger *l, const struct device_record *obs, int64_t now,
                         struct ledger_stats *st) {
        struct device_record *rec = calloc(1, sizeof(*rec));
        struct device_record **n;
        json_object *after = NULL;
        int r = -ENOMEM;

        if (!rec)
                return -ENOMEM;
        n = realloc(l->recs, (l->n_recs + 1) * sizeof(*n));
        if (!n)
                goto fail;
        l->recs = n;
        rec->identity = strdup(obs->identity);
        if (!rec->identity)
                goto fail;
        r = device_facts_copy(&rec->facts, &obs->facts);
        if (r < 0)
                goto fail;
        rec->state = DEVICE_PRESENT;
        rec->first_seen = rec->last_seen = now;
        r = journal_insert_device(l->journal, rec);
        if (r < 0)
                goto fail;
        after = json_object_new_object();
        if (!after) {
                r = -ENOMEM;
                goto fail;
        }
        json_object_object_add(after, "identity", json_object_new_string(rec->identity));
        json_object_object_add(after, "state", json_object_new_string("present"));
        device_facts_to_json(&rec->facts, after);
        r = journal_append_event(l->journal, now, rec->id, "appeared", NULL, after, NULL);
        json_object_put(after);
        if (r < 0)
                goto fail;
        l->recs[l->n_recs++] = rec;
        st->appeared++;
        log_info("device %s (id %lld, %s) appeared", rec->facts.kname ?: "?", (long long) rec->id,
                 rec->identity);
        return 0;
fail:
        device_record_free(rec);
        return r;
}

static bool batch_has_device_at(const struct ledger_item *items, size_t n, const char *kname) {
        for (size_t i = 0; i < n; i++)
                if (items[i].observed && streq_ptr(items[i].kname, kname))
                        return true;
        return false;
}

static int apply_locked(struct ledger *l, const struct ledger_item *items, size_t n, bool full,
                        int64_t now, struct ledger_stats *st) {
        int r;

        /* First everything that left a kernel name: a removal, or a different device now
         * holding the name. Then, on a full scan, records whose name is empty now. Only
         * then match: a device that moved from loop3 to loop7 in the same batch finds its
         * record already gone and takes it back. */
        for (size_t i = 0; i < n; i++) {
                struct device_record *p = find_present_by_kname(l, items[i].kname);
                if (!p)
                        continue;
                if (items[i].observed && streq(p->identity, items[i].observed->identity))
                        continue;
                r = mark_gone(l, p, now, st);
                if (r < 0)
                        return r;
        }
        if (full)
                for (size_t i = 0; i < l->n_recs; i++) {
                        struct device_record *p = l->recs[i];
                        if (p->state == DEVICE_PRESENT && !batch_has_device_at(items, n, p->facts.kname)) {
                                r = mark_gone(l, p, now, st);
                                if (r < 0)
                                        return r;
                        }
                }

        for (size_t i = 0; i < n; i++) {
                const struct device_record *obs = items[i].observed;
                struct device_record *rec;

                if (!obs)
                        continue;
                st->checked++;
                rec = find_present_by_kname(l, items[i].kname);
                if (!rec)
                        rec = find_gone_by_identity(l, obs->identity);
                /* Two present devices with one identity (an image attached twice) stay
                 * two records: a present record elsewhere is never taken over. */
                r = rec ? update_record(l, rec, obs, now, st) : insert_record(l, obs, now, st);
                if (r < 0)
                        return r;
        }
        return 0;
}

int ledger_apply(struct ledger *l, const struct ledger_item *items, size_t n_items, bool full,
                 int64_t now, struct ledger_stats *stats) {
        struct ledger_stats st = {};
        int r;

        r = journal_begin(l->journal);
        if (r < 0)
                return r;
        r = apply_locked(l, items, n_items, full, now, &st);
        if (r == 0)
                r = journal_commit(l->journal);
        if (r < 0) {
                int k;
                journal_rollback(l->journal);
                /* The in-memory copy may hold uncommitted changes: take the journal's. */
                k = ledger_load(l, l->journal);
                if (k < 0)
                        log_error_errno(k, "cannot reload the ledger after a failed commit");
                return r;
        }
        if (stats) {
                stats->checked += st.checked;
                stats->appeared += st.appeared;
                stats->changed += st.changed;
                stats->disappeared += st.disappeared;
        }
        return 0;
}
