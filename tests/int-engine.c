/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the probe engine when a device hangs under libblkid, after its io_uring
 * reads answered: the watchdog reports it -ETIMEDOUT within the timeout, a replacement
 * worker probes the other devices meanwhile, a new probe of it is answered -EBUSY without
 * touching it, and when it answers again the engine says so, its extra worker leaves and
 * the next probe succeeds. The hang is real: a file on tests/fuse-hang, which blocks only
 * the reads of the engine's worker threads ("bl-probe"), probed directly by the engine. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "evloop.h"
#include "probe-engine.h"
#include "testlib.h"
#include "util.h"

#define TIMEOUT_USEC (1 * USEC_PER_SEC)
#define HANG_MAX 30

static pid_t fuse_pid;
static char *mountpoint, *hung_file, *good_file[2];

struct probe {
        struct probe_request *req;
        bool done;
        int64_t done_at;
};

static dev_t answered_devnum;

static void on_done(struct probe_request *req, void *userdata) {
        struct probe *p = userdata;

        p->done = true;
        p->done_at = now_monotonic_usec();
}

static void on_answered(dev_t devnum, void *userdata) {
        answered_devnum = devnum;
}

static void on_tick(struct ev_timer *t, void *userdata) {
        probe_engine_tick(userdata, now_monotonic_usec());
        ev_timer_arm(t, 100 * USEC_PER_MSEC);
}

static void submit(struct probe_engine *e, struct probe *p, const char *path, dev_t devnum) {
        struct stat st;

        assert_int_equal(stat(path, &st), 0);
        probe_request_free(p->req);
        *p = (struct probe) { .req = calloc(1, sizeof(*p->req)) };
        assert_non_null(p->req);
        p->req->devnode = strdup(path);
        p->req->devnum = devnum;
        p->req->size = (uint64_t) st.st_size;
        p->req->done = on_done;
        p->req->userdata = p;
        probe_engine_submit(e, p->req);
}

/* Runs the loop until cond holds or timeout_ms pass. */
static bool run_until(struct ev_loop *loop, int timeout_ms, bool (*cond)(void *), void *userdata) {
        int64_t until = now_monotonic_usec() + timeout_ms * USEC_PER_MSEC;

        while (!cond(userdata)) {
                if (now_monotonic_usec() > until)
                        return false;
                assert_true(ev_loop_iterate(loop, 50 * USEC_PER_MSEC) >= 0);
        }
        return true;
}

static bool is_done(void *userdata) {
        return ((struct probe *) userdata)->done;
}

static bool both_done(void *userdata) {
        struct probe *p = userdata;
        return p[0].done && p[1].done;
}

static bool answered(void *userdata) {
        return answered_devnum == *(dev_t *) userdata;
}

static bool workers_back(void *userdata) {
        return probe_engine_workers(userdata) == 1;
}

static int setup(void **state) {
        _cleanup_free_ char *backing = NULL, *out = NULL;

        tl_require_devices();
        tl_fuse_hang_require();
        if (asprintf(&backing, "%s/hung.img", tl_tmpdir()) < 0 || asprintf(&mountpoint, "%s/fuse", tl_tmpdir()) < 0 ||
            asprintf(&hung_file, "%s/disk.img", mountpoint) < 0 ||
            asprintf(&good_file[0], "%s/good0.img", tl_tmpdir()) < 0 ||
            asprintf(&good_file[1], "%s/good1.img", tl_tmpdir()) < 0)
                return -1;
        if (tl_sh(&out,
                  "mkdir -p '%s' && for f in '%s' '%s' '%s'; do truncate -s 16M \"$f\" && "
                  "mkfs.ext4 -q -F \"$f\" || exit 1; done 2>&1",
                  mountpoint, backing, good_file[0], good_file[1]) != 0) {
                fprintf(stderr, "cannot make the images: %s\n", out ? out : "");
                return -1;
        }
        fuse_pid = tl_fuse_hang_start(mountpoint, backing, HANG_MAX);
        return fuse_pid > 0 ? 0 : -1;
}

