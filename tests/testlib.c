/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "testlib.h"
#include "util.h"

#define MAX_TRACKED 4096

static char *tmpdir;
static bool tmpdir_owned;
static struct tl_loop *loops[MAX_TRACKED];
static struct tl_daemon *daemons[64];
static bool valgrind_failed;

/* BLKLEDGER_VALGRIND=1 (make check-valgrind): daemons run under valgrind's memcheck. */
static bool valgrind_mode(void) {
        const char *e = getenv("BLKLEDGER_VALGRIND");
        return !isempty(e) && !streq(e, "0");
}

int tl_timeout_scale(void) {
        const char *e = getenv("BLKLEDGER_TIMEOUT_SCALE");
        int s = isempty(e) ? 0 : atoi(e);
        return s > 0 ? s : valgrind_mode() ? 10 : 1;
}

_Noreturn void tl_skip(const char *why) {
        fprintf(stderr, "SKIP: %s\n", why);
        exit(77);
}

/* Runs at exit and on SIGTERM from the harness: only system calls, no allocation. */
static void cleanup_everything(void) {
        for (size_t i = 0; i < ELEMENTSOF(daemons); i++)
                if (daemons[i] && daemons[i]->pid > 0) {
                        kill(daemons[i]->pid, SIGKILL);
                        waitpid(daemons[i]->pid, NULL, 0);
                        daemons[i]->pid = 0;
                }
        for (size_t i = 0; i < MAX_TRACKED; i++)
                if (loops[i] && loops[i]->fd >= 0) {
                        ioctl(loops[i]->fd, LOOP_CLR_FD, 0);
                        close(loops[i]->fd);
                        loops[i]->fd = -1;
                }
}

static void remove_tmpdir(void) {
        if (tmpdir_owned && tmpdir) {
                char cmd[4200];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
                (void) !system(cmd);
        }
}

static void at_exit(void) {
        /* Under valgrind a daemon is stopped, not killed: its leak check runs at exit. */
        for (size_t i = 0; valgrind_mode() && i < ELEMENTSOF(daemons); i++)
                if (daemons[i] && daemons[i]->pid > 0)
                        tl_daemon_stop(daemons[i], SIGTERM);
        cleanup_everything();
        remove_tmpdir();
        if (valgrind_failed) {
                fprintf(stderr, "valgrind found errors in blkledgerd (above); failing\n");
                fflush(NULL);
                _exit(1);
        }
}

static void on_term(int sig) {
        cleanup_everything();
        _exit(128 + sig);
}

static void setup_once(void) {
        static bool done;
        struct sigaction sa = { .sa_handler = on_term };

        if (done)
                return;
        done = true;
        atexit(at_exit);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
}

void tl_require_devices(void) {
        setup_once();
        if (geteuid() != 0)
                tl_skip("needs root (loop devices, the daemon's view of all block devices)");
        if (access("/dev/loop-control", W_OK) < 0)
                tl_skip("no /dev/loop-control on this machine");
}

const char *tl_tmpdir(void) {
        const char *e;

        setup_once();
        if (tmpdir)
                return tmpdir;
        e = getenv("BLKLEDGER_TEST_TMPDIR");
        if (!isempty(e))
                tmpdir = strdup(e);
        else {
                char t[] = "/tmp/blkledger-int.XXXXXX";
                if (!mkdtemp(t))
                        abort();
                chmod(t, 0755);
                tmpdir = strdup(t);
                tmpdir_owned = true;
        }
        return tmpdir;
}

const char *tl_builddir(void) {
        const char *e = getenv("BLKLEDGER_TOP_BUILDDIR");
        return isempty(e) ? "." : e;
}

const char *tl_srcdir(void) {
        const char *e = getenv("BLKLEDGER_TOP_SRCDIR");
        return isempty(e) ? "." : e;
}

void tl_register_pid(pid_t pid) {
        char path[4200];
        FILE *f;

        snprintf(path, sizeof(path), "%s/pids", tl_tmpdir());
        f = fopen(path, "ae");
        if (f) {
                fprintf(f, "%d\n", (int) pid);
                fclose(f);
        }
}

