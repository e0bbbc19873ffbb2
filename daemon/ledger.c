/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ctype.h>

#include "identity.h"
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
        uint64_t generation = l->generation ? l->generation : 1;
        struct device_record **old = l->recs;
        size_t n_old = l->n_recs;
        int r;

        l->recs = NULL;
        l->n_recs = 0;
        l->journal = j;
        l->generation = generation;
        r = journal_load_devices(j, add_loaded, l);
        /* A reload (after a failed commit) keeps what this run had verified. */
        for (size_t i = 0; i < l->n_recs; i++)
                for (size_t k = 0; k < n_old; k++)
                        if (old[k]->id == l->recs[i]->id) {
                                l->recs[i]->verified_pass = old[k]->verified_pass;
                                break;
                        }
        for (size_t k = 0; k < n_old; k++)
                device_record_free(old[k]);
        free(old);
        return r;
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

void ledger_begin_pass(struct ledger *l) {
        l->generation++;
        l->in_pass = true;
}

void ledger_abort_pass(struct ledger *l) {
        l->in_pass = false;
        for (size_t i = 0; i < l->n_recs; i++)
                l->recs[i]->displaced = false;
}

size_t ledger_count_present(const struct ledger *l) {
        size_t n = 0;
        for (size_t i = 0; i < l->n_recs; i++)
                n += l->recs[i]->state == DEVICE_PRESENT;
        return n;
}

size_t ledger_count_verified(const struct ledger *l) {
        size_t n = 0;
        for (size_t i = 0; i < l->n_recs; i++)
                n += l->recs[i]->verified_pass != 0;
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

        for (size_t i = 0; i < l->n_recs; i++)
                if (streq_ptr(l->recs[i]->name, name))
                        return l->recs[i];
        for (size_t i = 0; i < l->n_recs; i++) {
                struct device_record *r = l->recs[i];
                if (streq_ptr(r->facts.kname, name) || streq_ptr(r->facts.devnode, name) ||
                    streq_ptr(r->facts.dev, name))
                        if (better(r, best))
                                best = r;
        }
        return best;
}

bool ledger_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;

        /* It becomes a file name (/dev/disk/by-ledger/NAME): no slashes, no dot files,
         * nothing a shell or udev rule would trip over. */
        if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-' || strspn(name, "0123456789") == n)
                return false; /* all digits would read as a ledger id */
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) name[i]) && !strchr("._-", name[i]))
                        return false;
        return true;
}

static bool same_identity(const struct device_record *rec, const struct device_record *obs) {
        return streq(rec->identity, obs->identity) && identity_aux_compatible(rec->identity_aux, obs->identity_aux);
}

static struct device_record *present_at(const struct ledger *l, const char *kname) {
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i]->state == DEVICE_PRESENT && !l->recs[i]->displaced &&
                    streq_ptr(l->recs[i]->facts.kname, kname))
                        return l->recs[i];
        return NULL;
}

static bool is_bound(struct device_record *const *bound, size_t n, const struct device_record *r) {
        for (size_t i = 0; i < n; i++)
                if (bound[i] == r)
                        return true;
        return false;
}

static const struct ledger_item *item_at(const struct ledger_item *items, size_t n, const char *kname) {
        /* An item without a name is one the reconciler could not observe: it says nothing. */
        for (size_t i = 0; kname && i < n; i++)
                if (items[i].kname && streq(items[i].kname, kname))
                        return &items[i];
        return NULL;
}

static json_object *state_object(enum device_state s) {
        json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, "state", json_object_new_string(device_state_to_string(s)));
        return o;
}

static void verified(struct ledger *l, struct device_record *rec, int64_t now) {
        rec->last_verified = now;
        rec->verified_pass = l->generation;
        rec->displaced = false;
}

