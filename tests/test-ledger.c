/* Description: the ledger matches observations to records by identity, never by kernel name, and writes one event per real change and none for a repeat, also across a restart. */
/* Matching in place, moved ("renamed"), back ("reappeared") and new; loop-file qualifiers
 * (identity_aux) against inode reuse; passes and sweeps with freshness (verified_pass,
 * last_verified); ledger names. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "device.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

struct env {
        char *dir;
        char *path;
        struct journal *journal;
        struct ledger ledger;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");
        struct env *e = calloc(1, sizeof(*e));
        char *err = NULL;

        if (!e)
                return -1;
        if (asprintf(&e->dir, "%s/test-ledger.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(e->dir))
                return -1;
        if (asprintf(&e->path, "%s/journal.db", e->dir) < 0)
                return -1;
        if (journal_open(e->path, &e->journal, &err) < 0) {
                fprintf(stderr, "journal_open: %s\n", err);
                free(err);
                return -1;
        }
        if (ledger_load(&e->ledger, e->journal) < 0)
                return -1;
        *state = e;
        return 0;
}

static int teardown(void **state) {
        struct env *e = *state;

        ledger_done(&e->ledger);
        journal_close(e->journal);
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(e->dir);
        free(e->path);
        free(e);
        return 0;
}

/* A loop device as observation would describe it: identity plus facts. */
static struct device_record *dev_new(const char *identity, const char *kname, int minor, int64_t size) {
        struct device_record *r = calloc(1, sizeof(*r));

        assert_non_null(r);
        r->identity = strdup(identity);
        device_facts_init(&r->facts);
        assert_true(asprintf(&r->facts.kname, "%s", kname) > 0);
        assert_true(asprintf(&r->facts.devnode, "/dev/%s", kname) > 0);
        assert_true(asprintf(&r->facts.dev, "7:%d", minor) > 0);
        r->facts.devtype = strdup("disk");
        r->facts.size_bytes = size;
        r->facts.read_only = 0;
        r->facts.rotational = 0;
        r->facts.logical_block_size = 512;
        r->facts.holders = calloc(1, sizeof(char *));
        assert_true(asprintf(&r->facts.loop_backing_file, "/var/tmp/%s.img", identity) > 0);
        assert_non_null(r->identity);
        assert_non_null(r->facts.devtype);
        assert_non_null(r->facts.holders);
        return r;
}

/* A copy of d seen at another kernel name (minor follows the name). */
static struct device_record *dev_moved(const struct device_record *d, const char *kname, int minor) {
        struct device_record *r = dev_new(d->identity, kname, minor, d->facts.size_bytes);
        return r;
}

static struct ledger_item item(const char *kname, struct device_record *observed) {
        struct ledger_item it = { .kname = strdup(kname), .observed = observed };

        assert_non_null(it.kname);
        return it;
}

static void items_done(struct ledger_item *items, size_t n) {
        for (size_t i = 0; i < n; i++)
                ledger_item_done(&items[i]);
}

/* ledger_apply() borrows the items: the same batch can be applied again. A full scan is
 * a pass: begun, the batch applied, then swept (what it did not see is gone). */
static void apply(struct env *e, struct ledger_item *items, size_t n, bool full, int64_t now,
                  struct ledger_stats *st) {
        if (full)
                ledger_begin_pass(&e->ledger);
        assert_int_equal(ledger_apply(&e->ledger, items, n, now, st), 0);
        if (full)
                assert_int_equal(ledger_sweep(&e->ledger, now, st), 0);
}

static json_object *events_since(struct env *e, int64_t since) {
        json_object *a = json_object_new_array();

        assert_non_null(a);
        assert_true(journal_list_events(e->journal, since, 100000, 0, a) >= 0);
        return a;
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("member %s missing in %s", key, json_object_to_json_string(o));
        return v;
}

static const char *kind_of(json_object *ev) {
        return json_object_get_string(member(ev, "kind"));
}

static int64_t device_of(json_object *ev) {
        json_object *d = member(ev, "device_id");
        return d ? json_object_get_int64(d) : 0;
}

static void assert_json_text(json_object *got, const char *want_text) {
        json_object *want = json_tokener_parse(want_text);

        assert_non_null(want);
        if (!json_object_equal(want, got)) {
                print_error("want %s\n got %s\n", want_text, json_object_to_json_string(got));
                json_object_put(want);
                fail();
        }
        json_object_put(want);
}

static struct device_record *find_kname_state(struct env *e, const char *kname, enum device_state s) {
        for (size_t i = 0; i < e->ledger.n_recs; i++)
                if (streq_ptr(e->ledger.recs[i]->facts.kname, kname) && e->ledger.recs[i]->state == s)
                        return e->ledger.recs[i];
        return NULL;
}

/* The in-memory ledger matches the journal: what clients see is what is committed. */
static void assert_ledger_matches_journal(struct env *e) {
        struct ledger fresh = {};

        assert_int_equal(ledger_load(&fresh, e->journal), 0);
        assert_int_equal(fresh.n_recs, e->ledger.n_recs);
        for (size_t i = 0; i < fresh.n_recs; i++) {
                struct device_record *a = ledger_find_by_id(&e->ledger, fresh.recs[i]->id);
                struct device_record *b = fresh.recs[i];

                assert_non_null(a);
                assert_string_equal(a->identity, b->identity);
                assert_true(streq_ptr(a->identity_aux, b->identity_aux));
                assert_true(streq_ptr(a->name, b->name));
                assert_int_equal(a->state, b->state);
                assert_int_equal(a->first_seen, b->first_seen);
                assert_int_equal(a->last_seen, b->last_seen);
                assert_int_equal(a->last_verified, b->last_verified);
                assert_int_equal(device_facts_diff(&a->facts, &b->facts, NULL, NULL), 0);
        }
        ledger_done(&fresh);
}

static void restart(struct env *e) {
        char *err = NULL;

        ledger_done(&e->ledger);
        journal_close(e->journal);
        assert_int_equal(journal_open(e->path, &e->journal, &err), 0);
        assert_int_equal(ledger_load(&e->ledger, e->journal), 0);
}

#define T1 1763629200000000LL
#define T2 (T1 + 1000000)
#define T3 (T1 + 2000000)
#define T4 (T1 + 3000000)

/* ------------------------------------------------------------------------------------- */

