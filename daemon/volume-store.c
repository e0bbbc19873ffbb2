/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The volumes and intents tables (schema 5). Statements are prepared per call: actions
 * are rare next to device events, and this keeps journal.c about devices. */
#include "config.h"

#include <sqlite3.h>

#include "log.h"
#include "util.h"
#include "volumes.h"

#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *const intent_states[_INTENT_STATE_MAX] = {
        [INTENT_PENDING] = "pending",     [INTENT_RUNNING] = "running",          [INTENT_SUCCEEDED] = "succeeded",
        [INTENT_FAILED] = "failed",       [INTENT_ROLLED_BACK] = "rolled_back",
};

const char *intent_state_to_string(enum intent_state s) {
        return s >= 0 && s < _INTENT_STATE_MAX ? intent_states[s] : "?";
}

int intent_state_from_string(const char *s) {
        for (int i = 0; i < _INTENT_STATE_MAX; i++)
                if (s && streq(s, intent_states[i]))
                        return i;
        return -EINVAL;
}

bool intent_state_is_final(enum intent_state s) {
        return s == INTENT_SUCCEEDED || s == INTENT_FAILED || s == INTENT_ROLLED_BACK;
}

void intent_free(struct intent *it) {
        if (!it)
                return;
        free(it->op);
        free(it->target);
        json_object_put(it->params);
        free(it->key);
        free(it->last_error);
        json_object_put(it->result);
        free(it);
}

void volume_free(struct volume *v) {
        if (!v)
                return;
        free(v->name);
        free(v->state);
        free(v->backing_file);
        free(v->fs_type);
        free(v->fs_label);
        free(v);
}

json_object *intent_to_json(const struct intent *it) {
        json_object *o = json_object_new_object();
        char ts[RFC3339_MAX];

        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_object_new_int64(it->id));
        json_object_object_add(o, "op", json_object_new_string(it->op));
        json_object_object_add(o, "target", json_object_new_string(it->target));
        json_object_object_add(o, "params", json_object_get(it->params));
        json_object_object_add(o, "idempotency_key", it->key ? json_object_new_string(it->key) : NULL);
        json_object_object_add(o, "state", json_object_new_string(intent_state_to_string(it->state)));
        json_object_object_add(o, "step", json_object_new_int(it->step));
        json_object_object_add(o, "attempts", json_object_new_int(it->attempts));
        json_object_object_add(o, "last_error", it->last_error ? json_object_new_string(it->last_error) : NULL);
        json_object_object_add(o, "result", json_object_get(it->result));
        json_object_object_add(o, "created", json_object_new_string(format_rfc3339(it->created, ts)));
        json_object_object_add(o, "updated", json_object_new_string(format_rfc3339(it->updated, ts)));
        json_object_object_add(o, "next_attempt",
                               !intent_state_is_final(it->state) && it->next_attempt
                                       ? json_object_new_string(format_rfc3339(it->next_attempt, ts))
                                       : NULL);
        return o;
}

static int prepare(struct journal *j, const char *sql, sqlite3_stmt **ret) {
        int rc = sqlite3_prepare_v2(journal_db(j), sql, -1, ret, NULL);

        if (rc != SQLITE_OK) {
                log_error("journal: cannot prepare statement: %s", sqlite3_errmsg(journal_db(j)));
                return journal_errno(rc);
        }
        return 0;
}

static int step_once(struct journal *j, sqlite3_stmt *s) {
        int rc = sqlite3_step(s);

        if (rc != SQLITE_DONE)
                log_error("journal: %s", sqlite3_errmsg(journal_db(j)));
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? 0 : journal_errno(rc) ?: -EIO;
}

