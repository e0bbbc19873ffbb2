/* Description: the journal round-trips records, events, expectations and drift, numbers events without gaps, refuses files it cannot read untouched, and migrates old schemas (v1, v2) without loss. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "device.h"
#include "drift.h"
#include "journal.h"
#include "log.h"
#include "transfer.h"
#include "util.h"
#include "volumes.h"

static char *tmpdir;

/* synchronous is a property of a connection, not of the file, and the journal's
 * connection is private: keep the handle journal_open() obtains so the test can ask it. */
static sqlite3 *captured_db;
static bool capture_db;

int sqlite3_open_v2(const char *filename, sqlite3 **ppDb, int flags, const char *zVfs) {
        static int (*real)(const char *, sqlite3 **, int, const char *);
        int rc;

        if (!real)
                *(void **) &real = dlsym(RTLD_NEXT, "sqlite3_open_v2");
        if (!real)
                abort();
        rc = real(filename, ppDb, flags, zVfs);
        if (rc == SQLITE_OK && capture_db && (flags & SQLITE_OPEN_READWRITE))
                captured_db = *ppDb;
        return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int group_setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");

        if (asprintf(&tmpdir, "%s/test-journal.XXXXXX", isempty(base) ? "/tmp" : base) < 0)
                return -1;
        if (!mkdtemp(tmpdir)) {
                fprintf(stderr, "mkdtemp %s: %m\n", tmpdir);
                return -1;
        }
        log_setup(true, LOG_LEVEL_WARNING);
        return 0;
}

static int group_teardown(void **state) {
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(tmpdir);
        return 0;
}

/* A fresh path in the temporary directory for each test. */
static char *db_path(const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s.db", tmpdir, name) > 0);
        return p;
}

static bool file_exists(const char *path) {
        struct stat st;
        return lstat(path, &st) == 0;
}

static char *sidecar(const char *path, const char *suffix) {
        char *p;

        assert_true(asprintf(&p, "%s%s", path, suffix) > 0);
        return p;
}

static char *read_file(const char *path, size_t *ret_len) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;

        assert_non_null(f);
        {
                FILE *m = open_memstream(&buf, &len);
                char chunk[4096];
                size_t n;

                assert_non_null(m);
                while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                        fwrite(chunk, 1, n, m);
                fclose(m);
        }
        fclose(f);
        if (ret_len)
                *ret_len = len;
        return buf;
}

static const char *top_srcdir(void) {
        static char buf[4096];
        const char *e = getenv("BLKLEDGER_TOP_SRCDIR");

        if (!isempty(e))
                return e;
        /* __FILE__ is .../tests/test-journal.c */
        snprintf(buf, sizeof(buf), "%s", __FILE__);
        return dirname(dirname(buf));
}

/* A second connection, as a backup tool or the sqlite3 shell would open. */
static sqlite3 *open_other(const char *path) {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        return db;
}

static int64_t query_int(sqlite3 *db, const char *sql) {
        sqlite3_stmt *s;
        int64_t v;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static char *query_text(sqlite3 *db, const char *sql) {
        sqlite3_stmt *s;
        char *v;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        v = strdup((const char *) sqlite3_column_text(s, 0) ?: "(null)");
        sqlite3_finalize(s);
        assert_non_null(v);
        return v;
}

static struct journal *open_journal(const char *path) {
        struct journal *j = NULL;
        char *err = NULL;
        int r = journal_open(path, &j, &err);

        if (r < 0)
                print_error("journal_open(%s): %s: %s\n", path, strerror(-r), err ?: "(no message)");
        assert_int_equal(r, 0);
        assert_null(err);
        assert_non_null(j);
        return j;
}

static char **strv_new(const char *first, ...) {
        char **v = calloc(1, sizeof(char *));
        size_t n = 0;
        va_list ap;

        assert_non_null(v);
        va_start(ap, first);
        for (const char *s = first; s; s = va_arg(ap, const char *)) {
                v = realloc(v, (n + 2) * sizeof(char *));
                assert_non_null(v);
                v[n] = strdup(s);
                assert_non_null(v[n]);
                v[++n] = NULL;
        }
        va_end(ap);
        return v;
}

/* Every field set to a distinct non-null value, whatever DEVICE_FIELDS holds. */
static void facts_fill(struct device_facts *f, unsigned salt) {
        device_facts_init(f);
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                void *p = device_field_ptr(f, d);

                switch (d->type) {
                case FIELD_STR:
                        /* Quotes, slashes and non-ASCII must survive the round trip. */
                        assert_true(asprintf((char **) p, "%s \"%u\" /x/ é", d->name, salt) > 0);
                        break;
                case FIELD_INT:
                        *(int64_t *) p = (int64_t) (1000 * salt + i) * 4096;
                        break;
                case FIELD_BOOL:
                        *(int64_t *) p = (i + salt) % 2;
                        break;
                case FIELD_STRV:
                        *(char ***) p = strv_new("dm-0", "md127", NULL);
                        break;
                }
        }
}

static struct device_record *record_new(const char *identity, enum device_state state, int64_t first,
                                        int64_t last) {
        struct device_record *r = calloc(1, sizeof(*r));

        assert_non_null(r);
        r->identity = strdup(identity);
        assert_non_null(r->identity);
        r->state = state;
        r->first_seen = first;
        r->last_seen = last;
        device_facts_init(&r->facts);
        return r;
}

static void assert_facts_equal(const struct device_facts *a, const struct device_facts *b) {
        for (size_t i = 0; i < device_fields_count; i++) {
                const struct field_desc *d = &device_fields[i];
                const void *x = device_field_cptr(a, d), *y = device_field_cptr(b, d);
                bool eq;

                switch (d->type) {
                case FIELD_STR:
                        eq = streq_ptr(*(char *const *) x, *(char *const *) y);
                        break;
                case FIELD_STRV:
                        /* Never null after a load: empty is an empty vector. */
                        eq = *(char **const *) y && strv_equal(*(char **const *) x, *(char **const *) y);
                        break;
                default:
                        eq = *(const int64_t *) x == *(const int64_t *) y;
                }
                if (!eq)
                        fail_msg("field %s differs after the round trip", d->name);
        }
}

static void assert_str_or_null_equal(const char *a, const char *b) {
        if (!streq_ptr(a, b))
                fail_msg("\"%s\" != \"%s\"", a ?: "(null)", b ?: "(null)");
}

static void assert_record_equal(const struct device_record *a, const struct device_record *b) {
        assert_int_equal(a->id, b->id);
        assert_string_equal(a->identity, b->identity);
        assert_str_or_null_equal(a->identity_aux, b->identity_aux);
        assert_str_or_null_equal(a->name, b->name);
        assert_int_equal(a->state, b->state);
        assert_int_equal(a->first_seen, b->first_seen);
        assert_int_equal(a->last_seen, b->last_seen);
        assert_int_equal(a->last_verified, b->last_verified);
        /* In memory only: never loaded as verified by this run. */
        assert_int_equal(b->verified_pass, 0);
        assert_facts_equal(&a->facts, &b->facts);
}

struct loaded {
        struct device_record *recs[16];
        size_t n;
};

static int collect(struct device_record *rec, void *userdata) {
        struct loaded *l = userdata;

        if (l->n >= ELEMENTSOF(l->recs)) {
                device_record_free(rec);
                return -E2BIG;
        }
        l->recs[l->n++] = rec;
        return 0;
}

static void loaded_done(struct loaded *l) {
        for (size_t i = 0; i < l->n; i++)
                device_record_free(l->recs[i]);
        l->n = 0;
}

