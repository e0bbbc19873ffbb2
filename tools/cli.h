/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The blkledger command line: parsing (cli-args.c) and text output (output.c), kept apart
 * from the commands so both can be unit-tested without a daemon. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum cli_command {
        CMD_LIST,
        CMD_SHOW,
        CMD_HISTORY,
        CMD_WATCH,
        CMD_STATUS,
        CMD_RECONCILE,
        CMD_NAME,
        CMD_EXPECT,
        CMD_UNEXPECT,
        CMD_EXPECTATIONS,
        CMD_DRIFT,
        CMD_VOLUME_CREATE,
        CMD_VOLUME_LIST,
        CMD_VOLUME_SHOW,
        CMD_VOLUME_RESIZE,
        CMD_VOLUME_ATTACH,
        CMD_VOLUME_DETACH,
        CMD_VOLUME_DELETE,
        CMD_VOLUME_ADOPT,
        CMD_VOLUME_FORGET,
        CMD_INTENTS,
        CMD_BACKUP,
        CMD_EXPORT,
        CMD_CHECK,
        CMD_IMPORT,
};

struct cli_args {
        enum cli_command command;
        char *socket;  /* NULL: libblkledger's default ($BLKLEDGER_SOCKET or the system path) */
        bool json;
        bool no_legend;
        char *device;  /* show, history, name */
        char *name;    /* name, expect, unexpect */
        bool remove;   /* name --remove */
        char *state;   /* list --state */
        int64_t since; /* history, watch; -1 = not given */
        int64_t limit; /* history; 0 = all */
        char *match_kind;  /* expect: serial, wwn, fs_uuid, loop_file */
        char *match_value;
        char *fs_type;     /* expect; volume create --fs */
        char *fs_label;    /* expect; volume create --label */
        int64_t min_size;  /* expect; -1 = not given */
        int64_t size;      /* volume create, resize; -1 = not given */
        bool force;        /* volume detach, delete; import */
        bool keep_file;    /* volume delete */
        bool unfinished;   /* intents */
        char *idempotency_key; /* volume actions */
        char *on_appear;   /* expect */
        bool yes;          /* import: apply without asking */
};

/* Returns 0 to run, 1 when help or the version was printed, -EINVAL for a bad command
 * line (message in *ret_error). Call cli_args_done() in every case. */
int cli_parse(int argc, char **argv, struct cli_args *ret, char **ret_error);
void cli_args_done(struct cli_args *a);

/* "4096", "64M", "1.5G" (binary units) to bytes. */
int cli_parse_size(const char *s, int64_t *ret);

/* Terminal-safe copy: control characters and invalid UTF-8 become \xNN. */
char *cli_escape(const char *s);
/* Columns a string takes on a terminal (code points; escapes counted as printed). */
size_t cli_width(const char *s);

struct table;
struct table *table_new(const char *const *headers, size_t n_columns);
/* Adds one row; cells may be NULL (printed as "-"). Right-aligned columns: flag bits. */
int table_add_row(struct table *t, const char *const *cells);
void table_set_right_aligned(struct table *t, size_t column);
void table_print(struct table *t, FILE *f, bool legend);
void table_free(struct table *t);

/* One line describing an event: "changed size_bytes 64M -> 128M, fs_label a -> b". */
char *cli_event_details(json_object *event);
