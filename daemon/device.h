/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Device records: the facts the ledger keeps about one block device, how they are read
 * from an observation, how two versions differ, and how they look in JSON.
 *
 * DEVICE_FIELDS is the one list of observed facts: the journal's columns, the JSON
 * members, the diff and the Varlink type Device all follow it. Adding a fact means adding
 * it here, in a journal migration and in io.blkledger.varlink. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "observation.h"

/* X(name, TYPE): STR is char * (NULL = null), INT and BOOL are int64_t (FIELD_NULL =
 * null), STRV is a NULL-terminated char ** (never null; empty = no entries). */
#define DEVICE_FIELDS(X)                                                                  \
        X(kname, STR)                                                                     \
        X(devnode, STR)                                                                   \
        X(dev, STR)                                                                       \
        X(devtype, STR)                                                                   \
        X(size_bytes, INT)                                                                \
        X(read_only, BOOL)                                                                \
        X(removable, BOOL)                                                                \
        X(rotational, BOOL)                                                               \
        X(logical_block_size, INT)                                                        \
        X(physical_block_size, INT)                                                       \
        X(model, STR)                                                                     \
        X(serial, STR)                                                                    \
        X(wwn, STR)                                                                       \
        X(diskseq, INT)                                                                   \
        X(fs_type, STR)                                                                   \
        X(fs_uuid, STR)                                                                   \
        X(fs_label, STR)                                                                  \
        X(fs_version, STR)                                                                \
        X(fs_usage, STR)                                                                  \
        X(pt_type, STR)                                                                   \
        X(pt_uuid, STR)                                                                   \
        X(part_number, INT)                                                               \
        X(part_uuid, STR)                                                                 \
        X(parent, STR)                                                                    \
        X(holders, STRV)                                                                  \
        X(loop_backing_file, STR)                                                         \
        X(id_path, STR)

#define FIELD_NULL INT64_MIN

#define FIELD_CTYPE_STR char *
#define FIELD_CTYPE_INT int64_t
#define FIELD_CTYPE_BOOL int64_t
#define FIELD_CTYPE_STRV char **

struct device_facts {
#define X(name, type) FIELD_CTYPE_##type name;
        DEVICE_FIELDS(X)
#undef X
};

enum field_type { FIELD_STR, FIELD_INT, FIELD_BOOL, FIELD_STRV };

struct field_desc {
        const char *name;
        enum field_type type;
        size_t offset;
};

extern const struct field_desc device_fields[];
extern const size_t device_fields_count;

struct device_record;

enum device_state { DEVICE_PRESENT, DEVICE_GONE };
const char *device_state_to_string(enum device_state s);
/* What clients see: "present", "gone", or "unresponsive" (present, not answering). */
const char *device_record_state_string(const struct device_record *r);
int device_state_from_string(const char *s);

struct device_record {
        int64_t id;             /* ledger id; 0 until inserted */
        char *identity;         /* matching key, see identity.c */
        char *identity_aux;     /* qualifies the key (a loop file's birth time); NULL = unknown */
        char *name;             /* the ledger's name for the device, NULL = none */
        enum device_state state;
        int64_t first_seen;     /* usec since the epoch */
        int64_t last_seen;      /* last time it was seen present */
        int64_t last_verified;  /* last time the ledger checked it against reality; 0 = never */
        uint64_t verified_pass; /* in memory: ledger generation that last checked it; 0 = not
                                 * since this daemon started */
        bool displaced;         /* in memory, during a pass: its place shows something else;
                                 * found elsewhere later in the pass, or gone at its sweep */
        int64_t unresponsive_since; /* present but not answering reads since then; 0 = answers.
                                     * On an observation: non-zero = the probe timed out */
        bool udev_synced;       /* in memory: udev was asked to re-read the name below */
        char *udev_name;        /* in memory: the name udev last got (its by-ledger link) */
        struct device_facts facts;
};

/* An empty set of facts: every field null. */
void device_facts_init(struct device_facts *f);
void device_facts_done(struct device_facts *f);
int device_facts_copy(struct device_facts *dst, const struct device_facts *src);

/* Reads the facts from an observation (pure: no I/O). */
int device_facts_from_observation(const struct observation *o, struct device_facts *ret);

/* Whether the observation is a device at all: a loop node with nothing attached is not. */
bool observation_is_device(const struct observation *o);

/* Compares two sets of facts. Returns the number of fields that differ and, when
 * ret_before/ret_after are non-NULL, JSON objects holding the old and new values of
 * exactly those fields. */
int device_facts_diff(const struct device_facts *old, const struct device_facts *new,
                      json_object **ret_before, json_object **ret_after);

/* Adds every field as a member of obj (null for absent values). */
int device_facts_to_json(const struct device_facts *f, json_object *obj);
/* The record as clients see it. drift (may be NULL) lists the kinds of open drift of the
 * device; it is borrowed. */
json_object *device_record_to_json(const struct device_record *r, json_object *drift);

/* Field access by descriptor, for the journal's generic binding. */
static inline void *device_field_ptr(struct device_facts *f, const struct field_desc *d) {
        return (char *) f + d->offset;
}
static inline const void *device_field_cptr(const struct device_facts *f, const struct field_desc *d) {
        return (const char *) f + d->offset;
}
json_object *device_field_to_json(const struct device_facts *f, const struct field_desc *d);

void device_record_free(struct device_record *r);

/* "naa.5000C500A1B2C3D4" (sysfs) and "0x5000c500a1b2c3d4" (udev) spelled one way. */
char *wwn_normalize(const char *w);

/* String vectors. */
size_t strv_length(char *const *v);
void strv_free(char **v);
char **strv_copy(char *const *v);
bool strv_equal(char *const *a, char *const *b);