static json_object *events_of(struct journal *j, int64_t since, int64_t limit, int64_t device_id) {
        json_object *a = json_object_new_array();
        int n;

        assert_non_null(a);
        n = journal_list_events(j, since, limit, device_id, a);
        assert_true(n >= 0);
        assert_int_equal((size_t) n, json_object_array_length(a));
        return a;
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("member %s missing in %s", key, json_object_to_json_string(o));
        return v;
}

static int64_t event_seq(json_object *e) {
        return json_object_get_int64(member(e, "seq"));
}

/* Equal as JSON values, where a missing object equals SQL NULL / JSON null. */
static void assert_json_equal(json_object *want, json_object *got) {
        if (!json_object_equal(want, got))
                fail_msg("JSON differs: want %s, got %s", json_object_to_json_string(want),
                         json_object_to_json_string(got));
}

/* ------------------------------------------------------------------------------------- */

static void test_new_journal_is_current_wal_full(void **state) {
        _cleanup_free_ char *path = db_path("new"), *mode = NULL;
        struct journal *j;
        sqlite3 *other;

        capture_db = true;
        captured_db = NULL;
        j = open_journal(path);
        capture_db = false;
        assert_int_equal(journal_schema_version(j), JOURNAL_SCHEMA_VERSION);
        assert_string_equal(journal_path(j), path);
        assert_int_equal(journal_last_seq(j), 0);

        /* FULL is 2; the default NORMAL (1) would lose the last commits on power loss. */
        assert_non_null(captured_db);
        assert_int_equal(query_int(captured_db, "PRAGMA synchronous"), 2);

        other = open_other(path);
        mode = query_text(other, "PRAGMA journal_mode");
        assert_string_equal(mode, "wal");
        assert_int_equal(query_int(other, "PRAGMA user_version"), JOURNAL_SCHEMA_VERSION);
        sqlite3_close(other);
        journal_close(j);

        /* Still current after a reopen, which must not migrate again. */
        j = open_journal(path);
        assert_int_equal(journal_schema_version(j), JOURNAL_SCHEMA_VERSION);
        journal_close(j);
}

static void test_device_round_trip(void **state) {
        _cleanup_free_ char *path = db_path("devices");
        struct device_record *full, *empty, *nulls;
        struct loaded l = {};
        struct journal *j;

        j = open_journal(path);

        full = record_new("wwn:0x5000c500a1b2c3d4", DEVICE_PRESENT, 1700000000000001, 1700000000999999);
        facts_fill(&full->facts, 1);
        /* Booleans both ways, and zero distinct from null. */
        full->facts.read_only = 1;
        full->facts.removable = 0;
        full->facts.rotational = 1;
        full->facts.part_number = 0;
        full->identity_aux = strdup("1795820462.123456789");
        full->name = strdup("backup \"disk\" é");
        full->last_verified = 1700000000999999;
        full->verified_pass = 7; /* not stored */

        nulls = record_new("kname:sdz", DEVICE_GONE, 5, 6);
        /* Every field null; holders absent altogether stands for "no holders". */

        empty = record_new("loop:259:2:77", DEVICE_PRESENT, 10, 20);
        empty->facts.kname = strdup("loop7");
        empty->facts.holders = strv_new(NULL);
        empty->facts.size_bytes = 0;
        empty->facts.read_only = 0;
        empty->last_verified = 15;

        assert_int_equal(journal_insert_device(j, full), 0);
        assert_int_equal(journal_insert_device(j, nulls), 0);
        assert_int_equal(journal_insert_device(j, empty), 0);
        assert_true(full->id > 0);
        assert_true(nulls->id > full->id);
        assert_true(empty->id > nulls->id);

        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 3);
        full->verified_pass = 0;
        assert_record_equal(full, l.recs[0]);
        assert_record_equal(nulls, l.recs[1]);
        assert_record_equal(empty, l.recs[2]);
        assert_string_equal(l.recs[0]->name, "backup \"disk\" é");
        assert_string_equal(l.recs[0]->identity_aux, "1795820462.123456789");
        assert_int_equal(l.recs[0]->last_verified, 1700000000999999);
        /* Never verified, no name, no qualifier: NULL and 0, not "". */
        assert_null(l.recs[1]->identity_aux);
        assert_null(l.recs[1]->name);
        assert_int_equal(l.recs[1]->last_verified, 0);
        assert_null(l.recs[1]->facts.kname);
        assert_int_equal(l.recs[1]->facts.size_bytes, FIELD_NULL);
        assert_int_equal(l.recs[1]->facts.read_only, FIELD_NULL);
        assert_non_null(l.recs[1]->facts.holders);
        assert_null(l.recs[1]->facts.holders[0]);
        assert_int_equal(l.recs[0]->facts.removable, 0);
        assert_int_equal(l.recs[0]->facts.rotational, 1);
        assert_int_equal(l.recs[2]->facts.size_bytes, 0);
        loaded_done(&l);

        /* Update: values become null, nulls become values, the vector shrinks to empty. */
        free(full->identity);
        full->identity = strdup("serial:Disk:ABC");
        full->state = DEVICE_GONE;
        full->last_seen = 1700000001000000;
        free(full->facts.fs_label);
        full->facts.fs_label = NULL;
        full->facts.size_bytes = FIELD_NULL;
        full->facts.read_only = 0;
        strv_free(full->facts.holders);
        full->facts.holders = strv_new(NULL);
        nulls->facts.model = strdup("Samsung SSD 870");
        nulls->facts.diskseq = 42;
        nulls->facts.rotational = 0;
        nulls->facts.holders = strv_new("dm-3", NULL);
        nulls->state = DEVICE_PRESENT;
        /* Name and qualifier: removed on one, given to the other. */
        free(full->name);
        full->name = NULL;
        free(full->identity_aux);
        full->identity_aux = NULL;
        full->last_verified = 1700000001000000;
        nulls->name = strdup("scratch");
        nulls->identity_aux = strdup("100.0");
        nulls->last_verified = 7;
        assert_int_equal(journal_update_device(j, full), 0);
        assert_int_equal(journal_update_device(j, nulls), 0);

        /* Touch moves last_seen and last_verified only. */
        assert_int_equal(journal_touch_device(j, empty->id, 99), 0);
        empty->last_seen = 99;
        empty->last_verified = 99;

        /* Through a reopen: what counts is what is on disk. */
        journal_close(j);
        j = open_journal(path);
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 3);
        assert_record_equal(full, l.recs[0]);
        assert_record_equal(nulls, l.recs[1]);
        assert_record_equal(empty, l.recs[2]);
        assert_int_equal(l.recs[2]->first_seen, 10);
        assert_int_equal(l.recs[2]->last_seen, 99);
        assert_int_equal(l.recs[2]->last_verified, 99);
        assert_null(l.recs[0]->name);
        assert_string_equal(l.recs[1]->name, "scratch");
        loaded_done(&l);

        device_record_free(full);
        device_record_free(nulls);
        device_record_free(empty);
        journal_close(j);
}

