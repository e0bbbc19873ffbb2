/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Inside the volumes module (volumes.c, volume-methods.c, device-actions.c): the
 * action runner's types and the helpers the three files share. Not for other modules:
 * they use volumes.h. */
#pragma once

#include "child.h"
#include "daemon.h"
#include "util.h"
#include "volumes.h"

#define TOOL_TIMEOUT_USEC (600 * USEC_PER_SEC)
#define LABEL_MAX 64
#define INTENTS_PAGE_DEFAULT 100
#define INTENTS_PAGE_MAX 10000

struct action;
struct volumes;

/* Returns 0 when the step's effect exists, 1 when a child process was started (the step
 * goes on in vol_step_child_done), or negative errno with a->error set. */
typedef int (*step_fn)(struct volumes *vs, struct action *a);

struct step_def {
        const char *name;
        step_fn fn;
        bool runs_child;
};

struct op_def {
        const char *name;
        const struct step_def *steps;
        unsigned n_steps;
        /* The row as it is once the intent succeeded (NULL row: deleted). */
        void (*finish)(struct volumes *vs, struct action *a, struct volume *v);
        /* Undoes what the steps did, for an intent that cannot succeed; NULL: the state
         * before the intent is restored as far as the steps allow. */
        int (*undo)(struct volumes *vs, struct action *a);
        /* The row after a failure half-way (NULL: state "failed"). */
        void (*partial)(struct volumes *vs, struct action *a, struct volume *v);
        /* Not repeated after a failure (hooks: a program may not be idempotent). */
        bool no_retry;
        /* The intent made the row: failing before any step is done removes it. */
        bool new_row;
};

struct action {
        struct intent *it;
        const struct op_def *op;
        struct child *child;
        int stage;        /* within a step that runs several children */
        char prog[64];    /* the tool the child runs, for messages */
        char *error;      /* why the current step failed */
        bool permanent;   /* a retry would fail the same way */
};

struct waiter {
        int64_t intent_id;
        struct server_call *call;
        bool delete_reply; /* the volume is gone on success: reply {} */
        struct waiter *next;
};

struct volumes {
        struct daemon *d;
        char *dir;
        struct volume **vols;
        size_t n_vols;
        struct intent **open; /* unfinished, by id */
        size_t n_open;
        struct action *running;
        struct waiter *waiters;
        struct ev_defer kick;
        bool started;
        int64_t event_cursor; /* events up to here were looked at for on_appear actions */
};

/* mkfs of a filesystem type, and its options. */
struct vol_fs_tool {
        const char *type, *mkfs, *force, *quiet, *label_opt;
};

/* volumes.c: the model in memory (a write-through cache of the tables). */
struct volume *vol_find(struct volumes *vs, const char *name);
struct intent *vol_open_intent(struct volumes *vs, const char *target);
/* Loader callbacks and list upkeep; vol_add takes v. */
int vol_add(struct volume *v, void *userdata);
void vol_remove(struct volumes *vs, const char *name);
int vol_add_open(struct intent *it, void *userdata);
struct volume *vol_copy(const struct volume *v);
int vol_set_str(char **field, const char *value);
json_object *vol_to_json(struct volumes *vs, const struct volume *v);

/* volumes.c: intents. */
const char *vol_param_str(const struct intent *it, const char *key);
int64_t vol_param_int(const struct intent *it, const char *key);
bool vol_param_bool(const struct intent *it, const char *key);
void vol_set_error(struct action *a, bool permanent, const char *fmt, ...) _printf_(3, 4);
void vol_set_result(struct action *a, const char *key, json_object *value);
/* Writes the intent (and the volume row, or its removal) in one transaction. */
int vol_commit_intent(struct volumes *vs, struct intent *it, const struct volume *v, const char *delete_name,
                      bool event);
/* Writes the intent with row (the volume as it is while the intent runs; taken over,
 * also on failure) and queues it. -EEXIST: the idempotency key is taken. */
int vol_start_intent(struct volumes *vs, const char *op, const char *target, json_object *params, const char *key,
                     struct volume *row, struct intent **ret);

/* volumes.c: steps and tools. */
char *vol_find_program(const char *name);
const struct vol_fs_tool *vol_fs_tool(const char *type);
/* The loop device holding the volume's file: 1 with kname set, 0 none, or -errno. */
int vol_attached_kname(const struct volume *v, char kname[static 32]);
/* Starts argv (argv[0] the absolute path) as the action's child; returns 1. */
int vol_run_tool(struct volumes *vs, struct action *a, char **argv);
void vol_step_child_done(struct child *c, int status, bool timed_out, const char *output, void *userdata);
void vol_crash_step(const struct action *a, unsigned step, const char *when);

/* device-actions.c: the steps of the on_appear actions. */
int dev_step_blank(struct volumes *vs, struct action *a);
int dev_step_format(struct volumes *vs, struct action *a);
int dev_step_run(struct volumes *vs, struct action *a);
void dev_finish_nothing(struct volumes *vs, struct action *a, struct volume *v);
bool dev_any_on_appear(struct volumes *vs);
