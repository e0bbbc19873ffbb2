/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The ledger: every device record, kept in memory as a cache of the journal's devices
 * table, and the one place where observations become records and events.
 *
 * ledger_apply() takes a batch of observations and, in one journal transaction, matches
 * each to a record by identity (never by kernel name), writes what changed together with
 * the events that describe it, and only then lets the in-memory copy show it. If the
 * transaction fails the copy is reloaded from the journal: what clients see is always
 * what is committed.
 *
 * Matching, for each observed device (kernel name K, identity I):
 *   1. the record present at K with identity I: the same device, unchanged place;
 *   2. a record present with identity I at another name whose name the batch shows
 *      empty or taken by another device: the device moved ("renamed");
 *   3. the most recently seen gone record with identity I: it came back ("reappeared");
 *   4. else a new record ("appeared").
 * A record is matched at most once, so two present devices with one identity (an image
 * attached twice) stay two records. Present records whose name the batch shows empty or
 * taken by another device are gone ("disappeared") -- except during a pass, which looks
 * at places in an order of its own: there such a record is only displaced, so that a
 * later chunk can still find it moved; the sweep decides on what no chunk found.
 *
 * Freshness: a full pass is a generation. Every record the batch matches, and every
 * record marked gone, is verified in the current generation; ledger_sweep() at the end
 * of a pass marks what the pass did not see as gone and counts the absence of gone
 * records as verified. */
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
        uint64_t generation; /* of the last pass begun; 1 before the first */
        bool in_pass;        /* between ledger_begin_pass() and ledger_sweep() */
};

/* What was seen at one kernel name: a device (record carries identity, its qualifier
 * and the facts; its id, name and times are ignored), or nothing (observed == NULL:
 * removed, detached, out of scope). */
struct ledger_item {
        char *kname;
        struct device_record *observed;
};

struct ledger_stats {
        unsigned checked;
        unsigned appeared;
        unsigned changed;
        unsigned renamed;
        unsigned disappeared;
        unsigned unresponsive; /* observed present but not answering */
};

int ledger_load(struct ledger *l, struct journal *j);
void ledger_done(struct ledger *l);

/* Starts a generation: records not verified again before ledger_sweep() are gone. */
void ledger_begin_pass(struct ledger *l);
int ledger_apply(struct ledger *l, const struct ledger_item *items, size_t n_items, int64_t now,
                 struct ledger_stats *stats);
int ledger_sweep(struct ledger *l, int64_t now, struct ledger_stats *stats);
/* A pass that cannot complete: records it displaced are present at their place again. */
void ledger_abort_pass(struct ledger *l);

/* Gives rec a name (NULL removes it); -EEXIST when another record has it. */
int ledger_set_name(struct ledger *l, struct device_record *rec, const char *name, int64_t now);
bool ledger_name_valid(const char *name);

size_t ledger_count_present(const struct ledger *l);
size_t ledger_count_verified(const struct ledger *l);
struct device_record *ledger_find_by_id(const struct ledger *l, int64_t id);
/* By ledger name, kernel name, device node or "MAJ:MIN"; a ledger name wins, then
 * present records over gone ones, then the most recently seen. */
struct device_record *ledger_find_by_name(const struct ledger *l, const char *name);

void ledger_item_done(struct ledger_item *item);