static void test_events(void **state) {
        _cleanup_free_ char *path = db_path("events");
        struct device_record *a = record_new("loop:1:2:3", DEVICE_PRESENT, 1, 1);
        struct device_record *b = record_new("loop:1:2:4", DEVICE_PRESENT, 1, 1);
        json_object *started, *after_a, *before_b, *after_b, *list, *e;
        int64_t seq = -1, t0 = 1763629200123456;
        char ts[RFC3339_MAX];
        struct journal *j;

        j = open_journal(path);
        assert_int_equal(journal_insert_device(j, a), 0);
        assert_int_equal(journal_insert_device(j, b), 0);

        started = json_tokener_parse("{\"version\":\"0.1.0\",\"pid\":812}");
        after_a = json_tokener_parse("{\"identity\":\"loop:1:2:3\",\"state\":\"present\",\"size_bytes\":67108864,"
                                     "\"read_only\":false,\"model\":null,\"holders\":[\"dm-0\"],"
                                     "\"loop_backing_file\":\"/var/tmp/a b/\\\"q\\\".img\",\"fs_label\":\"daten-ü\"}");
        before_b = json_tokener_parse("{\"fs_label\":null,\"holders\":[]}");
        after_b = json_tokener_parse("{\"fs_label\":\"x\",\"holders\":[\"md0\",\"md1\"]}");
        assert_non_null(started);
        assert_non_null(after_a);
        assert_non_null(before_b);
        assert_non_null(after_b);

        assert_int_equal(journal_append_event(j, t0, 0, "daemon_started", NULL, started, &seq), 0);
        assert_int_equal(seq, 1);
        assert_int_equal(journal_append_event(j, t0 + 1, a->id, "appeared", NULL, after_a, &seq), 0);
        assert_int_equal(seq, 2);
        assert_int_equal(journal_append_event(j, t0 + 2, b->id, "changed", before_b, after_b, &seq), 0);
        assert_int_equal(seq, 3);
        assert_int_equal(journal_append_event(j, t0 + 3, a->id, "disappeared", before_b, NULL, NULL), 0);
        assert_int_equal(journal_append_event(j, t0 + 4, 0, "daemon_stopped", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 5);
        assert_int_equal(journal_last_seq(j), 5);

        list = events_of(j, 0, 100, 0);
        assert_int_equal(json_object_array_length(list), 5);
        for (size_t i = 0; i < 5; i++)
                assert_int_equal(event_seq(json_object_array_get_idx(list, i)), (int64_t) i + 1);

        e = json_object_array_get_idx(list, 0);
        assert_string_equal(json_object_get_string(member(e, "kind")), "daemon_started");
        assert_null(member(e, "device_id"));
        assert_null(member(e, "before"));
        assert_json_equal(started, member(e, "after"));
        assert_string_equal(json_object_get_string(member(e, "time")), format_rfc3339(t0, ts));

        e = json_object_array_get_idx(list, 1);
        assert_string_equal(json_object_get_string(member(e, "kind")), "appeared");
        assert_int_equal(json_object_get_int64(member(e, "device_id")), a->id);
        assert_null(member(e, "before"));
        assert_json_equal(after_a, member(e, "after"));
        assert_string_equal(json_object_get_string(member(e, "time")), format_rfc3339(t0 + 1, ts));

        e = json_object_array_get_idx(list, 2);
        assert_int_equal(json_object_get_int64(member(e, "device_id")), b->id);
        assert_json_equal(before_b, member(e, "before"));
        assert_json_equal(after_b, member(e, "after"));

        e = json_object_array_get_idx(list, 3);
        assert_json_equal(before_b, member(e, "before"));
        assert_null(member(e, "after"));
        json_object_put(list);

        /* since is exclusive, limit caps the page. */
        list = events_of(j, 2, 2, 0);
        assert_int_equal(json_object_array_length(list), 2);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 0)), 3);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 1)), 4);
        json_object_put(list);
        list = events_of(j, 5, 100, 0);
        assert_int_equal(json_object_array_length(list), 0);
        json_object_put(list);

        /* One device's history only, with since applied within it. */
        list = events_of(j, 0, 100, a->id);
        assert_int_equal(json_object_array_length(list), 2);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 0)), 2);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 1)), 4);
        json_object_put(list);
        list = events_of(j, 2, 100, a->id);
        assert_int_equal(json_object_array_length(list), 1);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 0)), 4);
        json_object_put(list);
        list = events_of(j, 0, 100, b->id);
        assert_int_equal(json_object_array_length(list), 1);
        assert_int_equal(event_seq(json_object_array_get_idx(list, 0)), 3);
        json_object_put(list);

        json_object_put(started);
        json_object_put(after_a);
        json_object_put(before_b);
        json_object_put(after_b);
        device_record_free(a);
        device_record_free(b);
        journal_close(j);
}

