/* Description: the ledger matches observations to records by identity, never by kernel
 * name, and writes one event per real change and none for a repeat, also across a restart. */
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

/* ledger_apply() borrows the items: the same batch can be applied again. */
static void apply(struct env *e, struct ledger_item *items, size_t n, bool full, int64_t now,
                  struct ledger_stats *st) {
        assert_int_equal(ledger_apply(&e->ledger, items, n, full, now, st), 0);
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
                assert_int_equal(a->state, b->state);
                assert_int_equal(a->first_seen, b->first_seen);
                assert_int_equal(a->last_seen, b->last_seen);
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
        assert_int_equal(device_facts_diff(&r0->facts, &items[0].observed->facts, NULL, NULL), 0);
        assert_int_equal(device_facts_diff(&r1->facts, &items[1].observed->facts, NULL, NULL), 0);

        ev = events_since(e, 0);
        assert_int_equal(json_object_array_length(ev), 2);
        for (size_t i = 0; i < 2; i++) {
                json_object *x = json_object_array_get_idx(ev, i);
                assert_string_equal(kind_of(x), "appeared");
                assert_int_equal(json_object_get_int64(member(x, "seq")), (int64_t) i + 1);
                assert_null(member(x, "before"));
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
        assert_int_equal(st.changed + st.disappeared, 0);

        assert_int_equal(e->ledger.n_recs, 1);
        r = ledger_find_by_id(&e->ledger, id);
        assert_non_null(r);
        assert_int_equal(r->state, DEVICE_PRESENT);
        assert_string_equal(r->facts.kname, "loop3");
        assert_string_equal(r->facts.dev, "7:3");
        assert_int_equal(r->first_seen, T1);
        assert_int_equal(r->last_seen, T3);

        ev = events_since(e, 2);
        assert_int_equal(json_object_array_length(ev), 1);
        x = json_object_array_get_idx(ev, 0);
        assert_string_equal(kind_of(x), "reappeared");
        assert_int_equal(device_of(x), id);
        before = member(x, "before");
        after = member(x, "after");
        assert_string_equal(json_object_get_string(member(before, "kname")), "loop0");
        assert_string_equal(json_object_get_string(member(after, "kname")), "loop3");
        assert_string_equal(json_object_get_string(member(before, "state")), "gone");
        assert_string_equal(json_object_get_string(member(after, "state")), "present");
        /* Only what differs: name, node and number, and the state. */
        assert_json_text(before, "{\"kname\":\"loop0\",\"devnode\":\"/dev/loop0\",\"dev\":\"7:0\",\"state\":\"gone\"}");
        assert_json_text(after, "{\"kname\":\"loop3\",\"devnode\":\"/dev/loop3\",\"dev\":\"7:3\",\"state\":\"present\"}");
        json_object_put(ev);

        assert_ledger_matches_journal(e);
        items_done(first, 1);
        items_done(removal, 1);
        items_done(back, 1);
}

/* The removal and the new name arrive in one batch: the record is still taken back. */
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

        ev = events_since(e, 1);
        assert_int_equal(json_object_array_length(ev), 2);
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 0)), "disappeared");
        assert_string_equal(kind_of(json_object_array_get_idx(ev, 1)), "reappeared");
        assert_int_equal(device_of(json_object_array_get_idx(ev, 1)), id);
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

/* A full scan that finds a device under a new name takes its record back. */
static void test_full_scan_rename(void **state) {
        struct env *e = *state;
        struct ledger_item first[] = { item("loop0", dev_new("loop:259:2:10", "loop0", 0, 1 << 20)) };
        struct ledger_item scan[] = { item("loop4", dev_new("loop:259:2:10", "loop4", 4, 1 << 20)) };
        struct ledger_stats st = {};
        int64_t id;

        apply(e, first, 1, false, T1, NULL);
        id = e->ledger.recs[0]->id;
        apply(e, scan, 1, true, T2, &st);
        assert_int_equal(e->ledger.n_recs, 1);
        assert_int_equal(e->ledger.recs[0]->id, id);
        assert_int_equal(e->ledger.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(e->ledger.recs[0]->facts.kname, "loop4");
        assert_int_equal(st.disappeared, 1);
        assert_int_equal(st.appeared, 1);
        items_done(first, 1);
        items_done(scan, 1);
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
        r = ledger_apply(&e->ledger, second, 2, false, T2, &st);
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
                cmocka_unit_test_setup_teardown(test_find_by_name, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stats_add_up, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_apply_changes_nothing, setup, teardown),
        };

        log_setup(true, LOG_LEVEL_WARNING);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
