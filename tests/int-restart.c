/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: restarts never duplicate devices or history: a clean restart and a
 * kill -9 keep every id, the event sequence continues without gap or repeat, a restart
 * with nothing changed adds no device events; a second daemon, a live socket and a
 * journal from a newer schema are refused, a stale socket is replaced. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_loop *loops[3];
static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        loops[0] = tl_loop_new(NULL, "a.img", 32 << 20, "mkfs.ext4 -q -F -L a %s");
        loops[1] = tl_loop_new(NULL, "b.img", 32 << 20, "mkswap %s >/dev/null");
        loops[2] = tl_loop_new(NULL, "c.img", 32 << 20, NULL);
        if (!loops[0] || !loops[1] || !loops[2])
                return -1;
        daemon_ = tl_daemon_start("restart", NULL);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        for (size_t i = 0; i < ELEMENTSOF(loops); i++)
                tl_loop_free(loops[i]);
        return 0;
}

/* "id=identity=state" of every device, sorted by id, as one string. */
static char *ledger_summary(void) {
        json_object *l = tl_cli_json(daemon_, "list");
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(l);
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                json_object *d = json_object_array_get_idx(l, i);
                fprintf(f, "%lld=%s=%s;", (long long) tl_int(d, "id"), tl_str(d, "identity"), tl_str(d, "state"));
        }
        fclose(f);
        json_object_put(l);
        return buf;
}

/* Checks seq is 1..n without gap or repeat; returns n and counts device events after
 * seq after. */
static int64_t check_history(int64_t after, int64_t *ret_device_events) {
        json_object *h = tl_cli_json(daemon_, "history");
        int64_t n = 0, dev = 0;

        assert_non_null(h);
        for (size_t i = 0; i < json_object_array_length(h); i++) {
                json_object *e = json_object_array_get_idx(h, i);
                n++;
                if (tl_int(e, "seq") != n)
                        fail_msg("history: event %zu has seq %lld, expected %lld", i, (long long) tl_int(e, "seq"),
                                 (long long) n);
                if (n > after && tl_int(e, "device_id") > 0)
                        dev++;
        }
        json_object_put(h);
        if (ret_device_events)
                *ret_device_events = dev;
        return n;
}

static void test_initial(void **state) {
        _cleanup_free_ char *s = ledger_summary();
        int64_t dev;

        /* daemon_started, then one "appeared" per device */
        assert_int_equal(check_history(0, &dev), 4);
        assert_int_equal(dev, 3);
        assert_non_null(strstr(s, "=present;"));
}

static void test_clean_restart_adds_no_device_events(void **state) {
        _cleanup_free_ char *before = ledger_summary(), *after = NULL;
        int64_t n0 = check_history(0, NULL), dev;

        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        after = ledger_summary();
        assert_string_equal(before, after);
        /* daemon_stopped and daemon_started, nothing about devices */
        assert_int_equal(check_history(n0, &dev), n0 + 2);
        assert_int_equal(dev, 0);
}

static void test_kill9_restart(void **state) {
        _cleanup_free_ char *before = ledger_summary(), *after = NULL, *log = NULL;
        int64_t n0 = check_history(0, NULL), dev;
        json_object *h, *last;

        assert_int_equal(tl_daemon_stop(daemon_, SIGKILL), -SIGKILL);
        /* The killed daemon left its socket file behind. */
        assert_int_equal(access(daemon_->socket, F_OK), 0);
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        after = ledger_summary();
        assert_string_equal(before, after);
        assert_int_equal(check_history(n0, &dev), n0 + 1);
        assert_int_equal(dev, 0);
        h = tl_cli_json(daemon_, "history");
        last = json_object_array_get_idx(h, json_object_array_length(h) - 1);
        assert_string_equal(tl_str(last, "kind"), "daemon_started");
        assert_string_equal(tl_str(json_object_object_get(last, "after"), "previous_run"), "unclean");
        json_object_put(h);
        assert_int_equal(tl_sh(&log, "grep -c 'replacing stale socket' '%s'", daemon_->log), 0);
}

