/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A corrupt ledger at start: detected without writing to it, moved aside, replaced by
 * the newest sound backup; or a refusal to start that says how to recover by hand. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

struct recovery {
        int64_t time; /* realtime usec */
        char *reason;
        char *moved_to;      /* where the corrupt file went */
        char *restored_from; /* the backup now in its place */
};

/* 0 when path is a sound SQLite database (or empty), -EBADMSG when it is corrupt
 * (*ret_reason says how, may be NULL), another negative errno when it cannot be read.
 * Never writes to path; read_only for files without a write-ahead log (backups). */
int ledger_file_check(const char *path, bool read_only, char **ret_reason);

/* Moves the corrupt ledger at path aside into STATE/corrupt/ and puts the newest sound
 * backup of STATE/backups/ in its place. -EBADMSG when no backup is sound: then path
 * is left as it was and *ret_error is the one-line refusal naming the manual steps. */
int recovery_restore(const char *state_dir, const char *path, const char *reason, int64_t now,
                     struct recovery *ret, char **ret_error);
void recovery_done(struct recovery *rec);
/* A copy fit for a log line and for JSON: at most 200 bytes, printable ASCII. */
char *recovery_clean_text(const char *s);
json_object *recovery_to_json(const struct recovery *rec);
