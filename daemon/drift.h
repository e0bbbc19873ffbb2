/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Expectations and drift.
 *
 * An expectation is the ledger's own truth about what should be: "the device with this
 * serial (WWN, filesystem UUID, loop file) is there, carries this filesystem and label,
 * and is at least this big". Drift is every difference the reconciler can see, between
 * desired and actual (missing, unexpected_fs, label_mismatch, too_small) or between
 * devices that should be distinguishable (identity_conflict, duplicate_uuid).
 *
 * drift_compute() derives the drift that exists now from the ledger and the expectations
 * alone (pure, level-triggered); drift_sync() compares it with the drift recorded as open
 * and writes the difference: items that appear are opened, items that no longer hold are
 * closed, each with an event. Nothing here changes a device. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

struct journal;
struct ledger;

struct expectation {
        char *name;
        char *match_kind;  /* "serial", "wwn", "fs_uuid" or "loop_file" */
        char *match_value;
        char *fs_type;     /* NULL: no wish */
        char *fs_label;    /* NULL: no wish */
        int64_t min_size;  /* bytes; FIELD_NULL: no wish */
        int64_t created;   /* usec */
        char *on_appear;   /* "format-if-blank:TYPE" or "run:/PROGRAM", NULL: nothing */
};

void expectation_free(struct expectation *e);
bool expectation_match_kind_valid(const char *kind);
bool expectation_matches(const struct expectation *e, const struct device_record *r);
json_object *expectation_to_json(const struct expectation *e);

struct drift_item {
        int64_t id;         /* in the journal; 0 until opened */
        char *kind;
        char *name;         /* the expectation's or the device's name, or NULL */
        int64_t device_id;  /* 0: none */
        int64_t since;      /* usec */
        json_object *detail;
        bool stale;         /* in memory: its expectation was replaced; reopen if it holds */
};

void drift_item_free(struct drift_item *d);
json_object *drift_item_to_json(const struct drift_item *d);

struct drift_state {
        struct expectation **exps;
        size_t n_exps;
        struct drift_item **open;
        size_t n_open;
        /* Drift other modules find (volumes: orphans, missing files, failed intents),
         * part of every drift_compute() until replaced. */
        struct drift_item **extra;
        size_t n_extra;
};

int drift_load(struct drift_state *ds, struct journal *j);
void drift_done(struct drift_state *ds);

struct expectation *drift_find_expectation(const struct drift_state *ds, const char *name);
/* Takes ownership of e (on success only), replacing an expectation of the same name.
 * Journal first. */
int drift_put_expectation(struct drift_state *ds, struct journal *j, struct expectation *e);
int drift_remove_expectation(struct drift_state *ds, struct journal *j, const char *name);

/* Replaces the extra items (takes ownership of items and of each item). */
void drift_set_extra(struct drift_state *ds, struct drift_item **items, size_t n);
/* A new item for drift_set_extra(); takes detail. NULL without memory. */
struct drift_item *drift_item_new(const char *kind, const char *name, int64_t device_id, json_object *detail);

/* The drift there is now, from the present records and the expectations. */
int drift_compute(const struct drift_state *ds, const struct ledger *l, struct drift_item ***ret, size_t *ret_n);

/* Brings the open drift in line with drift_compute() in one transaction; counts what
 * was opened and closed. */
int drift_sync(struct drift_state *ds, struct journal *j, const struct ledger *l, int64_t now,
               unsigned *ret_opened, unsigned *ret_closed);

/* Kinds of the open drift of one device, as a new JSON array. */
json_object *drift_kinds_of_device(const struct drift_state *ds, int64_t device_id);
