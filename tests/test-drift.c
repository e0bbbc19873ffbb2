/* Description: drift is computed from the ledger and the expectations alone, and drift_sync() opens, keeps and closes items with one event each. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
/* daemon/drift.c: missing, unexpected_fs, label_mismatch and too_small from expectations
 * (each kind of match: serial, wwn, fs_uuid, loop_file), identity_conflict and
 * duplicate_uuid among present devices; drift_sync() against a real journal writes only
 * what changed; expectations are replaced by name and removed. */
#include "config.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "device.h"
#include "drift.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

#define T1 1763629200000000LL
#define T2 (T1 + 1000000)
#define T3 (T1 + 2000000)
#define T4 (T1 + 3000000)

/* ---- building blocks -------------------------------------------------------------- */

static struct device_record *rec_new(int64_t id, const char *identity, enum device_state state, const char *kname) {
        struct device_record *r = calloc(1, sizeof(*r));

        assert_non_null(r);
        r->id = id;
        r->identity = strdup(identity);
        assert_non_null(r->identity);
        r->state = state;
        r->first_seen = r->last_seen = T1;
        device_facts_init(&r->facts);
        r->facts.kname = strdup(kname);
        assert_non_null(r->facts.kname);
        r->facts.holders = calloc(1, sizeof(char *));
        assert_non_null(r->facts.holders);
        r->facts.size_bytes = 1LL << 30;
        return r;
}

static void set_str(char **field, const char *value) {
        free(*field);
        *field = value ? strdup(value) : NULL;
        assert_true(!value || *field);
}

static void ledger_add(struct ledger *l, struct device_record *r) {
        struct device_record **n = realloc(l->recs, (l->n_recs + 1) * sizeof(*n));

        assert_non_null(n);
        l->recs = n;
        l->recs[l->n_recs++] = r;
}

static struct expectation *exp_new(const char *name, const char *kind, const char *value) {
        struct expectation *e = calloc(1, sizeof(*e));

        assert_non_null(e);
        e->name = strdup(name);
        e->match_kind = strdup(kind);
        e->match_value = strdup(value);
        assert_non_null(e->name);
        assert_non_null(e->match_kind);
        assert_non_null(e->match_value);
        e->min_size = FIELD_NULL;
        e->created = T1;
        return e;
}

/* For drift_compute() alone: an expectation added without a journal. */
static void ds_add(struct drift_state *ds, struct expectation *e) {
        struct expectation **n = realloc(ds->exps, (ds->n_exps + 1) * sizeof(*n));

        assert_non_null(n);
        ds->exps = n;
        ds->exps[ds->n_exps++] = e;
}

struct computed {
        struct drift_item **v;
        size_t n;
};

static void compute(const struct drift_state *ds, const struct ledger *l, struct computed *c) {
        assert_int_equal(drift_compute(ds, l, &c->v, &c->n), 0);
}

static void computed_done(struct computed *c) {
        for (size_t i = 0; i < c->n; i++)
                drift_item_free(c->v[i]);
        free(c->v);
        *c = (struct computed) {};
}

static size_t count_kind(const struct computed *c, const char *kind) {
        size_t n = 0;

        for (size_t i = 0; i < c->n; i++)
                n += streq(c->v[i]->kind, kind);
        return n;
}

