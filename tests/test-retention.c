/* Description: retention prunes exactly the events the policy lets go, by count and by age, in bounded batches: never those of open drift or unfinished intents, a device's newest, the last daemon start or stop, or what an on_appear cursor has not read; totals persist in meta; its queries are index lookups. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "drift.h"
#include "journal.h"
#include "log.h"
#include "options.h"
#include "retention.h"
#include "util.h"
#include "volumes.h"

/* 20005 events, one a minute, the newest a minute before NOW. */
#define N_EVENTS 20005
#define NOW (1700000000LL * USEC_PER_SEC)
#define MINUTE (60 * USEC_PER_SEC)
#define N_DEVICES 11

static char *tmpdir;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int group_setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");

        if (asprintf(&tmpdir, "%s/test-retention.XXXXXX", isempty(base) ? "/tmp" : base) < 0)
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

static struct journal *open_journal(const char *name) {
        _cleanup_free_ char *path = NULL, *err = NULL;
        struct journal *j = NULL;
        int r;

        assert_true(asprintf(&path, "%s/%s.db", tmpdir, name) > 0);
        r = journal_open(path, &j, &err);
        if (r < 0)
                print_error("journal_open(%s): %s: %s\n", path, strerror(-r), err ?: "");
        assert_int_equal(r, 0);
        return j;
}

