/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "child.h"
#include "log.h"
#include "util.h"

/* Without pidfds (Linux before 5.3, or valgrind 3.19, which answers ENOSYS), the exit is
 * found by polling waitid() on this interval: a SIGCHLD signalfd would need the signal
 * blocked in every thread, the probe workers too. */
#define EXIT_POLL_USEC (20 * USEC_PER_MSEC)

struct child {
        struct ev_loop *loop;
        pid_t pid;
        int pidfd, out_fd;
        struct ev_io *pid_io, *out_io;
        struct ev_timer *timer, *exit_poll;
        bool timed_out;
        int64_t timeout;
        child_fn fn;
        void *userdata;
        char out[CHILD_OUTPUT_MAX];
        size_t out_len;
};

static void child_free(struct child *c) {
        ev_io_free(c->pid_io);
        ev_io_free(c->out_io);
        ev_timer_free(c->timer);
        ev_timer_free(c->exit_poll);
        if (c->pidfd >= 0)
                close(c->pidfd);
        if (c->out_fd >= 0)
                close(c->out_fd);
        free(c);
}

/* Keeps the tail of the output: the end of a tool's message is what says why. */
static void drain(struct child *c) {
        char buf[4096];
        ssize_t n;

        while (c->out_fd >= 0 && (n = read(c->out_fd, buf, sizeof(buf))) > 0) {
                size_t k = (size_t) n;
                if (k >= sizeof(c->out) - 1) {
                        memcpy(c->out, buf + k - (sizeof(c->out) - 1), sizeof(c->out) - 1);
                        c->out_len = sizeof(c->out) - 1;
                        continue;
                }
                if (c->out_len + k > sizeof(c->out) - 1) {
                        size_t drop = c->out_len + k - (sizeof(c->out) - 1);
                        memmove(c->out, c->out + drop, c->out_len - drop);
                        c->out_len -= drop;
                }
                memcpy(c->out + c->out_len, buf, k);
                c->out_len += k;
        }
}

static void on_output(struct ev_io *io, uint32_t revents, void *userdata) {
        struct child *c = userdata;

        drain(c);
        if (revents & (POLLHUP | POLLERR))
                ev_io_set_events(io, 0); /* the rest is read at exit */
}

/* Reports and frees c if it has ended; false if it still runs. */
static bool reap(struct child *c) {
        siginfo_t si = {};
        int status, r;

        r = c->pidfd >= 0 ? waitid(P_PIDFD, (id_t) c->pidfd, &si, WEXITED | WNOHANG)
                          : waitid(P_PID, (id_t) c->pid, &si, WEXITED | WNOHANG);
        if (r < 0) {
                if (errno == EINTR)
                        return false;
                /* Reaped elsewhere or gone: it has ended, how is unknown. */
                si.si_code = CLD_KILLED;
                si.si_status = SIGKILL;
        } else if (si.si_pid == 0)
                return false; /* not yet (spurious wakeup) */
        status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status & 0x7f;
        drain(c);
        c->out[c->out_len] = 0;
        c->fn(c, status, c->timed_out, c->out, c->userdata);
        child_free(c);
        return true;
}

static void on_exit_(struct ev_io *io, uint32_t revents, void *userdata) {
        (void) reap(userdata);
}

static void on_exit_poll(struct ev_timer *t, void *userdata) {
        struct child *c = userdata;

        if (!reap(c) && ev_timer_arm(t, EXIT_POLL_USEC) < 0)
                log_error("cannot re-arm the timer watching pid %d", (int) c->pid);
}

static void on_timeout(struct ev_timer *t, void *userdata) {
        struct child *c = userdata;

        log_warning("pid %d (%s) did not finish in time; killing it", (int) c->pid, "child");
        c->timed_out = true;
        kill(-c->pid, SIGKILL);
        kill(c->pid, SIGKILL);
}

