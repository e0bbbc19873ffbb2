/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Online backups of the ledger (SQLite's backup API), rotated. */
#pragma once

#include <stdint.h>

#include "journal.h"

/* Writes a consistent copy of the journal to STATE_DIR/backups/ledger-TIME.db (0600,
 * synced, complete once it has its name) and keeps the newest keep backups (0: all).
 * *ret_path (may be NULL) gets the file's path. */
int backup_journal(struct journal *j, const char *state_dir, unsigned keep, int64_t now, char **ret_path);

/* DIR/ledger-YYYYMMDDTHHMMSSZ.db for now, with -NN added while such a file exists. */
int backup_unique_path(const char *dir, int64_t now, char **ret);
