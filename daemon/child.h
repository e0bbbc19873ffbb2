/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Child processes of the daemon (mkfs, filesystem growth, hooks), watched from the event
 * loop through a pidfd (where there is none, ENOSYS, by polling waitid every 20 ms),
 * never waited for in a blocking call.
 *
 * A child gets an empty environment unless one is given, /dev/null as stdin, a pipe as
 * stdout and stderr (its last CHILD_OUTPUT_MAX bytes are kept for the error message),
 * no other descriptor, default signal handling, its own process group, and
 * PR_SET_PDEATHSIG so it dies with the daemon: a crash never leaves a tool running on a
 * device nobody tracks any more. At the timeout the whole group is killed. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "evloop.h"

#define CHILD_OUTPUT_MAX 4096

struct child;

/* status is the wait status (WIFEXITED...); timed_out says the child was killed at its
 * timeout; output is what it printed (the tail, NUL-terminated). The child is freed after
 * the call. */
typedef void (*child_fn)(struct child *c, int status, bool timed_out, const char *output, void *userdata);

/* path must be absolute (no PATH search); envp may be NULL (empty environment). */
int child_spawn(struct ev_loop *loop, const char *path, char *const argv[], char *const envp[], int64_t timeout_usec, child_fn fn,
                void *userdata, struct child **ret);
/* The same with a function instead of a program: run(arg) in the forked child, its
 * return value the exit status. The daemon has threads, so run may only use
 * async-signal-safe calls (open, pread, write, close): for I/O that may hang, such as
 * reading a device, which the timeout then ends. */
int child_fork(struct ev_loop *loop, int (*run)(void *arg), void *arg, int64_t timeout_usec, child_fn fn,
               void *userdata, struct child **ret);
pid_t child_pid(const struct child *c);
int64_t child_timeout(const struct child *c);
/* Kills the process group and forgets the child without calling fn (shutdown). */
void child_abandon(struct child *c);

/* "exited with status 1", "killed by signal 9", "timed out after 30 s". */
char *child_describe(int status, bool timed_out, int64_t timeout_usec);