static void test_first_apply_appears(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:12", "loop1", 1, 2 << 20)),
        };
        struct ledger_stats st = {};
        struct device_record *r0, *r1;
        json_object *ev, *after;

        apply(e, items, 2, false, T1, &st);
        assert_int_equal(st.checked, 2);
        assert_int_equal(st.appeared, 2);
        assert_int_equal(st.changed, 0);
        assert_int_equal(st.disappeared, 0);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(ledger_count_present(&e->ledger), 2);

        r0 = find_kname_state(e, "loop0", DEVICE_PRESENT);
        r1 = find_kname_state(e, "loop1", DEVICE_PRESENT);
        assert_non_null(r0);
        assert_non_null(r1);
        assert_true(r0->id > 0);
        assert_true(r1->id > 0);
        assert_int_not_equal(r0->id, r1->id);
        assert_string_equal(r0->identity, "loop:259:2:11");
        assert_int_equal(r0->first_seen, T1);
        assert_int_equal(r0->last_seen, T1);
        /* Verified in this run, now. */
        assert_int_equal(r0->last_verified, T1);
        assert_int_not_equal(r0->verified_pass, 0);
        assert_int_equal(ledger_count_verified(&e->ledger), 2);
        assert_int_equal(device_facts_diff(&r0->facts, &items[0].observed->facts, NULL, NULL), 0);
        assert_int_equal(device_facts_diff(&r1->facts, &items[1].observed->facts, NULL, NULL), 0);

        ev = events_since(e, 0);
        assert_int_equal(json_object_array_length(ev), 2);
        for (size_t i = 0; i < 2; i++) {
                json_object *x = json_object_array_get_idx(ev, i);
                assert_string_equal(kind_of(x), "appeared");
                assert_int_equal(json_object_get_int64(member(x, "seq")), (int64_t) i + 1);
                /* Nothing before: an empty object. */
                assert_json_text(member(x, "before"), "{}");
        }
        assert_int_equal(device_of(json_object_array_get_idx(ev, 0)), r0->id);
        assert_int_equal(device_of(json_object_array_get_idx(ev, 1)), r1->id);
        after = member(json_object_array_get_idx(ev, 0), "after");
        assert_string_equal(json_object_get_string(member(after, "identity")), "loop:259:2:11");
        assert_string_equal(json_object_get_string(member(after, "state")), "present");
        assert_string_equal(json_object_get_string(member(after, "kname")), "loop0");
        assert_int_equal(json_object_get_int64(member(after, "size_bytes")), 1 << 20);
        assert_null(member(after, "model"));
        assert_int_equal(json_object_object_length(after), 2 + (int) device_fields_count);
        json_object_put(ev);

        assert_ledger_matches_journal(e);
        items_done(items, 2);
}

static void test_repeat_adds_no_events(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:12", "loop1", 1, 2 << 20)),
        };
        struct ledger_stats st = {};
        struct device_record *r0;
        int64_t id0;

        apply(e, items, 2, false, T1, NULL);
        assert_int_equal(journal_last_seq(e->journal), 2);
        id0 = find_kname_state(e, "loop0", DEVICE_PRESENT)->id;

        apply(e, items, 2, false, T2, &st);
        apply(e, items, 2, true, T3, &st);
        assert_int_equal(journal_last_seq(e->journal), 2);
        assert_int_equal(st.checked, 4);
        assert_int_equal(st.appeared + st.changed + st.disappeared, 0);
        assert_int_equal(e->ledger.n_recs, 2);

        r0 = find_kname_state(e, "loop0", DEVICE_PRESENT);
        assert_int_equal(r0->id, id0);
        assert_int_equal(r0->first_seen, T1);
        assert_int_equal(r0->last_seen, T3);
        /* last_seen moved on disk too. */
        assert_ledger_matches_journal(e);
        items_done(items, 2);
}

static void test_restart_adds_no_events(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:12", "loop1", 1, 2 << 20)),
        };
        struct ledger_stats st = {};
        int64_t id0, id1;

        /* holders stored empty and the fs fields null must compare equal after a load. */
        apply(e, items, 2, false, T1, NULL);
        id0 = find_kname_state(e, "loop0", DEVICE_PRESENT)->id;
        id1 = find_kname_state(e, "loop1", DEVICE_PRESENT)->id;

        restart(e);
        assert_int_equal(e->ledger.n_recs, 2);
        apply(e, items, 2, true, T2, &st);
        assert_int_equal(journal_last_seq(e->journal), 2);
        assert_int_equal(st.appeared + st.changed + st.disappeared, 0);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(find_kname_state(e, "loop0", DEVICE_PRESENT)->id, id0);
        assert_int_equal(find_kname_state(e, "loop1", DEVICE_PRESENT)->id, id1);
        assert_int_equal(find_kname_state(e, "loop0", DEVICE_PRESENT)->last_seen, T2);
        items_done(items, 2);
}

static void test_change_gives_one_diff_event(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)) };
        struct ledger_item second[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 4 << 20)) };
        struct ledger_stats st = {};
        struct device_record *r;
        json_object *ev, *x;

        apply(e, first, 1, false, T1, NULL);

        second[0].observed->facts.fs_type = strdup("ext4");
        free(second[0].observed->facts.holders);
        second[0].observed->facts.holders = calloc(3, sizeof(char *));
        second[0].observed->facts.holders[0] = strdup("dm-0");
        second[0].observed->facts.holders[1] = strdup("dm-1");
        second[0].observed->facts.read_only = 1;
        apply(e, second, 1, false, T2, &st);
        assert_int_equal(st.changed, 1);
        assert_int_equal(st.appeared + st.disappeared, 0);
        assert_int_equal(e->ledger.n_recs, 1);

        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "changed");
        assert_int_equal(json_object_get_int64(member(x, "seq")), 2);
        r = find_kname_state(e, "loop0", DEVICE_PRESENT);
        assert_int_equal(device_of(x), r->id);
        assert_json_text(member(x, "before"),
                         "{\"size_bytes\":1048576,\"read_only\":false,\"fs_type\":null,\"holders\":[]}");
        assert_json_text(member(x, "after"),
                         "{\"size_bytes\":4194304,\"read_only\":true,\"fs_type\":\"ext4\",\"holders\":[\"dm-0\",\"dm-1\"]}");
        json_object_put(ev);

        assert_int_equal(r->facts.size_bytes, 4 << 20);
        assert_int_equal(r->first_seen, T1);
        assert_int_equal(r->last_seen, T2);
        assert_ledger_matches_journal(e);

        /* The changed state is the new baseline: seeing it again is quiet. */
        apply(e, second, 1, false, T3, NULL);
        assert_int_equal(journal_last_seq(e->journal), 2);
        items_done(first, 1);
        items_done(second, 1);
}

static void test_removal_marks_gone(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:12", "loop1", 1, 2 << 20)),
        };
        struct ledger_item removal[] = { item("loop1", NULL) };
        struct ledger_stats st = {};
        struct device_record *gone;
        json_object *ev, *x;

        apply(e, items, 2, false, T1, NULL);
        apply(e, removal, 1, false, T2, &st);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.checked + st.appeared + st.changed, 0);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(ledger_count_present(&e->ledger), 1);
        gone = find_kname_state(e, "loop1", DEVICE_GONE);
        assert_non_null(gone);
        assert_non_null(find_kname_state(e, "loop0", DEVICE_PRESENT));
        /* Gone records keep their facts and when they were last verified. */
        assert_int_equal(gone->last_seen, T1);
        assert_int_equal(gone->facts.size_bytes, 2 << 20);

        ev = events_since(e, 2);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "disappeared");
        assert_int_equal(device_of(x), gone->id);
        assert_json_text(member(x, "before"), "{\"state\":\"present\"}");
        assert_json_text(member(x, "after"), "{\"state\":\"gone\"}");
        json_object_put(ev);

        /* A removal of what is gone already, or of a name never seen, says nothing. */
        apply(e, removal, 1, false, T3, &st);
        items_done(removal, 1);
        removal[0] = item("loop9", NULL);
        apply(e, removal, 1, false, T3, &st);
        assert_int_equal(journal_last_seq(e->journal), 3);
        assert_int_equal(st.disappeared, 1);

        assert_ledger_matches_journal(e);
        items_done(items, 2);
        items_done(removal, 1);
}

