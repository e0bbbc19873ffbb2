/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: lost events are healed. With a forced small netlink receive buffer and no
 * periodic pass, hundreds of loop devices attached and detached in a burst overflow the
 * event queue; the daemon detects the overflow (counted in status), runs a full pass,
 * and the ledger ends identical to sysfs: no device missing, none invented. */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

#define N 600

static struct tl_daemon *daemon_;
static struct tl_loop *loops[N];

static int setup(void **state) {
        struct rlimit rl;

        tl_require_devices();
        /* One descriptor per attached device, held for autoclear. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) 4096);
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        daemon_ = tl_daemon_start("storm", (const char *const[]) { "--receive-buffer=4096", "--rescan-interval=0", NULL });
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        for (int i = 0; i < N; i++)
                tl_loop_free(loops[i]);
        return 0;
}

/* Backing files of the loop devices in our scope, as sysfs has them: "FILE\n..." sorted. */
static char *sysfs_set(void) {
        _cleanup_free_ char *out = NULL, *dir = NULL;
        char *r;

        assert_true(asprintf(&dir, "%s/img/", tl_tmpdir()) > 0);
        assert_true(tl_sh(&out, "cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -F '%s' | sort", dir) >= 0);
        r = strdup(out ? out : "");
        return r;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The same from the ledger: backing files of the present records. */
static char *ledger_set(bool *ret_pass_running) {
        json_object *l = tl_cli_json(daemon_, "list"), *s = tl_cli_json(daemon_, "status"), *v;
        const char **files = calloc(json_object_array_length(l) + 1, sizeof(char *));
        size_t n = 0, len = 0;
        char *buf = NULL;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(l);
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                json_object *d = json_object_array_get_idx(l, i);
                if (streq_ptr(tl_str(d, "state"), "present"))
                        files[n++] = tl_str(d, "loop_backing_file");
        }
        qsort(files, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%s\n", files[i]);
        fclose(f);
        *ret_pass_running = s && json_object_object_get_ex(s, "pass_running", &v) && json_object_get_boolean(v);
        free(files);
        json_object_put(l);
        json_object_put(s);
        return buf;
}

static bool converged(void *userdata) {
        _cleanup_free_ char *a = sysfs_set(), *b = NULL;
        bool running;

        b = ledger_set(&running);
        return !running && streq(a, b);
}

static void test_storm(void **state) {
        _cleanup_free_ char *want = NULL, *got = NULL;
        json_object *s;
        bool running;

        /* The burst: attach N devices as fast as the kernel takes them, detach half of
         * them again at once, attach a hundred of those back. */
        for (int i = 0; i < N; i++) {
                char name[32];
                snprintf(name, sizeof(name), "s%03d.img", i);
                loops[i] = tl_loop_new(NULL, name, 1 << 20, NULL);
                assert_non_null(loops[i]);
        }
        for (int i = 0; i < N; i += 2)
                tl_loop_detach(loops[i]);
        for (int i = 0; i < N / 3; i += 2)
                assert_int_equal(tl_loop_attach(loops[i]), 0);

        /* Nothing else comes: only the overflow's pass can put the ledger right. */
        if (!tl_wait_for(60000, converged, NULL)) {
                want = sysfs_set();
                got = ledger_set(&running);
                fail_msg("ledger and sysfs differ after 60 s (pass running: %d)\n--- sysfs\n%.2000s--- ledger\n%.2000s",
                         running, want, got);
        }
        want = sysfs_set();
        got = ledger_set(&running);
        assert_string_equal(want, got);
        /* A sanity check that the sets are the burst's, not empty. */
        assert_true(strlen(want) > 0);
        s = tl_cli_json(daemon_, "status");
        if (tl_int(s, "overflows") < 1)
                fail_msg("no overflow was detected: %s", json_object_to_json_string(s));
        assert_true(tl_int(s, "rescans") >= 2); /* the initial pass and the healing one */
        json_object_put(s);

        /* Detach everything: the ledger follows to empty. */
        for (int i = 0; i < N; i++)
                tl_loop_detach(loops[i]);
        assert_true(tl_wait_for(60000, converged, NULL));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_storm),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