static const struct drift_item *find_item(const struct computed *c, const char *kind, int64_t device_id) {
        for (size_t i = 0; i < c->n; i++)
                if (streq(c->v[i]->kind, kind) && c->v[i]->device_id == device_id)
                        return c->v[i];
        return NULL;
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

static void dump(const struct computed *c) {
        for (size_t i = 0; i < c->n; i++)
                print_message("  %s name=%s device=%lld %s\n", c->v[i]->kind, c->v[i]->name ?: "(null)",
                              (long long) c->v[i]->device_id,
                              json_object_to_json_string_ext(c->v[i]->detail, JSON_C_TO_STRING_PLAIN));
}

/* Exactly n items. */
static void assert_n_items(const struct computed *c, size_t n) {
        if (c->n != n) {
                dump(c);
                fail_msg("%zu drift items, expected %zu", c->n, n);
        }
}

/* ---- drift_compute: expectations ---------------------------------------------------- */

static void test_missing(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        struct device_record *gone, *present;

        ds_add(&ds, exp_new("backup", "serial", "WD-1"));

        /* Nothing at all. */
        compute(&ds, &l, &c);
        assert_n_items(&c, 1);
        assert_string_equal(c.v[0]->kind, "missing");
        assert_string_equal(c.v[0]->name, "backup");
        assert_int_equal(c.v[0]->device_id, 0);
        assert_int_equal(c.v[0]->id, 0);
        assert_json_text(c.v[0]->detail, "{\"match\":{\"serial\":\"WD-1\"}}");
        computed_done(&c);

        /* A gone device with the serial is still missing; so is a present one with
         * another serial. */
        gone = rec_new(1, "serial:M:WD-1", DEVICE_GONE, "sdb");
        set_str(&gone->facts.serial, "WD-1");
        ledger_add(&l, gone);
        present = rec_new(2, "serial:M:WD-2", DEVICE_PRESENT, "sdc");
        set_str(&present->facts.serial, "WD-2");
        ledger_add(&l, present);
        compute(&ds, &l, &c);
        assert_n_items(&c, 1);
        assert_string_equal(c.v[0]->kind, "missing");
        computed_done(&c);

        /* Present: nothing to say. */
        gone->state = DEVICE_PRESENT;
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        /* Serial numbers are compared exactly. */
        set_str(&gone->facts.serial, "wd-1");
        compute(&ds, &l, &c);
        assert_n_items(&c, 1);
        assert_string_equal(c.v[0]->kind, "missing");
        computed_done(&c);

        ledger_done(&l);
        drift_done(&ds);
}

static void test_facts_mismatch(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        struct expectation *e = exp_new("backup", "serial", "WD-1");
        struct device_record *r = rec_new(7, "serial:M:WD-1", DEVICE_PRESENT, "sdb");
        const struct drift_item *d;

        e->fs_type = strdup("ext4");
        e->fs_label = strdup("backup");
        e->min_size = 2LL << 30;
        ds_add(&ds, e);
        set_str(&r->facts.serial, "WD-1");
        set_str(&r->facts.fs_type, "xfs");
        set_str(&r->facts.fs_label, "old");
        r->facts.size_bytes = 1LL << 30;
        set_str(&r->name, "my-disk");
        ledger_add(&l, r);

        compute(&ds, &l, &c);
        assert_n_items(&c, 3);
        d = find_item(&c, "unexpected_fs", 7);
        assert_non_null(d);
        /* Items of an expectation carry its name, not the device's. */
        assert_string_equal(d->name, "backup");
        assert_json_text(d->detail, "{\"expected\":\"ext4\",\"actual\":\"xfs\"}");
        d = find_item(&c, "label_mismatch", 7);
        assert_non_null(d);
        assert_string_equal(d->name, "backup");
        assert_json_text(d->detail, "{\"expected\":\"backup\",\"actual\":\"old\"}");
        d = find_item(&c, "too_small", 7);
        assert_non_null(d);
        assert_json_text(d->detail, "{\"expected_min\":2147483648,\"actual\":1073741824}");
        assert_int_equal(count_kind(&c, "missing"), 0);
        computed_done(&c);

        /* Nothing on the device, size unknown: still drift, with null as the actual. */
        set_str(&r->facts.fs_type, NULL);
        set_str(&r->facts.fs_label, NULL);
        r->facts.size_bytes = FIELD_NULL;
        compute(&ds, &l, &c);
        assert_n_items(&c, 3);
        assert_json_text(find_item(&c, "unexpected_fs", 7)->detail, "{\"expected\":\"ext4\",\"actual\":null}");
        assert_json_text(find_item(&c, "label_mismatch", 7)->detail, "{\"expected\":\"backup\",\"actual\":null}");
        assert_json_text(find_item(&c, "too_small", 7)->detail, "{\"expected_min\":2147483648,\"actual\":null}");
        computed_done(&c);

        /* Facts as wished (the size exactly the minimum): no drift. */
        set_str(&r->facts.fs_type, "ext4");
        set_str(&r->facts.fs_label, "backup");
        r->facts.size_bytes = 2LL << 30;
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        /* Bigger is fine; one byte less is not. */
        r->facts.size_bytes = (2LL << 30) + 1;
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);
        r->facts.size_bytes = (2LL << 30) - 1;
        compute(&ds, &l, &c);
        assert_n_items(&c, 1);
        assert_string_equal(c.v[0]->kind, "too_small");
        computed_done(&c);

        /* No wishes: whatever the device carries is fine. */
        free(e->fs_type);
        e->fs_type = NULL;
        free(e->fs_label);
        e->fs_label = NULL;
        e->min_size = FIELD_NULL;
        set_str(&r->facts.fs_type, "swap");
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        ledger_done(&l);
        drift_done(&ds);
}

