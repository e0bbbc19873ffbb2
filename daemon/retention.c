/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Bounded history (see retention.h). A round walks the events oldest first by seq (the
 * rowid: every step is a range lookup, no index on time is needed) and stops at the
 * first event that both limits keep; since events are appended in time order, what lies
 * beyond is younger. Each batch is one transaction that looks at a bounded number of
 * events, so the loop is never held long; the protection is decided inside that
 * transaction, so an intent or drift opened meanwhile is seen. */
#include "config.h"

#include <inttypes.h>
#include <sqlite3.h>

#include "log.h"
#include "retention.h"
#include "util.h"

#define ROUND_INTERVAL_USEC (60 * USEC_PER_SEC)

/* Columns: seq, time, protected. ?1 the round's position, ?2 the newest seq that may
 * go, ?3 the batch, ?4 the daemon event to keep. The IN lists do not depend on the row:
 * SQLite builds each once per execution. */
const char retention_select_sql[] =
        "SELECT e.seq, e.time, CASE WHEN e.device_id IS NOT NULL THEN"
        /* a device with open drift */
        "  e.device_id IN (SELECT device_id FROM drift WHERE closed IS NULL AND device_id IS NOT NULL)"
        /* a device an unfinished device action is about */
        "  OR e.device_id IN (SELECT CAST(substr(target, 8) AS INTEGER) FROM intents"
        "                     WHERE state IN ('pending', 'running') AND target GLOB 'device/*')"
        /* the device of a volume with an unfinished intent (its file, or its name) */
        "  OR e.device_id IN (SELECT d.id FROM intents i JOIN volumes v ON v.name = i.target"
        "                     JOIN devices d ON d.loop_backing_file = v.backing_file OR d.name = v.name"
        "                     WHERE i.state IN ('pending', 'running'))"
        /* the newest event of the device: its history is never empty */
        "  OR e.seq = (SELECT MAX(x.seq) FROM events x WHERE x.device_id = e.device_id)"
        " ELSE"
        "  e.seq = ?4"
        "  OR (e.kind = 'drift_opened' AND json_valid(e.after)"
        "      AND json_extract(e.after, '$.drift_id') IN (SELECT id FROM drift WHERE closed IS NULL))"
        "  OR (e.kind GLOB 'intent_*' AND json_valid(e.after)"
        "      AND json_extract(e.after, '$.target') IN (SELECT target FROM intents WHERE state IN ('pending', 'running')))"
        " END "
        "FROM events e WHERE e.seq > ?1 AND e.seq <= ?2 ORDER BY e.seq LIMIT ?3";

struct retention {
        struct journal *j;
        struct retention_policy p;
        sqlite3_stmt *select;
        sqlite3_stmt *delete;
        int64_t *seqs; /* one batch's victims */
        bool in_round;
        int64_t cursor;      /* the last seq the round looked at */
        int64_t keep_daemon; /* the newest daemon_started/daemon_stopped */
        int64_t next_round;  /* monotonic usec */
        int64_t head_at_round;
        uint64_t total;
        int64_t last_prune;
        int64_t auto_vacuum; /* PRAGMA auto_vacuum: 2 = incremental */
};

static int prepare(struct retention *r, const char *sql, sqlite3_stmt **ret) {
        int rc = sqlite3_prepare_v3(journal_db(r->j), sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);

        if (rc != SQLITE_OK) {
                log_error("journal: cannot prepare the retention statements: %s", sqlite3_errmsg(journal_db(r->j)));
                return journal_errno(rc) ?: -EIO;
        }
        return 0;
}

/* One integer (0 without a row). */
static int query_int(struct retention *r, const char *sql, int64_t *ret) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(journal_db(r->j), sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return journal_errno(rc) ?: -EIO;
        rc = sqlite3_step(s);
        *ret = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_finalize(s);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : journal_errno(rc) ?: -EIO;
}