static void test_change_while_down(void **state) {
        _cleanup_free_ char *out = NULL;
        int64_t n0, dev;
        json_object *l, *d;

        n0 = check_history(0, NULL);
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        /* While the daemon is down: one device detached, one reformatted. */
        tl_loop_detach(loops[2]);
        assert_int_equal(tl_sh(&out, "mkfs.ext4 -q -F -L b2 %s 2>&1", loops[1]->devnode), 0);
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        assert_int_equal(check_history(n0, &dev), n0 + 2 + 2);
        assert_int_equal(dev, 2);
        l = tl_cli_json(daemon_, "list");
        d = tl_find_device(l, "loop_backing_file", loops[2]->file);
        assert_string_equal(tl_str(d, "state"), "gone");
        d = tl_find_device(l, "loop_backing_file", loops[1]->file);
        assert_string_equal(tl_str(d, "fs_label"), "b2");
        json_object_put(l);
}

static void test_second_daemon_refused(void **state) {
        _cleanup_free_ char *out = NULL, *sock = NULL, *scope = NULL;
        int r;

        /* Same state directory, another socket. */
        assert_true(asprintf(&sock, "%s/second.sock", tl_tmpdir()) > 0);
        assert_true(asprintf(&scope, "--scope=loop:%s/img", tl_tmpdir()) > 0);
        const char *args[] = { "--foreground", "--state-dir", daemon_->state_dir, "--socket", sock, scope, NULL };
        r = tl_daemon_run_expect_exit("second", args, &out);
        assert_int_not_equal(r, 0);
        assert_non_null(strstr(out, "another blkledgerd"));
        assert_int_equal(access(sock, F_OK), -1);
        assert_true(tl_daemon_alive(daemon_));
}

static void test_live_socket_never_replaced(void **state) {
        _cleanup_free_ char *out = NULL, *dir = NULL, *scope = NULL;
        json_object *s;
        int r;

        /* Another state directory, the same socket. */
        assert_true(asprintf(&dir, "%s/other-state", tl_tmpdir()) > 0);
        assert_true(asprintf(&scope, "--scope=loop:%s/img", tl_tmpdir()) > 0);
        const char *args[] = { "--foreground", "--state-dir", dir, "--socket", daemon_->socket, scope, NULL };
        r = tl_daemon_run_expect_exit("thief", args, &out);
        assert_int_not_equal(r, 0);
        assert_non_null(strstr(out, "running daemon"));
        s = tl_cli_json(daemon_, "status");
        assert_non_null(s);
        assert_int_equal(tl_int(s, "pid"), daemon_->pid);
        json_object_put(s);
}

