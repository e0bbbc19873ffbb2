/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Command line of blkledgerd. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "monitor.h"
#include "scope.h"
#include "server.h"

/* One setting as given, from the configuration file or the command line. */
struct option_setting {
        const char *name;  /* the long option's name (static) */
        char *value;       /* as written; NULL for a flag on the command line */
        bool from_command_line;
};

struct options {
        bool foreground;
        char *state_dir;
        char *socket_path;
        struct scope scope;
        char **scope_specs; /* as given, for status */
        unsigned n_scope_specs;
        int log_level;
        enum event_source event_source;
        int rcvbuf;                /* bytes, 0 = leave the kernel's default */
        int64_t rescan_interval;   /* usec between periodic full scans, 0 = never */
        struct server_limits limits;
        char *observe;             /* --observe DEVICE: print one observation and exit */
        int64_t initial_pass_delay; /* usec the first pass waits (tests of unverified state) */
        unsigned pass_chunk;        /* devices a pass observes per loop iteration */
        int64_t probe_timeout;      /* usec a device read may take */
        unsigned probe_workers;     /* libblkid threads */
        unsigned probe_concurrency; /* devices read at once */
        char *volume_dir;           /* backing files of managed volumes */
        int64_t hook_timeout;       /* usec an on_appear run: program may take */
        int64_t backup_interval;    /* usec between scheduled backups, 0 = none */
        unsigned backup_keep;       /* backups kept, 0 = all */
        int64_t event_max_age;      /* usec an event is kept, 0 = no limit */
        int64_t event_max_count;    /* newest events always kept, 0 = no limit */
        bool list_crash_points;     /* --list-crash-points: print them and exit */
        char *config_path;          /* --config FILE, else the default file */
        bool config_must_exist;     /* --config was given: a missing file is an error */
        bool config_loaded;         /* config_path was read (the default may be missing) */
        /* Every setting in force, in order: what a reload compares (config-file.c). */
        struct option_setting *settings;
        unsigned n_settings;
};

/* Returns 0 to run, 1 when --help or --version was printed, negative errno on a bad
 * command line (the message is in *ret_error). Call options_done() in every case. */
int options_parse(int argc, char **argv, struct options *ret, char **ret_error);
/* The defaults only. */
void options_init(struct options *o);
/* Sets the option NAME (a long option's name; not --help, --version, --observe,
 * --list-crash-points or --config) to VALUE, checked as on the command line; a flag takes
 * yes or no. -ENOENT for no such setting, -EINVAL for a bad value, with a message. */
int options_set(struct options *o, const char *name, const char *value, char **ret_error);
/* Reads everything again as at start: defaults, the same file, the same command line
 * over it. Call options_done() on ret in every case. */
int options_reload(const struct options *current, struct options *ret, char **ret_error);
void options_done(struct options *o);