static void test_reappear_under_other_kname(void **state) {
        struct env *e = *state;
        struct device_record *d = dev_new("loop:259:2:11", "loop0", 0, 1 << 20);
        struct ledger_item first[] = { item("loop0", d) };
        struct ledger_item removal[] = { item("loop0", NULL) };
        struct ledger_item back[] = { item("loop3", dev_moved(d, "loop3", 3)) };
        struct ledger_stats st = {};
        struct device_record *r;
        json_object *ev, *x, *before, *after;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, removal, 1, false, T2, NULL);
        apply(e, back, 1, false, T3, &st);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.renamed, 1);
        assert_int_equal(st.changed + st.disappeared, 0);

        assert_int_equal(e->ledger.n_recs, 1);
        r = ledger_find_by_id(&e->ledger, id);
        assert_non_null(r);
        assert_int_equal(r->state, DEVICE_PRESENT);
        assert_string_equal(r->facts.kname, "loop3");
        assert_string_equal(r->facts.dev, "7:3");
        assert_int_equal(r->first_seen, T1);
        assert_int_equal(r->last_seen, T3);

        /* Back (the state), then under another name (the place): two events. */
        ev = events_since(e, 2);
        assert_int_equal(json_object_array_length(ev), 2);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "reappeared");
        assert_int_equal(device_of(x), id);
        before = member(x, "before");
        after = member(x, "after");
        assert_json_text(before, "{\"state\":\"gone\"}");
        assert_json_text(after, "{\"state\":\"present\"}");
        x = json_object_array_get_idx(ev, 1);
        assert_string_equal(kind_of(x), "renamed");
        assert_int_equal(device_of(x), id);
        /* Only what differs: name, node and number. */
        assert_json_text(member(x, "before"), "{\"kname\":\"loop0\",\"devnode\":\"/dev/loop0\",\"dev\":\"7:0\"}");
        assert_json_text(member(x, "after"), "{\"kname\":\"loop3\",\"devnode\":\"/dev/loop3\",\"dev\":\"7:3\"}");
        json_object_put(ev);

        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(removal, 1);
        items_done(back, 1);
}

/* The removal and the new name arrive in one batch: the device moved while present, one
 * "renamed" event, never disappeared and appeared. */
static void test_move_within_one_batch(void **state) {
        struct env *e = *state;
        struct device_record *d = dev_new("loop:259:2:11", "loop3", 3, 1 << 20);
        struct ledger_item first[] = { item("loop3", d) };
        struct ledger_item moved[] = { item("loop7", dev_moved(d, "loop7", 7)), item("loop3", NULL) };
        struct ledger_stats st = {};
        json_object *ev;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, moved, 2, false, T2, &st);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_int_equal(e->ledger.recs[0]->id, id);
        assert_int_equal(e->ledger.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(e->ledger.recs[0]->facts.kname, "loop7");
        assert_string_equal(e->ledger.recs[0]->facts.dev, "7:7");
        assert_int_equal(e->ledger.recs[0]->first_seen, T1);
        assert_int_equal(e->ledger.recs[0]->last_seen, T2);
        assert_int_equal(st.renamed, 1);
        assert_int_equal(st.appeared + st.disappeared + st.changed, 0);

        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 1);
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 0)), "renamed");
        assert_int_equal(device_of(json_object_array_get_idx(ev, 0)), id);
        assert_json_text(member(json_object_array_get_idx(ev, 0), "before"),
                         "{\"kname\":\"loop3\",\"devnode\":\"/dev/loop3\",\"dev\":\"7:3\"}");
        assert_json_text(member(json_object_array_get_idx(ev, 0), "after"),
                         "{\"kname\":\"loop7\",\"devnode\":\"/dev/loop7\",\"dev\":\"7:7\"}");
        json_object_put(ev);
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(moved, 2);
}

static void test_same_identity_twice_two_records(void **state) {
        struct env *e = *state;
        struct device_record *d = dev_new("loop:259:2:11", "loop0", 0, 1 << 20);
        struct ledger_item items[] = { item("loop0", d), item("loop1", dev_moved(d, "loop1", 1)) };
        struct ledger_stats st = {};
        struct device_record *a, *b;

        /* One image attached twice: two devices, neither taking the other's record. */
        apply(e, items, 2, false, T1, &st);
        assert_int_equal(st.appeared, 2);
        assert_int_equal(e->ledger.n_recs, 2);
        a = find_kname_state(e, "loop0", DEVICE_PRESENT);
        b = find_kname_state(e, "loop1", DEVICE_PRESENT);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_not_equal(a->id, b->id);
        assert_string_equal(a->identity, b->identity);

        apply(e, items, 2, false, T2, NULL);
        apply(e, items, 2, true, T3, NULL);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(journal_last_seq(e->journal), 2);
        assert_int_equal(find_kname_state(e, "loop0", DEVICE_PRESENT)->id, a->id);
        assert_int_equal(find_kname_state(e, "loop1", DEVICE_PRESENT)->id, b->id);

        restart(e);
        apply(e, items, 2, true, T4, NULL);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(journal_last_seq(e->journal), 2);
        items_done(items, 2);
}

static void test_other_device_at_kname(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)) };
        struct ledger_item second[] = { item("loop0", dev_new("loop:259:2:99", "loop0", 0, 8 << 20)) };
        struct ledger_stats st = {};
        struct device_record *old, *new;
        json_object *ev, *x;

        apply(e, first, 1, false, T1, NULL);
        apply(e, second, 1, false, T2, &st);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.changed, 0);
        assert_int_equal(e->ledger.n_recs, 2);
        old = find_kname_state(e, "loop0", DEVICE_GONE);
        new = find_kname_state(e, "loop0", DEVICE_PRESENT);
        assert_non_null(old);
        assert_non_null(new);
        assert_string_equal(old->identity, "loop:259:2:11");
        assert_string_equal(new->identity, "loop:259:2:99");
        assert_int_equal(old->facts.size_bytes, 1 << 20);
        assert_int_equal(new->facts.size_bytes, 8 << 20);

        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 2);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "disappeared");
        assert_int_equal(device_of(x), old->id);
        x = json_object_array_get_idx(ev, 1);
        assert_string_equal(kind_of(x), "appeared");
        assert_int_equal(device_of(x), new->id);
        assert_string_equal(json_object_get_string(member(member(x, "after"), "identity")), "loop:259:2:99");
        json_object_put(ev);

        /* And the first one coming back elsewhere gets its old record. */
        items_done(first, 1);
        first[0] = item("loop5", dev_new("loop:259:2:11", "loop5", 5, 1 << 20));
        apply(e, first, 1, false, T3, NULL);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(old->state, DEVICE_PRESENT);
        assert_string_equal(old->facts.kname, "loop5");
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(second, 1);
}