/* Each kind of match, as expectation_matches() and drift_compute() see it. */
static void test_match_kinds(void **state) {
        struct device_record *disk = rec_new(1, "wwn:0x5000c500a1b2c3d4", DEVICE_PRESENT, "sda");
        struct device_record *loop = rec_new(2, "loop:259:2:77", DEVICE_PRESENT, "loop0");
        static const struct {
                const char *kind, *value;
                bool disk, loop;
        } cases[] = {
                { "serial", "ZA1B2C3D", true, false },
                { "serial", "za1b2c3d", false, false },
                { "serial", "ZA1B2C3", false, false },
                /* WWNs in either spelling, any case. */
                { "wwn", "0x5000c500a1b2c3d4", true, false },
                { "wwn", "naa.5000C500A1B2C3D4", true, false },
                { "wwn", "0X5000C500A1B2C3D4", true, false },
                { "wwn", " naa.5000c500a1b2c3d4 ", true, false },
                { "wwn", "naa.5000c500a1b2c3d5", false, false },
                /* Filesystem UUIDs regardless of case (vfat's are upper case). */
                { "fs_uuid", "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55", true, false },
                { "fs_uuid", "3F1C2A7E-5B8D-4C61-9E0A-2D7F4B1C8E55", true, false },
                { "fs_uuid", "3f1c2a7e", false, false },
                { "fs_uuid", "ABCD-1234", false, true },
                { "fs_uuid", "abcd-1234", false, true },
                /* A loop file by its path, deleted or not; nothing else. */
                { "loop_file", "/var/tmp/vault.img", false, true },
                { "loop_file", "/var/tmp/vault", false, false },
                { "loop_file", "/var/tmp/vault.img.bak", false, false },
                { "loop_file", "vault.img", false, false },
                { "loop_file", "/var/tmp/vault.img (deleted)", false, false },
                { "unknown", "ZA1B2C3D", false, false },
        };

        set_str(&disk->facts.serial, "ZA1B2C3D");
        set_str(&disk->facts.wwn, "0x5000c500a1b2c3d4");
        set_str(&disk->facts.fs_uuid, "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55");
        set_str(&loop->facts.loop_backing_file, "/var/tmp/vault.img");
        set_str(&loop->facts.fs_uuid, "ABCD-1234");

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct expectation *e = exp_new("x", cases[i].kind, cases[i].value);
                bool d = expectation_matches(e, disk), lp = expectation_matches(e, loop);

                if (d != cases[i].disk || lp != cases[i].loop)
                        fail_msg("case %zu (%s=%s): disk %d loop %d, expected %d %d", i, cases[i].kind, cases[i].value,
                                 d, lp, cases[i].disk, cases[i].loop);
                expectation_free(e);
        }

        /* A file deleted while attached: sysfs says "PATH (deleted)". */
        set_str(&loop->facts.loop_backing_file, "/var/tmp/vault.img (deleted)");
        {
                struct expectation *e = exp_new("x", "loop_file", "/var/tmp/vault.img");
                assert_true(expectation_matches(e, loop));
                expectation_free(e);
                e = exp_new("x", "loop_file", "/var/tmp/vault");
                assert_false(expectation_matches(e, loop));
                expectation_free(e);
        }
        /* No facts to match: never a match. */
        set_str(&loop->facts.loop_backing_file, NULL);
        {
                struct expectation *e = exp_new("x", "loop_file", "/var/tmp/vault.img");
                assert_false(expectation_matches(e, loop));
                expectation_free(e);
        }

        assert_true(expectation_match_kind_valid("serial"));
        assert_true(expectation_match_kind_valid("wwn"));
        assert_true(expectation_match_kind_valid("fs_uuid"));
        assert_true(expectation_match_kind_valid("loop_file"));
        assert_false(expectation_match_kind_valid("fs-uuid"));
        assert_false(expectation_match_kind_valid("loop-file"));
        assert_false(expectation_match_kind_valid(""));
        assert_false(expectation_match_kind_valid(NULL));

        device_record_free(disk);
        device_record_free(loop);
}

/* drift_compute() over each match kind: the expectation finds its device, or says
 * missing. */
static void test_compute_by_match_kind(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        struct device_record *disk = rec_new(1, "wwn:0x5000c500a1b2c3d4", DEVICE_PRESENT, "sda");
        struct device_record *loop = rec_new(2, "loop:259:2:77", DEVICE_PRESENT, "loop0");

        set_str(&disk->facts.wwn, "0x5000c500a1b2c3d4");
        set_str(&disk->facts.fs_type, "ext4");
        set_str(&loop->facts.loop_backing_file, "/var/tmp/vault.img (deleted)");
        set_str(&loop->facts.fs_uuid, "ABCD-1234");
        set_str(&loop->facts.fs_type, "vfat");
        ledger_add(&l, disk);
        ledger_add(&l, loop);

        ds_add(&ds, exp_new("by-wwn", "wwn", "naa.5000C500A1B2C3D4"));
        ds_add(&ds, exp_new("by-uuid", "fs_uuid", "abcd-1234"));
        ds_add(&ds, exp_new("by-file", "loop_file", "/var/tmp/vault.img"));
        ds_add(&ds, exp_new("other-file", "loop_file", "/var/tmp/other.img"));
        for (size_t i = 0; i < ds.n_exps; i++)
                ds.exps[i]->fs_type = strdup("vfat");

        compute(&ds, &l, &c);
        assert_n_items(&c, 2);
        /* The disk matched by its WWN in the other spelling, and is not vfat. */
        assert_non_null(find_item(&c, "unexpected_fs", 1));
        assert_string_equal(find_item(&c, "unexpected_fs", 1)->name, "by-wwn");
        assert_json_text(find_item(&c, "unexpected_fs", 1)->detail, "{\"expected\":\"vfat\",\"actual\":\"ext4\"}");
        /* The loop device matched by UUID and by its deleted file, and is vfat. */
        assert_non_null(find_item(&c, "missing", 0));
        assert_string_equal(find_item(&c, "missing", 0)->name, "other-file");
        assert_json_text(find_item(&c, "missing", 0)->detail, "{\"match\":{\"loop_file\":\"/var/tmp/other.img\"}}");
        computed_done(&c);

        ledger_done(&l);
        drift_done(&ds);
}