static int teardown(void **state) {
        tl_fuse_hang_stop(fuse_pid, mountpoint);
        return 0;
}

static void test_worker_hangs(void **state) {
        const struct probe_engine_config cfg = { .workers = 1, .max_inflight = 8, .timeout = TIMEOUT_USEC };
        dev_t hung_dev = makedev(250, 1);
        struct probe hung = {}, good[2] = {}, again = {};
        struct ev_loop *loop;
        struct ev_timer *tick;
        struct probe_engine *e;
        int64_t t0;

        assert_int_equal(ev_loop_new(256, &loop), 0);
        assert_int_equal(probe_engine_new(loop, &cfg, on_answered, NULL, &e), 0);
        assert_int_equal(ev_timer_new(loop, on_tick, e, &tick), 0);
        assert_int_equal(ev_timer_arm(tick, 100 * USEC_PER_MSEC), 0);
        assert_int_equal(probe_engine_workers(e), 1);

        /* Before: the file probes like any other. */
        submit(e, &hung, hung_file, hung_dev);
        assert_true(run_until(loop, 10000, is_done, &hung));
        assert_int_equal(hung.req->error, 0);
        assert_string_equal(observation_get(&hung.req->result, "B:TYPE"), "ext4");

        /* The only worker gets stuck in libblkid; the io_uring reads (io-wq's threads)
         * are not held. */
        assert_true(tl_fuse_hang_mode(fuse_pid, mountpoint, "probe"));
        t0 = now_monotonic_usec();
        submit(e, &hung, hung_file, hung_dev);
        /* Let it reach the worker before the others come. */
        for (int i = 0; i < 10; i++)
                assert_true(ev_loop_iterate(loop, 30 * USEC_PER_MSEC) >= 0);
        submit(e, &good[0], good_file[0], makedev(250, 2));
        submit(e, &good[1], good_file[1], makedev(250, 3));

        assert_true(run_until(loop, 10000, is_done, &hung));
        fprintf(stderr, "watchdog after %lld ms\n", (long long) ((hung.done_at - t0) / USEC_PER_MSEC));
        assert_int_equal(hung.req->error, -ETIMEDOUT);
        assert_true(hung.done_at - t0 >= TIMEOUT_USEC);
        assert_true(probe_engine_is_stuck(e, hung_dev));

        /* The others are probed by a worker started in the stuck one's place. */
        assert_true(run_until(loop, 10000, both_done, good));
        for (int i = 0; i < 2; i++) {
                assert_int_equal(good[i].req->error, 0);
                assert_string_equal(observation_get(&good[i].req->result, "B:TYPE"), "ext4");
        }
        assert_int_equal(probe_engine_workers(e), 2);

        /* Not touched again while stuck. */
        submit(e, &again, hung_file, hung_dev);
        assert_true(run_until(loop, 1000, is_done, &again));
        assert_int_equal(again.req->error, -EBUSY);

        /* It answers: the engine says so, the extra worker leaves, probes work again. */
        assert_true(tl_fuse_hang_mode(fuse_pid, mountpoint, "none"));
        assert_true(run_until(loop, 10000, answered, &hung_dev));
        assert_false(probe_engine_is_stuck(e, hung_dev));
        assert_true(run_until(loop, 5000, workers_back, e));
        submit(e, &again, hung_file, hung_dev);
        assert_true(run_until(loop, 10000, is_done, &again));
        assert_int_equal(again.req->error, 0);
        assert_string_equal(observation_get(&again.req->result, "B:TYPE"), "ext4");

        probe_engine_free(e);
        ev_timer_free(tick);
        ev_loop_free(loop);
        probe_request_free(hung.req);
        probe_request_free(again.req);
        probe_request_free(good[0].req);
        probe_request_free(good[1].req);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_worker_hangs),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