int tl_sh(char **ret_out, const char *fmt, ...) {
        _cleanup_free_ char *cmd = NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *p, *m;
        va_list ap;
        int status, c;

        va_start(ap, fmt);
        if (vasprintf(&cmd, fmt, ap) < 0)
                cmd = NULL;
        va_end(ap);
        if (!cmd)
                return -1;
        fflush(NULL);
        p = popen(cmd, "re");
        if (!p)
                return -1;
        m = open_memstream(&buf, &size);
        while ((c = fgetc(p)) != EOF)
                fputc(c, m);
        fclose(m);
        status = pclose(p);
        if (ret_out)
                *ret_out = buf;
        else
                free(buf);
        if (status < 0 || !WIFEXITED(status))
                return -1;
        return WEXITSTATUS(status);
}

static int configure(struct tl_loop *l, int file, const char *dev);

struct tl_loop *tl_loop_new(const char *dir, const char *name, uint64_t size, const char *mkfs_fmt) {
        _cleanup_free_ char *d = NULL;
        struct tl_loop *l = calloc(1, sizeof(*l));
        int fd;

        if (!l)
                return NULL;
        l->fd = -1;
        if (!dir) {
                if (asprintf(&d, "%s/img", tl_tmpdir()) < 0)
                        return NULL;
                dir = d;
        }
        mkdir(dir, 0755);
        if (asprintf(&l->file, "%s/%s", dir, name) < 0)
                return NULL;
        fd = open(l->file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t) size) < 0) {
                fprintf(stderr, "cannot create %s: %m\n", l->file);
                if (fd >= 0)
                        close(fd);
                free(l->file);
                free(l);
                return NULL;
        }
        close(fd);
        if (mkfs_fmt) {
                _cleanup_free_ char *cmd = NULL, *out = NULL;
                const char *at = strstr(mkfs_fmt, "%s");
                if (!at || asprintf(&cmd, "%.*s'%s'%s", (int) (at - mkfs_fmt), mkfs_fmt, l->file, at + 2) < 0 ||
                    tl_sh(&out, "%s 2>&1", cmd) != 0) {
                        fprintf(stderr, "'%s' failed: %s\n", cmd ? cmd : "?", out ? out : "");
                        unlink(l->file);
                        free(l->file);
                        free(l);
                        return NULL;
                }
        }
        for (size_t i = 0; i < MAX_TRACKED; i++)
                if (!loops[i]) {
                        loops[i] = l;
                        break;
                }
        if (tl_loop_attach(l) < 0) {
                tl_loop_free(l);
                return NULL;
        }
        return l;
}

int tl_loop_attach(struct tl_loop *l) {
        _cleanup_close_ int ctl = -1, file = -1;

        if (l->fd >= 0)
                return 0;
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        file = open(l->file, O_RDWR | O_CLOEXEC);
        if (ctl < 0 || file < 0)
                return -errno;
        /* Another process may take the free device between the two calls: retry. */
        for (int tries = 0; tries < 100; tries++) {
                char dev[64];
                int nr, r;

                nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0)
                        return -errno;
                snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
                /* Autoclear: the device goes away with our descriptor, so a test
                 * killed by the harness cannot leak it. */
                r = configure(l, file, dev);
                if (r == 0)
                        return 0;
                if (r != -EBUSY && r != -ENOENT)
                        return r;
                usleep(10000);
        }
        return -EBUSY;
}