static int mark_gone(struct ledger *l, struct device_record *rec, int64_t now, struct ledger_stats *st) {
        json_object *before = json_object_new_object(), *after = state_object(DEVICE_GONE);
        int r;

        if (!before || !after) {
                r = -ENOMEM;
                goto out;
        }
        json_object_object_add(before, "state", json_object_new_string(device_record_state_string(rec)));
        rec->state = DEVICE_GONE;
        rec->unresponsive_since = 0;
        verified(l, rec, now);
        r = journal_update_device(l->journal, rec);
        if (r == 0)
                r = journal_append_event(l->journal, now, rec->id, "disappeared", before, after, NULL);
        if (r == 0) {
                st->disappeared++;
                log_msg_id(LOG_LEVEL_INFO, MSGID_DEVICE_DISAPPEARED, "device %s (id %lld, %s) disappeared",
                           rec->facts.kname ?: "?", (long long) rec->id,
                         rec->identity);
        }
out:
        json_object_put(before);
        json_object_put(after);
        return r;
}

/* Moves the place fields (kname, devnode, dev) of a diff into their own pair. */
static int split_place(json_object *before, json_object *after, json_object **ret_before, json_object **ret_after) {
        static const char *const place[] = { "kname", "devnode", "dev" };
        json_object *pb = NULL, *pa = NULL;

        for (size_t i = 0; i < ELEMENTSOF(place); i++) {
                json_object *vb, *va;
                if (!json_object_object_get_ex(after, place[i], &va))
                        continue;
                json_object_object_get_ex(before, place[i], &vb);
                if (!pb && !(pb = json_object_new_object()))
                        goto oom;
                if (!pa && !(pa = json_object_new_object()))
                        goto oom;
                json_object_object_add(pb, place[i], json_object_get(vb));
                json_object_object_add(pa, place[i], json_object_get(va));
                json_object_object_del(before, place[i]);
                json_object_object_del(after, place[i]);
        }
        *ret_before = pb;
        *ret_after = pa;
        return 0;
oom:
        json_object_put(pb);
        json_object_put(pa);
        return -ENOMEM;
}

/* The device is there but its reads time out: the facts stay as last known (its content
 * cannot be read), only its state and place follow what sysfs says. */
static int update_unresponsive(struct ledger *l, struct device_record *rec, const struct device_record *obs,
                               int64_t now, struct ledger_stats *st) {
        static const char *const place[] = { "kname", "devnode", "dev" };
        bool was_gone = rec->state == DEVICE_GONE, was_unresponsive = !was_gone && rec->unresponsive_since;
        bool moved = !streq_ptr(rec->facts.kname, obs->facts.kname);
        json_object *before = NULL, *after = NULL;
        int r = 0;

        st->unresponsive++;
        verified(l, rec, now);
        rec->last_seen = now;
        if (!was_gone && was_unresponsive && !moved)
                return journal_touch_device(l->journal, rec->id, now);

        before = json_object_new_object();
        after = json_object_new_object();
        if (!before || !after) {
                r = -ENOMEM;
                goto out;
        }
        json_object_object_add(before, "state", json_object_new_string(device_record_state_string(rec)));
        json_object_object_add(after, "state", json_object_new_string("unresponsive"));
        for (size_t i = 0; moved && i < ELEMENTSOF(place); i++) {
                const struct field_desc *d = NULL;
                for (size_t k = 0; k < device_fields_count; k++)
                        if (streq(device_fields[k].name, place[i]))
                                d = &device_fields[k];
                char **to = device_field_ptr(&rec->facts, d);
                char *const *from = device_field_cptr(&obs->facts, d);
                json_object_object_add(before, place[i], device_field_to_json(&rec->facts, d));
                free(*to);
                *to = *from ? strdup(*from) : NULL;
                json_object_object_add(after, place[i], device_field_to_json(&rec->facts, d));
        }
        rec->state = DEVICE_PRESENT;
        if (!was_unresponsive)
                rec->unresponsive_since = now;
        r = journal_update_device(l->journal, rec);
        if (r == 0)
                r = journal_append_event(l->journal, now, rec->id, was_gone ? "reappeared" : "unresponsive", before,
                                         after, NULL);
        if (r == 0 && was_gone)
                st->appeared++;
        if (r == 0)
                log_msg_id(LOG_LEVEL_WARNING, MSGID_DEVICE_UNRESPONSIVE, "device %s (id %lld) does not answer reads",
                           rec->facts.kname ?: "?", (long long) rec->id);
out:
        json_object_put(before);
        json_object_put(after);
        return r;
}