static void test_full_scan_marks_missing_gone(void **state) {
        struct env *e = *state;
        struct ledger_item all[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
                item("loop2", dev_new("loop:259:2:12", "loop2", 2, 1 << 20)),
        };
        struct ledger_item partial[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop2", dev_new("loop:259:2:12", "loop2", 2, 1 << 20)),
        };
        struct ledger_stats st = {};
        json_object *ev, *x;
        int64_t id1;

        apply(e, all, 3, false, T1, NULL);
        id1 = find_kname_state(e, "loop1", DEVICE_PRESENT)->id;

        /* Events name only some devices: the others are not concluded gone. */
        apply(e, partial, 2, false, T2, &st);
        assert_int_equal(ledger_count_present(&e->ledger), 3);
        assert_int_equal(journal_last_seq(e->journal), 3);

        /* A full scan is everything: loop1 is not there. */
        apply(e, partial, 2, true, T3, &st);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.checked, 4);
        assert_int_equal(ledger_count_present(&e->ledger), 2);
        assert_int_equal(ledger_find_by_id(&e->ledger, id1)->state, DEVICE_GONE);

        ev = events_since(e, 3);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "disappeared");
        assert_int_equal(device_of(x), id1);
        json_object_put(ev);

        /* An empty full scan: nothing is present any more. */
        apply(e, NULL, 0, true, T4, &st);
        assert_int_equal(ledger_count_present(&e->ledger), 0);
        assert_int_equal(st.disappeared, 3);
        assert_int_equal(journal_last_seq(e->journal), 6);
        assert_ledger_matches_journal(e);
        items_done(all, 3);
        items_done(partial, 2);
}

/* A full scan that finds a device under a new name takes its record back. The reconciler
 * observes the old place too (its batch shows loop0 empty), so the record moves. */
static void test_full_scan_rename(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item scan[] = { item("loop4", dev_new("loop:259:2:10", "loop4", 4, 1 << 20)), item("loop0", NULL) };
        struct ledger_stats st = {};
        json_object *ev;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, scan, 2, true, T2, &st);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_int_equal(e->ledger.recs[0]->id, id);
        assert_int_equal(e->ledger.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(e->ledger.recs[0]->facts.kname, "loop4");
        assert_int_equal(st.renamed, 1);
        assert_int_equal(st.disappeared + st.appeared + st.changed, 0);
        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 1);
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 0)), "renamed");
        json_object_put(ev);
        items_done(first, 1);
        items_done(scan, 2);
}

/* A pass observes in chunks: when the chunk with the empty old place comes first, the
 * record is only displaced; the next chunk finds it moved: one "renamed", not gone and
 * back. */
static void test_pass_in_chunks_rename(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item chunk1[] = { item("loop0", NULL) };
        struct ledger_item chunk2[] = { item("loop4", dev_new("loop:259:2:10", "loop4", 4, 1 << 20)),
                                        item("loop0", NULL) /* the identity closure looks again */ };
        struct ledger_stats st = {};
        json_object *ev;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        ledger_begin_pass(&e->ledger);
        assert_int_equal(ledger_apply(&e->ledger, chunk1, 1, T2, &st), 0);
        /* Displaced, not gone: no event yet. */
        assert_int_equal(e->ledger.recs[0]->state, DEVICE_PRESENT);
        assert_int_equal(st.disappeared, 0);
        assert_int_equal(ledger_apply(&e->ledger, chunk2, 2, T2, &st), 0);
        assert_int_equal(ledger_sweep(&e->ledger, T2, &st), 0);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_int_equal(e->ledger.recs[0]->id, id);
        assert_int_equal(e->ledger.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(e->ledger.recs[0]->facts.kname, "loop4");
        assert_int_equal(st.renamed, 1);
        assert_int_equal(st.disappeared + st.appeared, 0);
        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 1);
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 0)), "renamed");
        assert_int_equal(device_of(json_object_array_get_idx(ev, 0)), id);
        json_object_put(ev);
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(chunk1, 1);
        items_done(chunk2, 2);
}

/* A displaced record that no later chunk finds is gone at the sweep. */
static void test_pass_displaced_then_swept(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item chunk1[] = { item("loop0", dev_new("loop:259:2:99", "loop0", 0, 1 << 20)) };
        struct ledger_stats st = {};
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        ledger_begin_pass(&e->ledger);
        /* Another device took loop0: the old one is displaced, the new one appears. */
        assert_int_equal(ledger_apply(&e->ledger, chunk1, 1, T2, &st), 0);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.disappeared, 0);
        assert_int_equal(ledger_sweep(&e->ledger, T2, &st), 0);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(ledger_find_by_id(&e->ledger, id)->state, DEVICE_GONE);
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(chunk1, 1);
}

static void test_find_by_name(void **state) {
        struct env *e = *state;
        struct ledger_item a[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item b[] = { item("loop0", dev_new("loop:259:2:20", "loop0", 0, 2 << 20)) };
        struct ledger_item c[] = { item("loop0", dev_new("loop:259:2:30", "loop0", 0, 3 << 20)) };
        struct ledger_item off[] = { item("loop0", NULL) };
        struct device_record *r;

        /* Three devices in turn at loop0: a (gone), b (gone later), c (present). */
        apply(e, a, 1, false, T1, NULL);
        apply(e, b, 1, false, T2, NULL);
        apply(e, c, 1, false, T3, NULL);
        assert_int_equal(e->ledger.n_recs, 3);

        r = ledger_find_by_name(&e->ledger, "loop0");
        assert_non_null(r);
        assert_string_equal(r->identity, "loop:259:2:30");
        r = ledger_find_by_name(&e->ledger, "/dev/loop0");
        assert_non_null(r);
        assert_string_equal(r->identity, "loop:259:2:30");
        r = ledger_find_by_name(&e->ledger, "7:0");
        assert_non_null(r);
        assert_string_equal(r->identity, "loop:259:2:30");

        /* Only gone ones left: the one seen last wins (c at T3, b at T2, a at T1). */
        apply(e, off, 1, false, T4, NULL);
        r = ledger_find_by_name(&e->ledger, "loop0");
        assert_non_null(r);
        assert_int_equal(r->state, DEVICE_GONE);
        assert_string_equal(r->identity, "loop:259:2:30");
        r = ledger_find_by_name(&e->ledger, "/dev/loop0");
        assert_string_equal(r->identity, "loop:259:2:30");

        assert_null(ledger_find_by_name(&e->ledger, "loop1"));
        assert_null(ledger_find_by_name(&e->ledger, "/dev/loop1"));
        assert_null(ledger_find_by_name(&e->ledger, "7:1"));
        assert_null(ledger_find_by_name(&e->ledger, "loop"));
        assert_null(ledger_find_by_name(&e->ledger, "dev/loop0"));

        items_done(a, 1);
        items_done(b, 1);
        items_done(c, 1);
        items_done(off, 1);
}

static void test_stats_add_up(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
        };
        struct ledger_item second[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 9 << 20)),
                item("loop1", NULL),
                item("loop2", dev_new("loop:259:2:12", "loop2", 2, 1 << 20)),
        };
        struct ledger_stats st = { .checked = 100, .appeared = 10, .changed = 20, .disappeared = 30 };

        apply(e, first, 2, false, T1, &st);
        assert_int_equal(st.checked, 102);
        assert_int_equal(st.appeared, 12);
        assert_int_equal(st.changed, 20);
        assert_int_equal(st.disappeared, 30);
        apply(e, second, 3, false, T2, &st);
        assert_int_equal(st.checked, 104);
        assert_int_equal(st.appeared, 13);
        assert_int_equal(st.changed, 21);
        assert_int_equal(st.disappeared, 31);
        assert_int_equal(ledger_count_present(&e->ledger), 2);
        assert_int_equal(e->ledger.n_recs, 3);
        assert_int_equal(journal_last_seq(e->journal), 5);
        items_done(first, 2);
        items_done(second, 3);
}