static void bind_text(sqlite3_stmt *s, int p, const char *v) {
        if (v)
                sqlite3_bind_text(s, p, v, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(s, p);
}

static void bind_json(sqlite3_stmt *s, int p, json_object *o) {
        if (o)
                sqlite3_bind_text(s, p, json_object_to_json_string_ext(o, JSON_PLAIN), -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(s, p);
}

static char *col_str(sqlite3_stmt *s, int c, bool *oom) {
        const char *v = (const char *) sqlite3_column_text(s, c);
        char *r;

        if (!v)
                return NULL;
        r = strdup(v);
        if (!r)
                *oom = true;
        return r;
}

int vstore_load_volumes(struct journal *j, int (*fn)(struct volume *v, void *userdata), void *userdata) {
        sqlite3_stmt *s;
        int rc, r;

        r = prepare(j,
                    "SELECT name, state, size_bytes, backing_file, fs_type, fs_label, created, updated "
                    "FROM volumes ORDER BY name",
                    &s);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct volume *v = calloc(1, sizeof(*v));
                bool oom = !v;

                if (v) {
                        v->name = col_str(s, 0, &oom);
                        v->state = col_str(s, 1, &oom);
                        v->size_bytes = (uint64_t) sqlite3_column_int64(s, 2);
                        v->backing_file = col_str(s, 3, &oom);
                        v->fs_type = col_str(s, 4, &oom);
                        v->fs_label = col_str(s, 5, &oom);
                        v->created = sqlite3_column_int64(s, 6);
                        v->updated = sqlite3_column_int64(s, 7);
                }
                if (oom || !v->name || !v->state || !v->backing_file) {
                        volume_free(v);
                        r = -ENOMEM;
                        break;
                }
                r = fn(v, userdata);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = journal_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

int vstore_put_volume(struct journal *j, const struct volume *v) {
        sqlite3_stmt *s;
        int r = prepare(j,
                        "INSERT OR REPLACE INTO volumes (name, state, size_bytes, backing_file, fs_type, fs_label, "
                        "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        &s);

        if (r < 0)
                return r;
        bind_text(s, 1, v->name);
        bind_text(s, 2, v->state);
        sqlite3_bind_int64(s, 3, (int64_t) v->size_bytes);
        bind_text(s, 4, v->backing_file);
        bind_text(s, 5, v->fs_type);
        bind_text(s, 6, v->fs_label);
        sqlite3_bind_int64(s, 7, v->created);
        sqlite3_bind_int64(s, 8, v->updated);
        return step_once(j, s);
}

int vstore_delete_volume(struct journal *j, const char *name) {
        sqlite3_stmt *s;
        int r = prepare(j, "DELETE FROM volumes WHERE name = ?", &s);

        if (r < 0)
                return r;
        bind_text(s, 1, name);
        return step_once(j, s);
}

static void bind_intent(sqlite3_stmt *s, const struct intent *it) {
        bind_text(s, 1, it->op);
        bind_text(s, 2, it->target);
        bind_json(s, 3, it->params);
        bind_text(s, 4, it->key);
        bind_text(s, 5, intent_state_to_string(it->state));
        sqlite3_bind_int(s, 6, it->step);
        sqlite3_bind_int(s, 7, it->attempts);
        bind_text(s, 8, it->last_error);
        bind_json(s, 9, it->result);
        sqlite3_bind_int64(s, 10, it->created);
        sqlite3_bind_int64(s, 11, it->updated);
        sqlite3_bind_int64(s, 12, it->next_attempt);
}

int vstore_insert_intent(struct journal *j, struct intent *it) {
        sqlite3_stmt *s;
        int r = prepare(j,
                        "INSERT INTO intents (op, target, params, idempotency_key, state, step, attempts, last_error, "
                        "result, created, updated, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        &s);

        if (r < 0)
                return r;
        bind_intent(s, it);
        r = step_once(j, s);
        if (r == 0)
                it->id = sqlite3_last_insert_rowid(journal_db(j));
        return r;
}

int vstore_update_intent(struct journal *j, const struct intent *it) {
        sqlite3_stmt *s;
        int r = prepare(j,
                        "UPDATE intents SET op = ?, target = ?, params = ?, idempotency_key = ?, state = ?, step = ?, "
                        "attempts = ?, last_error = ?, result = ?, created = ?, updated = ?, next_attempt = ? "
                        "WHERE id = ?",
                        &s);

        if (r < 0)
                return r;
        bind_intent(s, it);
        sqlite3_bind_int64(s, 13, it->id);
        return step_once(j, s);
}

#define INTENT_COLUMNS                                                                                 \
        "id, op, target, params, idempotency_key, state, step, attempts, last_error, result, created, " \
        "updated, next_attempt"

static int read_intent(sqlite3_stmt *s, struct intent **ret) {
        struct intent *it = calloc(1, sizeof(*it));
        const char *params, *result;
        bool oom = !it;
        int st;

        if (!it)
                return -ENOMEM;
        it->id = sqlite3_column_int64(s, 0);
        it->op = col_str(s, 1, &oom);
        it->target = col_str(s, 2, &oom);
        params = (const char *) sqlite3_column_text(s, 3);
        it->params = params ? json_tokener_parse(params) : NULL;
        if (!it->params || !json_object_is_type(it->params, json_type_object)) {
                json_object_put(it->params);
                it->params = json_object_new_object();
        }
        it->key = col_str(s, 4, &oom);
        st = intent_state_from_string((const char *) sqlite3_column_text(s, 5));
        it->state = st < 0 ? INTENT_FAILED : (enum intent_state) st;
        it->step = sqlite3_column_int(s, 6);
        it->attempts = sqlite3_column_int(s, 7);
        it->last_error = col_str(s, 8, &oom);
        result = (const char *) sqlite3_column_text(s, 9);
        it->result = result ? json_tokener_parse(result) : NULL;
        it->created = sqlite3_column_int64(s, 10);
        it->updated = sqlite3_column_int64(s, 11);
        it->next_attempt = sqlite3_column_int64(s, 12);
        if (oom || !it->op || !it->target || !it->params) {
                intent_free(it);
                return -ENOMEM;
        }
        *ret = it;
        return 0;
}

int vstore_load_intents(struct journal *j, bool unfinished_only, int64_t limit,
                        int (*fn)(struct intent *it, void *userdata), void *userdata) {
        sqlite3_stmt *s;
        int rc, r;

        r = prepare(j,
                    unfinished_only ? "SELECT " INTENT_COLUMNS " FROM intents WHERE state IN ('pending', 'running') "
                                      "ORDER BY id"
                                    : "SELECT * FROM (SELECT " INTENT_COLUMNS " FROM intents ORDER BY id DESC "
                                      "LIMIT ?) ORDER BY id",
                    &s);
        if (r < 0)
                return r;
        if (!unfinished_only)
                sqlite3_bind_int64(s, 1, limit > 0 ? limit : -1);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct intent *it;

                r = read_intent(s, &it);
                if (r < 0)
                        break;
                r = fn(it, userdata);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = journal_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

static int query_one(struct journal *j, sqlite3_stmt *s, struct intent **ret) {
        int rc = sqlite3_step(s), r = 0;

        *ret = NULL;
        if (rc == SQLITE_ROW)
                r = read_intent(s, ret);
        else if (rc != SQLITE_DONE)
                r = journal_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

int vstore_last_intent(struct journal *j, const char *target, const char *op, struct intent **ret) {
        sqlite3_stmt *s;
        int r = prepare(j,
                        op ? "SELECT " INTENT_COLUMNS " FROM intents WHERE target = ? AND op = ? ORDER BY id DESC LIMIT 1"
                           : "SELECT " INTENT_COLUMNS " FROM intents WHERE target = ? ORDER BY id DESC LIMIT 1",
                        &s);

        if (r < 0)
                return r;
        bind_text(s, 1, target);
        if (op)
                bind_text(s, 2, op);
        return query_one(j, s, ret);
}

int vstore_intent_by_key(struct journal *j, const char *key, struct intent **ret) {
        sqlite3_stmt *s;
        int r = prepare(j, "SELECT " INTENT_COLUMNS " FROM intents WHERE idempotency_key = ?", &s);

        if (r < 0)
                return r;
        bind_text(s, 1, key);
        return query_one(j, s, ret);
}