int retention_new(struct journal *j, const struct retention_policy *p, struct retention **ret) {
        struct retention *r = calloc(1, sizeof(*r));
        _cleanup_free_ char *total = NULL, *last = NULL;
        int e;

        if (!r)
                return -ENOMEM;
        r->j = j;
        r->p = *p;
        if (r->p.batch == 0)
                r->p.batch = RETENTION_BATCH;
        r->seqs = calloc(r->p.batch, sizeof(*r->seqs));
        if (!r->seqs) {
                retention_free(r);
                return -ENOMEM;
        }
        e = prepare(r, retention_select_sql, &r->select);
        if (e == 0)
                e = prepare(r, "DELETE FROM events WHERE seq = ?", &r->delete);
        if (e == 0)
                e = query_int(r, "PRAGMA auto_vacuum", &r->auto_vacuum);
        if (e == 0)
                e = journal_meta_get(j, "events_pruned", &total);
        if (e == 0)
                e = journal_meta_get(j, "last_prune", &last);
        if (e < 0) {
                retention_free(r);
                return e;
        }
        if (total)
                (void) parse_uint64(total, &r->total);
        if (last)
                (void) parse_rfc3339(last, &r->last_prune);
        *ret = r;
        return 0;
}

struct retention *retention_free(struct retention *r) {
        if (!r)
                return NULL;
        sqlite3_finalize(r->select);
        sqlite3_finalize(r->delete);
        free(r->seqs);
        free(r);
        return NULL;
}

void retention_set_limits(struct retention *r, int64_t max_age, int64_t max_count) {
        /* The batch stays (r->seqs is sized by it); a round under way starts again. */
        if (!r || (r->p.max_age == max_age && r->p.max_count == max_count))
                return;
        r->p.max_age = max_age;
        r->p.max_count = max_count;
        r->in_round = false;
        r->next_round = 0;
}

uint64_t retention_pruned_total(const struct retention *r) {
        return r ? r->total : 0;
}

int64_t retention_last_prune(const struct retention *r) {
        return r ? r->last_prune : 0;
}

/* The newest seq the policy may delete at all: never the head (Watch and ListEvents
 * report it as last_seq, and the next run numbers on from the largest seq present), and
 * nothing an on_appear cursor has still to look at. */
static int prunable_limit(struct retention *r, int64_t *ret) {
        _cleanup_free_ char *cursor = NULL;
        int64_t limit = journal_last_seq(r->j) - 1, any, c;
        int e;

        e = query_int(r, "SELECT EXISTS (SELECT 1 FROM expectations WHERE on_appear IS NOT NULL)", &any);
        if (e == 0 && any)
                e = journal_meta_get(r->j, "on_appear_seq", &cursor);
        if (e < 0)
                return e;
        if (cursor && parse_int64(cursor, &c) == 0 && c < limit)
                limit = c;
        *ret = limit;
        return 0;
}

static int delete_batch(struct retention *r, size_t n) {
        for (size_t i = 0; i < n; i++) {
                int rc;

                sqlite3_bind_int64(r->delete, 1, r->seqs[i]);
                rc = sqlite3_step(r->delete);
                sqlite3_reset(r->delete);
                if (rc != SQLITE_DONE) {
                        log_error("journal: cannot prune event %" PRId64 ": %s", r->seqs[i],
                                  sqlite3_errmsg(journal_db(r->j)));
                        return journal_errno(rc) ?: -EIO;
                }
        }
        return 0;
}

