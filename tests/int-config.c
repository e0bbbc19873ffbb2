/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: blkledgerd --config: status names the file; SIGHUP applies a changed
 * rescan-interval at once, keeps everything on a bad file (logged as FILE:LINE) and keeps
 * a setting that needs a restart; a bad file at start is exit status 2 with FILE:LINE. */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_loop *loop;
static struct tl_daemon *daemon_;
static char *conf;

static void write_conf(const char *text) {
        _cleanup_free_ char *tmp = NULL;
        int fd;

        /* Replaced in one step, as an editor or a package manager does. */
        assert_true(asprintf(&tmp, "%s.tmp", conf) > 0);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        assert_int_equal(rename(tmp, conf), 0);
}

static int setup(void **state) {
        tl_require_devices();
        loop = tl_loop_new(NULL, "a.img", 16 << 20, NULL);
        if (!loop || asprintf(&conf, "%s/blkledgerd.conf", tl_tmpdir()) < 0)
                return -1;
        write_conf("# the test's configuration\nrescan-interval = 3600\nprobe-timeout = 5\n");
        daemon_ = tl_daemon_start("config", (const char *const[]) { "--config", conf, NULL });
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        if (daemon_)
                tl_daemon_stop(daemon_, SIGTERM);
        tl_daemon_free(daemon_);
        tl_loop_free(loop);
        if (conf)
                unlink(conf);
        free(conf);
        return 0;
}

static int64_t rescans(void) {
        json_object *s = tl_cli_json(daemon_, "status");
        int64_t n;

        assert_non_null(s);
        n = tl_int(s, "rescans");
        json_object_put(s);
        return n;
}

struct grew {
        int64_t from, by;
};

static bool rescans_grew(void *userdata) {
        struct grew *g = userdata;
        return rescans() >= g->from + g->by;
}

static bool log_has(void *userdata) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f = fopen(daemon_->log, "re");
        bool found;

        if (!f)
                return false;
        found = getdelim(&text, &size, 0, f) > 0 && strstr(text, userdata);
        fclose(f);
        return found;
}

static void test_status_names_the_file(void **state) {
        json_object *s = tl_cli_json(daemon_, "status");

        assert_non_null(s);
        assert_string_equal(tl_str(s, "config_file"), conf);
        json_object_put(s);
}

static void test_sighup(void **state) {
        _cleanup_free_ char *msg = NULL, *volume_dir = NULL;
        json_object *s;
        struct grew g;
        int64_t before = rescans();

        /* Once an hour: nothing in two seconds. */
        sleep(2);
        assert_int_equal(rescans(), before);

        /* Every second, from the SIGHUP on. */
        write_conf("rescan-interval = 1\nprobe-timeout = 5\n");
        assert_int_equal(kill(daemon_->pid, SIGHUP), 0);
        g = (struct grew) { before, 2 };
        assert_true(tl_wait_for(15000, rescans_grew, &g));
        assert_true(log_has("changed rescan-interval"));

        /* A bad file changes nothing: the daemon answers and keeps rescanning every
         * second. */
        write_conf("rescan-interval = 3600\nprobe-timeout = 5\n\nbogus-key = 1\n");
        assert_int_equal(kill(daemon_->pid, SIGHUP), 0);
        assert_true(asprintf(&msg, "%s:4: unknown key 'bogus-key'", conf) > 0);
        assert_true(tl_wait_for(5000, log_has, msg));
        g = (struct grew) { rescans(), 2 };
        assert_true(tl_wait_for(15000, rescans_grew, &g));
        assert_true(tl_daemon_alive(daemon_));

        /* A setting read only at start: named in a warning, the running value kept. One
         * the command line gives (testlib passes --state-dir) stays the command line's. */
        s = tl_cli_json(daemon_, "status");
        assert_non_null(s);
        assert_true(asprintf(&volume_dir, "%s", tl_str(s, "volume_dir")) > 0);
        json_object_put(s);
        write_conf("rescan-interval = 1\nprobe-timeout = 5\nvolume-dir = /var/lib/blkledger-elsewhere\n"
                   "state-dir = /var/lib/blkledger-elsewhere\n");
        assert_int_equal(kill(daemon_->pid, SIGHUP), 0);
        assert_true(tl_wait_for(5000, log_has, (void *) "'volume-dir' changed"));
        assert_true(tl_wait_for(5000, log_has, (void *) "nothing changed; needs a restart: volume-dir\n"));
        assert_false(log_has("'state-dir' changed"));
        s = tl_cli_json(daemon_, "status");
        assert_non_null(s);
        assert_string_equal(tl_str(s, "volume_dir"), volume_dir);
        assert_string_equal(tl_str(s, "state_dir"), daemon_->state_dir);
        assert_string_equal(tl_str(s, "config_file"), conf);
        json_object_put(s);
}

static void test_bad_file_at_start(void **state) {
        _cleanup_free_ char *bad = NULL, *out = NULL, *msg = NULL, *sock = NULL, *dir = NULL;
        FILE *f;

        assert_true(asprintf(&bad, "%s/bad.conf", tl_tmpdir()) > 0);
        assert_true(asprintf(&dir, "%s/bad-state", tl_tmpdir()) > 0);
        assert_true(asprintf(&sock, "%s/bad.sock", tl_tmpdir()) > 0);
        f = fopen(bad, "we");
        assert_non_null(f);
        fputs("# fine\nprobe-timeout = 5\nprobe-timeout = soon\n", f);
        fclose(f);
        assert_int_equal(tl_daemon_run_expect_exit("config-bad",
                                                   (const char *const[]) { "--foreground", "--state-dir", dir,
                                                                           "--socket", sock, "--config", bad, NULL },
                                                   &out),
                         2);
        assert_non_null(out);
        assert_true(asprintf(&msg, "%s:3: invalid --probe-timeout 'soon'", bad) > 0);
        assert_non_null(strstr(out, msg));
        free(out);
        out = NULL;

        /* A --config that is not there is an error too (a missing default file is not). */
        assert_int_equal(tl_daemon_run_expect_exit("config-missing",
                                                   (const char *const[]) { "--foreground", "--state-dir", dir,
                                                                           "--socket", sock, "--config",
                                                                           "/nonexistent/blkledgerd.conf", NULL },
                                                   &out),
                         2);
        assert_non_null(strstr(out, "/nonexistent/blkledgerd.conf"));
        unlink(bad);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_status_names_the_file),
                cmocka_unit_test(test_sighup),
                cmocka_unit_test(test_bad_file_at_start),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