/* ---- moves, twins, qualifiers ------------------------------------------------------- */

static struct device_record *with_aux(struct device_record *d, const char *aux) {
        free(d->identity_aux);
        d->identity_aux = aux ? strdup(aux) : NULL;
        assert_true(!aux || d->identity_aux);
        return d;
}

static size_t count_kind(json_object *ev, const char *kind) {
        size_t n = 0;

        for (size_t i = 0; i < json_object_array_length(ev); i++)
                n += streq(kind_of(json_object_array_get_idx(ev, i)), kind);
        return n;
}

/* A device moves from loop3 to loop7 while another device takes loop3, in one batch:
 * the first is renamed, the second is new. */
static void test_move_while_other_takes_place(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop3", dev_new("loop:259:2:11", "loop3", 3, 1 << 20)) };
        struct ledger_item batch[] = {
                item("loop3", dev_new("loop:259:2:99", "loop3", 3, 8 << 20)),
                item("loop7", dev_new("loop:259:2:11", "loop7", 7, 1 << 20)),
        };
        struct ledger_stats st = {};
        struct device_record *moved, *other;
        json_object *ev;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, batch, 2, false, T2, &st);
        assert_int_equal(e->ledger.n_recs, 2);
        moved = ledger_find_by_id(&e->ledger, id);
        assert_int_equal(moved->state, DEVICE_PRESENT);
        assert_string_equal(moved->facts.kname, "loop7");
        other = find_kname_state(e, "loop3", DEVICE_PRESENT);
        assert_non_null(other);
        assert_int_not_equal(other->id, id);
        assert_string_equal(other->identity, "loop:259:2:99");
        assert_int_equal(st.renamed, 1);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.disappeared + st.changed, 0);

        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 2);
        assert_int_equal(count_kind(ev, "renamed"), 1);
        assert_int_equal(count_kind(ev, "appeared"), 1);
        for (size_t i = 0; i < 2; i++) {
                json_object *x = json_object_array_get_idx(ev, i);
                assert_int_equal(device_of(x), streq(kind_of(x), "renamed") ? id : other->id);
        }
        json_object_put(ev);
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(batch, 2);
}

/* Two devices trade places in one batch: both renamed, no record lost or added. */
static void test_swap_places(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = {
                item("loop3", dev_new("loop:259:2:11", "loop3", 3, 1 << 20)),
                item("loop7", dev_new("loop:259:2:22", "loop7", 7, 2 << 20)),
        };
        struct ledger_item swapped[] = {
                item("loop3", dev_new("loop:259:2:22", "loop3", 3, 2 << 20)),
                item("loop7", dev_new("loop:259:2:11", "loop7", 7, 1 << 20)),
        };
        struct ledger_stats st = {};
        int64_t a, b;

        apply(e, first, 2, false, T1, NULL);
        a = find_kname_state(e, "loop3", DEVICE_PRESENT)->id;
        b = find_kname_state(e, "loop7", DEVICE_PRESENT)->id;
        apply(e, swapped, 2, false, T2, &st);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(st.renamed, 2);
        assert_int_equal(st.appeared + st.disappeared + st.changed, 0);
        assert_string_equal(ledger_find_by_id(&e->ledger, a)->facts.kname, "loop7");
        assert_string_equal(ledger_find_by_id(&e->ledger, b)->facts.kname, "loop3");
        assert_int_equal(ledger_count_present(&e->ledger), 2);
        assert_int_equal(journal_last_seq(e->journal), 4);
        assert_ledger_matches_journal(e);
        items_done(first, 2);
        items_done(swapped, 2);
}

/* One image attached a second time while the first is still there: the batch shows both
 * places with one identity, and neither takes the other's record. */
static void test_attached_twice_later(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)) };
        struct ledger_item both[] = {
                item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
        };
        struct ledger_stats st = {};
        struct device_record *a, *b;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, both, 2, false, T2, &st);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.renamed + st.disappeared + st.changed, 0);
        a = find_kname_state(e, "loop0", DEVICE_PRESENT);
        b = find_kname_state(e, "loop1", DEVICE_PRESENT);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->id, id);
        assert_int_not_equal(b->id, id);

        /* The second copy detached, then attached again elsewhere: it comes back to a
         * gone record of the identity, not to the present one. */
        items_done(both, 2);
        both[0] = item("loop1", NULL);
        both[1] = item("loop5", dev_new("loop:259:2:11", "loop5", 5, 1 << 20));
        apply(e, both, 1, false, T3, NULL);
        assert_int_equal(b->state, DEVICE_GONE);
        apply(e, both + 1, 1, false, T4, &st);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(b->state, DEVICE_PRESENT);
        assert_string_equal(b->facts.kname, "loop5");
        assert_int_equal(a->state, DEVICE_PRESENT);
        assert_string_equal(a->facts.kname, "loop0");
        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(both, 2);
}

/* A loop file deleted and another created may get the same inode: a known birth time
 * that differs makes it another device. */
static void test_aux_inode_reuse_is_new_record(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", with_aux(dev_new("loop:259:2:11", "loop0", 0, 1 << 20), "100.0")) };
        struct ledger_item removal[] = { item("loop0", NULL) };
        struct ledger_item reused[] = { item("loop2", with_aux(dev_new("loop:259:2:11", "loop2", 2, 1 << 20), "200.0")) };
        struct ledger_stats st = {};
        struct device_record *old, *new;

        apply(e, first, 1, false, T1, NULL);
        apply(e, removal, 1, false, T2, NULL);
        apply(e, reused, 1, false, T3, &st);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(st.renamed, 0);
        old = find_kname_state(e, "loop0", DEVICE_GONE);
        new = find_kname_state(e, "loop2", DEVICE_PRESENT);
        assert_non_null(old);
        assert_non_null(new);
        assert_string_equal(old->identity_aux, "100.0");
        assert_string_equal(new->identity_aux, "200.0");
        assert_int_equal(new->first_seen, T3);
        assert_ledger_matches_journal(e);

        /* At the same name while the old one is present: the old one is gone, a new one
         * appears (not "in place"). */
        items_done(first, 1);
        first[0] = item("loop2", with_aux(dev_new("loop:259:2:11", "loop2", 2, 1 << 20), "300.0"));
        st = (struct ledger_stats) {};
        apply(e, first, 1, false, T4, &st);
        assert_int_equal(e->ledger.n_recs, 3);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(new->state, DEVICE_GONE);
        assert_string_equal(find_kname_state(e, "loop2", DEVICE_PRESENT)->identity_aux, "300.0");
        items_done(first, 1);
        items_done(removal, 1);
        items_done(reused, 1);
}