static void test_newer_schema_refused(void **state) {
        _cleanup_free_ char *dir = NULL, *sock = NULL, *out = NULL, *sum1 = NULL, *sum2 = NULL;
        int r;

        assert_true(asprintf(&dir, "%s/future-state", tl_tmpdir()) > 0);
        assert_true(asprintf(&sock, "%s/future.sock", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(NULL, "mkdir -p '%s' && sqlite3 '%s/ledger.db' "
                                      "'CREATE TABLE devices (id INTEGER PRIMARY KEY); PRAGMA user_version = 99;'",
                               dir, dir),
                         0);
        assert_int_equal(tl_sh(&sum1, "sha256sum < '%s/ledger.db'", dir), 0);
        const char *args[] = { "--foreground", "--state-dir", dir, "--socket", sock, NULL };
        r = tl_daemon_run_expect_exit("future", args, &out);
        assert_int_not_equal(r, 0);
        assert_non_null(strstr(out, "newer"));
        assert_int_equal(tl_sh(&sum2, "sha256sum < '%s/ledger.db'", dir), 0);
        assert_string_equal(sum1, sum2);
        assert_int_equal(tl_sh(NULL, "test ! -e '%s/ledger.db-wal'", dir), 0);
}

static void test_stale_socket_only_if_dead(void **state) {
        _cleanup_free_ char *sock = NULL, *dir = NULL, *out = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r;

        /* A socket file nobody listens on (its process is gone) is replaced... */
        assert_true(asprintf(&sock, "%s/stale.sock", tl_tmpdir()) > 0);
        assert_true(asprintf(&dir, "%s/stale-state", tl_tmpdir()) > 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        /* ...but a path that is not a socket is never removed. */
        {
                _cleanup_free_ char *file = NULL;
                assert_true(asprintf(&file, "%s/not-a-socket", tl_tmpdir()) > 0);
                assert_int_equal(tl_sh(NULL, "echo keep > '%s'", file), 0);
                const char *args[] = { "--foreground", "--state-dir", dir, "--socket", file, NULL };
                r = tl_daemon_run_expect_exit("notsock", args, &out);
                assert_int_not_equal(r, 0);
                assert_non_null(strstr(out, "not a socket"));
                free(out);
                out = NULL;
                assert_int_equal(tl_sh(&out, "cat '%s'", file), 0);
                assert_string_equal(out, "keep\n");
        }
        {
                struct tl_daemon d2 = {};
                _cleanup_free_ char *scope = NULL;
                char *args[] = { NULL, NULL };
                assert_true(asprintf(&scope, "--scope=loop:%s/img", tl_tmpdir()) > 0);
                args[0] = scope;
                d2.state_dir = dir;
                d2.socket = sock;
                assert_true(asprintf(&d2.log, "%s/stale.log", tl_tmpdir()) > 0);
                d2.args = args;
                assert_int_equal(tl_daemon_restart(&d2), 0);
                assert_int_equal(tl_daemon_stop(&d2, SIGTERM), 0);
                assert_int_equal(tl_sh(NULL, "grep -q 'replacing stale socket' '%s'", d2.log), 0);
                free(d2.log);
        }
}

/* Online backups: each is a complete SQLite copy of the ledger, written while the daemon
 * runs; the newest --backup-keep are kept; status says when the last was made. */
static void test_backup(void **state) {
        static const char *const extra[] = { "--backup-keep=2", NULL };
        struct tl_daemon *d = tl_daemon_start("backup", extra);
        _cleanup_free_ char *ls = NULL, *out = NULL;
        json_object *st, *list;
        int64_t devices;
        int n = 0;

        assert_non_null(d);
        st = tl_cli_json(d, "status");
        assert_non_null(st);
        assert_null(tl_str(st, "last_backup"));
        json_object_put(st);
        list = tl_cli_json(d, "list");
        devices = (int64_t) json_object_array_length(list);
        json_object_put(list);
        assert_true(devices >= 3);
        for (int i = 0; i < 3; i++) {
                free(out);
                out = NULL;
                assert_int_equal(tl_cli(d, &out, "backup"), 0);
                assert_non_null(strstr(out, "/backups/ledger-"));
        }
        assert_int_equal(tl_sh(&ls, "ls '%s/backups'", d->state_dir), 0);
        for (char *save = NULL, *f = strtok_r(ls, "\n", &save); f; f = strtok_r(NULL, "\n", &save)) {
                _cleanup_free_ char *count = NULL;
                assert_true(startswith(f, "ledger-") != NULL);
                assert_int_equal(tl_sh(&count, "sqlite3 '%s/backups/%s' 'PRAGMA integrity_check; SELECT COUNT(*) FROM devices;'",
                                       d->state_dir, f),
                                 0);
                assert_non_null(strstr(count, "ok\n"));
                assert_int_equal(strtoll(strchr(count, '\n') + 1, NULL, 10), devices);
                n++;
        }
        assert_int_equal(n, 2);
        st = tl_cli_json(d, "status");
        assert_non_null(tl_str(st, "last_backup"));
        json_object_put(st);
        tl_daemon_free(d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backup),
                cmocka_unit_test(test_initial),
                cmocka_unit_test(test_clean_restart_adds_no_device_events),
                cmocka_unit_test(test_kill9_restart),
                cmocka_unit_test(test_change_while_down),
                cmocka_unit_test(test_second_daemon_refused),
                cmocka_unit_test(test_live_socket_never_replaced),
                cmocka_unit_test(test_newer_schema_refused),
                cmocka_unit_test(test_stale_socket_only_if_dead),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
