/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Named crash points for fault-injection tests (./configure --enable-fault-injection).
 *
 * BLKLEDGER_CRASH_AT=NAME in the daemon's environment arms one point; when the daemon
 * reaches it, it kills itself with SIGKILL, as a power cut or the OOM killer would: no
 * cleanup, no transaction finished, children left to PR_SET_PDEATHSIG.
 *
 * Names are "OP.STEP.WHEN": "volume.create.intent" (the intent is committed, nothing done),
 * "volume.create.attach.done" (the step's effect exists, not yet recorded),
 * "volume.create.attach.recorded" (recorded; for the last step, the intent has ended),
 * "volume.create.mkfs.running" (a child process is running). "recovery.begin" is reached
 * when a start finds unfinished intents, before the first is carried on.
 * Without the configure option the calls compile to nothing. */
#pragma once

#include <stdbool.h>

#if ENABLE_FAULT_INJECTION
/* Reads the environment once; call before any crash point is reached. */
void crashpoint_setup(void);
void crashpoint(const char *name);
/* Prints every name, one per line (blkledgerd --list-crash-points). */
void crashpoint_list(void);
#define CRASHPOINTS_BUILT true
#else
static inline void crashpoint_setup(void) {
}
static inline void crashpoint(const char *name) {
        (void) name;
}
static inline void crashpoint_list(void) {
}
#define CRASHPOINTS_BUILT false
#endif
