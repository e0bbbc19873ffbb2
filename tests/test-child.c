/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: child processes of the daemon (daemon/child.c) on the real event loop:
 * exit status and the tail of the output come back once; a child past its timeout is
 * killed with its whole process group (a grandchild too); the environment is only what
 * is given (none when none is); stdin is /dev/null; a forked function's return value is
 * the status; no descriptor of the daemon leaks into the child, a forked function's
 * either; abandoning a child kills it; without pidfd_open (ENOSYS, as under valgrind
 * 3.19) the exit is still seen. */
#include "config.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "child.h"
#include "evloop.h"
#include "util.h"

struct result {
        int calls;
        int status;
        bool timed_out;
        char *output;
};

static void done(struct child *c, int status, bool timed_out, const char *output, void *userdata) {
        struct result *r = userdata;

        r->calls++;
        r->status = status;
        r->timed_out = timed_out;
        free(r->output);
        r->output = strdup(output);
}

static void run(struct ev_loop *loop, struct result *r, int64_t max_usec) {
        int64_t until = now_monotonic_usec() + max_usec;

        while (r->calls == 0 && now_monotonic_usec() < until)
                assert_true(ev_loop_iterate(loop, 100 * USEC_PER_MSEC) >= 0);
        /* Nothing comes twice. */
        assert_true(ev_loop_iterate(loop, 50 * USEC_PER_MSEC) >= 0);
}

static void test_status_and_output(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        char *argv[] = { "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3", NULL };

        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sh", argv, NULL, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_false(r.timed_out);
        assert_true(WIFEXITED(r.status));
        assert_int_equal(WEXITSTATUS(r.status), 3);
        assert_non_null(strstr(r.output, "to-stdout\n"));
        assert_non_null(strstr(r.output, "to-stderr\n"));
        {
                _cleanup_free_ char *d = child_describe(r.status, false, 0);
                assert_string_equal(d, "exited with status 3");
        }
        free(r.output);
        ev_loop_free(loop);
}

static void test_long_output_keeps_the_tail(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        char *argv[] = { "sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; echo the-end", NULL };

        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sh", argv, NULL, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(strlen(r.output) < CHILD_OUTPUT_MAX);
        assert_non_null(strstr(r.output, "the-end\n"));
        assert_null(strstr(r.output, "line-0\n"));
        free(r.output);
        ev_loop_free(loop);
}

