/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <signal.h>

#include "crashpoint.h"
#include "log.h"
#include "util.h"
#include "volumes.h"

#if ENABLE_FAULT_INJECTION
static const char *armed;

void crashpoint_setup(void) {
        armed = getenv("BLKLEDGER_CRASH_AT");
        if (isempty(armed))
                armed = NULL;
        else
                log_warning("fault injection: crash point %s is armed", armed);
}

void crashpoint(const char *name) {
        if (!armed || !streq(armed, name))
                return;
        log_warning("fault injection: crash point %s reached, killing myself", name);
        raise(SIGKILL);
        _exit(137); /* not reached */
}

static void print_name(const char *name) {
        puts(name);
}

void crashpoint_list(void) {
        volumes_crash_points(print_name);
}
#endif