/* ---- drift_compute: devices that cannot be told apart ------------------------------ */

static void test_identity_conflict(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        struct device_record *a = rec_new(3, "serial:Disk:S1", DEVICE_PRESENT, "sda");
        struct device_record *b = rec_new(5, "serial:Disk:S1", DEVICE_PRESENT, "sdb");
        struct device_record *other = rec_new(6, "serial:Disk:S2", DEVICE_PRESENT, "sdc");
        const struct drift_item *d;

        set_str(&a->name, "left");
        ledger_add(&l, a);
        ledger_add(&l, b);
        ledger_add(&l, other);

        compute(&ds, &l, &c);
        assert_n_items(&c, 2);
        d = find_item(&c, "identity_conflict", 3);
        assert_non_null(d);
        /* Named after the device, naming the others. */
        assert_string_equal(d->name, "left");
        assert_json_text(d->detail, "{\"identity\":\"serial:Disk:S1\",\"kname\":\"sda\",\"others\":[5],\"others_count\":1}");
        d = find_item(&c, "identity_conflict", 5);
        assert_non_null(d);
        assert_null(d->name);
        assert_json_text(d->detail, "{\"identity\":\"serial:Disk:S1\",\"kname\":\"sdb\",\"others\":[3],\"others_count\":1}");
        computed_done(&c);

        /* Three of a kind: each names the two others. */
        set_str(&other->identity, "serial:Disk:S1");
        compute(&ds, &l, &c);
        assert_n_items(&c, 3);
        assert_json_text(find_item(&c, "identity_conflict", 6)->detail,
                         "{\"identity\":\"serial:Disk:S1\",\"kname\":\"sdc\",\"others\":[3,5],\"others_count\":2}");
        computed_done(&c);

        /* One of them gone: the two present ones still conflict, the gone one not. */
        b->state = DEVICE_GONE;
        compute(&ds, &l, &c);
        assert_n_items(&c, 2);
        assert_null(find_item(&c, "identity_conflict", 5));
        assert_json_text(find_item(&c, "identity_conflict", 6)->detail,
                         "{\"identity\":\"serial:Disk:S1\",\"kname\":\"sdc\",\"others\":[3],\"others_count\":1}");
        computed_done(&c);
        /* Only one present: no conflict. */
        other->state = DEVICE_GONE;
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        /* Weak keys name slots, not devices: never a conflict. */
        b->state = other->state = DEVICE_PRESENT;
        set_str(&a->identity, "kname:sda");
        set_str(&b->identity, "kname:sda");
        set_str(&other->identity, "kname:sda");
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);
        set_str(&a->identity, "path:pci-0000:00:17.0-ata-1");
        set_str(&b->identity, "path:pci-0000:00:17.0-ata-1");
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        /* Any strong kind counts: one image attached twice. */
        set_str(&a->identity, "loop:259:2:77");
        set_str(&b->identity, "loop:259:2:77");
        compute(&ds, &l, &c);
        assert_n_items(&c, 2);
        assert_int_equal(count_kind(&c, "identity_conflict"), 2);
        computed_done(&c);

        ledger_done(&l);
        drift_done(&ds);
}

static void test_duplicate_uuid(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        struct device_record *a = rec_new(1, "loop:259:2:10", DEVICE_PRESENT, "loop0");
        struct device_record *b = rec_new(2, "loop:259:2:11", DEVICE_PRESENT, "loop1");
        struct device_record *none = rec_new(3, "loop:259:2:12", DEVICE_PRESENT, "loop2");

        set_str(&a->facts.fs_uuid, "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55");
        set_str(&b->facts.fs_uuid, "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55");
        ledger_add(&l, a);
        ledger_add(&l, b);
        ledger_add(&l, none);

        /* A cloned image: two records, each with the drift, no identity conflict. */
        compute(&ds, &l, &c);
        assert_n_items(&c, 2);
        assert_int_equal(count_kind(&c, "duplicate_uuid"), 2);
        assert_json_text(find_item(&c, "duplicate_uuid", 1)->detail,
                         "{\"fs_uuid\":\"3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55\",\"kname\":\"loop0\",\"others\":[2],\"others_count\":1}");
        assert_json_text(find_item(&c, "duplicate_uuid", 2)->detail,
                         "{\"fs_uuid\":\"3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55\",\"kname\":\"loop1\",\"others\":[1],\"others_count\":1}");
        computed_done(&c);

        /* Different UUIDs, or one of the two gone: nothing. */
        set_str(&b->facts.fs_uuid, "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e56");
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);
        set_str(&b->facts.fs_uuid, "3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55");
        b->state = DEVICE_GONE;
        compute(&ds, &l, &c);
        assert_n_items(&c, 0);
        computed_done(&c);

        /* One image attached twice: the same identity and the same UUID, both said. */
        b->state = DEVICE_PRESENT;
        set_str(&b->identity, "loop:259:2:10");
        compute(&ds, &l, &c);
        assert_n_items(&c, 4);
        assert_int_equal(count_kind(&c, "duplicate_uuid"), 2);
        assert_int_equal(count_kind(&c, "identity_conflict"), 2);
        computed_done(&c);

        ledger_done(&l);
        drift_done(&ds);
}

