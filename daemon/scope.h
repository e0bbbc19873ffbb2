/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Scope: which block devices the daemon observes. Empty means every block device of the
 * host (read-only). "loop:DIR" limits it to loop devices whose backing file lies under
 * DIR, so a daemon started from a checkout or a test sees only the devices it made. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "observation.h"

struct scope {
        char **loop_dirs; /* canonical paths */
        size_t n_loop_dirs;
};

/* Parses "loop:DIR"; DIR must exist. Sets *ret_error to a static reason on -EINVAL. */
int scope_add(struct scope *s, const char *spec, const char **ret_error);
bool scope_is_set(const struct scope *s);
/* Whether every loop file under dir (canonical) is in scope. */
bool scope_covers_dir(const struct scope *s, const char *dir);
/* Pure: decides from the observation's backing file (or its parent disk's). */
bool scope_match(const struct scope *s, const struct observation *o);
void scope_done(struct scope *s);
