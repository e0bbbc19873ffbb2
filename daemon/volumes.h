/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Managed volumes and the intent journal (rule 2 of DESIGN.md).
 *
 * A volume has three sources of truth: its row (volumes table: the desired state), its
 * backing file VOLUME_DIR/NAME.img, and its loop device in the kernel. The row never
 * records which loop device holds the file; the kernel is asked (loopdev.c).
 *
 * Every action is an intent: written in the same transaction as the state it changes,
 * carried out step by step (each step records that it is done, and each checks whether
 * its effect already exists before acting, so a replay is safe), and ended in the same
 * transaction as the final state. One intent runs at a time. At start, unfinished
 * intents are carried on from their last recorded step; failures are retried with
 * backoff, and a create that cannot succeed is rolled back (file removed, loop device
 * detached, row deleted). */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "journal.h"

struct daemon;
struct server_call;

struct volume {
        char *name;
        char *state; /* creating attached detached resizing deleting failed */
        uint64_t size_bytes;
        char *backing_file;
        char *fs_type, *fs_label; /* what it was made with; NULL when raw */
        int64_t created, updated;
};

enum intent_state {
        INTENT_PENDING,
        INTENT_RUNNING,
        INTENT_SUCCEEDED,
        INTENT_FAILED,
        INTENT_ROLLED_BACK,
        _INTENT_STATE_MAX,
};

struct intent {
        int64_t id;
        char *op;     /* "volume.create", ... */
        char *target; /* the volume's name */
        json_object *params;
        char *key;    /* idempotency key, or NULL */
        enum intent_state state;
        int step;     /* steps done */
        int attempts;
        char *last_error;
        json_object *result; /* NULL, or what the action found worth saying */
        int64_t created, updated;
        int64_t next_attempt; /* realtime usec; 0: at once */
};

const char *intent_state_to_string(enum intent_state s);
int intent_state_from_string(const char *s);
bool intent_state_is_final(enum intent_state s);
void intent_free(struct intent *it);
static inline void intent_freep(struct intent **p) {
        intent_free(*p);
}
json_object *intent_to_json(const struct intent *it);
void volume_free(struct volume *v);

/* volume-store.c: the two tables. Loaders pass ownership to fn. */
int vstore_load_volumes(struct journal *j, int (*fn)(struct volume *v, void *userdata), void *userdata);
int vstore_put_volume(struct journal *j, const struct volume *v);
int vstore_delete_volume(struct journal *j, const char *name);
int vstore_insert_intent(struct journal *j, struct intent *it); /* sets it->id */
int vstore_update_intent(struct journal *j, const struct intent *it);
/* Unfinished intents (pending, running) in id order; or all, newest limit ones. */
int vstore_load_intents(struct journal *j, bool unfinished_only, int64_t limit,
                        int (*fn)(struct intent *it, void *userdata), void *userdata);
/* The newest intent on target (of op, when op is non-NULL); *ret NULL when none. */
int vstore_last_intent(struct journal *j, const char *target, const char *op, struct intent **ret);
int vstore_intent_by_key(struct journal *j, const char *key, struct intent **ret);

/* volumes.c */
struct volumes;
/* Loads volumes and unfinished intents; dir is created (0700) if missing. */
int volumes_new(struct daemon *d, const char *dir, struct volumes **ret);
struct volumes *volumes_free(struct volumes *vs);
/* Reads the volumes table again (after an import); -EBUSY while an intent is open. */
int volumes_reload(struct volumes *vs);
/* Starts carrying on unfinished intents (after the daemon serves). */
void volumes_start(struct volumes *vs);
/* Once a second: due retries. */
void volumes_tick(struct volumes *vs);
/* After every pass: volumes that should be attached and are not get an attach intent. */
void volumes_after_pass(struct volumes *vs);
/* After the ledger changed: devices of attached volumes get the volume's name. */
void volumes_name_devices(struct volumes *vs);
/* After a commit: on_appear actions of expectations for devices that appeared. */
void volumes_after_commit(struct volumes *vs);
/* An expectation was set or removed. */
void volumes_expectations_changed(struct volumes *vs);
/* Checks an on_appear action ("format-if-blank:TYPE", "run:/PROGRAM"); -EINVAL with
 * an allocated reason. */
int volumes_check_action(const char *spec, char **ret_why);
/* A udev rule's ENV{BLKLEDGER_ON_ADD} on a device that was added (seqnum: udev's). */
struct device_record;
int volumes_udev_action(struct volumes *vs, const struct device_record *rec, const char *action, uint64_t seqnum);
/* An on-demand reconcile: retry due work at once. */
void volumes_retry_now(struct volumes *vs);
/* The name of the volume whose backing file is path, or NULL. */
const char *volumes_name_of_file(struct volumes *vs, const char *path);
size_t volumes_count(const struct volumes *vs);
const char *volumes_dir(const struct volumes *vs);
size_t volumes_unfinished(const struct volumes *vs);

/* Every crash point of every action (for --list-crash-points). */
void volumes_crash_points(void (*fn)(const char *name));

/* Methods (lib/io.blkledger.varlink). */
struct client;
int method_create_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_list_volumes(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_get_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_resize_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_attach_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_detach_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_delete_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_adopt_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_forget_volume(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_list_intents(struct client *c, json_object *params, unsigned flags, void *userdata);
