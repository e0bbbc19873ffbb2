/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: a daemon with --event-max-count 10 prunes the history of a loop device
 * attached and detached again and again down to its newest event, keeps every event of
 * a device with open drift (relabelled as often), serves history --since a pruned seq from what is left, and
 * reports events_pruned in status, also after a restart. */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

#define MAX_COUNT 10 /* as given on the command line */
#define CYCLES 12

static struct tl_loop *churn, *drifting;
static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        churn = tl_loop_new(NULL, "churn.img", 16 << 20, NULL);
        drifting = tl_loop_new(NULL, "drifting.img", 16 << 20, "mkfs.ext4 -q -F %s");
        if (!churn || !drifting)
                return -1;
        daemon_ = tl_daemon_start("retention", (const char *const[]) { "--event-max-count", "10", NULL });
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        if (daemon_ && tl_daemon_alive(daemon_))
                tl_daemon_stop(daemon_, SIGTERM);
        tl_daemon_free(daemon_);
        tl_loop_free(churn);
        tl_loop_free(drifting);
        return 0;
}

static void reconcile(void) {
        json_object *r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        json_object_put(r);
}

static int64_t id_of_file(const char *file) {
        json_object *l = tl_cli_json(daemon_, "list");
        int64_t id = tl_int(tl_find_device(l, "loop_backing_file", file), "id");

        json_object_put(l);
        assert_true(id > 0);
        return id;
}

static json_object *history(const char *args) {
        json_object *h = tl_cli_json(daemon_, args);
        assert_non_null(h);
        assert_true(json_object_is_type(h, json_type_array));
        return h;
}

static bool has_kind(json_object *h, const char *kind) {
        for (size_t i = 0; i < json_object_array_length(h); i++)
                if (streq_ptr(tl_str(json_object_array_get_idx(h, i), "kind"), kind))
                        return true;
        return false;
}

struct settled {
        int64_t churn_id, drifting_id;
};

/* Pruning has caught up: what is left beyond the newest MAX_COUNT is protected. */
static bool pruned_down(void *userdata) {
        const struct settled *s = userdata;
        json_object *h = tl_cli_json(daemon_, "history");
        int64_t last, churn_newest = 0, extra = 0;
        size_t n;

        if (!h)
                return false;
        n = json_object_array_length(h);
        last = n ? tl_int(json_object_array_get_idx(h, n - 1), "seq") : 0;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(h, i);
                if (tl_int(e, "device_id") == s->churn_id)
                        churn_newest = tl_int(e, "seq");
        }
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(h, i);
                int64_t seq = tl_int(e, "seq"), dev = tl_int(e, "device_id");
                if (seq > last - MAX_COUNT || dev == s->drifting_id || seq == churn_newest ||
                    (dev < 0 && startswith(tl_str(e, "kind") ?: "", "daemon_")))
                        continue;
                extra++;
        }
        json_object_put(h);
        return extra == 0;
}

static void test_prunes_to_the_limit(void **state) {
        struct settled s;
        json_object *h, *st;
        int64_t pruned = 0, next = 0;

        /* Open drift on one device: all its events stay. */
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' expect wrongfs --match loop-file=%s --fs-type xfs >/dev/null",
                               tl_builddir(), daemon_->socket, drifting->file),
                         0);
        s.churn_id = id_of_file(churn->file);
        s.drifting_id = id_of_file(drifting->file);
        for (int i = 0; i < CYCLES; i++) {
                tl_loop_detach(churn);
                /* Detached, the drift would close: the other device changes in place. */
                assert_int_equal(tl_sh(NULL, "e2label %s l%d", drifting->devnode, i), 0);
                reconcile();
                assert_int_equal(tl_loop_attach(churn), 0);
                reconcile();
        }
        if (!tl_wait_for(15000, pruned_down, &s)) {
                _cleanup_free_ char *out = NULL;
                tl_cli(daemon_, &out, "history");
                tl_daemon_print_log(daemon_);
                fail_msg("more than %d unprotected events left", MAX_COUNT);
        }

        st = tl_cli_json(daemon_, "status");
        assert_non_null(st);
        assert_true(tl_int(st, "events_pruned") >= CYCLES);
        assert_non_null(tl_str(st, "last_prune"));
        json_object_put(st);

        /* The churning device keeps its newest event, not its first. */
        {
                _cleanup_free_ char *args = NULL;
                assert_true(asprintf(&args, "history %" PRId64, s.churn_id) > 0);
                h = history(args);
                assert_true(json_object_array_length(h) >= 1);
                assert_false(has_kind(h, "appeared"));
                json_object_put(h);
                free(args);
                /* The device with open drift keeps everything, from its appearance on. */
                assert_true(asprintf(&args, "history %" PRId64, s.drifting_id) > 0);
                h = history(args);
                assert_true(has_kind(h, "appeared"));
                assert_true(has_kind(h, "drift_opened"));
                assert_true(json_object_array_length(h) >= CYCLES + 2);
                json_object_put(h);
        }

        /* --since a pruned seq: what is left after it, from the next kept one on. */
        h = history("history");
        for (size_t i = 0; i + 1 < json_object_array_length(h) && pruned == 0; i++) {
                int64_t a = tl_int(json_object_array_get_idx(h, i), "seq");
                next = tl_int(json_object_array_get_idx(h, i + 1), "seq");
                if (next > a + 1)
                        pruned = a + 1;
        }
        json_object_put(h);
        assert_true(pruned > 0);
        {
                _cleanup_free_ char *args = NULL;
                assert_true(asprintf(&args, "history --since %" PRId64, pruned) > 0);
                h = history(args);
                assert_int_equal(tl_int(json_object_array_get_idx(h, 0), "seq"), next);
                json_object_put(h);
        }
}

static void test_total_survives_restart(void **state) {
        json_object *st = tl_cli_json(daemon_, "status");
        int64_t before;

        assert_non_null(st);
        before = tl_int(st, "events_pruned");
        json_object_put(st);
        assert_true(before > 0);
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        st = tl_cli_json(daemon_, "status");
        assert_non_null(st);
        assert_true(tl_int(st, "events_pruned") >= before);
        json_object_put(st);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prunes_to_the_limit),
                cmocka_unit_test(test_total_survives_restart),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