/* An unknown birth time on either side does not tell devices apart; the record learns
 * the qualifier when the observation has it, and keeps it when it does not. */
static void test_aux_unknown_is_compatible(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", with_aux(dev_new("loop:259:2:11", "loop0", 0, 1 << 20), "100.0")) };
        struct ledger_item removal[] = { item("loop0", NULL) };
        struct ledger_item unknown[] = { item("loop2", dev_new("loop:259:2:11", "loop2", 2, 1 << 20)) };
        struct ledger_item second[] = { item("loop4", dev_new("loop:259:2:12", "loop4", 4, 1 << 20)) };
        struct ledger_item known[] = { item("loop5", with_aux(dev_new("loop:259:2:12", "loop5", 5, 1 << 20), "500.0")) };
        struct ledger_item removal4[] = { item("loop4", NULL) };
        struct ledger_item same_place[] = { item("loop5", with_aux(dev_new("loop:259:2:12", "loop5", 5, 1 << 20), "500.0")) };
        struct ledger_stats st = {};
        struct device_record *r, *r2;
        int64_t id, id2;
        int64_t seq;

        /* Record with a qualifier, observation without: the same device. */
        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, removal, 1, false, T2, NULL);
        apply(e, unknown, 1, false, T3, &st);
        assert_int_equal(e->ledger.n_recs, 1);
        r = ledger_find_by_id(&e->ledger, id);
        assert_int_equal(r->state, DEVICE_PRESENT);
        assert_string_equal(r->facts.kname, "loop2");
        assert_string_equal(r->identity_aux, "100.0");
        assert_int_equal(st.appeared, 1); /* reappeared */
        assert_int_equal(st.renamed, 1);

        /* Record without a qualifier, observation with one: the same device, and the
         * record learns it (on disk too). */
        apply(e, second, 1, false, T1, NULL);
        r2 = find_kname_state(e, "loop4", DEVICE_PRESENT);
        id2 = r2->id;
        assert_null(r2->identity_aux);
        apply(e, removal4, 1, false, T2, NULL);
        apply(e, known, 1, false, T3, NULL);
        assert_int_equal(e->ledger.n_recs, 2);
        r2 = ledger_find_by_id(&e->ledger, id2);
        assert_int_equal(r2->state, DEVICE_PRESENT);
        assert_string_equal(r2->facts.kname, "loop5");
        assert_non_null(r2->identity_aux);
        assert_string_equal(r2->identity_aux, "500.0");
        assert_ledger_matches_journal(e);

        /* Learning the qualifier in place writes it, but is no event. */
        restart(e);
        r2 = ledger_find_by_id(&e->ledger, id2);
        assert_string_equal(r2->identity_aux, "500.0");
        free(r2->identity_aux);
        r2->identity_aux = NULL;
        assert_int_equal(journal_update_device(e->journal, r2), 0);
        seq = journal_last_seq(e->journal);
        apply(e, same_place, 1, false, T4, NULL);
        assert_int_equal(journal_last_seq(e->journal), seq);
        assert_string_equal(ledger_find_by_id(&e->ledger, id2)->identity_aux, "500.0");
        assert_ledger_matches_journal(e);
        restart(e);
        assert_string_equal(ledger_find_by_id(&e->ledger, id2)->identity_aux, "500.0");

        items_done(first, 1);
        items_done(removal, 1);
        items_done(unknown, 1);
        items_done(second, 1);
        items_done(known, 1);
        items_done(removal4, 1);
        items_done(same_place, 1);
}

/* A device that comes back at its old name with another device number: the history says
 * so. Every difference is written with its event. */
static void test_reappear_same_kname_new_dev(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)) };
        struct ledger_item removal[] = { item("loop0", NULL) };
        struct ledger_item back[] = { item("loop0", dev_new("loop:259:2:11", "loop0", 0, 1 << 20)) };
        json_object *ev;
        bool dev_recorded = false;
        int64_t id;

        free(back[0].observed->facts.dev);
        back[0].observed->facts.dev = strdup("259:7");
        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, removal, 1, false, T2, NULL);
        apply(e, back, 1, false, T3, NULL);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_string_equal(ledger_find_by_id(&e->ledger, id)->facts.dev, "259:7");

        ev = events_since(e, 2);
        assert_true(json_object_array_length(ev) >= 1);
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 0)), "reappeared");
        for (size_t i = 0; i < json_object_array_length(ev); i++) {
                json_object *x = json_object_array_get_idx(ev, i), *after = member(x, "after"), *v;
                if (after && json_object_object_get_ex(after, "dev", &v) && streq_ptr(json_object_get_string(v), "259:7"))
                        dev_recorded = true;
        }
        if (!dev_recorded) {
                print_error("events after the return: %s\n", json_object_to_json_string(ev));
                json_object_put(ev);
                items_done(first, 1);
                items_done(removal, 1);
                items_done(back, 1);
                fail_msg("the device number 7:0 -> 259:7 is in no event");
        }
        json_object_put(ev);
        items_done(first, 1);
        items_done(removal, 1);
        items_done(back, 1);
}

/* ---- passes and freshness ----------------------------------------------------------- */

static void test_pass_sweep(void **state) {
        struct env *e = *state;
        struct ledger_item all[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
                item("loop2", dev_new("loop:259:2:12", "loop2", 2, 1 << 20)),
        };
        struct ledger_item removal[] = { item("loop2", NULL) };
        struct ledger_stats st = {};
        struct device_record *r0, *r1, *r2;
        uint64_t gen;

        apply(e, all, 3, false, T1, NULL);
        r0 = find_kname_state(e, "loop0", DEVICE_PRESENT);
        r1 = find_kname_state(e, "loop1", DEVICE_PRESENT);
        r2 = find_kname_state(e, "loop2", DEVICE_PRESENT);
        apply(e, removal, 1, false, T2, NULL);
        assert_int_equal(r2->state, DEVICE_GONE);
        assert_int_equal(r2->last_verified, T2);

        gen = e->ledger.generation;
        ledger_begin_pass(&e->ledger);
        assert_true(e->ledger.generation > gen);
        /* Nothing is verified in the new pass yet; the previous verification counts
         * for "verified since start". */
        assert_int_equal(ledger_count_verified(&e->ledger), 3);
        assert_int_not_equal(r0->verified_pass, e->ledger.generation);

        /* The pass sees loop0 only (in two applies: chunks), then sweeps. */
        assert_int_equal(ledger_apply(&e->ledger, all, 1, T3, &st), 0);
        assert_int_equal(ledger_apply(&e->ledger, NULL, 0, T3, &st), 0);
        assert_int_equal(r0->verified_pass, e->ledger.generation);
        assert_int_equal(r0->last_verified, T3);
        assert_int_equal(r1->state, DEVICE_PRESENT);
        assert_int_equal(ledger_sweep(&e->ledger, T4, &st), 0);
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.checked, 1);
        assert_int_equal(r0->state, DEVICE_PRESENT);
        assert_int_equal(r1->state, DEVICE_GONE);
        assert_int_equal(r1->last_verified, T4);
        assert_int_equal(r1->last_seen, T1);
        assert_int_equal(r1->verified_pass, e->ledger.generation);
        /* Already gone and still not there: verified as absent, no event. */
        assert_int_equal(r2->state, DEVICE_GONE);
        assert_int_equal(r2->verified_pass, e->ledger.generation);
        assert_int_equal(journal_last_seq(e->journal), 5);
        assert_ledger_matches_journal(e);

        /* A sweep right after another pass began and saw nothing: all gone. */
        ledger_begin_pass(&e->ledger);
        assert_int_equal(ledger_sweep(&e->ledger, T4 + 1, &st), 0);
        assert_int_equal(ledger_count_present(&e->ledger), 0);
        assert_int_equal(st.disappeared, 2);
        /* A second sweep of the same pass finds nothing more to do. */
        assert_int_equal(ledger_sweep(&e->ledger, T4 + 2, &st), 0);
        assert_int_equal(st.disappeared, 2);
        assert_int_equal(journal_last_seq(e->journal), 6);
        items_done(all, 3);
        items_done(removal, 1);
}