/* ---- drift_sync against a journal --------------------------------------------------- */

/* A golden image cloned many times: each item names a few others and counts them all,
 * so the detail (written to the journal and to every event) stays small. */
static void test_many_clones_bounded_detail(void **state) {
        struct ledger l = {};
        struct drift_state ds = {};
        struct computed c = {};
        const int n = 50;

        for (int i = 0; i < n; i++) {
                char identity[32], kname[16];
                snprintf(identity, sizeof(identity), "loop:259:2:%d", 100 + i);
                snprintf(kname, sizeof(kname), "loop%d", i);
                struct device_record *r = rec_new(i + 1, identity, DEVICE_PRESENT, kname);
                set_str(&r->facts.fs_uuid, "0f0f0f0f-0000-4000-8000-000000000001");
                ledger_add(&l, r);
        }
        compute(&ds, &l, &c);
        assert_n_items(&c, (size_t) n);
        for (size_t i = 0; i < c.n; i++) {
                json_object *others, *count;
                assert_true(json_object_object_get_ex(c.v[i]->detail, "others", &others));
                assert_true(json_object_object_get_ex(c.v[i]->detail, "others_count", &count));
                assert_int_equal(json_object_array_length(others), 8);
                assert_int_equal(json_object_get_int64(count), n - 1);
        }
        computed_done(&c);
        ledger_done(&l);
        drift_done(&ds);
}