static void test_timeout_kills_the_group(void **state) {
        _cleanup_free_ char *pidfile = strdup("/tmp/blkledger-test-child-XXXXXX");
        struct ev_loop *loop;
        struct result r = {};
        char cmd[256], buf[32] = "";
        int fd;
        pid_t grandchild;

        assert_true((fd = mkstemp(pidfile)) >= 0);
        close(fd);
        /* A grandchild in the background: it must die with its parent's group. */
        snprintf(cmd, sizeof(cmd), "sleep 100 & echo $! > %s; wait", pidfile);
        char *argv[] = { "sh", "-c", cmd, NULL };
        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sh", argv, NULL, 300 * USEC_PER_MSEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(r.timed_out);
        {
                _cleanup_free_ char *d = child_describe(r.status, true, 300 * USEC_PER_MSEC);
                assert_non_null(strstr(d, "timed out"));
        }
        fd = open(pidfile, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
        close(fd);
        unlink(pidfile);
        grandchild = (pid_t) atoi(buf);
        assert_true(grandchild > 0);
        for (int i = 0; i < 100 && kill(grandchild, 0) == 0; i++)
                usleep(10000);
        /* Gone (or a zombie of init's, which is gone for our purposes). */
        if (kill(grandchild, 0) == 0) {
                _cleanup_free_ char *st = NULL;
                char path[64];
                FILE *f;
                snprintf(path, sizeof(path), "/proc/%d/stat", (int) grandchild);
                f = fopen(path, "re");
                if (f) {
                        char state_c = 0;
                        assert_true(fscanf(f, "%*d %*s %c", &state_c) == 1);
                        fclose(f);
                        assert_int_equal(state_c, 'Z');
                }
        }
        free(r.output);
        ev_loop_free(loop);
}

static void test_clean_environment_and_descriptors(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        char *env[] = { "ONLY=this", NULL };
        char *argv[] = { "sh", "-c", "env; ls /proc/self/fd | tr '\\n' ' '; echo; pwd", NULL };
        int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: must not reach the child */

        assert_true(leak >= 3);
        setenv("BLKLEDGER_SECRET", "must-not-pass", 1);
        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sh", argv, env, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_non_null(strstr(r.output, "ONLY=this"));
        assert_null(strstr(r.output, "BLKLEDGER_SECRET"));
        /* 0, 1, 2 and the descriptor ls reads the directory with. */
        assert_non_null(strstr(r.output, "0 1 2 3 \n"));
        assert_non_null(strstr(r.output, "\n/\n"));
        close(leak);
        unsetenv("BLKLEDGER_SECRET");
        free(r.output);
        ev_loop_free(loop);
}

static void test_no_environment_stdin_null(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        char *argv[] = { "sh", "-c", "env | grep -v '^PWD=' | wc -l; readlink /proc/self/fd/0", NULL };

        setenv("BLKLEDGER_SECRET", "must-not-pass", 1);
        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sh", argv, NULL, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        /* sh itself adds PWD (and nothing else) to an empty environment. */
        assert_string_equal(r.output, "0\n/dev/null\n");
        unsetenv("BLKLEDGER_SECRET");
        free(r.output);
        ev_loop_free(loop);
}

/* Counts this process's open descriptors above 2, the way a forked function may. */
static int count_descriptors(void *arg) {
        int n = 0;

        for (int fd = 3; fd < 1024; fd++)
                if (fcntl(fd, F_GETFD) >= 0)
                        n++;
        return n;
}

static void test_fork_function_no_descriptors(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        int leak = open("/dev/null", O_RDONLY);

        assert_true(leak >= 3);
        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_fork(loop, count_descriptors, NULL, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(WIFEXITED(r.status));
        assert_int_equal(WEXITSTATUS(r.status), 0);
        close(leak);
        free(r.output);
        ev_loop_free(loop);
}

/* In a forked process whose pidfd_open answers ENOSYS (a seccomp filter): the exit status
 * and a timeout still come back. Exit 0 when they do. */
static int without_pidfd(void) {
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = ELEMENTSOF(filter), .filter = filter };
        char *exit5[] = { "sh", "-c", "echo bye; exit 5", NULL }, *sleeper[] = { "sleep", "100", NULL };
        struct ev_loop *loop;
        struct result r = {}, t = {};
        int64_t until;

        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
                return 77;
        if (syscall(SYS_pidfd_open, getpid(), 0) >= 0 || errno != ENOSYS)
                return 2;
        if (ev_loop_new(32, &loop) < 0 ||
            child_spawn(loop, "/bin/sh", exit5, NULL, 10 * USEC_PER_SEC, done, &r, NULL) < 0 ||
            child_spawn(loop, "/bin/sleep", sleeper, NULL, 200 * USEC_PER_MSEC, done, &t, NULL) < 0)
                return 3;
        until = now_monotonic_usec() + 10 * USEC_PER_SEC;
        while ((r.calls == 0 || t.calls == 0) && now_monotonic_usec() < until)
                if (ev_loop_iterate(loop, 100 * USEC_PER_MSEC) < 0)
                        return 4;
        if (r.calls != 1 || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 5 || !streq(r.output, "bye\n"))
                return 5;
        if (t.calls != 1 || !t.timed_out || !WIFSIGNALED(t.status))
                return 6;
        free(r.output);
        free(t.output);
        ev_loop_free(loop);
        return 0;
}

static void test_exit_without_pidfd(void **state) {
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(without_pidfd());
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                skip();
        assert_int_equal(WEXITSTATUS(status), 0);
}

static int answer(void *arg) {
        return *(int *) arg;
}

static void test_fork_function(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        int value = 42;

        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_fork(loop, answer, &value, 10 * USEC_PER_SEC, done, &r, NULL), 0);
        run(loop, &r, 10 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(WIFEXITED(r.status));
        assert_int_equal(WEXITSTATUS(r.status), 42);
        free(r.output);
        ev_loop_free(loop);
}

static void test_abandon(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        struct child *c;
        char *argv[] = { "sleep", "100", NULL };
        pid_t pid;

        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "/bin/sleep", argv, NULL, 0, done, &r, &c), 0);
        pid = child_pid(c);
        child_abandon(c);
        /* Killed, its callback never called; reaped here or by init. */
        for (int i = 0; i < 100 && waitpid(pid, NULL, WNOHANG) == 0; i++)
                usleep(10000);
        assert_int_equal(kill(pid, 0), -1);
        assert_true(ev_loop_iterate(loop, 50 * USEC_PER_MSEC) >= 0);
        assert_int_equal(r.calls, 0);
        ev_loop_free(loop);
}

static void test_refuses_relative_path(void **state) {
        struct ev_loop *loop;
        struct result r = {};
        char *argv[] = { "sh", NULL };

        assert_int_equal(ev_loop_new(32, &loop), 0);
        assert_int_equal(child_spawn(loop, "sh", argv, NULL, 0, done, &r, NULL), -EINVAL);
        ev_loop_free(loop);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_status_and_output),
                cmocka_unit_test(test_long_output_keeps_the_tail),
                cmocka_unit_test(test_timeout_kills_the_group),
                cmocka_unit_test(test_clean_environment_and_descriptors),
                cmocka_unit_test(test_no_environment_stdin_null),
                cmocka_unit_test(test_fork_function),
                cmocka_unit_test(test_fork_function_no_descriptors),
                cmocka_unit_test(test_exit_without_pidfd),
                cmocka_unit_test(test_abandon),
                cmocka_unit_test(test_refuses_relative_path),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
