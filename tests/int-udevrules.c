/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the udev rules with the real systemd-udevd (started when it is not
 * running, stopped again): rules installed into /run/udev/rules.d and matching only this
 * test's devices import the ledger's knowledge through blkledger-udev; a named volume
 * gets /dev/disk/by-ledger/NAME, which goes with the detach; `udevadm test` shows the
 * properties; a rule's ENV{BLKLEDGER_ON_ADD} makes the daemon format a blank device
 * through its intents; the helper says nothing, fast, when no daemon listens. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_daemon *daemon_;
static char *voldir, *rules;

#define cli(out, ...) tl_cli(daemon_, out, __VA_ARGS__)

static int setup(void **state) {
        const char *extra[3] = {};
        _cleanup_free_ char *text = NULL, *onadd = NULL;
        FILE *f;

        tl_require_devices();
        if (access("/usr/sbin/mkfs.ext4", X_OK) < 0 && access("/sbin/mkfs.ext4", X_OK) < 0)
                tl_skip("mkfs.ext4 (e2fsprogs) is not installed");
        if (access("/run/udev", F_OK) < 0 && mkdir("/run/udev", 0755) < 0)
                tl_skip("no /run/udev");
        tl_udevd_start();
        assert_true(asprintf(&voldir, "%s/vol", tl_tmpdir()) > 0);
        assert_true(asprintf((char **) &extra[0], "--volume-dir=%s", voldir) > 0);
        daemon_ = tl_daemon_start("udevrules", extra);
        free((char *) extra[0]);
        if (!daemon_)
                return -1;
        /* The installed rules, with the helper and the socket of this test, limited to
         * loop devices on this test's files. */
        assert_true(asprintf(&rules, "/run/udev/rules.d/60-blkledger-test-%d.rules", (int) getpid()) > 0);
        mkdir("/run/udev/rules.d", 0755);
        assert_true(asprintf(&onadd, "%s/img/onadd.img", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(&text,
                               "sed -e 's|IMPORT{program}=\"blkledger-udev |IMPORT{program}=\"%s/blkledger-udev "
                               "--socket %s |' -e 's|^SUBSYSTEM!=\"block\", GOTO=\"blkledger_end\"|&\\nKERNEL!=\"loop*\", "
                               "GOTO=\"blkledger_end\"\\nATTR{loop/backing_file}!=\"%s/*\", GOTO=\"blkledger_end\"|' "
                               "'%s/udev/60-blkledger.rules'",
                               tl_builddir(), daemon_->socket, tl_tmpdir(), tl_srcdir()),
                         0);
        f = fopen(rules, "we");
        assert_non_null(f);
        /* A site's own rule asking for an action, before the import. */
        fprintf(f, "SUBSYSTEM==\"block\", KERNEL==\"loop*\", ATTR{loop/backing_file}==\"%s\", "
                   "ENV{BLKLEDGER_ON_ADD}=\"format-if-blank:ext4\"\n%s",
                onadd, text);
        assert_int_equal(fclose(f), 0);
        fprintf(stderr, "--- %s ---\n", rules);
        tl_sh(NULL, "cat '%s' >&2", rules);
        assert_int_equal(tl_sh(NULL, "udevadm control --reload"), 0);
        return 0;
}

static int teardown(void **state) {
        if (rules) {
                unlink(rules);
                tl_sh(NULL, "udevadm control --reload");
        }
        tl_daemon_free(daemon_);
        tl_detach_loops_under(voldir);
        tl_sh(NULL, "udevadm settle -t 10");
        tl_udevd_stop();
        free(rules);
        free(voldir);
        return 0;
}

static bool link_is(void *userdata) {
        const char *want = userdata; /* "NAME=/dev/loopN" or "NAME=" for gone */
        const char *eq = strchr(want, '=');
        char path[256], target[256];
        ssize_t n;

        snprintf(path, sizeof(path), "/dev/disk/by-ledger/%.*s", (int) (eq - want), want);
        n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                return eq[1] == 0;
        target[n] = 0;
        /* udev makes it relative: ../../loop3 */
        return eq[1] && streq(strrchr(target, '/') + 1, strrchr(eq + 1, '/') + 1);
}

static void test_by_ledger_link(void **state) {
        _cleanup_free_ char *out = NULL, *want = NULL, *props = NULL;
        json_object *v;
        char devnode[64];

        assert_int_equal(cli(&out, "volume create tvol --size 8M"), 0);
        v = tl_cli_json(daemon_, "volume show tvol");
        assert_non_null(v);
        snprintf(devnode, sizeof(devnode), "%s", tl_str(v, "devnode"));
        json_object_put(v);
        assert_true(asprintf(&want, "tvol=%s", devnode) > 0);
        /* The daemon names the device after the volume and asks udev to look again. */
        assert_true(tl_wait_for(10000, link_is, want));

        /* udevadm test shows the imported properties. */
        assert_int_equal(tl_sh(&props, "udevadm test /sys/class/block/%s 2>&1", strrchr(devnode, '/') + 1), 0);
        assert_non_null(strstr(props, "BLKLEDGER_NAME=tvol"));
        assert_non_null(strstr(props, "BLKLEDGER_VOLUME=tvol"));
        assert_non_null(strstr(props, "BLKLEDGER_STATE=present"));
        assert_non_null(strstr(props, "BLKLEDGER_ID="));

        free(out);
        assert_int_equal(cli(&out, "volume detach tvol"), 0);
        assert_true(tl_wait_for(10000, link_is, "tvol="));
        free(out);
        assert_int_equal(cli(&out, "volume attach tvol"), 0);
        v = tl_cli_json(daemon_, "volume show tvol");
        free(want);
        assert_true(asprintf(&want, "tvol=%s", tl_str(v, "devnode")) > 0);
        json_object_put(v);
        assert_true(tl_wait_for(10000, link_is, want));
        free(out);
        assert_int_equal(cli(&out, "volume delete tvol"), 0);
        assert_true(tl_wait_for(10000, link_is, "tvol="));
}

static bool formatted(void *userdata) {
        _cleanup_free_ char *type = tl_blkid(userdata, "TYPE");
        return type && streq(type, "ext4");
}

static void test_on_add_from_rule(void **state) {
        _cleanup_free_ char *file = NULL;
        json_object *list, *last;
        struct tl_loop *l;

        assert_true(asprintf(&file, "%s/img/onadd.img", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(NULL, "truncate -s 16M '%s'", file), 0);
        l = tl_loop_attach_file(file);
        assert_non_null(l);
        /* The rule set the property; the daemon ran it through an intent, not udev. */
        assert_true(tl_wait_for(20000, formatted, l->devnode));
        list = tl_cli_json(daemon_, "intents");
        last = json_object_array_get_idx(list, json_object_array_length(list) - 1);
        assert_string_equal(tl_str(last, "op"), "device.format-if-blank");
        assert_string_equal(tl_str(last, "state"), "succeeded");
        assert_true(startswith(tl_str(last, "idempotency_key"), "udev:") != NULL);
        json_object_put(list);
        tl_loop_free(l);
}

static void test_helper_without_daemon(void **state) {
        _cleanup_free_ char *out = NULL, *sock = NULL;
        int64_t t0 = now_monotonic_usec();

        /* Nobody listens: nothing printed, exit 0, at once. */
        assert_true(asprintf(&sock, "%s/nobody.sock", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(&out, "'%s/blkledger-udev' --socket '%s' loop0 7:0", tl_builddir(), sock), 0);
        assert_string_equal(out ? out : "", "");
        assert_true(now_monotonic_usec() - t0 < 2 * USEC_PER_SEC);
        /* Hostile arguments: still nothing, still 0. */
        free(out);
        out = NULL;
        assert_int_equal(tl_sh(&out, "'%s/blkledger-udev' --socket '%s' 'x\nBLKLEDGER_NAME=evil' 7:0", tl_builddir(),
                               daemon_->socket),
                         0);
        assert_string_equal(out ? out : "", "");
        free(out);
        out = NULL;
        assert_int_equal(tl_sh(&out, "'%s/blkledger-udev' 2>/dev/null", tl_builddir()), 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_by_ledger_link),
                cmocka_unit_test(test_on_add_from_rule),
                cmocka_unit_test(test_helper_without_daemon),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
