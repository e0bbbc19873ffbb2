/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: with systemd-udevd running the daemon follows udevd's monitor (and says
 * so in status), sees attach and detach through it, and takes udev's properties; the test
 * starts udevd when it is not running and stops what it started. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        tl_udevd_start();
        daemon_ = tl_daemon_start("udevd", NULL);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        tl_udevd_stop();
        return 0;
}

static void test_event_source_is_udev(void **state) {
        json_object *s = tl_cli_json(daemon_, "status");

        assert_non_null(s);
        assert_string_equal(tl_str(s, "event_source"), "udev");
        json_object_put(s);
}

struct wait_state {
        const char *file;
        const char *state;
};

static bool in_state(void *userdata) {
        struct wait_state *w = userdata;
        json_object *l = tl_cli_json(daemon_, "list");
        json_object *d = tl_find_device(l, "loop_backing_file", w->file);
        bool ok = d && streq_ptr(tl_str(d, "state"), w->state);

        json_object_put(l);
        return ok;
}

static void test_attach_detach_through_udevd(void **state) {
        struct tl_loop *l = tl_loop_new(NULL, "u.img", 32 << 20, "mkfs.ext4 -q -F -L viaudev %s");
        _cleanup_free_ char *file = NULL;
        struct wait_state w;
        json_object *list, *d;

        assert_non_null(l);
        file = strdup(l->file);
        w = (struct wait_state) { file, "present" };
        /* udevd runs its rules before passing the event on: allow it a little longer. */
        assert_true(tl_wait_for(3000, in_state, &w));
        list = tl_cli_json(daemon_, "list");
        d = tl_find_device(list, "loop_backing_file", file);
        assert_string_equal(tl_str(d, "fs_label"), "viaudev");
        json_object_put(list);

        tl_loop_free(l);
        w.state = "gone";
        assert_true(tl_wait_for(3000, in_state, &w));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_event_source_is_udev),
                cmocka_unit_test(test_attach_detach_through_udevd),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