struct env {
        char *dir;
        char *path;
        struct journal *journal;
        struct ledger ledger;
        struct drift_state drift;
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
        if (asprintf(&e->dir, "%s/test-drift.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(e->dir))
                return -1;
        if (asprintf(&e->path, "%s/journal.db", e->dir) < 0)
                return -1;
        if (journal_open(e->path, &e->journal, &err) < 0) {
                fprintf(stderr, "journal_open: %s\n", err);
                free(err);
                return -1;
        }
        e->ledger.journal = e->journal;
        if (drift_load(&e->drift, e->journal) < 0)
                return -1;
        *state = e;
        return 0;
}

static int teardown(void **state) {
        struct env *e = *state;

        drift_done(&e->drift);
        ledger_done(&e->ledger);
        journal_close(e->journal);
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(e->dir);
        free(e->path);
        free(e);
        return 0;
}

/* A record in the journal and in the in-memory ledger. */
static struct device_record *env_device(struct env *e, const char *identity, const char *kname, const char *fs_uuid) {
        struct device_record *r = rec_new(0, identity, DEVICE_PRESENT, kname);

        set_str(&r->facts.fs_uuid, fs_uuid);
        assert_int_equal(journal_insert_device(e->journal, r), 0);
        assert_true(r->id > 0);
        ledger_add(&e->ledger, r);
        return r;
}

static void env_expect(struct env *e, struct expectation *x) {
        assert_int_equal(drift_put_expectation(&e->drift, e->journal, x), 0);
}

static void sync_counts(struct env *e, int64_t now, unsigned want_opened, unsigned want_closed) {
        unsigned opened = 999, closed = 999;

        assert_int_equal(drift_sync(&e->drift, e->journal, &e->ledger, now, &opened, &closed), 0);
        if (opened != want_opened || closed != want_closed)
                fail_msg("drift_sync opened %u and closed %u, expected %u and %u", opened, closed, want_opened,
                         want_closed);
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

static const struct drift_item *open_item(const struct drift_state *ds, const char *kind, int64_t device_id) {
        for (size_t i = 0; i < ds->n_open; i++)
                if (streq(ds->open[i]->kind, kind) && ds->open[i]->device_id == device_id)
                        return ds->open[i];
        return NULL;
}

static void test_sync_open_keep_close(void **state) {
        struct env *e = *state;
        struct device_record *a, *b;
        const struct drift_item *d;
        json_object *ev, *x;
        int64_t seq, missing_id, dup_a_id;

        a = env_device(e, "loop:259:2:10", "loop0", "aaaa-0001");
        b = env_device(e, "loop:259:2:11", "loop1", "aaaa-0001");
        env_expect(e, exp_new("vault", "loop_file", "/var/tmp/vault.img"));
        seq = journal_last_seq(e->journal);

        /* Opened: each item once, with an event. */
        sync_counts(e, T1, 3, 0);
        assert_int_equal(e->drift.n_open, 3);
        d = open_item(&e->drift, "missing", 0);
        assert_non_null(d);
        assert_true(d->id > 0);
        assert_int_equal(d->since, T1);
        assert_string_equal(d->name, "vault");
        missing_id = d->id;
        d = open_item(&e->drift, "duplicate_uuid", a->id);
        assert_non_null(d);
        assert_int_equal(d->since, T1);
        dup_a_id = d->id;
        assert_non_null(open_item(&e->drift, "duplicate_uuid", b->id));

        ev = events_since(e, seq);
        assert_int_equal(json_object_array_length(ev), 3);
        for (size_t i = 0; i < 3; i++) {
                x = json_object_array_get_idx(ev, i);
                assert_string_equal(json_object_get_string(member(x, "kind")), "drift_opened");
                assert_null(member(x, "before"));
                assert_non_null(member(member(x, "after"), "drift_id"));
        }
        /* The opening says which item, what kind, whose, and the facts. */
        x = NULL;
        for (size_t i = 0; i < 3; i++)
                if (streq(json_object_get_string(member(member(json_object_array_get_idx(ev, i), "after"), "kind")),
                          "missing"))
                        x = json_object_array_get_idx(ev, i);
        assert_non_null(x);
        assert_int_equal(json_object_get_int64(member(member(x, "after"), "drift_id")), missing_id);
        assert_null(member(x, "device_id"));
        assert_string_equal(json_object_get_string(member(member(x, "after"), "kind")), "missing");
        assert_string_equal(json_object_get_string(member(member(x, "after"), "name")), "vault");
        assert_json_text(member(member(x, "after"), "detail"), "{\"match\":{\"loop_file\":\"/var/tmp/vault.img\"}}");
        json_object_put(ev);

        /* Nothing changed: nothing written, the items keep their ids and starts. */
        seq = journal_last_seq(e->journal);
        sync_counts(e, T2, 0, 0);
        sync_counts(e, T3, 0, 0);
        assert_int_equal(journal_last_seq(e->journal), seq);
        assert_int_equal(e->drift.n_open, 3);
        assert_int_equal(open_item(&e->drift, "missing", 0)->id, missing_id);
        assert_int_equal(open_item(&e->drift, "missing", 0)->since, T1);
        assert_int_equal(open_item(&e->drift, "duplicate_uuid", a->id)->id, dup_a_id);

        /* Reality fixed: the clone is gone, the file is attached. Both kinds close. */
        b->state = DEVICE_GONE;
        set_str(&a->facts.loop_backing_file, "/var/tmp/vault.img");
        sync_counts(e, T4, 0, 3);
        assert_int_equal(e->drift.n_open, 0);
        ev = events_since(e, seq);
        assert_int_equal(json_object_array_length(ev), 3);
        for (size_t i = 0; i < 3; i++) {
                x = json_object_array_get_idx(ev, i);
                assert_string_equal(json_object_get_string(member(x, "kind")), "drift_closed");
                assert_null(member(x, "after"));
                assert_non_null(member(member(x, "before"), "drift_id"));
        }
        json_object_put(ev);

        /* The journal agrees: nothing open after a reload. */
        drift_done(&e->drift);
        assert_int_equal(drift_load(&e->drift, e->journal), 0);
        assert_int_equal(e->drift.n_open, 0);
        assert_int_equal(e->drift.n_exps, 1);
        seq = journal_last_seq(e->journal);
        sync_counts(e, T4 + 1, 0, 0);
        assert_int_equal(journal_last_seq(e->journal), seq);

        /* Open again later: a new item, a new start. */
        set_str(&a->facts.loop_backing_file, NULL);
        sync_counts(e, T4 + 2, 1, 0);
        assert_true(open_item(&e->drift, "missing", 0)->id > missing_id);
        assert_int_equal(open_item(&e->drift, "missing", 0)->since, T4 + 2);
}

/* An item whose facts change but which still holds stays the same item, with the new
 * facts, in memory and in the journal, and without an event. */
static void test_sync_detail_changes(void **state) {
        struct env *e = *state;
        struct device_record *r = env_device(e, "serial:Disk:S1", "sdb", NULL);
        struct expectation *x = exp_new("backup", "serial", "S1");
        struct drift_state reloaded = {};
        const struct drift_item *d;
        int64_t id, seq;

        set_str(&r->facts.serial, "S1");
        set_str(&r->facts.fs_label, "old");
        x->fs_label = strdup("backup");
        env_expect(e, x);
        sync_counts(e, T1, 1, 0);
        d = open_item(&e->drift, "label_mismatch", r->id);
        assert_non_null(d);
        id = d->id;
        assert_json_text(d->detail, "{\"expected\":\"backup\",\"actual\":\"old\"}");

        set_str(&r->facts.fs_label, "other");
        seq = journal_last_seq(e->journal);
        sync_counts(e, T2, 0, 0);
        assert_int_equal(journal_last_seq(e->journal), seq);
        assert_int_equal(e->drift.n_open, 1);
        d = open_item(&e->drift, "label_mismatch", r->id);
        assert_int_equal(d->id, id);
        assert_int_equal(d->since, T1);
        assert_json_text(d->detail, "{\"expected\":\"backup\",\"actual\":\"other\"}");

        assert_int_equal(drift_load(&reloaded, e->journal), 0);
        assert_int_equal(reloaded.n_open, 1);
        assert_int_equal(reloaded.open[0]->id, id);
        assert_int_equal(reloaded.open[0]->since, T1);
        assert_json_text(reloaded.open[0]->detail, "{\"expected\":\"backup\",\"actual\":\"other\"}");
        drift_done(&reloaded);

        /* A detail change together with another item opening: still the same item. */
        set_str(&r->facts.fs_label, "third");
        env_expect(e, exp_new("elsewhere", "serial", "S9"));
        sync_counts(e, T3, 1, 0);
        d = open_item(&e->drift, "label_mismatch", r->id);
        assert_int_equal(d->id, id);
        assert_int_equal(d->since, T1);
        assert_json_text(d->detail, "{\"expected\":\"backup\",\"actual\":\"third\"}");

        /* The label as wished: closed. */
        set_str(&r->facts.fs_label, "backup");
        sync_counts(e, T4, 0, 1);
        assert_null(open_item(&e->drift, "label_mismatch", r->id));
        assert_non_null(open_item(&e->drift, "missing", 0));
}

/* Items about a device follow the device: named later, the item shows the name. */
static void test_sync_device_named_later(void **state) {
        struct env *e = *state;
        struct device_record *a = env_device(e, "serial:Disk:S1", "sda", NULL);
        struct device_record *b = env_device(e, "serial:Disk:S1", "sdb", NULL);
        const struct drift_item *d;
        int64_t id;

        sync_counts(e, T1, 2, 0);
        d = open_item(&e->drift, "identity_conflict", a->id);
        assert_non_null(d);
        assert_null(d->name);
        id = d->id;
        assert_non_null(open_item(&e->drift, "identity_conflict", b->id));

        /* ledger_set_name() then the reconciler's drift evaluation. */
        set_str(&a->name, "left");
        assert_int_equal(journal_update_device(e->journal, a), 0);
        sync_counts(e, T2, 0, 0);
        d = open_item(&e->drift, "identity_conflict", a->id);
        assert_non_null(d);
        assert_int_equal(d->id, id);
        if (!streq_ptr(d->name, "left"))
                fail_msg("the open identity_conflict of device %lld is named %s, not \"left\"", (long long) a->id,
                         d->name ?: "(null)");
}

/* Drift events are about devices and expectations, not about the daemon: the daemon's
 * own last event (clean or unclean previous run) is not a drift event. */
static void test_drift_events_not_daemon_events(void **state) {
        struct env *e = *state;
        char *kind = NULL;

        assert_int_equal(journal_append_event(e->journal, T1, 0, "daemon_started", NULL, NULL, NULL), 0);
        env_expect(e, exp_new("vault", "loop_file", "/var/tmp/vault.img"));
        sync_counts(e, T2, 1, 0);
        assert_int_equal(journal_last_daemon_event(e->journal, &kind), 0);
        if (!streq_ptr(kind, "daemon_started")) {
                char got[64];
                snprintf(got, sizeof(got), "%s", kind ?: "(null)");
                free(kind);
                fail_msg("journal_last_daemon_event() says \"%s\" after a missing drift opened", got);
        }
        free(kind);
}

static void test_put_and_remove_expectation(void **state) {
        struct env *e = *state;
        struct expectation *x = exp_new("backup", "serial", "S1"), *y;
        struct drift_state reloaded = {};

        env_expect(e, x);
        assert_int_equal(e->drift.n_exps, 1);
        assert_ptr_equal(drift_find_expectation(&e->drift, "backup"), x);
        assert_null(drift_find_expectation(&e->drift, "nothing"));

        /* The same name replaces (the old one is freed: no leak under ASan). */
        y = exp_new("backup", "wwn", "naa.5000C500A1B2C3D4");
        y->min_size = 1LL << 30;
        y->on_appear = strdup("run:/usr/local/sbin/backup-hook");
        env_expect(e, y);
        assert_int_equal(e->drift.n_exps, 1);
        assert_ptr_equal(drift_find_expectation(&e->drift, "backup"), y);
        assert_string_equal(e->drift.exps[0]->match_kind, "wwn");
        env_expect(e, exp_new("vault", "loop_file", "/var/tmp/vault.img"));
        assert_int_equal(e->drift.n_exps, 2);

        assert_int_equal(drift_load(&reloaded, e->journal), 0);
        assert_int_equal(reloaded.n_exps, 2);
        assert_string_equal(drift_find_expectation(&reloaded, "backup")->match_kind, "wwn");
        assert_int_equal(drift_find_expectation(&reloaded, "backup")->min_size, 1LL << 30);
        assert_string_equal(drift_find_expectation(&reloaded, "backup")->on_appear, "run:/usr/local/sbin/backup-hook");
        assert_null(drift_find_expectation(&reloaded, "vault")->on_appear);
        drift_done(&reloaded);

        /* Its drift goes with it. */
        sync_counts(e, T1, 2, 0);
        assert_int_equal(drift_remove_expectation(&e->drift, e->journal, "nothing"), -ENOENT);
        assert_int_equal(e->drift.n_exps, 2);
        assert_int_equal(drift_remove_expectation(&e->drift, e->journal, "backup"), 0);
        assert_int_equal(e->drift.n_exps, 1);
        assert_null(drift_find_expectation(&e->drift, "backup"));
        assert_int_equal(drift_remove_expectation(&e->drift, e->journal, "backup"), -ENOENT);
        sync_counts(e, T2, 0, 1);
        assert_int_equal(e->drift.n_open, 1);
        assert_string_equal(e->drift.open[0]->name, "vault");

        assert_int_equal(drift_load(&reloaded, e->journal), 0);
        assert_int_equal(reloaded.n_exps, 1);
        assert_string_equal(reloaded.exps[0]->name, "vault");
        drift_done(&reloaded);
}

/* Replacing an expectation is a new wish: what was open against the old one closes, and
 * what holds against the new one opens with its own start. */
static void test_replaced_expectation_reopens(void **state) {
        struct env *e = *state;
        struct device_record *a;
        struct expectation *x;
        const struct drift_item *d;
        int64_t old_id;

        a = env_device(e, "loop:259:2:10", "loop0", NULL);
        set_str(&a->facts.fs_type, "ext4");
        set_str(&a->facts.loop_backing_file, "/srv/ea.img");
        x = exp_new("ea", "loop_file", "/srv/ea.img");
        set_str(&x->fs_type, "xfs");
        assert_int_equal(drift_put_expectation(&e->drift, e->journal, x), 0);
        sync_counts(e, T1, 1, 0);
        d = open_item(&e->drift, "unexpected_fs", a->id);
        assert_non_null(d);
        old_id = d->id;

        x = exp_new("ea", "loop_file", "/srv/ea.img");
        set_str(&x->fs_type, "btrfs");
        x->created = T2;
        assert_int_equal(drift_put_expectation(&e->drift, e->journal, x), 0);
        sync_counts(e, T2, 1, 1);
        d = open_item(&e->drift, "unexpected_fs", a->id);
        assert_non_null(d);
        assert_true(d->id != old_id);
        assert_int_equal(d->since, T2);
        assert_string_equal(json_object_get_string(member(d->detail, "expected")), "btrfs");
        /* And with nothing changed, nothing happens. */
        sync_counts(e, T3, 0, 0);
}

static void test_json(void **state) {
        struct env *e = *state;
        struct device_record *a = env_device(e, "loop:259:2:10", "loop0", "u-1");
        struct device_record *b = env_device(e, "loop:259:2:11", "loop1", "u-1");
        struct expectation *x = exp_new("vault", "loop_file", "/var/tmp/vault.img");
        json_object *o, *kinds;
        char ts[RFC3339_MAX];

        x->fs_type = strdup("ext4");
        x->created = T1;
        env_expect(e, x);
        o = expectation_to_json(x);
        assert_json_text(o, "{\"name\":\"vault\",\"match\":{\"loop_file\":\"/var/tmp/vault.img\"},\"fs_type\":\"ext4\","
                            "\"fs_label\":null,\"min_size\":null,\"created\":\"2025-11-20T09:00:00.000000Z\","
                            "\"on_appear\":null}");
        json_object_put(o);

        sync_counts(e, T2, 3, 0);
        o = drift_item_to_json(open_item(&e->drift, "missing", 0));
        assert_int_equal(json_object_get_int64(member(o, "id")), open_item(&e->drift, "missing", 0)->id);
        assert_string_equal(json_object_get_string(member(o, "kind")), "missing");
        assert_string_equal(json_object_get_string(member(o, "name")), "vault");
        assert_null(member(o, "device_id"));
        assert_string_equal(json_object_get_string(member(o, "since")), format_rfc3339(T2, ts));
        assert_json_text(member(o, "detail"), "{\"match\":{\"loop_file\":\"/var/tmp/vault.img\"}}");
        assert_int_equal(json_object_object_length(o), 6);
        json_object_put(o);
        o = drift_item_to_json(open_item(&e->drift, "duplicate_uuid", b->id));
        assert_int_equal(json_object_get_int64(member(o, "device_id")), b->id);
        json_object_put(o);

        kinds = drift_kinds_of_device(&e->drift, a->id);
        assert_json_text(kinds, "[\"duplicate_uuid\"]");
        json_object_put(kinds);
        kinds = drift_kinds_of_device(&e->drift, 999);
        assert_json_text(kinds, "[]");
        json_object_put(kinds);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_missing),
                cmocka_unit_test(test_facts_mismatch),
                cmocka_unit_test(test_match_kinds),
                cmocka_unit_test(test_compute_by_match_kind),
                cmocka_unit_test(test_identity_conflict),
                cmocka_unit_test(test_duplicate_uuid),
                cmocka_unit_test(test_many_clones_bounded_detail),
                cmocka_unit_test_setup_teardown(test_sync_open_keep_close, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_detail_changes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_device_named_later, setup, teardown),
                cmocka_unit_test_setup_teardown(test_drift_events_not_daemon_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_put_and_remove_expectation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_replaced_expectation_reopens, setup, teardown),
                cmocka_unit_test_setup_teardown(test_json, setup, teardown),
        };

        log_setup(true, LOG_LEVEL_WARNING);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