static void sql(struct journal *j, const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        char *err = NULL;
        va_list ap;
        int rc;

        va_start(ap, fmt);
        assert_true(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        rc = sqlite3_exec(journal_db(j), s, NULL, NULL, &err);
        if (rc != SQLITE_OK)
                fail_msg("%s: %s", s, err);
}

/* The fixture: what each event is, so the test can say which must survive. */
struct fixture {
        struct journal *j;
        int64_t drift_open_dev, drift_closed_dev;   /* device drift: 3 open, 4 closed */
        int64_t drift_open_none, drift_closed_none; /* drift without a device */
        int dev[N_EVENTS + 1];                      /* device of event i, 0 = the daemon's */
        const char *kind[N_EVENTS + 1];
        int64_t intent_dev5, intent_vol_named;
};

static int64_t event_time(int i) {
        return NOW - (int64_t) (N_EVENTS + 1 - i) * MINUTE;
}

static int64_t add_intent(struct journal *j, const char *target, enum intent_state st) {
        struct intent it = { .op = (char *) (startswith(target, "device/") ? "device.run" : "volume.attach"),
                             .target = (char *) target, .state = st, .created = NOW, .updated = NOW };

        it.params = json_object_new_object();
        assert_int_equal(vstore_insert_intent(j, &it), 0);
        json_object_put(it.params);
        return it.id;
}

static int64_t add_drift(struct journal *j, const char *kind, const char *name, int64_t dev, bool open) {
        struct drift_item d = { .kind = (char *) kind, .name = (char *) name, .device_id = dev, .since = NOW };

        d.detail = json_object_new_object();
        assert_int_equal(journal_insert_drift(j, &d), 0);
        json_object_put(d.detail);
        if (!open)
                assert_int_equal(journal_close_drift(j, d.id, NOW), 0);
        return d.id;
}

/* Devices 1..11: 3 has open drift, 4 closed drift; 5 an unfinished device action, 6 a
 * finished one; 7 is the device of volume vol-busy (its file) with a running intent, 8
 * that of vol-named (its name) with a pending one; 11 has one event, the oldest. Daemon
 * events: a start or stop every 1000; intent events of vol-busy (500, unfinished) and
 * vol-done; drift_opened of the open (700) and the closed (701) drift without device. */
static void fixture_build(struct fixture *f, const char *name) {
        struct journal *j = f->j = open_journal(name);
        struct volume busy = { .name = (char *) "vol-busy", .state = (char *) "attached", .size_bytes = 1 << 20,
                               .backing_file = (char *) "/v/busy.img", .created = NOW, .updated = NOW };
        struct volume named = busy;

        named.name = (char *) "vol-named";
        named.backing_file = (char *) "/v/named.img";
        assert_int_equal(journal_begin(j), 0);
        for (int d = 1; d <= N_DEVICES; d++)
                sql(j,
                    "INSERT INTO devices (id, identity, state, first_seen, last_seen, loop_backing_file, name) "
                    "VALUES (%d, 'test:%d', 'gone', 0, 0, %s, %s)",
                    d, d, d == 7 ? "'/v/busy.img'" : "NULL", d == 8 ? "'vol-named'" : "NULL");
        assert_int_equal(vstore_put_volume(j, &busy), 0);
        assert_int_equal(vstore_put_volume(j, &named), 0);
        f->intent_dev5 = add_intent(j, "device/5", INTENT_PENDING);
        add_intent(j, "device/6", INTENT_SUCCEEDED);
        add_intent(j, "vol-busy", INTENT_RUNNING);
        f->intent_vol_named = add_intent(j, "vol-named", INTENT_PENDING);
        add_intent(j, "vol-done", INTENT_SUCCEEDED);
        f->drift_open_dev = add_drift(j, "unexpected_fs", "web", 3, true);
        f->drift_closed_dev = add_drift(j, "unexpected_fs", "db", 4, false);
        f->drift_open_none = add_drift(j, "missing", "web", 0, true);
        f->drift_closed_none = add_drift(j, "missing", "db", 0, false);

        for (int i = 1; i <= N_EVENTS; i++) {
                json_object *after = NULL;

                f->dev[i] = 0;
                if (i == 1) {
                        f->dev[i] = 11;
                        f->kind[i] = "appeared";
                } else if (i % 1000 == 0)
                        f->kind[i] = (i / 1000) % 2 ? "daemon_started" : "daemon_stopped";
                else if (i % 1000 == 500) {
                        f->kind[i] = i == 500 ? "intent_pending" : "intent_succeeded";
                        after = json_object_new_object();
                        json_object_object_add(after, "target", json_object_new_string(i == 500 ? "vol-busy" : "vol-done"));
                } else if (i == 700 || i == 701) {
                        f->kind[i] = "drift_opened";
                        after = json_object_new_object();
                        json_object_object_add(after, "drift_id",
                                               json_object_new_int64(i == 700 ? f->drift_open_none : f->drift_closed_none));
                } else {
                        f->dev[i] = 1 + i % 10;
                        f->kind[i] = "changed";
                }
                assert_int_equal(journal_append_event(j, event_time(i), f->dev[i], f->kind[i], NULL, after, NULL), 0);
                json_object_put(after);
        }
        assert_int_equal(journal_commit(j), 0);
        assert_int_equal(journal_last_seq(j), N_EVENTS);
}

static int newest_of_device(const struct fixture *f, int dev) {
        for (int i = N_EVENTS; i >= 1; i--)
                if (f->dev[i] == dev)
                        return i;
        return 0;
}

/* What the policy must keep however old: the rules of retention.h, written out. */
static bool is_protected(const struct fixture *f, int i, bool released) {
        int d = f->dev[i];

        if (i == N_EVENTS || i == 20000) /* the head; the newest daemon start or stop */
                return true;
        if (d > 0) {
                if (i == newest_of_device(f, d))
                        return true;
                if (d == 7 || d == 8)
                        return true;
                return !released && (d == 3 || d == 5);
        }
        return i == 500 || i == 700;
}

/* Compares the events left with the model: survivors are those with keep(i). */
static void assert_survivors(const struct fixture *f, bool (*keep)(const struct fixture *f, int i, void *u), void *u) {
        sqlite3_stmt *s;
        int want = 0, got = 0, next = 1;

        for (int i = 1; i <= N_EVENTS; i++)
                want += keep(f, i, u);
        assert_int_equal(sqlite3_prepare_v2(journal_db(f->j), "SELECT seq FROM events ORDER BY seq", -1, &s, NULL),
                         SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
                int seq = sqlite3_column_int(s, 0);
                for (; next < seq; next++)
                        if (keep(f, next, u))
                                fail_msg("event %d (%s of device %d) was pruned", next, f->kind[next], f->dev[next]);
                if (!keep(f, seq, u))
                        fail_msg("event %d (%s of device %d) was kept", seq, f->kind[seq], f->dev[seq]);
                next = seq + 1;
                got++;
        }
        sqlite3_finalize(s);
        for (; next <= N_EVENTS; next++)
                if (keep(f, next, u))
                        fail_msg("event %d was pruned", next);
        assert_int_equal(got, want);
}

struct count_model {
        int max_count;
        bool released;
};

static bool keep_by_count(const struct fixture *f, int i, void *u) {
        const struct count_model *m = u;
        return i > N_EVENTS - m->max_count || is_protected(f, i, m->released);
}

static void test_by_count(void **state) {
        struct fixture f = {};
        struct retention *r;
        struct count_model m = { .max_count = 5000 };
        struct retention_policy p = { .max_count = 5000, .batch = 5000 };
        uint64_t deleted = 0, total;
        _cleanup_free_ char *meta = NULL;
        int64_t t0;
        bool done;
        int n, expected = 0;

        fixture_build(&f, "count");
        for (int i = 1; i <= N_EVENTS; i++)
                expected += !keep_by_count(&f, i, &m);
        assert_int_equal(retention_new(f.j, &p, &r), 0);

        /* A batch looks at 5000 events at most, in its own transaction. */
        t0 = now_monotonic_usec();
        n = retention_step(r, NOW, &done);
        print_message("one batch of %u: %d deleted in %lld ms\n", p.batch, n,
                      (long long) (now_monotonic_usec() - t0) / 1000);
        assert_true(n > 0 && n <= 5000);
        assert_false(done);
        total = (uint64_t) n;
        while (!done) {
                n = retention_step(r, NOW, &done);
                assert_true(n >= 0 && n <= 5000);
                total += (uint64_t) n;
        }
        assert_int_equal(total, expected);
        assert_survivors(&f, keep_by_count, &m);
        assert_int_equal(retention_pruned_total(r), expected);
        assert_int_equal(retention_last_prune(r), NOW);

        /* Nothing more to do; the totals are in meta for the next run. */
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_int_equal(deleted, 0);
        retention_free(r);
        assert_int_equal(journal_meta_get(f.j, "events_pruned", &meta), 0);
        assert_non_null(meta);
        assert_int_equal(atoll(meta), expected);
        assert_int_equal(retention_new(f.j, &p, &r), 0);
        assert_int_equal(retention_pruned_total(r), expected);
        assert_int_equal(retention_last_prune(r), NOW);

        /* Protection ends with the drift and the intents: the next round takes the rest. */
        assert_int_equal(journal_close_drift(f.j, f.drift_open_dev, NOW), 0);
        sql(f.j, "UPDATE intents SET state = 'succeeded' WHERE target = 'device/5'");
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_true(deleted > 0);
        m.released = true;
        assert_survivors(&f, keep_by_count, &m);
        retention_free(r);
        journal_close(f.j);
}

static bool keep_by_age(const struct fixture *f, int i, void *u) {
        const int64_t *max_age = u;
        return event_time(i) >= NOW - *max_age || is_protected(f, i, false);
}

static void test_by_age(void **state) {
        struct fixture f = {};
        struct retention *r;
        int64_t max_age = 3 * 86400 * USEC_PER_SEC;
        struct retention_policy p = { .max_age = max_age };
        uint64_t deleted;

        fixture_build(&f, "age");
        assert_int_equal(retention_new(f.j, &p, &r), 0);
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_true(deleted > 9000);
        assert_survivors(&f, keep_by_age, &max_age);

        /* Both limits (a reload adds one): an event goes when either lets it go. */
        retention_set_limits(r, max_age, 1000);
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        {
                struct count_model m = { .max_count = 1000 };
                assert_survivors(&f, keep_by_count, &m);
        }
        retention_free(r);
        journal_close(f.j);
}

/* Without limits nothing goes; an on_appear cursor holds back what it has not read. */
static void test_unlimited_and_on_appear_cursor(void **state) {
        struct journal *j = open_journal("cursor");
        struct retention *r;
        struct retention_policy p = {};
        struct expectation e = { .name = (char *) "web", .match_kind = (char *) "fs_uuid",
                                 .match_value = (char *) "x", .min_size = FIELD_NULL, .created = NOW,
                                 .on_appear = (char *) "run:/bin/true" };
        uint64_t deleted;
        int64_t left;
        sqlite3_stmt *s;

        assert_int_equal(journal_begin(j), 0);
        for (int i = 1; i <= 200; i++)
                assert_int_equal(journal_append_event(j, event_time(i), 0, "intent_succeeded", NULL, NULL, NULL), 0);
        assert_int_equal(journal_commit(j), 0);

        assert_int_equal(retention_new(j, &p, &r), 0);
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_int_equal(deleted, 0);
        retention_free(r);

        assert_int_equal(journal_put_expectation(j, &e), 0);
        assert_int_equal(journal_meta_set(j, "on_appear_seq", "150"), 0);
        p.max_count = 10;
        assert_int_equal(retention_new(j, &p, &r), 0);
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_int_equal(deleted, 150);
        assert_int_equal(sqlite3_prepare_v2(journal_db(j), "SELECT MIN(seq) FROM events", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        left = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        assert_int_equal(left, 151);

        /* Once no expectation acts on appearances, the cursor holds nothing back. */
        assert_int_equal(journal_delete_expectation(j, "web"), 0);
        assert_int_equal(retention_run(r, NOW, &deleted), 0);
        assert_int_equal(deleted, 40);
        retention_free(r);
        journal_close(j);
}

static void assert_plan_uses_indexes(struct journal *j, const char *query, const char *const *must) {
        _cleanup_free_ char *q = NULL;
        sqlite3_stmt *s;
        char plan[4096] = "";

        assert_true(asprintf(&q, "EXPLAIN QUERY PLAN %s", query) > 0);
        assert_int_equal(sqlite3_prepare_v2(journal_db(j), q, -1, &s, NULL), SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
                const char *d = (const char *) sqlite3_column_text(s, 3);
                strncat(plan, d, sizeof(plan) - strlen(plan) - 2);
                strcat(plan, "\n");
                /* A scan of events (or of an index of it) costs the whole history. */
                if (startswith(d, "SCAN") && strstr(d, "events"))
                        fail_msg("query plan scans the events:\n%s\n%s", plan, query);
        }
        sqlite3_finalize(s);
        for (size_t i = 0; must[i]; i++)
                if (!strstr(plan, must[i]))
                        fail_msg("query plan lacks '%s':\n%s", must[i], plan);
}

/* The batch, the history page (ListEvents, Watch) and a device's history are lookups. */
static void test_query_plans(void **state) {
        struct journal *j = open_journal("plans");

        assert_plan_uses_indexes(j, retention_select_sql,
                                 (const char *const[]) { "SEARCH e USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
                                                         "SEARCH x USING COVERING INDEX events_device (device_id=?)",
                                                         "drift_open", NULL });
        assert_plan_uses_indexes(j, "SELECT seq, time, device_id, kind, before, after FROM events "
                                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (const char *const[]) { "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)", NULL });
        assert_plan_uses_indexes(j, "SELECT seq, time, device_id, kind, before, after FROM events "
                                    "WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                 (const char *const[]) { "events_device (device_id=? AND seq>?)", NULL });
        assert_plan_uses_indexes(j, "SELECT seq FROM events WHERE device_id IS NULL "
                                    "AND kind IN ('daemon_started', 'daemon_stopped') ORDER BY seq DESC LIMIT 1",
                                 (const char *const[]) { "events_device (device_id=?)", NULL });
        journal_close(j);
}

static void test_parse_age(void **state) {
        int64_t v;

        assert_int_equal(retention_parse_age("90d", &v), 0);
        assert_int_equal(v, 90 * 86400 * USEC_PER_SEC);
        assert_int_equal(v, RETENTION_DEFAULT_MAX_AGE);
        assert_int_equal(retention_parse_age("3600", &v), 0);
        assert_int_equal(v, 3600 * USEC_PER_SEC);
        assert_int_equal(retention_parse_age("45s", &v), 0);
        assert_int_equal(v, 45 * USEC_PER_SEC);
        assert_int_equal(retention_parse_age("30m", &v), 0);
        assert_int_equal(v, 1800 * USEC_PER_SEC);
        assert_int_equal(retention_parse_age("12h", &v), 0);
        assert_int_equal(v, 12 * 3600 * USEC_PER_SEC);
        assert_int_equal(retention_parse_age("2w", &v), 0);
        assert_int_equal(v, 14 * 86400 * USEC_PER_SEC);
        assert_int_equal(retention_parse_age("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(retention_parse_age("", &v), -EINVAL);
        assert_int_equal(retention_parse_age("d", &v), -EINVAL);
        assert_int_equal(retention_parse_age("-1d", &v), -EINVAL);
        assert_int_equal(retention_parse_age("1y", &v), -EINVAL);
        assert_int_equal(retention_parse_age("1.5d", &v), -EINVAL);
        assert_int_equal(retention_parse_age("99999999999w", &v), -EINVAL);
}

/* The daemon's options: defaults, both forms of the age, 0 for no limit, refusals. */
static void test_options(void **state) {
        struct options o;
        char *err = NULL;

        assert_int_equal(options_parse(1, (char *[]) { (char *) "blkledgerd", NULL }, &o, &err), 0);
        assert_int_equal(o.event_max_age, 90 * 86400 * USEC_PER_SEC);
        assert_int_equal(o.event_max_count, 1000000);
        options_done(&o);
        assert_int_equal(options_parse(5,
                                       (char *[]) { (char *) "blkledgerd", (char *) "--event-max-age", (char *) "12h",
                                                    (char *) "--event-max-count", (char *) "0", NULL },
                                       &o, &err),
                         0);
        assert_int_equal(o.event_max_age, 12 * 3600 * USEC_PER_SEC);
        assert_int_equal(o.event_max_count, 0);
        options_done(&o);
        assert_int_equal(options_parse(3, (char *[]) { (char *) "blkledgerd", (char *) "--event-max-age", (char *) "3600", NULL },
                                       &o, &err),
                         0);
        assert_int_equal(o.event_max_age, 3600 * USEC_PER_SEC);
        options_done(&o);
        assert_int_equal(options_parse(3, (char *[]) { (char *) "blkledgerd", (char *) "--event-max-age", (char *) "1y", NULL },
                                       &o, &err),
                         -EINVAL);
        assert_non_null(err);
        assert_non_null(strstr(err, "--event-max-age"));
        free(err);
        err = NULL;
        options_done(&o);
        assert_int_equal(options_parse(3, (char *[]) { (char *) "blkledgerd", (char *) "--event-max-count", (char *) "-5", NULL },
                                       &o, &err),
                         -EINVAL);
        assert_non_null(err);
        assert_non_null(strstr(err, "--event-max-count"));
        free(err);
        options_done(&o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_by_count),
                cmocka_unit_test(test_by_age),
                cmocka_unit_test(test_unlimited_and_on_appear_cursor),
                cmocka_unit_test(test_query_plans),
                cmocka_unit_test(test_parse_age),
                cmocka_unit_test(test_options),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