static int configure(struct tl_loop *l, int file, const char *dev) {
        struct loop_config cfg = { .fd = (unsigned) file };
        int fd = open(dev, O_RDWR | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        snprintf((char *) cfg.info.lo_file_name, LO_NAME_SIZE, "%s", l->file);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        l->fd = fd;
        free(l->devnode);
        l->devnode = strdup(dev);
        return 0;
}

int tl_loop_attach_at(struct tl_loop *l, int nr) {
        _cleanup_close_ int ctl = -1, file = -1;

        if (l->fd >= 0)
                return -EBUSY;
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        file = open(l->file, O_RDWR | O_CLOEXEC);
        if (ctl < 0 || file < 0)
                return -errno;
        for (; nr < (1 << 20); nr++) {
                char dev[64];
                int r;

                if (ioctl(ctl, LOOP_CTL_ADD, nr) < 0 && errno != EEXIST)
                        return -errno;
                snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
                /* devtmpfs makes the node; give it a moment when udevd does. */
                for (int i = 0; i < 100 && access(dev, F_OK) < 0; i++)
                        usleep(10000);
                r = configure(l, file, dev);
                if (r == 0)
                        return 0;
                if (r != -EBUSY)
                        return r;
        }
        return -EBUSY;
}

struct tl_loop *tl_loop_attach_file(const char *file) {
        struct tl_loop *l = calloc(1, sizeof(*l));

        if (!l)
                return NULL;
        l->fd = -1;
        l->shared = true;
        l->file = strdup(file);
        for (size_t i = 0; i < MAX_TRACKED; i++)
                if (!loops[i]) {
                        loops[i] = l;
                        break;
                }
        if (!l->file || tl_loop_attach(l) < 0) {
                tl_loop_free(l);
                return NULL;
        }
        return l;
}

struct tl_loop *tl_loop_attach_again(const struct tl_loop *orig) {
        return tl_loop_attach_file(orig->file);
}

/* A detached loop device leaves its node; thousands of them would slow every later
 * enumeration on the machine. Removed when nobody holds it (the daemon under test may
 * be probing it for a moment); the harness sweeps the rest. */
static void remove_node(const char *devnode, int tries) {
        int ctl, nr;

        if (!devnode || sscanf(devnode, "/dev/loop%d", &nr) != 1)
                return;
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return;
        while (ioctl(ctl, LOOP_CTL_REMOVE, nr) < 0 && errno == EBUSY && --tries > 0)
                usleep(10000);
        close(ctl);
}

void tl_loop_detach(struct tl_loop *l) {
        if (l->fd < 0)
                return;
        ioctl(l->fd, LOOP_CLR_FD, 0);
        close(l->fd);
        l->fd = -1;
        remove_node(l->devnode, 20);
        free(l->devnode);
        l->devnode = NULL;
}

void tl_loop_free(struct tl_loop *l) {
        if (!l)
                return;
        tl_loop_detach(l);
        for (size_t i = 0; i < MAX_TRACKED; i++)
                if (loops[i] == l)
                        loops[i] = NULL;
        if (!l->shared)
                unlink(l->file);
        free(l->file);
        free(l);
}

static void track_daemon(struct tl_daemon *d, bool add) {
        for (size_t i = 0; i < ELEMENTSOF(daemons); i++)
                if (add ? !daemons[i] : daemons[i] == d) {
                        daemons[i] = add ? d : NULL;
                        return;
                }
}

/* Memcheck's report of a daemon that exited: LOG.valgrind.PID. No --error-exitcode: the
 * forked children of child_fork() would inherit it (with the daemon's error count) and
 * exit with it; --child-silent-after-fork keeps their leak reports (the parent's memory,
 * copied) out. The summary decides instead, after the test, in at_exit(). */
static void valgrind_check(const char *log, pid_t pid) {
        _cleanup_free_ char *out = NULL;
        char path[4200], line[1024];
        FILE *f;
        long errors = -1;

        if (!valgrind_mode())
                return;
        snprintf(path, sizeof(path), "%s.valgrind.%d", log, (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *p = strstr(line, "ERROR SUMMARY: ");
                if (p)
                        errors = strtol(p + strlen("ERROR SUMMARY: "), NULL, 10);
        }
        fclose(f);
        if (errors < 0)
                fprintf(stderr, "valgrind: no summary in %s (killed?)\n", path);
        else if (errors > 0) {
                valgrind_failed = true;
                if (tl_sh(&out, "cat '%s'", path) >= 0 && out)
                        fprintf(stderr, "--- %s ---\n%s--- end ---\n", path, out);
        } else
                fprintf(stderr, "valgrind: no errors in %s\n", path);
}

/* Replaces this (forked) process with valgrind running argv. */
static void exec_valgrind(char *const *argv, const char *log) {
        char *vg[256], *supp = NULL, *logfile = NULL;
        size_t k = 0;

        if (asprintf(&supp, "--suppressions=%s/tests/valgrind.supp", tl_srcdir()) < 0 ||
            asprintf(&logfile, "--log-file=%s.valgrind.%%p", log) < 0)
                _exit(127);
        vg[k++] = "valgrind";
        vg[k++] = "--tool=memcheck";
        vg[k++] = "--leak-check=full";
        vg[k++] = "--show-leak-kinds=definite";
        vg[k++] = "--errors-for-leak-kinds=definite";
        vg[k++] = "--child-silent-after-fork=yes";
        vg[k++] = "--num-callers=30";
        vg[k++] = supp;
        vg[k++] = logfile;
        for (size_t i = 0; argv[i] && k < ELEMENTSOF(vg) - 1; i++)
                vg[k++] = argv[i];
        vg[k] = NULL;
        execvp(vg[0], vg);
        _exit(127);
}

/* fork + exec blkledgerd with args; stdout and stderr to log; notify socket optional. */
static pid_t spawn(char *const *argv, const char *log, const char *notify) {
        pid_t parent = getpid(), pid;

        fflush(NULL);
        pid = fork();
        if (pid != 0)
                return pid;
        /* Dies with the test, whatever kills the test. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
                _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
        }
        if (notify)
                setenv("NOTIFY_SOCKET", notify, 1);
        else
                unsetenv("NOTIFY_SOCKET");
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (valgrind_mode())
                exec_valgrind(argv, log);
        execv(argv[0], argv);
        _exit(127);
}

static char **build_argv(struct tl_daemon *d) {
        size_t n = 0, k = 0;
        char **argv;

        while (d->args && d->args[n])
                n++;
        argv = calloc(n + 10, sizeof(char *));
        if (!argv)
                return NULL;
        if (asprintf(&argv[k++], "%s/blkledgerd", tl_builddir()) < 0)
                return NULL;
        argv[k++] = strdup("--foreground");
        argv[k++] = strdup("--state-dir");
        argv[k++] = strdup(d->state_dir);
        argv[k++] = strdup("--socket");
        argv[k++] = strdup(d->socket);
        for (size_t i = 0; i < n; i++)
                argv[k++] = strdup(d->args[i]);
        return argv;
}

static void free_argv(char **argv) {
        for (size_t i = 0; argv && argv[i]; i++)
                free(argv[i]);
        free(argv);
}

static int start(struct tl_daemon *d) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int nfd = -1;
        char **argv;
        int64_t deadline;

        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify-%d", tl_tmpdir(), (int) getpid());
        unlink(sa.sun_path);
        if (nfd < 0 || bind(nfd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        argv = build_argv(d);
        if (!argv)
                return -ENOMEM;
        d->pid = spawn(argv, d->log, sa.sun_path);
        free_argv(argv);
        if (d->pid < 0)
                return -errno;
        tl_register_pid(d->pid);

        deadline = now_monotonic_usec() + 20 * USEC_PER_SEC * tl_timeout_scale();
        while (now_monotonic_usec() < deadline) {
                struct pollfd p = { .fd = nfd, .events = POLLIN };
                char buf[4096];
                ssize_t n;
                int status;

                if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                        fprintf(stderr, "blkledgerd exited during start (status %d)\n", status);
                        valgrind_check(d->log, d->pid);
                        d->exit_status = status;
                        d->pid = 0;
                        unlink(sa.sun_path);
                        return -ECHILD;
                }
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = recv(nfd, buf, sizeof(buf) - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                if (strstr(buf, "READY=1")) {
                        unlink(sa.sun_path);
                        return 0;
                }
        }
        unlink(sa.sun_path);
        fprintf(stderr, "blkledgerd did not report READY=1 in time\n");
        return -ETIMEDOUT;
}

static bool initial_pass_done(void *userdata) {
        json_object *s = tl_cli_json(userdata, "status"), *v;
        bool done = s && json_object_object_get_ex(s, "initial_pass_done", &v) && json_object_get_boolean(v);

        json_object_put(s);
        return done;
}

int tl_daemon_wait_verified(struct tl_daemon *d) {
        if (tl_wait_for(30000, initial_pass_done, d)) /* scaled there */
                return 0;
        fprintf(stderr, "blkledgerd did not complete its first pass in time\n");
        tl_daemon_print_log(d);
        return -ETIMEDOUT;
}

struct tl_daemon *tl_daemon_start(const char *name, const char *const *extra) {
        struct tl_daemon *d = tl_daemon_start_unverified(name, extra);

        if (d && tl_daemon_wait_verified(d) < 0) {
                tl_daemon_free(d);
                return NULL;
        }
        return d;
}

struct tl_daemon *tl_daemon_start_unverified(const char *name, const char *const *extra) {
        struct tl_daemon *d = calloc(1, sizeof(*d));
        size_t n = 0, k = 0;

        if (!d)
                return NULL;
        while (extra && extra[n])
                n++;
        d->args = calloc(n + 3, sizeof(char *));
        if (asprintf(&d->state_dir, "%s/%s-state", tl_tmpdir(), name) < 0 ||
            asprintf(&d->socket, "%s/%s.sock", tl_tmpdir(), name) < 0 ||
            asprintf(&d->log, "%s/%s.log", tl_tmpdir(), name) < 0 || !d->args)
                return NULL;
        /* Limited to the test's own devices: it must never see, let alone touch, others. */
        if (asprintf(&d->args[k++], "--scope=loop:%s/img", tl_tmpdir()) < 0)
                return NULL;
        {
                char img[4200];
                snprintf(img, sizeof(img), "%s/img", tl_tmpdir());
                mkdir(img, 0755);
        }
        for (size_t i = 0; i < n; i++)
                d->args[k++] = strdup(extra[i]);
        track_daemon(d, true);
        if (start(d) < 0) {
                tl_daemon_print_log(d);
                tl_daemon_free(d);
                return NULL;
        }
        return d;
}

int tl_daemon_restart(struct tl_daemon *d) {
        int r = start(d);
        if (r < 0) {
                tl_daemon_print_log(d);
                return r;
        }
        return tl_daemon_wait_verified(d);
}

int tl_daemon_spawn(struct tl_daemon *d) {
        return start(d);
}

int tl_daemon_run_expect_exit(const char *name, const char *const *args, char **ret_output) {
        _cleanup_free_ char *log = NULL, *bin = NULL;
        size_t n = 0;
        char **argv;
        pid_t pid;
        int status = 0;

        while (args && args[n])
                n++;
        argv = calloc(n + 2, sizeof(char *));
        if (!argv || asprintf(&bin, "%s/blkledgerd", tl_builddir()) < 0 ||
            asprintf(&log, "%s/%s.log", tl_tmpdir(), name) < 0)
                return -1;
        argv[0] = bin;
        for (size_t i = 0; i < n; i++)
                argv[i + 1] = (char *) args[i];
        unlink(log);
        pid = spawn(argv, log, NULL);
        free(argv);
        if (pid < 0)
                return -1;
        tl_register_pid(pid);
        for (int i = 0, tries = 200 * tl_timeout_scale(); i < tries; i++) {
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        valgrind_check(log, pid);
                        break;
                }
                usleep(50000);
                if (i == tries - 1) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        return -ETIMEDOUT;
                }
        }
        if (ret_output)
                tl_sh(ret_output, "cat '%s'", log);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int tl_daemon_stop(struct tl_daemon *d, int sig) {
        int status;

        if (d->pid <= 0)
                return -ESRCH;
        kill(d->pid, sig);
        for (int i = 0, n = 200 * tl_timeout_scale(); i < n; i++) {
                if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                        valgrind_check(d->log, d->pid);
                        d->pid = 0;
                        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
                }
                usleep(50000);
        }
        fprintf(stderr, "blkledgerd did not stop within %d s of signal %d\n", 10 * tl_timeout_scale(), sig);
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        d->pid = 0;
        return -ETIMEDOUT;
}