static void test_seq_survives_reopen(void **state) {
        _cleanup_free_ char *path = db_path("reopen");
        struct journal *j;
        json_object *list;
        int64_t seq;

        j = open_journal(path);
        for (int i = 0; i < 3; i++)
                assert_int_equal(journal_append_event(j, i, 0, "daemon_started", NULL, NULL, NULL), 0);
        assert_int_equal(journal_last_seq(j), 3);
        journal_close(j);

        j = open_journal(path);
        assert_int_equal(journal_last_seq(j), 3);
        assert_int_equal(journal_append_event(j, 10, 0, "daemon_stopped", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 4);
        journal_close(j);

        j = open_journal(path);
        assert_int_equal(journal_last_seq(j), 4);
        list = events_of(j, 0, 100, 0);
        assert_int_equal(json_object_array_length(list), 4);
        for (size_t i = 0; i < 4; i++)
                assert_int_equal(event_seq(json_object_array_get_idx(list, i)), (int64_t) i + 1);
        json_object_put(list);
        journal_close(j);
}

static void test_events_append_only(void **state) {
        _cleanup_free_ char *path = db_path("appendonly"), *kind = NULL;
        struct journal *j;
        sqlite3 *other;
        char *err = NULL;
        int rc;

        j = open_journal(path);
        assert_int_equal(journal_append_event(j, 1, 0, "daemon_started", NULL, NULL, NULL), 0);

        other = open_other(path);
        rc = sqlite3_exec(other, "UPDATE events SET kind = 'forged' WHERE seq = 1", NULL, NULL, &err);
        assert_int_equal(rc & 0xff, SQLITE_CONSTRAINT);
        assert_non_null(err);
        assert_non_null(strstr(err, "append-only"));
        sqlite3_free(err);
        err = NULL;
        rc = sqlite3_exec(other, "UPDATE events SET seq = 7", NULL, NULL, &err);
        assert_int_not_equal(rc, SQLITE_OK);
        sqlite3_free(err);
        kind = query_text(other, "SELECT kind FROM events WHERE seq = 1");
        assert_string_equal(kind, "daemon_started");
        assert_int_equal(query_int(other, "SELECT COUNT(*) FROM events"), 1);
        sqlite3_close(other);
        journal_close(j);
}

static void test_rollback_keeps_seq(void **state) {
        _cleanup_free_ char *path = db_path("rollback");
        struct journal *j;
        json_object *list;
        int64_t seq;

        j = open_journal(path);
        assert_int_equal(journal_append_event(j, 1, 0, "daemon_started", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 1);

        assert_int_equal(journal_begin(j), 0);
        assert_int_equal(journal_append_event(j, 2, 0, "rolled_back_1", NULL, NULL, &seq), 0);
        assert_int_equal(journal_append_event(j, 3, 0, "rolled_back_2", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 3);
        journal_rollback(j);
        assert_int_equal(journal_last_seq(j), 1);

        assert_int_equal(journal_append_event(j, 4, 0, "daemon_stopped", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 2);
        assert_int_equal(journal_last_seq(j), 2);

        /* A committed transaction counts on. */
        assert_int_equal(journal_begin(j), 0);
        assert_int_equal(journal_append_event(j, 5, 0, "daemon_started", NULL, NULL, &seq), 0);
        assert_int_equal(journal_commit(j), 0);
        assert_int_equal(seq, 3);

        list = events_of(j, 0, 100, 0);
        assert_int_equal(json_object_array_length(list), 3);
        assert_string_equal(json_object_get_string(member(json_object_array_get_idx(list, 1), "kind")),
                            "daemon_stopped");
        for (size_t i = 0; i < 3; i++)
                assert_int_equal(event_seq(json_object_array_get_idx(list, i)), (int64_t) i + 1);
        json_object_put(list);
        journal_close(j);

        /* The sequence on disk agrees after a reopen too. */
        j = open_journal(path);
        assert_int_equal(journal_append_event(j, 6, 0, "daemon_stopped", NULL, NULL, &seq), 0);
        assert_int_equal(seq, 4);
        journal_close(j);
}

static void test_meta(void **state) {
        _cleanup_free_ char *path = db_path("meta");
        struct journal *j;
        char *v = (char *) "sentinel";

        j = open_journal(path);
        assert_int_equal(journal_meta_get(j, "last_full_scan", &v), 0);
        assert_null(v);
        assert_int_equal(journal_meta_set(j, "last_full_scan", "2025-11-20T09:00:00.000000Z"), 0);
        assert_int_equal(journal_meta_set(j, "other", ""), 0);
        assert_int_equal(journal_meta_get(j, "last_full_scan", &v), 0);
        assert_string_equal(v, "2025-11-20T09:00:00.000000Z");
        free(v);
        assert_int_equal(journal_meta_set(j, "last_full_scan", "2025-11-21T10:00:00.000000Z"), 0);
        journal_close(j);

        j = open_journal(path);
        assert_int_equal(journal_meta_get(j, "last_full_scan", &v), 0);
        assert_string_equal(v, "2025-11-21T10:00:00.000000Z");
        free(v);
        assert_int_equal(journal_meta_get(j, "other", &v), 0);
        assert_string_equal(v, "");
        free(v);
        journal_close(j);
}

static void test_last_daemon_event(void **state) {
        _cleanup_free_ char *path = db_path("daemonevent");
        struct device_record *rec = record_new("kname:loop0", DEVICE_PRESENT, 1, 1);
        struct journal *j;
        char *kind = (char *) "sentinel";

        j = open_journal(path);
        assert_int_equal(journal_insert_device(j, rec), 0);
        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_null(kind);

        assert_int_equal(journal_append_event(j, 1, rec->id, "appeared", NULL, NULL, NULL), 0);
        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_null(kind);

        assert_int_equal(journal_append_event(j, 2, 0, "daemon_started", NULL, NULL, NULL), 0);
        assert_int_equal(journal_append_event(j, 3, rec->id, "changed", NULL, NULL, NULL), 0);
        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_string_equal(kind, "daemon_started");
        free(kind);

        assert_int_equal(journal_append_event(j, 4, 0, "daemon_stopped", NULL, NULL, NULL), 0);
        assert_int_equal(journal_append_event(j, 5, rec->id, "disappeared", NULL, NULL, NULL), 0);
        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_string_equal(kind, "daemon_stopped");
        free(kind);

        device_record_free(rec);
        journal_close(j);
}

/* Opening must fail and leave the file exactly as it was, without sidecar files. Returns
 * what went wrong, or NULL; the caller fails after its own cleanup, so that a failure
 * leaks nothing under ASan. */
static const char *refusal_problem(const char *path, int expect_r, const char *expect_msg) {
        static char problem[512];
        char *before, *after, *err = NULL, *wal = sidecar(path, "-wal"), *shm = sidecar(path, "-shm"),
                              *jrnl = sidecar(path, "-journal");
        struct journal *j = NULL;
        size_t before_len, after_len;
        struct stat st1, st2;
        int r;

        before = read_file(path, &before_len);
        assert_int_equal(stat(path, &st1), 0);
        assert_false(file_exists(wal));

        problem[0] = 0;
        r = journal_open(path, &j, &err);
        after = read_file(path, &after_len);
        assert_int_equal(stat(path, &st2), 0);

        if (expect_r != 0 ? r != expect_r : r >= 0)
                snprintf(problem, sizeof(problem), "journal_open returned %d (%s), expected %s", r,
                         strerror(abs(r)), expect_r ? strerror(-expect_r) : "an error");
        else if (j)
                snprintf(problem, sizeof(problem), "journal_open failed but returned a journal");
        else if (isempty(err))
                snprintf(problem, sizeof(problem), "no error message");
        else if (expect_msg && !strstr(err, expect_msg))
                snprintf(problem, sizeof(problem), "message \"%s\" lacks \"%s\"", err, expect_msg);
        else if (before_len != after_len || memcmp(before, after, before_len) != 0)
                snprintf(problem, sizeof(problem), "%s changed", path);
        else if (st1.st_ino != st2.st_ino)
                snprintf(problem, sizeof(problem), "%s was replaced", path);
        else if (file_exists(wal))
                snprintf(problem, sizeof(problem), "%s was created", wal);
        else if (file_exists(shm))
                snprintf(problem, sizeof(problem), "%s was created", shm);
        else if (file_exists(jrnl))
                snprintf(problem, sizeof(problem), "%s was created", jrnl);

        journal_close(j);
        free(err);
        free(before);
        free(after);
        free(wal);
        free(shm);
        free(jrnl);
        return problem[0] ? problem : NULL;
}

static void make_newer(const char *path, bool wal) {
        _cleanup_free_ char *sql = NULL;
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
        assert_true(asprintf(&sql,
                             "PRAGMA journal_mode = %s;"
                             "CREATE TABLE devices (id INTEGER PRIMARY KEY, identity TEXT, future TEXT);"
                             "CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT);"
                             "INSERT INTO events (kind) VALUES ('from the future');"
                             "PRAGMA user_version = %d;",
                             wal ? "WAL" : "DELETE", JOURNAL_SCHEMA_VERSION + 1) > 0);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_refuse_newer_schema(void **state) {
        char *path = db_path("newer");
        const char *problem;

        make_newer(path, false);
        problem = refusal_problem(path, -EPROTONOSUPPORT, "newer");
        free(path);
        if (problem)
                fail_msg("%s", problem);
}

/* A newer daemon ran it in WAL mode, as this one would: peeking at the version must not
 * start a WAL of our own. */
static void test_refuse_newer_schema_wal(void **state) {
        char *path = db_path("newer-wal");
        const char *problem;

        make_newer(path, true);
        problem = refusal_problem(path, -EPROTONOSUPPORT, "newer");
        free(path);
        if (problem)
                fail_msg("%s", problem);
}

static void test_refuse_garbage(void **state) {
        char *path = db_path("garbage");
        const char *problem;
        uint64_t x = 0x9e3779b97f4a7c15ULL;
        unsigned char buf[8192];
        FILE *f;

        /* Random but reproducible: xorshift64. */
        for (size_t i = 0; i < sizeof(buf); i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (unsigned char) x;
        }
        f = fopen(path, "we");
        assert_non_null(f);
        assert_int_equal(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
        assert_int_equal(fclose(f), 0);

        problem = refusal_problem(path, 0, path);
        free(path);
        if (problem)
                fail_msg("%s", problem);
}

/* ------------------------------------------------------------------------------------- */
/* Migrations: a saved database of an older schema, as SQL text in tests/data. */

/* Builds the database of tests/data/<fixture> at path with the plain sqlite3 API. */
static void db_from_sql_fixture(const char *fixture, const char *path) {
        _cleanup_free_ char *file = NULL, *sql = NULL;
        sqlite3 *db = NULL;
        char *err = NULL;

        assert_true(asprintf(&file, "%s/tests/data/%s", top_srcdir(), fixture) > 0);
        sql = read_file(file, NULL);
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
                fail_msg("%s: %s", file, err);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The columns of a table as a select list, in their order. */
static char *table_columns(sqlite3 *db, const char *table) {
        _cleanup_free_ char *sql = NULL;
        sqlite3_stmt *s;
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        bool first = true;

        assert_non_null(m);
        assert_true(asprintf(&sql, "PRAGMA table_info(%s)", table) > 0);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
                fprintf(m, "%s%s", first ? "" : ", ", (const char *) sqlite3_column_text(s, 1));
                first = false;
        }
        sqlite3_finalize(s);
        fclose(m);
        assert_false(first);
        return out;
}

/* Every row of a table (the columns listed, or all), every column quoted, one line per
 * row: equal text means equal rows (same ids, same values, same types). */
static char *table_dump(sqlite3 *db, const char *table, const char *columns, const char *key) {
        _cleanup_free_ char *sql = NULL;
        sqlite3_stmt *s;
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        int rc;

        assert_non_null(m);
        assert_true(asprintf(&sql, "SELECT %s FROM %s ORDER BY %s", columns ?: "*", table, key) > 0);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                for (int c = 0; c < sqlite3_column_count(s); c++) {
                        const char *name = sqlite3_column_name(s, c);
                        switch (sqlite3_column_type(s, c)) {
                        case SQLITE_NULL:
                                fprintf(m, "%s=NULL|", name);
                                break;
                        case SQLITE_INTEGER:
                                fprintf(m, "%s=%lld|", name, (long long) sqlite3_column_int64(s, c));
                                break;
                        default:
                                fprintf(m, "%s='%s'|", name, (const char *) sqlite3_column_text(s, c));
                        }
                }
                fputc('\n', m);
        }
        assert_int_equal(rc, SQLITE_DONE);
        sqlite3_finalize(s);
        fclose(m);
        return out;
}

static char *schema_dump(sqlite3 *db) {
        sqlite3_stmt *s;
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);

        assert_non_null(m);
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT type, name, tbl_name, sql FROM sqlite_master "
                                            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
                                            -1, &s, NULL),
                         SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW)
                fprintf(m, "%s %s %s: %s\n", sqlite3_column_text(s, 0), sqlite3_column_text(s, 1),
                        sqlite3_column_text(s, 2), (const char *) sqlite3_column_text(s, 3) ?: "");
        sqlite3_finalize(s);
        fclose(m);
        return out;
}

struct fixture_expect {
        int64_t n_devices;
        int64_t n_events;
        int64_t last_seq;
        bool has_meta; /* the fixture's schema has the meta table already */
};

/* Opens the fixture of schema from_version with journal_open() and checks that the
 * result is a current journal holding exactly the old rows, that the history goes on
 * after the old head, and that its schema is that of a journal created new. */
static void check_migration_from_fixture(const char *fixture, int from_version, const struct fixture_expect *x) {
        _cleanup_free_ char *name = NULL, *path = NULL, *fresh_path = NULL, *devices_before = NULL,
                            *events_before = NULL, *devices_after = NULL, *events_after = NULL,
                            *schema_fresh = NULL, *schema_migrated = NULL, *device_columns = NULL,
                            *meta_before = NULL, *meta_after = NULL;
        struct device_record *rec;
        struct loaded l = {};
        json_object *list;
        struct journal *j;
        sqlite3 *db;
        int64_t seq;

        assert_true(asprintf(&name, "migrate-%s", fixture) > 0);
        path = db_path(name);
        db_from_sql_fixture(fixture, path);

        db = open_other(path);
        assert_int_equal(query_int(db, "PRAGMA user_version"), from_version);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM devices"), x->n_devices);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM events"), x->n_events);
        /* The columns the old schema has: a migration may add columns, never change these. */
        device_columns = table_columns(db, "devices");
        devices_before = table_dump(db, "devices", device_columns, "id");
        events_before = table_dump(db, "events", NULL, "seq");
        if (x->has_meta)
                meta_before = table_dump(db, "meta", NULL, "key");
        sqlite3_close(db);

        j = open_journal(path);
        assert_int_equal(journal_schema_version(j), JOURNAL_SCHEMA_VERSION);
        assert_int_equal(journal_last_seq(j), x->last_seq);

        /* The API sees the old records and history. */
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal((int64_t) l.n, x->n_devices);
        loaded_done(&l);
        list = events_of(j, 0, 100000, 0);
        assert_int_equal((int64_t) json_object_array_length(list), x->n_events);
        json_object_put(list);

        /* History continues after the old head, never reusing a number. */
        assert_int_equal(journal_append_event(j, 1800000000000000, 0, "daemon_started", NULL, NULL, &seq), 0);
        assert_int_equal(seq, x->last_seq + 1);
        rec = record_new("kname:loop9", DEVICE_PRESENT, 1, 1);
        assert_int_equal(journal_insert_device(j, rec), 0);
        assert_true(rec->id > x->n_devices);
        device_record_free(rec);
        journal_close(j);

        db = open_other(path);
        assert_int_equal(query_int(db, "PRAGMA user_version"), JOURNAL_SCHEMA_VERSION);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"), 1);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_device'"), 1);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'events_append_only'"), 1);
        /* Version 3: names, qualifiers and freshness on devices; expectations and drift. */
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM pragma_table_info('devices') "
                                       "WHERE name IN ('identity_aux', 'name', 'last_verified')"),
                         3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'expectations'"), 1);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'drift'"), 1);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'devices_name'"), 1);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM expectations"), 0);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM drift"), 0);
        /* An old record was verified exactly when it was last seen; none has a name or a
         * qualifier yet. */
        {
                _cleanup_free_ char *q = NULL;
                assert_true(asprintf(&q,
                                     "SELECT COUNT(*) FROM devices WHERE id <= %lld AND last_verified IS last_seen "
                                     "AND name IS NULL AND identity_aux IS NULL",
                                     (long long) x->n_devices) > 0);
                assert_int_equal(query_int(db, q), x->n_devices);
        }
        /* Old rows unchanged: the same rows before the ones this test added. */
        devices_after = table_dump(db, "devices", device_columns, "id");
        events_after = table_dump(db, "events", NULL, "seq");
        if (x->has_meta) {
                meta_after = table_dump(db, "meta", NULL, "key");
                assert_string_equal(meta_before, meta_after);
        }
        assert_true(strlen(devices_after) > strlen(devices_before));
        assert_memory_equal(devices_before, devices_after, strlen(devices_before));
        assert_true(strlen(events_after) > strlen(events_before));
        assert_memory_equal(events_before, events_after, strlen(events_before));
        schema_migrated = schema_dump(db);
        sqlite3_close(db);

        /* A migrated journal is indistinguishable in schema from a new one. */
        assert_true(asprintf(&fresh_path, "%s/fresh-for-%s.db", tmpdir, fixture) > 0);
        j = open_journal(fresh_path);
        journal_close(j);
        db = open_other(fresh_path);
        schema_fresh = schema_dump(db);
        sqlite3_close(db);
        assert_string_equal(schema_migrated, schema_fresh);
}

