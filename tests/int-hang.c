/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: a device that stops answering, for real: a loop device backed by a file on
 * a FUSE file system (tests/fuse-hang) whose reads block on demand. While it hangs, a
 * reconcile completes within the probe timeout and reports it unresponsive (state, event,
 * drift item), the other devices are probed, a new device is found and the socket
 * answers; a second reconcile does not touch it again. When it answers again it is probed
 * and the drift closes. SIGTERM ends the daemon within seconds while a read is stuck.
 * The hang expires by itself (HANG_MAX seconds a read), so a failed test cannot leave a
 * device hung for good. */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

#define PROBE_TIMEOUT 2 /* seconds, as passed below */
#define HANG_MAX 40     /* seconds a read of the FUSE file may hang at most */

static struct tl_daemon *daemon_;
static pid_t fuse_pid;
static char *mountpoint, *fuse_file;
static struct tl_loop *hung, *other;

static int64_t elapsed_ms(int64_t since_usec) {
        return (now_monotonic_usec() - since_usec) / 1000;
}

static void hang(bool on) {
        assert_true(tl_fuse_hang_mode(fuse_pid, mountpoint, on ? "all" : "none"));
}

/* Ends the FUSE file system: the hang first, then the loop device on it, then the mount. */
static void stop_fuse(void) {
        if (fuse_pid <= 0)
                return;
        kill(fuse_pid, SIGUSR2);
        if (hung) {
                tl_loop_detach(hung);
                tl_loop_free(hung);
                hung = NULL;
        }
        /* The loop device lets go of the file once its last opener is gone. */
        for (int i = 0; i < 100 && tl_sh(NULL, "grep -qs '%s' /sys/block/loop*/loop/backing_file", fuse_file) == 0; i++)
                usleep(50 * 1000);
        tl_fuse_hang_stop(fuse_pid, mountpoint);
        fuse_pid = 0;
}

static int setup(void **state) {
        _cleanup_free_ char *store = NULL, *backing = NULL, *out = NULL;
        const char *const extra[] = { "--probe-timeout=2", NULL };

        tl_require_devices();
        tl_fuse_hang_require();
        if (asprintf(&store, "%s/store", tl_tmpdir()) < 0 || asprintf(&backing, "%s/disk.img", store) < 0 ||
            asprintf(&mountpoint, "%s/img/fuse", tl_tmpdir()) < 0 || asprintf(&fuse_file, "%s/disk.img", mountpoint) < 0)
                return -1;
        if (tl_sh(&out, "mkdir -p '%s' '%s' && truncate -s 64M '%s' && mkfs.ext4 -q -F -L hangs '%s' 2>&1", store,
                  mountpoint, backing, backing) != 0) {
                fprintf(stderr, "cannot make the image: %s\n", out ? out : "");
                return -1;
        }
        fuse_pid = tl_fuse_hang_start(mountpoint, backing, HANG_MAX);
        if (fuse_pid < 0)
                return -1;
        hung = tl_loop_attach_file(fuse_file);
        other = tl_loop_new(NULL, "other.img", 32 << 20, "mkfs.ext4 -q -F -L other %s");
        if (!hung || !other)
                return -1;
        daemon_ = tl_daemon_start("hang", extra);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        stop_fuse();
        return 0;
}

static json_object *device_at(const char *devnode) {
        json_object *list = tl_cli_json(daemon_, "list"), *d;

        assert_non_null(list);
        d = tl_find_device(list, "devnode", devnode);
        if (d)
                d = json_object_get(d);
        json_object_put(list);
        return d;
}

static bool has_drift(const char *kind, int64_t device_id) {
        json_object *drift = tl_cli_json(daemon_, "drift");
        bool found = false;

        assert_non_null(drift);
        for (size_t i = 0; i < json_object_array_length(drift); i++) {
                json_object *x = json_object_array_get_idx(drift, i);
                if (streq_ptr(tl_str(x, "kind"), kind) && tl_int(x, "device_id") == device_id)
                        found = true;
        }
        json_object_put(drift);
        return found;
}

static bool has_event(const char *kind, int64_t device_id, int64_t since_seq) {
        _cleanup_free_ char *args = NULL;
        json_object *h;
        bool found = false;

        assert_true(asprintf(&args, "history --since %lld", (long long) since_seq) > 0);
        h = tl_cli_json(daemon_, args);
        assert_non_null(h);
        for (size_t i = 0; i < json_object_array_length(h); i++) {
                json_object *e = json_object_array_get_idx(h, i);
                if (streq_ptr(tl_str(e, "kind"), kind) && tl_int(e, "device_id") == device_id)
                        found = true;
        }
        json_object_put(h);
        return found;
}

static int64_t last_seq(void) {
        json_object *s = tl_cli_json(daemon_, "status");
        int64_t seq;

        assert_non_null(s);
        seq = tl_int(s, "last_seq");
        json_object_put(s);
        return seq;
}

