/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The ledger: every device record, kept in memory as a cache of the journal's devices
 * table, and the one place where observations become records and events.
 *
 * ledger_apply() takes a batch of observations and, in one journal transaction, matches
 * each to a record by identity (never by kernel name), writes what changed together with
 * the events that describe it, and only then lets the in-memory copy show it. If the
 * transaction fails the copy is reloaded from the journal: what clients see is always
 * what is committed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "journal.h"

struct ledger {
        struct journal *journal;
        struct device_record **recs;
        size_t n_recs;
};

/* What was seen at one kernel name: a device (record carries identity and facts, its id
 * and times are ignored), or nothing (observed == NULL: removed, detached, out of scope). */
struct ledger_item {
        char *kname;
        struct device_record *observed;
};

struct ledger_stats {
        unsigned checked;
        unsigned appeared;
        unsigned changed;
        unsigned disappeared;
};

int ledger_load(struct ledger *l, struct journal *j);
void ledger_done(struct ledger *l);

/* full: the batch is everything present (a full scan): records present in the ledger
 * but absent from the batch are gone. Stats are added to *stats when non-NULL. */
int ledger_apply(struct ledger *l, const struct ledger_item *items, size_t n_items, bool full,
                 int64_t now, struct ledger_stats *stats);

size_t ledger_count_present(const struct ledger *l);
struct device_record *ledger_find_by_id(const struct ledger *l, int64_t id);
/* By kernel name, device node or "MAJ:MIN"; present records win over gone ones, then
 * the most recently seen. */
struct device_record *ledger_find_by_name(const struct ledger *l, const char *name);

void ledger_item_done(struct ledger_item *item);