static void test_migrate_from_v1(void **state) {
        static const struct fixture_expect v1 = { .n_devices = 2, .n_events = 7, .last_seq = 7, .has_meta = false };
        _cleanup_free_ char *path = db_path("migrate-v1-content");
        struct loaded l = {};
        json_object *list, *want;
        struct journal *j;
        char *kind = NULL;

        check_migration_from_fixture("journal-v1.sql", 1, &v1);

        /* What the v1 fixture says, read through the current API. */
        db_from_sql_fixture("journal-v1.sql", path);
        j = open_journal(path);
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 2);
        assert_int_equal(l.recs[0]->id, 1);
        assert_string_equal(l.recs[0]->identity, "loop:259:2:1835011");
        assert_int_equal(l.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(l.recs[0]->facts.kname, "loop0");
        assert_string_equal(l.recs[0]->facts.fs_label, "build");
        assert_int_equal(l.recs[0]->facts.size_bytes, 67108864);
        assert_int_equal(l.recs[0]->facts.read_only, 0);
        assert_null(l.recs[0]->facts.model);
        assert_null(l.recs[0]->facts.holders[0]);
        assert_int_equal(l.recs[1]->id, 2);
        assert_int_equal(l.recs[1]->state, DEVICE_GONE);
        assert_string_equal(l.recs[1]->facts.loop_backing_file, "/var/tmp/blkledger/vault.img");
        assert_int_equal(l.recs[1]->first_seen, 1763629200456789);
        assert_int_equal(l.recs[1]->last_seen, 1763713800250000);
        /* Verified when last seen; no name, no qualifier. */
        assert_int_equal(l.recs[0]->last_verified, 1763719990000000);
        assert_int_equal(l.recs[1]->last_verified, 1763713800250000);
        assert_null(l.recs[0]->name);
        assert_null(l.recs[1]->identity_aux);
        assert_int_equal(l.recs[0]->verified_pass, 0);
        loaded_done(&l);

        list = events_of(j, 0, 100, 0);
        assert_int_equal(json_object_array_length(list), 7);
        for (size_t i = 0; i < 7; i++)
                assert_int_equal(event_seq(json_object_array_get_idx(list, i)), (int64_t) i + 1);
        want = json_tokener_parse("{\"holders\":[\"dm-0\"]}");
        assert_json_equal(want, member(json_object_array_get_idx(list, 4), "before"));
        json_object_put(want);
        want = json_tokener_parse("{\"holders\":[]}");
        assert_json_equal(want, member(json_object_array_get_idx(list, 4), "after"));
        json_object_put(want);
        want = json_tokener_parse("{\"version\":\"0.1.0\",\"pid\":812}");
        assert_json_equal(want, member(json_object_array_get_idx(list, 0), "after"));
        json_object_put(want);
        assert_int_equal(json_object_object_length(member(json_object_array_get_idx(list, 1), "after")),
                         2 + (int) device_fields_count);
        json_object_put(list);
        list = events_of(j, 0, 100, 2);
        assert_int_equal(json_object_array_length(list), 3);
        assert_string_equal(json_object_get_string(member(json_object_array_get_idx(list, 2), "kind")),
                            "disappeared");
        json_object_put(list);

        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_string_equal(kind, "daemon_stopped");
        free(kind);
        journal_close(j);
}