static int update_record(struct ledger *l, struct device_record *rec, const struct device_record *obs,
                         int64_t now, struct ledger_stats *st) {
        json_object *before = NULL, *after = NULL, *place_before = NULL, *place_after = NULL;
        bool was_gone = rec->state == DEVICE_GONE;
        bool was_unresponsive = !was_gone && rec->unresponsive_since;
        bool aux_news = !rec->identity_aux && obs->identity_aux;
        struct device_facts copy;
        int n, r;

        if (obs->unresponsive_since)
                return update_unresponsive(l, rec, obs, now, st);
        n = device_facts_diff(&rec->facts, &obs->facts, &before, &after);
        if (n < 0)
                return n;
        verified(l, rec, now);
        if (n == 0 && !was_gone && !was_unresponsive && !aux_news) {
                json_object_put(before);
                json_object_put(after);
                rec->last_seen = now;
                return journal_touch_device(l->journal, rec->id, now);
        }
        /* Another kernel name is a move, told apart as "renamed"; a new device number
         * under the same name is a change like any other. */
        if (json_object_object_get_ex(after, "kname", NULL)) {
                r = split_place(before, after, &place_before, &place_after);
                if (r < 0)
                        goto out;
        }
        r = device_facts_copy(&copy, &obs->facts);
        if (r < 0)
                goto out;
        device_facts_done(&rec->facts);
        rec->facts = copy;
        if (aux_news) {
                rec->identity_aux = strdup(obs->identity_aux);
                if (!rec->identity_aux) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        rec->state = DEVICE_PRESENT;
        rec->unresponsive_since = 0;
        rec->last_seen = now;
        r = journal_update_device(l->journal, rec);
        if (r < 0)
                goto out;
        if (was_gone || was_unresponsive) {
                /* Back (from gone), or answering again: one event with the state and
                 * whatever changed meanwhile. */
                json_object_object_add(before, "state", json_object_new_string(was_gone ? "gone" : "unresponsive"));
                json_object_object_add(after, "state", json_object_new_string("present"));
                r = journal_append_event(l->journal, now, rec->id, was_gone ? "reappeared" : "responsive", before,
                                         after, NULL);
                if (r < 0)
                        goto out;
                if (was_gone)
                        st->appeared++;
                else
                        st->changed++;
                log_msg_id(LOG_LEVEL_INFO, was_gone ? MSGID_DEVICE_APPEARED : NULL, "device %s (id %lld, %s) %s",
                           rec->facts.kname ?: "?", (long long) rec->id, rec->identity,
                           was_gone ? "reappeared" : "answers again");
        } else if (json_object_object_length(after) > 0) {
                r = journal_append_event(l->journal, now, rec->id, "changed", before, after, NULL);
                if (r < 0)
                        goto out;
                st->changed++;
                log_info("device %s (id %lld) changed: %s", rec->facts.kname ?: "?", (long long) rec->id,
                         json_object_to_json_string_ext(after, JSON_C_TO_STRING_PLAIN));
        }
        if (place_after) {
                r = journal_append_event(l->journal, now, rec->id, "renamed", place_before, place_after, NULL);
                if (r < 0)
                        goto out;
                st->renamed++;
                log_info("device id %lld (%s) is now %s", (long long) rec->id, rec->identity,
                         rec->facts.kname ?: "?");
        }
out:
        json_object_put(before);
        json_object_put(after);
        json_object_put(place_before);
        json_object_put(place_after);
        return r;
}

static int insert_record(struct ledger *l, const struct device_record *obs, int64_t now,
                         struct ledger_stats *st) {
        struct device_record *rec = calloc(1, sizeof(*rec));
        struct device_record **n;
        json_object *before = NULL, *after = NULL;
        int r = -ENOMEM;

        if (!rec)
                return -ENOMEM;
        n = realloc(l->recs, (l->n_recs + 1) * sizeof(*n));
        if (!n)
                goto fail;
        l->recs = n;
        rec->identity = strdup(obs->identity);
        if (!rec->identity || (obs->identity_aux && !(rec->identity_aux = strdup(obs->identity_aux))))
                goto fail;
        r = device_facts_copy(&rec->facts, &obs->facts);
        if (r < 0)
                goto fail;
        rec->state = DEVICE_PRESENT;
        rec->first_seen = rec->last_seen = now;
        rec->unresponsive_since = obs->unresponsive_since ? now : 0;
        if (rec->unresponsive_since)
                st->unresponsive++;
        verified(l, rec, now);
        r = journal_insert_device(l->journal, rec);
        if (r < 0)
                goto fail;
        before = json_object_new_object();
        after = json_object_new_object();
        if (!before || !after) {
                r = -ENOMEM;
                goto fail;
        }
        json_object_object_add(after, "identity", json_object_new_string(rec->identity));
        json_object_object_add(after, "state", json_object_new_string(device_record_state_string(rec)));
        device_facts_to_json(&rec->facts, after);
        r = journal_append_event(l->journal, now, rec->id, "appeared", before, after, NULL);
        if (r < 0)
                goto fail;
        json_object_put(before);
        json_object_put(after);
        l->recs[l->n_recs++] = rec;
        st->appeared++;
        log_msg_id(LOG_LEVEL_INFO, MSGID_DEVICE_APPEARED, "device %s (id %lld, %s) appeared", rec->facts.kname ?: "?",
                   (long long) rec->id, rec->identity);
        return 0;
fail:
        json_object_put(before);
        json_object_put(after);
        device_record_free(rec);
        return r;
}

static int apply_locked(struct ledger *l, const struct ledger_item *items, size_t n, int64_t now,
                        struct ledger_stats *st) {
        _cleanup_free_ struct device_record **bound = calloc(n + 1, sizeof(*bound));
        int r;

        if (!bound)
                return -ENOMEM;

        /* 1. In place. */
        for (size_t i = 0; i < n; i++) {
                const struct device_record *obs = items[i].observed;
                struct device_record *p;

                if (obs && (p = present_at(l, items[i].kname)) && same_identity(p, obs) && !is_bound(bound, n, p))
                        bound[i] = p;
        }
        /* 2. Moved: present elsewhere, and the batch shows that place no longer holds it. */
        for (size_t i = 0; i < n; i++) {
                const struct device_record *obs = items[i].observed;

                if (!obs || bound[i])
                        continue;
                for (size_t k = 0; k < l->n_recs; k++) {
                        struct device_record *r2 = l->recs[k];
                        const struct ledger_item *there;

                        if (r2->state != DEVICE_PRESENT || !same_identity(r2, obs) || is_bound(bound, n, r2) ||
                            streq_ptr(r2->facts.kname, items[i].kname))
                                continue;
                        there = item_at(items, n, r2->facts.kname);
                        if (there && (!there->observed || !streq(there->observed->identity, obs->identity))) {
                                bound[i] = r2;
                                break;
                        }
                }
        }
        /* 3. Back: the most recently seen gone record of the identity. */
        for (size_t i = 0; i < n; i++) {
                const struct device_record *obs = items[i].observed;
                struct device_record *best = NULL;

                if (!obs || bound[i])
                        continue;
                for (size_t k = 0; k < l->n_recs; k++) {
                        struct device_record *g = l->recs[k];
                        if (g->state == DEVICE_GONE && same_identity(g, obs) && !is_bound(bound, n, g) &&
                            (!best || g->last_seen > best->last_seen))
                                best = g;
                }
                bound[i] = best;
        }
        /* Whatever the batch shows gone from its place leaves first, so the history reads
         * in order: a device leaves loop3, then comes back at loop7. */
        for (size_t k = 0; k < l->n_recs; k++) {
                struct device_record *p = l->recs[k];

                if (p->state != DEVICE_PRESENT || is_bound(bound, n, p) || !item_at(items, n, p->facts.kname))
                        continue;
                if (l->in_pass) {
                        p->displaced = true;
                        continue;
                }
                r = mark_gone(l, p, now, st);
                if (r < 0)
                        return r;
        }
        /* Then the matched ones change, and 4. the rest are new. */
        for (size_t i = 0; i < n; i++) {
                const struct device_record *obs = items[i].observed;

                if (!obs)
                        continue;
                st->checked++;
                r = bound[i] ? update_record(l, bound[i], obs, now, st) : insert_record(l, obs, now, st);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void add_stats(struct ledger_stats *to, const struct ledger_stats *st) {
        if (!to)
                return;
        to->checked += st->checked;
        to->appeared += st->appeared;
        to->changed += st->changed;
        to->renamed += st->renamed;
        to->disappeared += st->disappeared;
        to->unresponsive += st->unresponsive;
}

/* Runs fn in one transaction; on failure the in-memory copy is the journal's again. */
static int transaction(struct ledger *l, int (*fn)(struct ledger *l, void *userdata), void *userdata) {
        int r = journal_begin(l->journal);

        if (r < 0)
                return r;
        r = fn(l, userdata);
        if (r == 0)
                r = journal_commit(l->journal);
        if (r < 0) {
                int k;
                journal_rollback(l->journal);
                k = ledger_load(l, l->journal);
                if (k < 0)
                        log_error_errno(k, "cannot reload the ledger after a failed commit");
        }
        return r;
}

struct apply_args {
        const struct ledger_item *items;
        size_t n;
        int64_t now;
        struct ledger_stats st;
};

static int apply_fn(struct ledger *l, void *userdata) {
        struct apply_args *a = userdata;
        return apply_locked(l, a->items, a->n, a->now, &a->st);
}

int ledger_apply(struct ledger *l, const struct ledger_item *items, size_t n_items, int64_t now,
                 struct ledger_stats *stats) {
        struct apply_args a = { .items = items, .n = n_items, .now = now };
        int r = transaction(l, apply_fn, &a);

        if (r == 0)
                add_stats(stats, &a.st);
        return r;
}

static int sweep_fn(struct ledger *l, void *userdata) {
        struct apply_args *a = userdata;

        for (size_t i = 0; i < l->n_recs; i++) {
                struct device_record *rec = l->recs[i];
                int r;

                if (rec->verified_pass == l->generation)
                        continue;
                if (rec->state == DEVICE_GONE) {
                        /* The complete pass did not find it: its absence is verified. */
                        rec->verified_pass = l->generation;
                        rec->last_verified = a->now;
                        continue;
                }
                r = mark_gone(l, rec, a->now, &a->st);
                if (r < 0)
                        return r;
        }
        return journal_touch_gone_devices(l->journal, a->now);
}

int ledger_sweep(struct ledger *l, int64_t now, struct ledger_stats *stats) {
        struct apply_args a = { .now = now };
        int r;

        l->in_pass = false;
        r = transaction(l, sweep_fn, &a);

        if (r == 0)
                add_stats(stats, &a.st);
        return r;
}

struct name_args {
        struct device_record *rec;
        const char *name;
        int64_t now;
};

static int name_fn(struct ledger *l, void *userdata) {
        struct name_args *a = userdata;
        json_object *before = json_object_new_object(), *after = json_object_new_object();
        char *old = a->rec->name;
        int r = -ENOMEM;

        if (!before || !after)
                goto out;
        json_object_object_add(before, "name", old ? json_object_new_string(old) : NULL);
        json_object_object_add(after, "name", a->name ? json_object_new_string(a->name) : NULL);
        a->rec->name = a->name ? strdup(a->name) : NULL;
        if (a->name && !a->rec->name) {
                a->rec->name = old;
                goto out;
        }
        r = journal_update_device(l->journal, a->rec);
        if (r == 0)
                r = journal_append_event(l->journal, a->now, a->rec->id, "named", before, after, NULL);
        if (r < 0) {
                free(a->rec->name);
                a->rec->name = old;
        } else
                free(old);
out:
        json_object_put(before);
        json_object_put(after);
        return r;
}

int ledger_set_name(struct ledger *l, struct device_record *rec, const char *name, int64_t now) {
        struct name_args a = { .rec = rec, .name = name, .now = now };

        if (name && !ledger_name_valid(name))
                return -EINVAL;
        if (streq_ptr(rec->name, name))
                return 0;
        /* Unique, and not a kernel name the ledger knows: lookups by name try the
         * ledger's names first, and would hide that device. */
        for (size_t i = 0; name && i < l->n_recs; i++)
                if ((l->recs[i] != rec && streq_ptr(l->recs[i]->name, name)) || streq_ptr(l->recs[i]->facts.kname, name))
                        return -EEXIST;
        return transaction(l, name_fn, &a);
}
