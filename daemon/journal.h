/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The journal: the ledger's SQLite file (WAL, synchronous=FULL).
 *
 * Tables: devices (one row per device record, keyed by ledger id; its name is the
 * ledger's own), events (append-only history; seq is monotonic and never reused),
 * expectations (desired state, by name), drift (each difference between desired or
 * recorded state and reality, open or closed), meta (the daemon's own small facts).
 * The schema version is PRAGMA user_version; migrations only go forward, one
 * transaction each. A journal written by a newer blkledgerd is refused and not touched.
 * volumes and intents (schema 5) are kept by volume-store.c. */
#pragma once

#include <json-c/json.h>
#include <stdint.h>

#include "device.h"
#include "drift.h"

#define JOURNAL_SCHEMA_VERSION 5

struct journal;

/* Opens or creates the journal at path and migrates it. On failure returns negative
 * errno and, if ret_error is non-NULL, an allocated one-line explanation:
 * -EPROTONOSUPPORT for a newer schema, -EBADMSG for a file that is not a database. */
int journal_open(const char *path, struct journal **ret, char **ret_error);
struct journal_options {
        /* Called with the journal open at its old schema, before migrating it; a
         * negative return stops the open. */
        int (*before_migration)(struct journal *j, int old_version, void *userdata);
        void *userdata;
};
int journal_open_with(const char *path, const struct journal_options *opts, struct journal **ret, char **ret_error);
/* Nonzero (a negative errno: -ENOSPC, -EROFS, -EDQUOT, -EIO) while the storage refuses
 * writes; cleared by the next commit that succeeds. */
int journal_degraded(struct journal *j, int64_t *ret_since);
/* The same, latched: a refusal since the last journal_degraded_ack(), however short
 * (a commit that fits in the log's room may succeed between two that do not). */
int journal_degraded_seen(struct journal *j);
/* What status and the log say for such an errno. */
const char *journal_degraded_reason(int err);
/* PRAGMA integrity_check: appends up to max_problems findings to problems and returns
 * how many (0: sound), or a negative errno when the check itself could not run. */
int journal_integrity_check(struct journal *j, unsigned max_problems, json_object *problems);
void journal_degraded_ack(struct journal *j);
struct journal *journal_close(struct journal *j);
int journal_schema_version(struct journal *j);
const char *journal_path(struct journal *j);
/* For the modules that keep their own tables (volume-store.c): the handle, and SQLite's
 * result codes as negative errno. */
typedef struct sqlite3 sqlite3;
sqlite3 *journal_db(struct journal *j);
int journal_errno(int sqlite_rc);

int journal_begin(struct journal *j);
int journal_commit(struct journal *j);
void journal_rollback(struct journal *j);

/* Calls fn for every device record; fn takes ownership of rec. */
int journal_load_devices(struct journal *j, int (*fn)(struct device_record *rec, void *userdata),
                         void *userdata);
/* Sets rec->id. */
int journal_insert_device(struct journal *j, struct device_record *rec);
int journal_update_device(struct journal *j, const struct device_record *rec);
/* Seen present and checked at now, nothing else changed. */
int journal_touch_device(struct journal *j, int64_t id, int64_t now);
/* A complete pass verified the absence of every gone record at now. */
int journal_touch_gone_devices(struct journal *j, int64_t now);

/* Appends an event; device_id 0 means an event about the daemon. before/after may be
 * NULL and are not consumed. */
int journal_append_event(struct journal *j, int64_t time, int64_t device_id, const char *kind,
                         json_object *before, json_object *after, int64_t *ret_seq);
int64_t journal_last_seq(struct journal *j);
/* Kind of the newest event about the daemon itself (daemon_started, daemon_stopped), or
 * NULL. */
int journal_last_daemon_event(struct journal *j, char **ret_kind);

/* Appends events with seq > since (of one device if device_id > 0), at most limit, to
 * the JSON array. Returns how many were added. */
int journal_list_events(struct journal *j, int64_t since, int64_t limit, int64_t device_id,
                        json_object *array);

/* Expectations (the ledger's desired state); fn takes ownership. */
int journal_load_expectations(struct journal *j, int (*fn)(struct expectation *e, void *userdata),
                              void *userdata);
int journal_put_expectation(struct journal *j, const struct expectation *e);
/* -ENOENT when there is no such expectation. */
int journal_delete_expectation(struct journal *j, const char *name);

/* Drift items: open ones are loaded at start; closing keeps them as history. */
int journal_load_open_drift(struct journal *j, int (*fn)(struct drift_item *d, void *userdata), void *userdata);
int journal_insert_drift(struct journal *j, struct drift_item *d); /* sets d->id */
int journal_close_drift(struct journal *j, int64_t id, int64_t closed);
int journal_update_drift(struct journal *j, int64_t id, const char *name, json_object *detail);

int journal_meta_set(struct journal *j, const char *key, const char *value);
int journal_meta_get(struct journal *j, const char *key, char **ret);
