/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: an expectation's on_appear actions on real loop devices: format-if-blank
 * formats a blank device and refuses one with data libblkid does not recognise (the file
 * is unchanged) or with a signature; run: executes a root-owned program with a clean
 * BLKLEDGER_* environment, no_new_privs and only the daemon's capabilities (bounding set
 * CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYS_RESOURCE, as far as the test
 * has them), and records its exit status; a program that hangs is killed at
 * --hook-timeout, the intent says so, and the daemon answers throughout; programs
 * anyone could change are refused. */
#include "config.h"

#include <linux/capability.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_daemon *daemon_;

static int setup(void **state) {
        static const char *const extra[] = { "--hook-timeout=2", NULL };

        tl_require_devices();
        if (access("/usr/sbin/mkfs.ext4", X_OK) < 0 && access("/sbin/mkfs.ext4", X_OK) < 0)
                tl_skip("mkfs.ext4 (e2fsprogs) is not installed");
        daemon_ = tl_daemon_start("hook", extra);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        return 0;
}

/* The CLI against the daemon under test. */
#define cli(out, ...) tl_cli(daemon_, out, __VA_ARGS__)

/* A file in the daemon's scope (not attached yet); prepare is a shell command run with
 * the file as $1. */
static char *image(const char *name, const char *prepare) {
        char *file = NULL;

        assert_true(asprintf(&file, "%s/img/%s.img", tl_tmpdir(), name) > 0);
        assert_int_equal(tl_sh(NULL, "truncate -s 16M '%s'", file), 0);
        if (prepare)
                assert_int_equal(tl_sh(NULL, "sh -c '%s' - '%s'", prepare, file), 0);
        return file;
}

struct wait_intent {
        const char *expectation;
        json_object *found; /* the ended intent */
};

static bool intent_ended(void *userdata) {
        struct wait_intent *w = userdata;
        json_object *list = tl_cli_json(daemon_, "intents");

        for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                json_object *it = json_object_array_get_idx(list, i), *p;
                const char *state = tl_str(it, "state");
                if (!json_object_object_get_ex(it, "params", &p) || !streq_ptr(tl_str(p, "expectation"), w->expectation))
                        continue;
                if (streq(state, "succeeded") || streq(state, "failed") || streq(state, "rolled_back")) {
                        json_object_put(w->found);
                        w->found = json_object_get(it);
                }
        }
        json_object_put(list);
        return w->found != NULL;
}

static json_object *wait_intent(const char *expectation) {
        struct wait_intent w = { .expectation = expectation };

        assert_true(tl_wait_for(30000, intent_ended, &w));
        return w.found;
}

static void test_format_if_blank(void **state) {
        _cleanup_free_ char *file = image("blank", NULL), *type = NULL, *label = NULL;
        struct tl_loop *l;
        json_object *it;

        assert_int_equal(cli(NULL, "expect fmt --match loop-file=%s --fs-type ext4 --fs-label fmt-label "
                                   "--on-appear format-if-blank:ext4",
                             file),
                         0);
        l = tl_loop_attach_file(file);
        assert_non_null(l);
        it = wait_intent("fmt");
        assert_string_equal(tl_str(it, "op"), "device.format-if-blank");
        assert_string_equal(tl_str(it, "state"), "succeeded");
        json_object_put(it);
        type = tl_blkid(l->devnode, "TYPE");
        label = tl_blkid(l->devnode, "LABEL");
        assert_string_equal(type, "ext4");
        assert_string_equal(label, "fmt-label");
        /* The daemon looks at what it wrote: the expectation holds, no drift. */
        assert_int_equal(cli(NULL, "reconcile"), 0);
        {
                json_object *drift = tl_cli_json(daemon_, "drift");
                assert_null(tl_find_device(drift, "name", "fmt"));
                json_object_put(drift);
        }
        tl_loop_free(l);
        assert_int_equal(cli(NULL, "unexpect fmt"), 0);
}