/* After a restart the records are last run's: unverified until this run has checked
 * them, but they keep when they were last verified. */
static void test_restart_unverified_until_checked(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
        };
        struct ledger_item removal[] = { item("loop1", NULL) };
        struct device_record *r0, *r1;

        apply(e, items, 2, true, T1, NULL);
        apply(e, removal, 1, false, T2, NULL);
        assert_int_equal(ledger_count_verified(&e->ledger), 2);

        restart(e);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(ledger_count_verified(&e->ledger), 0);
        r0 = find_kname_state(e, "loop0", DEVICE_PRESENT);
        r1 = find_kname_state(e, "loop1", DEVICE_GONE);
        assert_non_null(r0);
        assert_non_null(r1);
        assert_int_equal(r0->verified_pass, 0);
        assert_int_equal(r1->verified_pass, 0);
        assert_int_equal(r0->last_verified, T1);
        assert_int_equal(r1->last_verified, T2);

        /* An event batch verifies what it shows. */
        apply(e, items, 1, false, T3, NULL);
        assert_int_not_equal(r0->verified_pass, 0);
        assert_int_equal(r0->last_verified, T3);
        assert_int_equal(r1->verified_pass, 0);
        assert_int_equal(ledger_count_verified(&e->ledger), 1);

        /* The pass verifies the rest, the gone one by its absence. */
        ledger_begin_pass(&e->ledger);
        assert_int_equal(ledger_apply(&e->ledger, items, 1, T4, NULL), 0);
        assert_int_equal(ledger_sweep(&e->ledger, T4, NULL), 0);
        assert_int_equal(ledger_count_verified(&e->ledger), 2);
        assert_int_equal(r1->state, DEVICE_GONE);
        assert_int_not_equal(r1->verified_pass, 0);
        /* Nothing changed: no events since the removal. */
        assert_int_equal(journal_last_seq(e->journal), 3);
        items_done(items, 2);
        items_done(removal, 1);
}

/* A restart with nothing changed adds no events, with names, qualifiers and gone
 * records in the ledger, through a whole pass. */
static void test_restart_quiet_full_pass(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", with_aux(dev_new("loop:259:2:10", "loop0", 0, 1 << 20), "100.5")),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
                item("loop2", dev_new("loop:259:2:12", "loop2", 2, 1 << 20)),
        };
        struct ledger_stats st = {};
        int64_t seq;

        apply(e, items, 3, true, T1, NULL);
        assert_int_equal(ledger_set_name(&e->ledger, find_kname_state(e, "loop0", DEVICE_PRESENT), "root-img", T1), 0);
        apply(e, items, 2, true, T2, NULL); /* loop2 gone */
        seq = journal_last_seq(e->journal);
        assert_int_equal(seq, 5);

        for (int round = 0; round < 2; round++) {
                restart(e);
                apply(e, items, 2, true, T3 + round, &st);
                assert_int_equal(journal_last_seq(e->journal), seq);
                assert_int_equal(st.appeared + st.changed + st.renamed + st.disappeared, 0);
                assert_int_equal(e->ledger.n_recs, 3);
                assert_int_equal(ledger_count_present(&e->ledger), 2);
                assert_string_equal(find_kname_state(e, "loop0", DEVICE_PRESENT)->name, "root-img");
        }
        items_done(items, 3);
}

/* ---- names -------------------------------------------------------------------------- */