int retention_step(struct retention *r, int64_t now, bool *ret_done) {
        int64_t head = journal_last_seq(r->j), limit, count_bound, age_cutoff, cursor;
        size_t n = 0, looked = 0;
        bool done = false;
        int rc, e;

        *ret_done = true;
        if (r->p.max_age <= 0 && r->p.max_count <= 0)
                return 0;
        if (!r->in_round) {
                /* A new round starts from the oldest event: what was protected in the
                 * last one may not be any more. */
                e = query_int(r,
                              "SELECT seq FROM events WHERE device_id IS NULL "
                              "AND kind IN ('daemon_started', 'daemon_stopped') ORDER BY seq DESC LIMIT 1",
                              &r->keep_daemon);
                if (e < 0)
                        return e;
                r->cursor = 0;
                r->head_at_round = head;
                r->in_round = true;
        }
        /* Kept by count: the newest max_count seqs. Kept by age: from the first event
         * younger than max_age on. */
        count_bound = r->p.max_count > 0 ? head - r->p.max_count : 0;
        age_cutoff = r->p.max_age > 0 ? now - r->p.max_age : INT64_MIN;

        e = journal_begin(r->j);
        if (e < 0)
                goto fail;
        e = prunable_limit(r, &limit);
        if (e < 0)
                goto fail;
        cursor = r->cursor;
        sqlite3_bind_int64(r->select, 1, cursor);
        sqlite3_bind_int64(r->select, 2, limit);
        sqlite3_bind_int64(r->select, 3, r->p.batch);
        sqlite3_bind_int64(r->select, 4, r->keep_daemon);
        while ((rc = sqlite3_step(r->select)) == SQLITE_ROW) {
                int64_t seq = sqlite3_column_int64(r->select, 0), time = sqlite3_column_int64(r->select, 1);

                if (seq > count_bound && time >= age_cutoff) {
                        done = true;
                        break;
                }
                looked++;
                cursor = seq;
                if (!sqlite3_column_int(r->select, 2))
                        r->seqs[n++] = seq;
        }
        if (rc == SQLITE_DONE && looked < r->p.batch)
                done = true; /* the end of what may go */
        sqlite3_reset(r->select);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                log_error("journal: cannot select events to prune: %s", sqlite3_errmsg(journal_db(r->j)));
                e = journal_errno(rc) ?: -EIO;
                goto fail;
        }
        if (n > 0) {
                char buf[32], ts[RFC3339_MAX];

                e = delete_batch(r, n);
                snprintf(buf, sizeof(buf), "%" PRIu64, r->total + n);
                if (e == 0)
                        e = journal_meta_set(r->j, "events_pruned", buf);
                if (e == 0)
                        e = journal_meta_set(r->j, "last_prune", format_rfc3339(now, ts));
                if (e < 0)
                        goto fail;
        }
        e = journal_commit(r->j);
        if (e < 0)
                goto fail;
        r->cursor = cursor;
        if (n > 0) {
                r->total += n;
                r->last_prune = now;
                /* Pages the deletions freed are reused by later inserts anyway; a journal
                 * created with auto_vacuum=INCREMENTAL also gives them back to the file
                 * system, a bounded number per batch. */
                if (r->auto_vacuum == 2)
                        (void) sqlite3_exec(journal_db(r->j), "PRAGMA incremental_vacuum(2048)",
                                            NULL, NULL, NULL);
        }
        if (done)
                r->in_round = false;
        *ret_done = done;
        return (int) n;
fail:
        journal_rollback(r->j);
        r->in_round = false;
        return e;
}

int retention_run(struct retention *r, int64_t now, uint64_t *ret_deleted) {
        uint64_t total = 0;
        bool done = false;

        r->in_round = false;
        while (!done) {
                int n = retention_step(r, now, &done);
                if (n < 0)
                        return n;
                total += (uint64_t) n;
        }
        if (ret_deleted)
                *ret_deleted = total;
        return 0;
}

void retention_tick(struct retention *r, int64_t now_realtime, int64_t now_monotonic) {
        int64_t grown;
        bool done;
        int n;

        /* Not while the storage refuses writes: a deletion needs room in the WAL too. */
        if (!r || (r->p.max_age <= 0 && r->p.max_count <= 0) || journal_degraded(r->j, NULL))
                return;
        grown = journal_last_seq(r->j) - r->head_at_round;
        if (!r->in_round && now_monotonic < r->next_round &&
            !(r->p.max_count > 0 && grown >= MAX(r->p.max_count / 10, 1)))
                return;
        n = retention_step(r, now_realtime, &done);
        if (n < 0) {
                log_warning_errno(n, "cannot prune old events; trying again in a minute");
                r->next_round = now_monotonic + ROUND_INTERVAL_USEC;
                return;
        }
        if (n > 0)
                log_debug("pruned %d old events (%" PRIu64 " in all)", n, r->total);
        if (done)
                r->next_round = now_monotonic + ROUND_INTERVAL_USEC;
}

int retention_parse_age(const char *s, int64_t *ret) {
        static const struct {
                char suffix;
                int64_t usec;
        } units[] = {
                { 's', USEC_PER_SEC },          { 'm', 60 * USEC_PER_SEC },
                { 'h', 3600 * USEC_PER_SEC },   { 'd', 86400 * USEC_PER_SEC },
                { 'w', 7 * 86400 * USEC_PER_SEC },
        };
        _cleanup_free_ char *num = NULL;
        int64_t unit = USEC_PER_SEC, v;
        size_t l;

        if (isempty(s))
                return -EINVAL;
        l = strlen(s);
        num = strdup(s);
        if (!num)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (s[l - 1] == units[i].suffix) {
                        unit = units[i].usec;
                        num[l - 1] = 0;
                        break;
                }
        /* At most 100 years: far beyond any history, far from overflow. */
        if (isempty(num) || num[0] == '-' || parse_int64(num, &v) < 0 || v > 100LL * 366 * 86400 * USEC_PER_SEC / unit)
                return -EINVAL;
        *ret = v * unit;
        return 0;
}