static int64_t hung_id;

static bool answers_again(void *userdata) {
        json_object *d = device_at(hung->devnode);
        bool ok = d && streq_ptr(tl_str(d, "state"), "present") && !has_drift("unresponsive", hung_id);

        json_object_put(d);
        return ok;
}

static void test_hung_device(void **state) {
        json_object *d, *r, *s;
        struct tl_loop *late;
        int64_t t0, ms, seq;

        /* Before: an ordinary ext4 device, read through FUSE. */
        d = device_at(hung->devnode);
        assert_non_null(d);
        assert_string_equal(tl_str(d, "fs_type"), "ext4");
        assert_string_equal(tl_str(d, "state"), "present");
        hung_id = tl_int(d, "id");
        json_object_put(d);
        seq = last_seq();

        hang(true);
        t0 = now_monotonic_usec();
        r = tl_cli_json(daemon_, "reconcile");
        ms = elapsed_ms(t0);
        assert_non_null(r);
        fprintf(stderr, "reconcile with a hung device: %lld ms\n", (long long) ms);
        /* Within the timeout and a generous margin, never the hang's own length. */
        assert_true(ms < (PROBE_TIMEOUT + 10) * 1000);
        assert_int_equal(tl_int(r, "unresponsive"), 1);
        json_object_put(r);

        d = device_at(hung->devnode);
        assert_non_null(d);
        assert_string_equal(tl_str(d, "state"), "unresponsive");
        assert_non_null(tl_str(d, "unresponsive_since"));
        /* What it was last seen to hold is kept. */
        assert_string_equal(tl_str(d, "fs_type"), "ext4");
        json_object_put(d);
        assert_true(has_drift("unresponsive", hung_id));
        assert_true(has_event("unresponsive", hung_id, seq));

        /* The others were probed in the same pass and are verified. */
        d = device_at(other->devnode);
        assert_non_null(d);
        assert_string_equal(tl_str(d, "state"), "present");
        assert_true(json_object_get_boolean(json_object_object_get(d, "verified")));
        json_object_put(d);

        /* The socket answers. */
        t0 = now_monotonic_usec();
        s = tl_cli_json(daemon_, "status");
        assert_non_null(s);
        json_object_put(s);
        fprintf(stderr, "status while hung: %lld ms\n", (long long) elapsed_ms(t0));

        /* A device that appears meanwhile is probed. */
        late = tl_loop_new(NULL, "late.img", 32 << 20, "mkfs.ext4 -q -F -L late %s");
        assert_non_null(late);
        t0 = now_monotonic_usec();
        r = tl_cli_json(daemon_, "reconcile");
        ms = elapsed_ms(t0);
        assert_non_null(r);
        /* Not touched again while its read is stuck: no second wait for the timeout. */
        fprintf(stderr, "second reconcile while hung: %lld ms\n", (long long) ms);
        assert_true(ms < PROBE_TIMEOUT * 1000);
        assert_int_equal(tl_int(r, "unresponsive"), 1);
        json_object_put(r);
        d = device_at(late->devnode);
        assert_non_null(d);
        assert_string_equal(tl_str(d, "fs_type"), "ext4");
        assert_string_equal(tl_str(d, "fs_label"), "late");
        json_object_put(d);

        /* It answers again: probed, back to present, the drift closes. */
        seq = last_seq();
        hang(false);
        assert_true(tl_wait_for(15000, answers_again, NULL));
        assert_true(has_event("responsive", hung_id, seq));
        assert_true(has_event("drift_closed", hung_id, seq));
        d = device_at(hung->devnode);
        assert_true(json_object_get_boolean(json_object_object_get(d, "verified")));
        assert_string_equal(tl_str(d, "fs_label"), "hangs");
        json_object_put(d);

        tl_loop_detach(late);
        tl_loop_free(late);
}

static void test_sigterm_while_stuck(void **state) {
        json_object *r;
        int64_t t0, ms;
        int rc;

        hang(true);
        r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        assert_int_equal(tl_int(r, "unresponsive"), 1);
        json_object_put(r);

        /* A read is stuck in the kernel now (for up to HANG_MAX seconds). */
        t0 = now_monotonic_usec();
        rc = tl_daemon_stop(daemon_, SIGTERM);
        ms = elapsed_ms(t0);
        fprintf(stderr, "SIGTERM with a stuck read: exit %d after %lld ms\n", rc, (long long) ms);
        if (rc != 0)
                tl_daemon_print_log(daemon_);
        assert_int_equal(rc, 0);
        assert_true(ms < 5000);
        hang(false);

        /* And it starts again, the device answering. */
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        assert_int_equal(tl_int(r, "unresponsive"), 0);
        json_object_put(r);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hung_device),
                cmocka_unit_test(test_sigterm_while_stuck),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