struct exps {
        struct expectation *v[8];
        size_t n;
};

static int collect_expectation(struct expectation *e, void *userdata) {
        struct exps *x = userdata;

        if (x->n >= ELEMENTSOF(x->v)) {
                expectation_free(e);
                return -E2BIG;
        }
        x->v[x->n++] = e;
        return 0;
}

static void exps_done(struct exps *x) {
        for (size_t i = 0; i < x->n; i++)
                expectation_free(x->v[i]);
        x->n = 0;
}

struct drifts {
        struct drift_item *v[8];
        size_t n;
};

static int collect_drift(struct drift_item *d, void *userdata) {
        struct drifts *x = userdata;

        if (x->n >= ELEMENTSOF(x->v)) {
                drift_item_free(d);
                return -E2BIG;
        }
        x->v[x->n++] = d;
        return 0;
}

static void drifts_done(struct drifts *x) {
        for (size_t i = 0; i < x->n; i++)
                drift_item_free(x->v[i]);
        x->n = 0;
}

static struct expectation *expectation_new(const char *name, const char *kind, const char *value, const char *fs_type,
                                           const char *fs_label, int64_t min_size, int64_t created) {
        struct expectation *e = calloc(1, sizeof(*e));

        assert_non_null(e);
        e->name = strdup(name);
        e->match_kind = strdup(kind);
        e->match_value = strdup(value);
        e->fs_type = fs_type ? strdup(fs_type) : NULL;
        e->fs_label = fs_label ? strdup(fs_label) : NULL;
        e->min_size = min_size;
        e->created = created;
        assert_non_null(e->name);
        assert_non_null(e->match_kind);
        assert_non_null(e->match_value);
        return e;
}

/* Expectations by name: put, replace, load in name order, delete. */
static int collect_volume(struct volume *v, void *userdata) {
        struct volume **slot = userdata;
        volume_free(*slot);
        *slot = v;
        return 0;
}

static int count_intent(struct intent *it, void *userdata) {
        (*(int *) userdata)++;
        intent_free(it);
        return 0;
}

/* Schema 5: a volume row and the intents on it survive a reopen field by field; the
 * idempotency key is unique; "unfinished" means pending or running. */
/* transfer.c keeps its own copy of the volume states (an import plan checks them before
 * anything is written): it must be the schema's CHECK list, no more and no less. */
