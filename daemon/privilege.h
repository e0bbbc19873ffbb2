/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Least privilege once set up: after start-up the daemon keeps only the capabilities it
 * and the tools it runs need, and sets no_new_privs.
 *
 * Kept (why: units/blkledgerd.service.in, CapabilityBoundingSet=, which lists the same):
 *   bounding and permitted: CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYS_RESOURCE
 *   effective:              CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH
 * CAP_SYS_RESOURCE is only for the tools (online resize2fs): with no_new_privs a program
 * root executes gets at most the permitted set of its parent, so it stays permitted.
 * Inheritable and ambient are cleared. Capabilities and no_new_privs belong to each
 * thread, so every thread of the process gets them (the probe workers exist by then). */
#pragma once

#include <linux/capability.h>
#include <stdint.h>

#define PRIVILEGE_CAP(c) (UINT64_C(1) << (c))
#define PRIVILEGE_EFFECTIVE (PRIVILEGE_CAP(CAP_SYS_ADMIN) | PRIVILEGE_CAP(CAP_SYS_PTRACE) | \
                             PRIVILEGE_CAP(CAP_DAC_READ_SEARCH))
#define PRIVILEGE_PERMITTED (PRIVILEGE_EFFECTIVE | PRIVILEGE_CAP(CAP_SYS_RESOURCE))

/* Drops everything else from every thread's bounding, permitted, effective, inheritable
 * and ambient sets and sets no_new_privs. Without privileges (not root) the capability
 * part changes nothing and is not an error. Negative errno when a thread could not be
 * narrowed; the daemon then stops rather than run with more than it says. */
int privilege_drop(void);