bool tl_daemon_alive(struct tl_daemon *d) {
        return d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == 0;
}

void tl_daemon_print_log(struct tl_daemon *d) {
        _cleanup_free_ char *out = NULL;

        if (tl_sh(&out, "tail -n 40 '%s' 2>/dev/null", d->log) >= 0 && out)
                fprintf(stderr, "--- %s ---\n%s--- end ---\n", d->log, out);
}

void tl_daemon_free(struct tl_daemon *d) {
        if (!d)
                return;
        if (d->pid > 0)
                tl_daemon_stop(d, valgrind_mode() ? SIGTERM : SIGKILL);
        track_daemon(d, false);
        for (size_t i = 0; d->args && d->args[i]; i++)
                free(d->args[i]);
        free(d->args);
        free(d->state_dir);
        free(d->socket);
        free(d->log);
        free(d);
}

int tl_cli(struct tl_daemon *d, char **ret_out, const char *fmt, ...) {
        _cleanup_free_ char *args = NULL, *out = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&args, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -1;
        r = tl_sh(&out, "'%s/blkledger' --socket '%s' %s 2>&1", tl_builddir(), d->socket, args);
        fprintf(stderr, "blkledger %s -> %d: %s%s", args, r, out ? out : "",
                out && *out && out[strlen(out) - 1] == '\n' ? "" : "\n");
        if (ret_out)
                *ret_out = TAKE_PTR(out);
        return r;
}