static void test_name_valid(void **state) {
        static const char *const good[] = { "a", "backup", "root-img", "disk_2", "v1.2", "A-b_c.d", "0a",
                                            "x-", "x." };
        /* All digits would read as an id. */
        static const char *const bad[] = { "", ".hidden", "-x", "a/b", "/abs", "..", ".", "a b", "tab\t",
                                           "ü", "a*", "a:b", "$HOME", "new\nline", "0", "123" };
        char max[65], over[66];

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                if (!ledger_name_valid(good[i]))
                        fail_msg("\"%s\" refused", good[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (ledger_name_valid(bad[i]))
                        fail_msg("\"%s\" accepted", bad[i]);
        assert_false(ledger_name_valid(NULL));
        memset(max, 'n', 64);
        max[64] = 0;
        memset(over, 'n', 65);
        over[65] = 0;
        assert_true(ledger_name_valid(max));
        assert_false(ledger_name_valid(over));
}

static void test_set_name(void **state) {
        struct env *e = *state;
        struct ledger_item items[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
        };
        struct device_record *a, *b;
        char over[66];
        json_object *ev, *x;
        int64_t seq;

        apply(e, items, 2, false, T1, NULL);
        a = find_kname_state(e, "loop0", DEVICE_PRESENT);
        b = find_kname_state(e, "loop1", DEVICE_PRESENT);
        seq = journal_last_seq(e->journal);

        assert_int_equal(ledger_set_name(&e->ledger, a, "backup", T2), 0);
        assert_string_equal(a->name, "backup");
        ev = events_since(e, seq);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "named");
        assert_int_equal(device_of(x), a->id);
        assert_json_text(member(x, "before"), "{\"name\":null}");
        assert_json_text(member(x, "after"), "{\"name\":\"backup\"}");
        json_object_put(ev);

        /* Found by its name, before any kernel name. */
        assert_ptr_equal(ledger_find_by_name(&e->ledger, "backup"), a);

        /* Unique: another record cannot take it; nothing written. */
        seq = journal_last_seq(e->journal);
        assert_int_equal(ledger_set_name(&e->ledger, b, "backup", T2), -EEXIST);
        assert_null(b->name);
        /* Invalid names are refused before anything else. */
        assert_int_equal(ledger_set_name(&e->ledger, b, "a/b", T2), -EINVAL);
        assert_int_equal(ledger_set_name(&e->ledger, b, ".x", T2), -EINVAL);
        assert_int_equal(ledger_set_name(&e->ledger, b, "-x", T2), -EINVAL);
        memset(over, 'n', 65);
        over[65] = 0;
        assert_int_equal(ledger_set_name(&e->ledger, b, over, T2), -EINVAL);
        assert_null(b->name);
        /* The same name again: nothing to do, no event. */
        assert_int_equal(ledger_set_name(&e->ledger, a, "backup", T2), 0);
        assert_int_equal(journal_last_seq(e->journal), seq);

        /* Renamed: before and after. */
        assert_int_equal(ledger_set_name(&e->ledger, a, "vault", T3), 0);
        ev = events_since(e, seq);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_json_text(member(x, "before"), "{\"name\":\"backup\"}");
        assert_json_text(member(x, "after"), "{\"name\":\"vault\"}");
        json_object_put(ev);
        /* The old name is free again. */
        assert_int_equal(ledger_set_name(&e->ledger, b, "backup", T3), 0);
        assert_string_equal(b->name, "backup");
        assert_ledger_matches_journal(e);

        /* Removed. */
        seq = journal_last_seq(e->journal);
        assert_int_equal(ledger_set_name(&e->ledger, b, NULL, T4), 0);
        assert_null(b->name);
        ev = events_since(e, seq);
        assert_int_equal(json_object_array_length(ev), 1);
        assert_json_text(member(json_object_array_get_idx(ev, 0), "before"), "{\"name\":\"backup\"}");
        assert_json_text(member(json_object_array_get_idx(ev, 0), "after"), "{\"name\":null}");
        json_object_put(ev);
        /* Removing no name: nothing. */
        seq = journal_last_seq(e->journal);
        assert_int_equal(ledger_set_name(&e->ledger, b, NULL, T4), 0);
        assert_int_equal(journal_last_seq(e->journal), seq);
        assert_ledger_matches_journal(e);
        items_done(items, 2);
}

/* The name belongs to the record: it survives a restart and follows the device to
 * another kernel name, while present and after being gone; a gone record keeps it. */
static void test_name_follows_record(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop3", dev_new("loop:259:2:11", "loop3", 3, 1 << 20)) };
        struct ledger_item moved[] = { item("loop7", dev_new("loop:259:2:11", "loop7", 7, 1 << 20)), item("loop3", NULL) };
        struct ledger_item removal[] = { item("loop7", NULL) };
        struct ledger_item back[] = { item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)) };
        struct ledger_item other[] = { item("loop3", dev_new("loop:259:2:99", "loop3", 3, 1 << 20)) };
        struct device_record *r;
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        assert_int_equal(ledger_set_name(&e->ledger, e->ledger.recs[0], "backup", T1), 0);

        restart(e);
        r = ledger_find_by_id(&e->ledger, id);
        assert_string_equal(r->name, "backup");
        assert_ptr_equal(ledger_find_by_name(&e->ledger, "backup"), r);

        apply(e, moved, 2, false, T2, NULL);
        r = ledger_find_by_id(&e->ledger, id);
        assert_string_equal(r->facts.kname, "loop7");
        assert_string_equal(r->name, "backup");
        assert_ptr_equal(ledger_find_by_name(&e->ledger, "backup"), r);

        apply(e, removal, 1, false, T3, NULL);
        assert_int_equal(r->state, DEVICE_GONE);
        assert_string_equal(r->name, "backup");
        assert_ptr_equal(ledger_find_by_name(&e->ledger, "backup"), r);
        /* Another device at the old place does not get the name. */
        apply(e, other, 1, false, T3, NULL);
        assert_null(find_kname_state(e, "loop3", DEVICE_PRESENT)->name);

        apply(e, back, 1, false, T4, NULL);
        assert_int_equal(e->ledger.n_recs, 2);
        assert_int_equal(r->state, DEVICE_PRESENT);
        assert_string_equal(r->facts.kname, "loop1");
        assert_string_equal(r->name, "backup");
        assert_ledger_matches_journal(e);

        restart(e);
        r = ledger_find_by_name(&e->ledger, "backup");
        assert_non_null(r);
        assert_int_equal(r->id, id);
        assert_string_equal(r->facts.kname, "loop1");
        items_done(first, 1);
        items_done(moved, 2);
        items_done(removal, 1);
        items_done(back, 1);
        items_done(other, 1);
}

/* A batch whose commit fails leaves memory as the journal has it: nothing half-applied. */
static void test_failed_apply_changes_nothing(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item second[] = {
                item("loop0", dev_new("loop:259:2:10", "loop0", 0, 9 << 20)),
                item("loop1", dev_new("loop:259:2:11", "loop1", 1, 1 << 20)),
        };
        struct ledger_stats st = {};
        sqlite3 *db;
        int r;

        apply(e, first, 1, false, T1, NULL);
        assert_int_equal(sqlite3_open_v2(e->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                                      "CREATE TRIGGER no_new BEFORE INSERT ON events WHEN NEW.kind = 'appeared' "
                                      "BEGIN SELECT RAISE(ABORT, 'test: refused'); END;",
                                      NULL, NULL, NULL),
                         SQLITE_OK);

        /* loop0's change is written first, then loop1's "appeared" fails. */
        r = ledger_apply(&e->ledger, second, 2, T2, &st);
        assert_true(r < 0);
        assert_int_equal(st.checked + st.appeared + st.changed + st.disappeared, 0);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_int_equal(e->ledger.recs[0]->facts.size_bytes, 1 << 20);
        assert_int_equal(e->ledger.recs[0]->last_seen, T1);
        assert_int_equal(journal_last_seq(e->journal), 1);
        assert_ledger_matches_journal(e);

        assert_int_equal(sqlite3_exec(db, "DROP TRIGGER no_new", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        apply(e, second, 2, false, T3, &st);
        assert_int_equal(st.changed, 1);
        assert_int_equal(st.appeared, 1);
        assert_int_equal(journal_last_seq(e->journal), 3);
        items_done(first, 1);
        items_done(second, 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_first_apply_appears, setup, teardown),
                cmocka_unit_test_setup_teardown(test_repeat_adds_no_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_adds_no_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_change_gives_one_diff_event, setup, teardown),
                cmocka_unit_test_setup_teardown(test_removal_marks_gone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reappear_under_other_kname, setup, teardown),
                cmocka_unit_test_setup_teardown(test_move_within_one_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_same_identity_twice_two_records, setup, teardown),
                cmocka_unit_test_setup_teardown(test_other_device_at_kname, setup, teardown),
                cmocka_unit_test_setup_teardown(test_full_scan_marks_missing_gone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_full_scan_rename, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pass_in_chunks_rename, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pass_displaced_then_swept, setup, teardown),
                cmocka_unit_test_setup_teardown(test_find_by_name, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stats_add_up, setup, teardown),
                cmocka_unit_test_setup_teardown(test_move_while_other_takes_place, setup, teardown),
                cmocka_unit_test_setup_teardown(test_swap_places, setup, teardown),
                cmocka_unit_test_setup_teardown(test_attached_twice_later, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aux_inode_reuse_is_new_record, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aux_unknown_is_compatible, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reappear_same_kname_new_dev, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pass_sweep, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_unverified_until_checked, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_quiet_full_pass, setup, teardown),
                cmocka_unit_test(test_name_valid),
                cmocka_unit_test_setup_teardown(test_set_name, setup, teardown),
                cmocka_unit_test_setup_teardown(test_name_follows_record, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_apply_changes_nothing, setup, teardown),
        };

        log_setup(true, LOG_LEVEL_WARNING);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