static void test_not_blank(void **state) {
        /* Random bytes at 600 KiB: libblkid finds nothing, but it is data. */
        _cleanup_free_ char *file = image("data", "head -c 4096 /dev/urandom | dd of=\"$1\" bs=4096 seek=150 "
                                                  "conv=notrunc status=none"),
                            *before = NULL, *after = NULL, *swapfile = image("swap", "mkswap -q \"$1\" >/dev/null");
        struct tl_loop *l, *s;
        json_object *it;

        assert_int_equal(tl_sh(&before, "sha256sum < '%s'", file), 0);
        assert_int_equal(cli(NULL, "expect nb --match loop-file=%s --on-appear format-if-blank:ext4", file), 0);
        assert_int_equal(cli(NULL, "expect sw --match loop-file=%s --on-appear format-if-blank:ext4", swapfile), 0);
        l = tl_loop_attach_file(file);
        s = tl_loop_attach_file(swapfile);
        assert_non_null(l);
        assert_non_null(s);
        it = wait_intent("nb");
        assert_string_equal(tl_str(it, "state"), "failed");
        assert_non_null(strstr(tl_str(it, "last_error"), "not blank: data at byte 614400"));
        json_object_put(it);
        it = wait_intent("sw");
        assert_string_equal(tl_str(it, "state"), "failed");
        assert_non_null(strstr(tl_str(it, "last_error"), "holds swap"));
        json_object_put(it);
        tl_loop_free(l);
        tl_loop_free(s);
        assert_int_equal(tl_sh(&after, "sha256sum < '%s'", file), 0);
        assert_string_equal(before, after);
        assert_int_equal(cli(NULL, "unexpect nb"), 0);
        assert_int_equal(cli(NULL, "unexpect sw"), 0);
}

static char *hook(const char *name, const char *body, mode_t mode) {
        char *path = NULL;

        assert_true(asprintf(&path, "%s/%s", tl_tmpdir(), name) > 0);
        assert_int_equal(tl_sh(NULL, "printf '#!/bin/sh\\n%s\\n' > '%s' && chmod %o '%s'", body, path, mode, path), 0);
        return path;
}

/* "CapBnd:\tHEX\n" of the documented set as far as this process has it. */
static char *expected_bounding_line(void) {
        const uint64_t kept = (UINT64_C(1) << CAP_SYS_ADMIN) | (UINT64_C(1) << CAP_SYS_PTRACE) |
                              (UINT64_C(1) << CAP_DAC_READ_SEARCH) | (UINT64_C(1) << CAP_SYS_RESOURCE);
        _cleanup_free_ char *own = NULL;
        uint64_t bnd = 0;
        char *line = NULL;

        assert_int_equal(tl_sh(&own, "grep '^CapBnd:' /proc/self/status"), 0);
        assert_int_equal(sscanf(own, "CapBnd: %" SCNx64, &bnd), 1);
        assert_true(asprintf(&line, "CapBnd:\t%016" PRIx64 "\n", kept & bnd) > 0);
        return line;
}

static void test_run(void **state) {
        _cleanup_free_ char *file = image("run", NULL), *envfile = NULL, *body = NULL, *prog = NULL, *env = NULL;
        struct tl_loop *l;
        json_object *it, *result;

        assert_true(asprintf(&envfile, "%s/hook.env", tl_tmpdir()) > 0);
        assert_true(asprintf(&body, "env > %s; pwd >> %s; grep -E \"^(CapBnd|NoNewPrivs):\" /proc/self/status >> %s; exit 3",
                             envfile, envfile, envfile) > 0);
        prog = hook("hook-env", body, 0755);
        assert_int_equal(cli(NULL, "expect runner --match loop-file=%s --on-appear run:%s", file, prog), 0);
        l = tl_loop_attach_file(file);
        assert_non_null(l);
        it = wait_intent("runner");
        assert_string_equal(tl_str(it, "op"), "device.run");
        assert_string_equal(tl_str(it, "state"), "failed");
        assert_non_null(strstr(tl_str(it, "last_error"), "exited with status 3"));
        assert_true(json_object_object_get_ex(it, "result", &result));
        assert_int_equal(tl_int(result, "exit_status"), 3);
        json_object_put(it);
        assert_int_equal(tl_sh(&env, "cat '%s'", envfile), 0);
        {
                _cleanup_free_ char *want = NULL;
                assert_true(asprintf(&want, "BLKLEDGER_DEVNODE=%s\n", l->devnode) > 0);
                assert_non_null(strstr(env, want));
        }
        assert_non_null(strstr(env, "BLKLEDGER_EXPECTATION=runner\n"));
        assert_non_null(strstr(env, "BLKLEDGER_SIZE_BYTES=16777216\n"));
        /* A clean environment: nothing of the daemon's, and "/" as the directory. */
        assert_null(strstr(env, "HOME="));
        assert_null(strstr(env, "NOTIFY_SOCKET="));
        assert_null(strstr(env, "BLKLEDGER_TEST_TMPDIR="));
        assert_non_null(strstr(env, "\n/\n"));
        /* Root, but only with what the daemon kept, and no way to gain more. */
        {
                _cleanup_free_ char *bnd = expected_bounding_line();
                assert_non_null(strstr(env, bnd));
                assert_non_null(strstr(env, "NoNewPrivs:\t1\n"));
        }
        tl_loop_free(l);
        assert_int_equal(cli(NULL, "unexpect runner"), 0);
}