static void test_volume_states_match_schema(void **state) {
        _cleanup_free_ char *path = db_path("states");
        struct journal *j = open_journal(path);
        sqlite3_stmt *s = NULL;
        const char *sql, *p, *end;
        size_t n_schema = 0, n_list = 0;

        assert_int_equal(sqlite3_prepare_v2(journal_db(j), "SELECT sql FROM sqlite_schema WHERE name = 'volumes'", -1,
                                            &s, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        sql = (const char *) sqlite3_column_text(s, 0);
        p = strstr(sql, "state IN (");
        assert_non_null(p);
        p += strlen("state IN (");
        end = strchr(p, ')');
        assert_non_null(end);
        while (p < end) {
                const char *q = memchr(p + 1, '\'', (size_t) (end - p - 1));
                bool found = false;

                assert_int_equal(*p, '\'');
                assert_non_null(q);
                for (size_t i = 0; transfer_volume_states[i]; i++)
                        found |= strlen(transfer_volume_states[i]) == (size_t) (q - p - 1) &&
                                 strncmp(transfer_volume_states[i], p + 1, (size_t) (q - p - 1)) == 0;
                if (!found)
                        fail_msg("schema state %.*s is not in transfer_volume_states", (int) (q - p - 1), p + 1);
                n_schema++;
                p = q + 1;
                while (p < end && (*p == ',' || *p == ' '))
                        p++;
        }
        while (transfer_volume_states[n_list])
                n_list++;
        assert_int_equal(n_schema, n_list);
        sqlite3_finalize(s);
        journal_close(j);
}

static void test_volumes_and_intents(void **state) {
        _cleanup_free_ char *path = db_path("volumes");
        struct volume v = { .name = "data", .state = "attached", .size_bytes = 64 << 20,
                            .backing_file = "/var/lib/blkledger/volumes/data.img", .fs_type = "ext4",
                            .fs_label = "d\"ata", .created = 10, .updated = 20 };
        struct intent a = { .op = "volume.create", .target = "data", .key = "k-1", .state = INTENT_PENDING,
                            .created = 10, .updated = 10 },
                      b = { .op = "volume.resize", .target = "data", .state = INTENT_RUNNING, .step = 1,
                            .attempts = 2, .last_error = "resize2fs: no", .created = 30, .updated = 31,
                            .next_attempt = 40 };
        struct intent *got = NULL;
        struct volume *loaded = NULL;
        struct journal *j;
        int n = 0;

        a.params = json_tokener_parse("{\"size_bytes\":67108864}");
        b.params = json_object_new_object();
        b.result = json_tokener_parse("{\"fs_grown\":false}");
        j = open_journal(path);
        assert_int_equal(vstore_put_volume(j, &v), 0);
        assert_int_equal(vstore_insert_intent(j, &a), 0);
        assert_int_equal(vstore_insert_intent(j, &b), 0);
        assert_true(a.id > 0 && b.id > a.id);
        /* The key belongs to one intent. */
        {
                struct intent dup = a;
                dup.id = 0;
                assert_int_equal(vstore_insert_intent(j, &dup), -EEXIST);
        }
        journal_close(j);

        j = open_journal(path);
        assert_int_equal(vstore_load_volumes(j, collect_volume, &loaded), 0);
        assert_non_null(loaded);
        assert_string_equal(loaded->name, "data");
        assert_string_equal(loaded->state, "attached");
        assert_int_equal(loaded->size_bytes, 64 << 20);
        assert_string_equal(loaded->fs_label, "d\"ata");
        assert_int_equal(loaded->updated, 20);
        assert_int_equal(vstore_load_intents(j, true, 0, count_intent, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(vstore_last_intent(j, "data", NULL, &got), 0);
        assert_int_equal(got->id, b.id);
        assert_int_equal(got->state, INTENT_RUNNING);
        assert_int_equal(got->step, 1);
        assert_int_equal(got->attempts, 2);
        assert_string_equal(got->last_error, "resize2fs: no");
        assert_int_equal(got->next_attempt, 40);
        assert_false(json_object_get_boolean(json_object_object_get(got->result, "fs_grown")));
        intent_free(got);
        assert_int_equal(vstore_intent_by_key(j, "k-1", &got), 0);
        assert_int_equal(got->id, a.id);
        assert_int_equal(json_object_get_int64(json_object_object_get(got->params, "size_bytes")), 64 << 20);
        /* Ended: no longer unfinished. */
        got->state = INTENT_SUCCEEDED;
        assert_int_equal(vstore_update_intent(j, got), 0);
        intent_free(got);
        n = 0;
        assert_int_equal(vstore_load_intents(j, true, 0, count_intent, &n), 0);
        assert_int_equal(n, 1);
        n = 0;
        assert_int_equal(vstore_load_intents(j, false, 1, count_intent, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(vstore_delete_volume(j, "data"), 0);
        volume_free(loaded);
        loaded = NULL;
        assert_int_equal(vstore_load_volumes(j, collect_volume, &loaded), 0);
        assert_null(loaded);
        journal_close(j);
        json_object_put(a.params);
        json_object_put(b.params);
        json_object_put(b.result);
}

static void test_expectations_round_trip(void **state) {
        _cleanup_free_ char *path = db_path("expectations");
        struct expectation *a, *b, *a2;
        struct exps x = {};
        struct journal *j;
        sqlite3 *other;

        j = open_journal(path);
        assert_int_equal(journal_load_expectations(j, collect_expectation, &x), 0);
        assert_int_equal(x.n, 0);

        b = expectation_new("vault", "loop_file", "/var/tmp/a b/\"v\".img", NULL, NULL, FIELD_NULL, 20);
        a = expectation_new("backup", "serial", "WD-WX11A12B3456", "ext4", "bäckup", 1LL << 40, 10);
        assert_int_equal(journal_put_expectation(j, b), 0);
        assert_int_equal(journal_put_expectation(j, a), 0);

        journal_close(j);
        j = open_journal(path);
        assert_int_equal(journal_load_expectations(j, collect_expectation, &x), 0);
        assert_int_equal(x.n, 2);
        /* By name. */
        assert_string_equal(x.v[0]->name, "backup");
        assert_string_equal(x.v[0]->match_kind, "serial");
        assert_string_equal(x.v[0]->match_value, "WD-WX11A12B3456");
        assert_string_equal(x.v[0]->fs_type, "ext4");
        assert_string_equal(x.v[0]->fs_label, "bäckup");
        assert_int_equal(x.v[0]->min_size, 1LL << 40);
        assert_int_equal(x.v[0]->created, 10);
        assert_string_equal(x.v[1]->name, "vault");
        assert_string_equal(x.v[1]->match_value, "/var/tmp/a b/\"v\".img");
        /* No wish is NULL (FIELD_NULL), not "" or 0. */
        assert_null(x.v[1]->fs_type);
        assert_null(x.v[1]->fs_label);
        assert_int_equal(x.v[1]->min_size, FIELD_NULL);
        exps_done(&x);

        /* The same name replaces: one row, the new values. */
        a2 = expectation_new("backup", "wwn", "0x5000c500a1b2c3d4", NULL, "", 0, 30);
        assert_int_equal(journal_put_expectation(j, a2), 0);
        assert_int_equal(journal_load_expectations(j, collect_expectation, &x), 0);
        assert_int_equal(x.n, 2);
        assert_string_equal(x.v[0]->match_kind, "wwn");
        assert_null(x.v[0]->fs_type);
        assert_string_equal(x.v[0]->fs_label, "");
        assert_int_equal(x.v[0]->min_size, 0);
        assert_int_equal(x.v[0]->created, 30);
        exps_done(&x);

        /* The schema refuses a kind the daemon does not know. */
        free(b->match_kind);
        b->match_kind = strdup("label");
        assert_true(journal_put_expectation(j, b) < 0);

        assert_int_equal(journal_delete_expectation(j, "vault"), 0);
        assert_int_equal(journal_delete_expectation(j, "vault"), -ENOENT);
        assert_int_equal(journal_delete_expectation(j, "nothing"), -ENOENT);
        assert_int_equal(journal_load_expectations(j, collect_expectation, &x), 0);
        assert_int_equal(x.n, 1);
        assert_string_equal(x.v[0]->name, "backup");
        exps_done(&x);
        journal_close(j);

        other = open_other(path);
        assert_int_equal(query_int(other, "SELECT COUNT(*) FROM expectations"), 1);
        sqlite3_close(other);
        expectation_free(a);
        expectation_free(a2);
        expectation_free(b);
}

/* Drift items: inserted open, their detail updated, closed (and then no longer loaded,
 * but kept as history). */
static void test_drift_round_trip(void **state) {
        _cleanup_free_ char *path = db_path("drift"), *detail = NULL;
        struct device_record *rec = record_new("serial:M:S", DEVICE_PRESENT, 1, 1);
        struct drift_item a = { .kind = (char *) "missing", .name = (char *) "backup", .since = 100 };
        struct drift_item b = { .kind = (char *) "duplicate_uuid", .since = 200 };
        struct drifts x = {};
        json_object *want;
        struct journal *j;
        sqlite3 *other;

        j = open_journal(path);
        assert_int_equal(journal_insert_device(j, rec), 0);
        a.detail = json_tokener_parse("{\"match\":{\"serial\":\"S\"}}");
        b.detail = json_tokener_parse("{\"fs_uuid\":\"abc\",\"kname\":\"loop0\",\"others\":[7]}");
        b.device_id = rec->id;
        assert_non_null(a.detail);
        assert_non_null(b.detail);
        assert_int_equal(journal_insert_drift(j, &a), 0);
        assert_int_equal(journal_insert_drift(j, &b), 0);
        assert_true(a.id > 0);
        assert_true(b.id > a.id);

        journal_close(j);
        j = open_journal(path);
        assert_int_equal(journal_load_open_drift(j, collect_drift, &x), 0);
        assert_int_equal(x.n, 2);
        assert_int_equal(x.v[0]->id, a.id);
        assert_string_equal(x.v[0]->kind, "missing");
        assert_string_equal(x.v[0]->name, "backup");
        assert_int_equal(x.v[0]->device_id, 0);
        assert_int_equal(x.v[0]->since, 100);
        assert_json_equal(a.detail, x.v[0]->detail);
        assert_int_equal(x.v[1]->id, b.id);
        assert_null(x.v[1]->name);
        assert_int_equal(x.v[1]->device_id, rec->id);
        assert_int_equal(x.v[1]->since, 200);
        assert_json_equal(b.detail, x.v[1]->detail);
        drifts_done(&x);

        /* A new detail and name, the same item. */
        want = json_tokener_parse("{\"fs_uuid\":\"abc\",\"kname\":\"loop5\",\"others\":[7,9]}");
        assert_non_null(want);
        assert_int_equal(journal_update_drift(j, b.id, "renamed-dev", want), 0);
        assert_int_equal(journal_close_drift(j, a.id, 300), 0);
        assert_int_equal(journal_load_open_drift(j, collect_drift, &x), 0);
        assert_int_equal(x.n, 1);
        assert_int_equal(x.v[0]->id, b.id);
        assert_int_equal(x.v[0]->since, 200);
        assert_json_equal(want, x.v[0]->detail);
        assert_string_equal(x.v[0]->name, "renamed-dev");
        drifts_done(&x);
        journal_close(j);

        /* The closed item stays, with when it closed. */
        other = open_other(path);
        assert_int_equal(query_int(other, "SELECT COUNT(*) FROM drift"), 2);
        assert_int_equal(query_int(other, "SELECT closed FROM drift WHERE kind = 'missing'"), 300);
        assert_int_equal(query_int(other, "SELECT COUNT(*) FROM drift WHERE closed IS NULL"), 1);
        detail = query_text(other, "SELECT detail FROM drift WHERE kind = 'duplicate_uuid'");
        assert_string_equal(detail, "{\"fs_uuid\":\"abc\",\"kname\":\"loop5\",\"others\":[7,9]}");
        sqlite3_close(other);

        json_object_put(want);
        json_object_put(a.detail);
        json_object_put(b.detail);
        device_record_free(rec);
}

/* Names are unique in the journal too, whatever the ledger checks first. */
static void test_device_names_unique(void **state) {
        _cleanup_free_ char *path = db_path("names");
        struct device_record *a = record_new("serial:M:A", DEVICE_PRESENT, 1, 1);
        struct device_record *b = record_new("serial:M:B", DEVICE_GONE, 1, 1);
        struct loaded l = {};
        struct journal *j;

        j = open_journal(path);
        a->name = strdup("backup");
        assert_int_equal(journal_insert_device(j, a), 0);
        assert_int_equal(journal_insert_device(j, b), 0);
        b->name = strdup("backup");
        assert_true(journal_update_device(j, b) < 0);
        /* Any number of records without a name. */
        free(a->name);
        a->name = NULL;
        free(b->name);
        b->name = NULL;
        assert_int_equal(journal_update_device(j, a), 0);
        assert_int_equal(journal_update_device(j, b), 0);
        b->name = strdup("backup");
        assert_int_equal(journal_update_device(j, b), 0);
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 2);
        assert_null(l.recs[0]->name);
        assert_string_equal(l.recs[1]->name, "backup");
        loaded_done(&l);
        journal_close(j);
        device_record_free(a);
        device_record_free(b);
}

static void test_migrate_from_v2(void **state) {
        static const struct fixture_expect v2 = { .n_devices = 2, .n_events = 6, .last_seq = 6, .has_meta = true };
        _cleanup_free_ char *path = db_path("migrate-v2-content"), *meta = NULL;
        struct device_record *rec;
        struct loaded l = {};
        struct exps x = {};
        struct drifts dr = {};
        struct drift_item d = { .kind = (char *) "label_mismatch", .name = (char *) "alpha", .since = 1795823600000000 };
        struct expectation *e;
        json_object *list, *want;
        struct journal *j;
        char *kind = NULL;

        check_migration_from_fixture("journal-v2.sql", 2, &v2);

        /* What the v2 fixture says, read through the current API. */
        db_from_sql_fixture("journal-v2.sql", path);
        j = open_journal(path);
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 2);
        assert_int_equal(l.recs[0]->id, 1);
        assert_string_equal(l.recs[0]->identity, "loop:254:0:10952825");
        assert_int_equal(l.recs[0]->state, DEVICE_PRESENT);
        assert_string_equal(l.recs[0]->facts.fs_label, "alpha2");
        assert_string_equal(l.recs[0]->facts.loop_backing_file, "/tmp/v2gen/img/a.img");
        assert_int_equal(l.recs[0]->facts.diskseq, 10930);
        assert_int_equal(l.recs[1]->state, DEVICE_GONE);
        assert_string_equal(l.recs[1]->facts.fs_type, "swap");
        /* last_verified comes from last_seen; the rest is new and empty. */
        assert_int_equal(l.recs[0]->last_seen, 1795823552455365);
        assert_int_equal(l.recs[0]->last_verified, 1795823552455365);
        assert_int_equal(l.recs[1]->last_verified, l.recs[1]->last_seen);
        for (size_t i = 0; i < 2; i++) {
                assert_null(l.recs[i]->name);
                assert_null(l.recs[i]->identity_aux);
                assert_int_equal(l.recs[i]->verified_pass, 0);
        }

        /* A migrated journal takes names, expectations and drift. */
        l.recs[0]->name = strdup("alpha");
        l.recs[0]->identity_aux = strdup("1795823000.000000001");
        assert_int_equal(journal_update_device(j, l.recs[0]), 0);
        rec = record_new("kname:loop9", DEVICE_PRESENT, 1, 1);
        rec->name = strdup("alpha");
        assert_true(journal_insert_device(j, rec) < 0);
        device_record_free(rec);
        loaded_done(&l);
        e = expectation_new("alpha", "fs_uuid", "AA5E0C9D-45E2-48A9-8AAB-A5E0BBEFA86C", "ext4", "alpha", FIELD_NULL, 5);
        assert_int_equal(journal_put_expectation(j, e), 0);
        expectation_free(e);
        d.device_id = 1;
        d.detail = json_tokener_parse("{\"expected\":\"alpha\",\"actual\":\"alpha2\"}");
        assert_non_null(d.detail);
        assert_int_equal(journal_insert_drift(j, &d), 0);

        /* The old meta survives; the history goes on after the old head. */
        assert_int_equal(journal_meta_get(j, "last_full_scan", &meta), 0);
        assert_string_equal(meta, "2026-11-27T23:52:32.456576Z");
        assert_int_equal(journal_last_daemon_event(j, &kind), 0);
        assert_string_equal(kind, "daemon_stopped");
        free(kind);
        list = events_of(j, 0, 100, 1);
        assert_int_equal(json_object_array_length(list), 2);
        want = json_tokener_parse("{\"fs_label\":\"alpha2\"}");
        assert_json_equal(want, member(json_object_array_get_idx(list, 1), "after"));
        json_object_put(want);
        json_object_put(list);
        journal_close(j);

        j = open_journal(path);
        assert_int_equal(journal_load_devices(j, collect, &l), 0);
        assert_int_equal(l.n, 2);
        assert_string_equal(l.recs[0]->name, "alpha");
        assert_string_equal(l.recs[0]->identity_aux, "1795823000.000000001");
        assert_null(l.recs[1]->name);
        loaded_done(&l);
        assert_int_equal(journal_load_expectations(j, collect_expectation, &x), 0);
        assert_int_equal(x.n, 1);
        assert_string_equal(x.v[0]->match_kind, "fs_uuid");
        assert_string_equal(x.v[0]->fs_label, "alpha");
        exps_done(&x);
        assert_int_equal(journal_load_open_drift(j, collect_drift, &dr), 0);
        assert_int_equal(dr.n, 1);
        assert_int_equal(dr.v[0]->id, d.id);
        assert_int_equal(dr.v[0]->device_id, 1);
        assert_string_equal(dr.v[0]->kind, "label_mismatch");
        assert_json_equal(d.detail, dr.v[0]->detail);
        drifts_done(&dr);
        journal_close(j);
        json_object_put(d.detail);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_new_journal_is_current_wal_full),
                cmocka_unit_test(test_device_round_trip),
                cmocka_unit_test(test_events),
                cmocka_unit_test(test_seq_survives_reopen),
                cmocka_unit_test(test_events_append_only),
                cmocka_unit_test(test_rollback_keeps_seq),
                cmocka_unit_test(test_meta),
                cmocka_unit_test(test_last_daemon_event),
                cmocka_unit_test(test_refuse_newer_schema),
                cmocka_unit_test(test_refuse_newer_schema_wal),
                cmocka_unit_test(test_refuse_garbage),
                cmocka_unit_test(test_migrate_from_v1),
                cmocka_unit_test(test_migrate_from_v2),
                cmocka_unit_test(test_expectations_round_trip),
                cmocka_unit_test(test_volumes_and_intents),
                cmocka_unit_test(test_volume_states_match_schema),
                cmocka_unit_test(test_drift_round_trip),
                cmocka_unit_test(test_device_names_unique),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