static int spawn(struct ev_loop *loop, const char *path, char *const argv[], char *const envp[], int (*run)(void *),
                 void *arg, int64_t timeout_usec, child_fn fn, void *userdata, struct child **ret) {
        static char *const empty_env[] = { NULL };
        struct child *c;
        int pipefd[2], devnull, r;
        pid_t parent = getpid();

        if (!run && (!path || path[0] != '/' || !argv[0]))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->loop = loop;
        c->pidfd = c->out_fd = -1;
        c->fn = fn;
        c->userdata = userdata;
        c->timeout = timeout_usec;
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                free(c);
                return -errno;
        }
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0) {
                r = -errno;
                close(pipefd[0]);
                close(pipefd[1]);
                free(c);
                return r;
        }
        /* The daemon has threads (probe workers): only async-signal-safe calls in the
         * child until execve. */
        c->pid = fork();
        if (c->pid < 0) {
                r = -errno;
                close(pipefd[0]);
                close(pipefd[1]);
                close(devnull);
                free(c);
                return r;
        }
        if (c->pid == 0) {
                sigset_t none;
                struct sigaction dfl = { .sa_handler = SIG_DFL };

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127); /* the daemon died before the line above */
                (void) setpgid(0, 0);
                for (int s = 1; s < _NSIG; s++)
                        (void) sigaction(s, &dfl, NULL);
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                if (dup2(devnull, 0) < 0 || dup2(pipefd[1], 1) < 0 || dup2(pipefd[1], 2) < 0)
                        _exit(127);
                if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
                        for (int fd = 3; fd < 65536; fd++) /* before Linux 5.9 */
                                (void) close(fd);
                if (run)
                        _exit(run(arg));
                if (chdir("/") < 0)
                        _exit(127);
                execve(path, argv, envp ? envp : empty_env);
                _exit(127);
        }
        /* Also here: a kill of the group right after the fork must not miss the child. */
        (void) setpgid(c->pid, c->pid);
        close(devnull);
        close(pipefd[1]);
        c->out_fd = pipefd[0];
        (void) fcntl(c->out_fd, F_SETFL, O_NONBLOCK);
        c->pidfd = (int) syscall(SYS_pidfd_open, c->pid, 0);
        if (c->pidfd < 0 && errno != ENOSYS) {
                r = -errno;
                kill(c->pid, SIGKILL);
                (void) waitpid(c->pid, NULL, 0);
                child_free(c);
                return r;
        }
        if (c->pidfd >= 0)
                r = ev_io_new(loop, c->pidfd, POLLIN, on_exit_, c, &c->pid_io);
        else {
                r = ev_timer_new(loop, on_exit_poll, c, &c->exit_poll);
                if (r == 0)
                        r = ev_timer_arm(c->exit_poll, EXIT_POLL_USEC);
        }
        if (r == 0)
                r = ev_io_new(loop, c->out_fd, POLLIN, on_output, c, &c->out_io);
        if (r == 0 && timeout_usec > 0) {
                r = ev_timer_new(loop, on_timeout, c, &c->timer);
                if (r == 0)
                        r = ev_timer_arm(c->timer, timeout_usec);
        }
        if (r < 0) {
                kill(-c->pid, SIGKILL);
                kill(c->pid, SIGKILL);
                (void) waitpid(c->pid, NULL, 0);
                child_free(c);
                return r;
        }
        log_debug("started pid %d: %s", (int) c->pid, path ? path : "(function)");
        if (ret)
                *ret = c;
        return 0;
}

int child_spawn(struct ev_loop *loop, const char *path, char *const argv[], char *const envp[], int64_t timeout_usec,
                child_fn fn, void *userdata, struct child **ret) {
        return spawn(loop, path, argv, envp, NULL, NULL, timeout_usec, fn, userdata, ret);
}

int child_fork(struct ev_loop *loop, int (*run)(void *arg), void *arg, int64_t timeout_usec, child_fn fn,
               void *userdata, struct child **ret) {
        return spawn(loop, NULL, NULL, NULL, run, arg, timeout_usec, fn, userdata, ret);
}

int64_t child_timeout(const struct child *c) {
        return c->timeout;
}

pid_t child_pid(const struct child *c) {
        return c->pid;
}

void child_abandon(struct child *c) {
        if (!c)
                return;
        kill(-c->pid, SIGKILL);
        kill(c->pid, SIGKILL);
        /* Not waited for: a tool stuck in the kernel (D state) would hold up the stop.
         * An unreaped child is reaped by init once we exit. */
        (void) waitpid(c->pid, NULL, WNOHANG);
        child_free(c);
}

char *child_describe(int status, bool timed_out, int64_t timeout_usec) {
        char *s = NULL;
        int r;

        if (timed_out)
                r = asprintf(&s, "timed out after %lld s and was killed", (long long) (timeout_usec / USEC_PER_SEC));
        else if (WIFEXITED(status))
                r = asprintf(&s, "exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                r = asprintf(&s, "killed by signal %d", WTERMSIG(status));
        else
                r = asprintf(&s, "ended with wait status %d", status);
        return r < 0 ? NULL : s;
}