void tl_detach_loops_under(const char *dir) {
        tl_sh(NULL,
              "for f in /sys/block/loop*/loop/backing_file; do case $(cat $f 2>/dev/null) in '%s'/*) "
              "losetup -d /dev/$(basename $(dirname $(dirname $f)));; esac; done",
              dir);
}

json_object *tl_cli_json(struct tl_daemon *d, const char *args) {
        _cleanup_free_ char *out = NULL;
        json_object *o;
        int r;

        r = tl_sh(&out, "'%s/blkledger' --socket '%s' --json %s", tl_builddir(), d->socket, args);
        if (r != 0) {
                fprintf(stderr, "blkledger %s failed with %d\n", args, r);
                return NULL;
        }
        o = json_tokener_parse(out ? out : "");
        if (!o)
                fprintf(stderr, "blkledger %s printed no JSON: %s\n", args, out ? out : "");
        return o;
}

json_object *tl_find_device(json_object *list, const char *key, const char *value) {
        for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                json_object *d = json_object_array_get_idx(list, i);
                if (streq_ptr(tl_str(d, key), value))
                        return d;
        }
        return NULL;
}

char *tl_blkid(const char *devnode, const char *key) {
        _cleanup_free_ char *out = NULL;
        char *line, *save = NULL;
        size_t kl = strlen(key);

        /* Exit status 2: nothing found, which is an answer too. */
        if (tl_sh(&out, "blkid -p -o export '%s'", devnode) < 0 || !out)
                return NULL;
        for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                if (strncmp(line, key, kl) == 0 && line[kl] == '=')
                        return strdup(line + kl + 1);
        return NULL;
}

