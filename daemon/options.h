/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Command line of blkledgerd. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "monitor.h"
#include "scope.h"
#include "server.h"

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
        bool list_crash_points;     /* --list-crash-points: print them and exit */
};

/* Returns 0 to run, 1 when --help or --version was printed, negative errno on a bad
 * command line (the message is in *ret_error). Call options_done() in every case. */
int options_parse(int argc, char **argv, struct options *ret, char **ret_error);
void options_done(struct options *o);
