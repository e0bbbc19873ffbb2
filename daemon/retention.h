/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Bounded history: old events are pruned by age (--event-max-age) and by count
 * (--event-max-count), a bounded batch per transaction from the 1 s tick.
 *
 * Never pruned: events of a device with open drift; events of a device, or of a target,
 * with an unfinished (pending or running) intent; the newest event of every device; the
 * drift_opened event of open drift; the newest daemon_started/daemon_stopped (it says
 * whether the last run stopped cleanly); the newest event of all; and, while an
 * expectation has an on_appear action, the events its cursor has not looked at. Those
 * stay on top of the count limit. How many were pruned and when is kept in meta
 * (events_pruned, last_prune). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "journal.h"

#define RETENTION_DEFAULT_MAX_AGE (90LL * 86400 * 1000000) /* usec: 90 days */
#define RETENTION_DEFAULT_MAX_COUNT 1000000LL
#define RETENTION_BATCH 5000

struct retention_policy {
        int64_t max_age;   /* usec an event is kept, 0 = no limit */
        int64_t max_count; /* newest events always kept, 0 = no limit */
        unsigned batch;    /* events looked at per transaction, 0 = RETENTION_BATCH */
};

struct retention;

/* Reads the totals from meta. Free before the journal is closed (it holds statements). */
int retention_new(struct journal *j, const struct retention_policy *p, struct retention **ret);
struct retention *retention_free(struct retention *r);

/* New limits (SIGHUP): the next tick starts a round with them. */
void retention_set_limits(struct retention *r, int64_t max_age, int64_t max_count);

/* From the tick: one batch of a round that runs, or of a new round when one is due
 * (every minute, or when a tenth of the count limit was appended since the last one). */
void retention_tick(struct retention *r, int64_t now_realtime, int64_t now_monotonic);

/* One transaction of a round: looks at up to batch events from where the round is,
 * oldest first, and deletes those the policy lets go. *ret_done when the round reached
 * an event the policy keeps by age and count (or the end). Returns how many it deleted
 * or negative errno (nothing deleted then; the round starts again). */
int retention_step(struct retention *r, int64_t now_realtime, bool *ret_done);
/* A whole round at once (tests); *ret_deleted may be NULL. */
int retention_run(struct retention *r, int64_t now_realtime, uint64_t *ret_deleted);

uint64_t retention_pruned_total(const struct retention *r); /* since the journal began */
int64_t retention_last_prune(const struct retention *r);     /* realtime usec, 0 = never */

/* The statement that looks at a batch (for tests of its query plan). */
extern const char retention_select_sql[];

/* "90d", "12h", "30m", "45s", "2w" or plain seconds; "0" is no limit. */
int retention_parse_age(const char *s, int64_t *ret_usec);