bool tl_wait_for(int timeout_ms, bool (*cond)(void *userdata), void *userdata) {
        int64_t deadline = now_monotonic_usec() + (int64_t) timeout_ms * USEC_PER_MSEC * tl_timeout_scale();

        for (;;) {
                if (cond(userdata))
                        return true;
                if (now_monotonic_usec() >= deadline)
                        return false;
                usleep(20000);
        }
}

const char *tl_str(json_object *o, const char *key) {
        json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v) || !v)
                return NULL;
        return json_object_get_string(v);
}

int64_t tl_int(json_object *o, const char *key) {
        json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v) || !v)
                return -1;
        return json_object_get_int64(v);
}

#define UDEVD "/lib/systemd/systemd-udevd"
static bool started_udevd;
static pid_t udevd_pid;

/* Gone, or a zombie waiting for a parent that is not us. */
static bool udevd_gone(void *userdata) {
        _cleanup_free_ char *st = NULL;
        return tl_sh(&st, "awk '{print $3}' /proc/%d/stat 2>/dev/null", (int) udevd_pid) != 0 || !st ||
               st[0] == 0 || st[0] == 'Z';
}

static bool udevd_answers(void *userdata) {
        return tl_sh(NULL, "udevadm control --ping -t 1 >/dev/null 2>&1") == 0;
}