static void test_hang(void **state) {
        _cleanup_free_ char *file = image("hang", NULL), *pidfile = NULL, *body = NULL, *prog = NULL, *pid = NULL;
        struct tl_loop *l;
        json_object *it, *result;
        int64_t worst = 0, p;

        assert_true(asprintf(&pidfile, "%s/hang.pid", tl_tmpdir()) > 0);
        assert_true(asprintf(&body, "echo $$ > %s; exec sleep 600", pidfile) > 0);
        prog = hook("hook-hang", body, 0700);
        assert_int_equal(cli(NULL, "expect hang --match loop-file=%s --on-appear run:%s", file, prog), 0);
        l = tl_loop_attach_file(file);
        assert_non_null(l);
        /* While the program hangs, the daemon answers (limit 2 s, so this spans it). */
        for (int i = 0; i < 10; i++) {
                int64_t t0 = now_monotonic_usec();
                json_object *s = tl_cli_json(daemon_, "status");
                assert_non_null(s);
                json_object_put(s);
                worst = MAX(worst, now_monotonic_usec() - t0);
                usleep(100000);
        }
        fprintf(stderr, "slowest status during the hang: %lld ms\n", (long long) (worst / 1000));
        assert_true(worst < 1000 * 1000);
        it = wait_intent("hang");
        assert_string_equal(tl_str(it, "state"), "failed");
        assert_non_null(strstr(tl_str(it, "last_error"), "timed out after 2 s"));
        assert_true(json_object_object_get_ex(it, "result", &result));
        assert_true(json_object_get_boolean(json_object_object_get(result, "timed_out")));
        json_object_put(it);
        /* The program is gone, not left behind. */
        assert_int_equal(tl_sh(&pid, "cat '%s'", pidfile), 0);
        assert_int_equal(parse_int64(strtok(pid, "\n"), &p), 0);
        assert_int_equal(kill((pid_t) p, 0), -1);
        assert_int_equal(errno, ESRCH);
        tl_loop_free(l);
        assert_int_equal(cli(NULL, "unexpect hang"), 0);
}

static void test_refused(void **state) {
        _cleanup_free_ char *out = NULL, *writable = hook("hook-writable", "exit 0", 0775), *file = image("r", NULL);

        assert_int_equal(cli(&out, "expect bad --match loop-file=%s --on-appear run:%s", file, writable), 1);
        assert_non_null(strstr(out, "writable by no one else"));
        free(out);
        assert_int_equal(cli(&out, "expect bad --match loop-file=%s --on-appear run:relative/prog", file), 1);
        assert_non_null(strstr(out, "absolute path"));
        free(out);
        assert_int_equal(cli(&out, "expect bad --match loop-file=%s --on-appear format-if-blank:zfs", file), 1);
        assert_non_null(strstr(out, "format-if-blank"));
        free(out);
        assert_int_equal(cli(&out, "expect bad --match loop-file=%s --on-appear 'rm -rf /'", file), 1);
        free(out);
        out = NULL;
        assert_int_equal(cli(&out, "expectations"), 0);
        assert_null(strstr(out, "bad"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format_if_blank),
                cmocka_unit_test(test_not_blank),
                cmocka_unit_test(test_run),
                cmocka_unit_test(test_hang),
                cmocka_unit_test(test_refused),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