void tl_udevd_start(void) {
        _cleanup_free_ char *pid = NULL;

        if (access(UDEVD, X_OK) < 0)
                tl_skip("systemd-udevd is not installed (Debian package udev)");
        if (udevd_answers(NULL))
                return;
        if (tl_sh(NULL, "%s --daemon", UDEVD) != 0)
                tl_skip("systemd-udevd does not start here");
        started_udevd = true;
        if (!tl_wait_for(10000, udevd_answers, NULL))
                tl_skip("systemd-udevd did not answer after its start");
        /* If this test dies before tl_udevd_stop(), the harness stops udevd. */
        if (tl_sh(&pid, "pidof -s systemd-udevd") == 0 && pid) {
                udevd_pid = (pid_t) atoi(pid);
                tl_register_pid(udevd_pid);
        }
}

void tl_udevd_stop(void) {
        if (!started_udevd)
                return;
        tl_sh(NULL, "udevadm control --exit >/dev/null 2>&1");
        /* Wait until it is really gone, so the next test sees no udevd. */
        if (udevd_pid > 0 && !tl_wait_for(10000, udevd_gone, NULL))
                fprintf(stderr, "systemd-udevd (pid %d) did not exit\n", (int) udevd_pid);
        started_udevd = false;
}

#define FUSE_SUPER_MAGIC 0x65735546

void tl_fuse_hang_require(void) {
        _cleanup_free_ char *helper = NULL;

        if (asprintf(&helper, "%s/tests/fuse-hang", tl_builddir()) < 0 || access(helper, X_OK) < 0)
                tl_skip("tests/fuse-hang was not built (configure found no fuse3)");
        if (access("/dev/fuse", R_OK | W_OK) < 0)
                tl_skip("no /dev/fuse");
}

struct served {
        const char *mountpoint;
        char *file;
};

static bool fuse_served(void *userdata) {
        const struct served *s = userdata;
        struct statfs sfs;
        struct stat st;

        return statfs(s->mountpoint, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC && stat(s->file, &st) == 0 &&
               st.st_size > 0;
}

pid_t tl_fuse_hang_start(const char *mountpoint, const char *backing, int hang_max) {
        _cleanup_free_ char *helper = NULL;
        struct served s = { .mountpoint = mountpoint };
        pid_t pid;
        bool up;

        if (asprintf(&helper, "%s/tests/fuse-hang", tl_builddir()) < 0 ||
            asprintf(&s.file, "%s/disk.img", mountpoint) < 0)
                return -1;
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                free(s.file);
                return -1;
        }
        if (pid == 0) {
                char max[16];
                snprintf(max, sizeof(max), "%d", hang_max);
                execl(helper, helper, mountpoint, backing, max, (char *) NULL);
                _exit(127);
        }
        tl_register_pid(pid);
        up = tl_wait_for(10000, fuse_served, &s);
        free(s.file);
        if (!up) {
                fprintf(stderr, "the FUSE file system did not come up\n");
                tl_fuse_hang_stop(pid, mountpoint);
                return -1;
        }
        return pid;
}

struct mode_wait {
        const char *mountpoint, *mode;
};

static bool mode_in_force(void *userdata) {
        const struct mode_wait *w = userdata;
        _cleanup_free_ char *path = NULL;
        char now[16] = "";
        FILE *f;

        if (asprintf(&path, "%s/mode", w->mountpoint) < 0)
                return false;
        f = fopen(path, "re");
        if (!f)
                return false;
        if (!fgets(now, sizeof(now), f))
                now[0] = 0;
        fclose(f);
        now[strcspn(now, "\n")] = 0;
        return strcmp(now, w->mode) == 0;
}

bool tl_fuse_hang_mode(pid_t pid, const char *mountpoint, const char *mode) {
        struct mode_wait w = { mountpoint, mode };
        int sig = strcmp(mode, "all") == 0 ? SIGUSR1 : strcmp(mode, "probe") == 0 ? SIGRTMIN : SIGUSR2;

        if (kill(pid, sig) < 0)
                return false;
        /* The signal is handled by whichever of its threads runs next: wait for that. */
        return tl_wait_for(5000, mode_in_force, &w);
}

void tl_fuse_hang_stop(pid_t pid, const char *mountpoint) {
        if (pid <= 0)
                return;
        kill(pid, SIGUSR2);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        (void) tl_sh(NULL, "umount -l '%s' 2>/dev/null", mountpoint);
}
