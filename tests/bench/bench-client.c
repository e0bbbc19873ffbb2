/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Measurements for tests/bench/bench.sh that a shell cannot take precisely.
 *
 *   bench-client latency SOCKET MS
 *       GetStatus, one call after another, for MS milliseconds; prints
 *       "calls p50_ms p99_ms max_ms".
 *   bench-client start SOCKET LOG COMMAND [ARG...]
 *       Starts COMMAND (the daemon; its output goes to LOG) and asks SOCKET for
 *       GetStatus every 5 ms; prints "served_ms verified_ms pid": when it first answered
 *       with its ledger, and when it said its first pass was complete (every record
 *       verified). The daemon keeps running.
 *   bench-client events SOCKET DIR COUNT
 *       COUNT times: a new 8 MiB image in DIR attached to a loop device, and the time
 *       until the daemon streams the device's "appeared" event to a Watch; then it is
 *       detached. Prints "count p50_ms p99_ms max_ms".
 *   bench-client remove-loops DEVNODE...
 *       Removes the given loop devices, which must be detached: `losetup -d` leaves the
 *       node, and thousands of empty nodes would slow every later enumeration.
 *
 * Root for "events" (loop devices). Every device it attaches is detached again: they are
 * attached with autoclear while held open, so they go with this process even if it is
 * killed. */
#include "config.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <linux/loop.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libblkledger.h"
#include "util.h"

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples (usec), in ms. */
static double pct(const int64_t *v, size_t n, double p) {
        size_t k = (size_t) (p / 100.0 * (double) n + 0.999999);

        if (n == 0)
                return 0;
        k = k == 0 ? 0 : k - 1;
        return (double) v[MIN(k, n - 1)] / 1000.0;
}

static void report(int64_t *v, size_t n) {
        qsort(v, n, sizeof(*v), cmp_i64);
        printf("%zu %.3f %.3f %.3f\n", n, pct(v, n, 50), pct(v, n, 99), n ? (double) v[n - 1] / 1000.0 : 0.0);
}


static int latency(const char *socket, long ms) {
        struct blkledger *b;
        int64_t until, *v = NULL;
        size_t n = 0, cap = 0;
        int r;

        r = blkledger_connect(socket, &b);
        if (r < 0) {
                fprintf(stderr, "bench-client: cannot connect to %s: %s\n", socket, strerror(-r));
                return 1;
        }
        blkledger_set_timeout(b, 60000);
        until = now_monotonic_usec() + ms * USEC_PER_MSEC;
        while (now_monotonic_usec() < until) {
                _cleanup_free_ char *reply = NULL;
                int64_t t0 = now_monotonic_usec();

                r = blkledger_call(b, "io.blkledger.GetStatus", NULL, &reply);
                if (r < 0) {
                        fprintf(stderr, "bench-client: GetStatus: %s\n", strerror(-r));
                        return 1;
                }
                if (n == cap) {
                        int64_t *nv = realloc(v, (cap = cap ? cap * 2 : 1024) * sizeof(*v));
                        if (!nv)
                                return 1;
                        v = nv;
                }
                v[n++] = now_monotonic_usec() - t0;
                /* About a hundred calls a second: a client, not a flood. */
                usleep(10000);
        }
        report(v, n);
        free(v);
        blkledger_unref(b);
        return 0;
}

static int start(const char *socket, const char *log, char **argv) {
        int64_t t0 = now_monotonic_usec(), served = -1, until = t0 + 1800 * USEC_PER_SEC;
        struct blkledger *b = NULL;
        pid_t pid;

        pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
                        _exit(127);
                execvp(argv[0], argv);
                _exit(127);
        }
        while (now_monotonic_usec() < until) {
                _cleanup_free_ char *reply = NULL;
                json_object *o, *v;
                bool done;

                if (waitpid(pid, NULL, WNOHANG) == pid) {
                        fprintf(stderr, "bench-client: %s exited; see %s\n", argv[0], log);
                        return 1;
                }
                if (!b && blkledger_connect(socket, &b) < 0) {
                        b = NULL;
                        usleep(5000);
                        continue;
                }
                blkledger_set_timeout(b, 60000);
                if (blkledger_call(b, "io.blkledger.GetStatus", NULL, &reply) < 0) {
                        b = blkledger_unref(b);
                        usleep(5000);
                        continue;
                }
                if (served < 0)
                        served = now_monotonic_usec() - t0;
                o = json_tokener_parse(reply);
                done = o && json_object_object_get_ex(o, "initial_pass_done", &v) && json_object_get_boolean(v);
                json_object_put(o);
                if (done) {
                        printf("%.1f %.1f %d\n", (double) served / 1000.0, (double) (now_monotonic_usec() - t0) / 1000.0,
                               (int) pid);
                        blkledger_unref(b);
                        return 0;
                }
                usleep(5000);
        }
        fprintf(stderr, "bench-client: %s did not finish its first pass\n", argv[0]);
        return 1;
}

static int attach(const char *file, char **ret_dev) {
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        _cleanup_close_ int f = open(file, O_RDWR | O_CLOEXEC);

        if (ctl < 0 || f < 0)
                return -errno;
        for (int tries = 0; tries < 100; tries++) {
                struct loop_config cfg = { .fd = (unsigned) f, .info.lo_flags = LO_FLAGS_AUTOCLEAR };
                char dev[64];
                int nr = ioctl(ctl, LOOP_CTL_GET_FREE), fd;

                if (nr < 0)
                        return -errno;
                snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
                fd = open(dev, O_RDWR | O_CLOEXEC);
                if (fd < 0)
                        continue;
                snprintf((char *) cfg.info.lo_file_name, LO_NAME_SIZE, "%s", file);
                if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
                        *ret_dev = strdup(dev);
                        return fd;
                }
                close(fd);
        }
        return -EBUSY;
}

/* Waits for the event that says devnode appeared; -ETIMEDOUT after 30 s. */
static int wait_appeared(struct blkledger *b, const char *devnode) {
        int64_t until = now_monotonic_usec() + 30 * USEC_PER_SEC;

        while (now_monotonic_usec() < until) {
                _cleanup_free_ char *reply = NULL;
                json_object *o, *e, *after, *dn, *kind;
                int continues = 0, r;
                bool hit;

                r = blkledger_receive(b, &reply, &continues);
                if (r < 0)
                        return r;
                o = json_tokener_parse(reply);
                hit = o && json_object_object_get_ex(o, "event", &e) && e &&
                      json_object_object_get_ex(e, "kind", &kind) &&
                      (streq(json_object_get_string(kind), "appeared") ||
                       streq(json_object_get_string(kind), "reappeared")) &&
                      json_object_object_get_ex(e, "after", &after) && after &&
                      json_object_object_get_ex(after, "devnode", &dn) && streq(json_object_get_string(dn), devnode);
                json_object_put(o);
                if (hit)
                        return 0;
        }
        return -ETIMEDOUT;
}

static int events(const char *socket, const char *dir, long count) {
        _cleanup_free_ int64_t *v = calloc((size_t) count, sizeof(*v));
        _cleanup_free_ char *first = NULL;
        struct blkledger *b;
        size_t n = 0;
        int r, continues;

        if (!v)
                return 1;
        r = blkledger_connect(socket, &b);
        if (r < 0) {
                fprintf(stderr, "bench-client: cannot connect to %s: %s\n", socket, strerror(-r));
                return 1;
        }
        blkledger_set_timeout(b, 30000);
        r = blkledger_call_more(b, "io.blkledger.Watch", NULL);
        if (r >= 0)
                r = blkledger_receive(b, &first, &continues); /* where the stream starts */
        if (r < 0) {
                fprintf(stderr, "bench-client: Watch: %s\n", strerror(-r));
                return 1;
        }
        for (long i = 0; i < count; i++) {
                _cleanup_free_ char *file = NULL, *dev = NULL;
                int64_t t0;
                int fd;

                if (asprintf(&file, "%s/ev%ld.img", dir, i) < 0)
                        return 1;
                fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || ftruncate(fd, 8 << 20) < 0) {
                        fprintf(stderr, "bench-client: %s: %m\n", file);
                        return 1;
                }
                close(fd);
                t0 = now_monotonic_usec();
                fd = attach(file, &dev);
                if (fd < 0) {
                        fprintf(stderr, "bench-client: cannot attach %s: %s\n", file, strerror(-fd));
                        return 1;
                }
                r = wait_appeared(b, dev);
                if (r < 0) {
                        fprintf(stderr, "bench-client: no event for %s: %s\n", dev, strerror(-r));
                        close(fd);
                        return 1;
                }
                v[n++] = now_monotonic_usec() - t0;
                ioctl(fd, LOOP_CLR_FD, 0);
                close(fd);
                unlink(file);
                {
                        /* And the node, which a detach leaves behind. */
                        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
                        for (int tries = 0; ctl >= 0 && tries < 50; tries++) {
                                if (ioctl(ctl, LOOP_CTL_REMOVE, atoi(dev + strlen("/dev/loop"))) == 0 || errno != EBUSY)
                                        break;
                                usleep(10000);
                        }
                }
                /* Attaches a few times a second, not a storm: the latency of one event. */
                usleep(100000);
        }
        report(v, n);
        blkledger_unref(b);
        return 0;
}

static int remove_loops(char **devs) {
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        int failed = 0;

        if (ctl < 0) {
                perror("/dev/loop-control");
                return 1;
        }
        for (; *devs; devs++) {
                const char *p = startswith(*devs, "/dev/loop");
                char *end;
                long nr = p ? strtol(p, &end, 10) : -1;

                if (!p || *end || nr < 0) {
                        fprintf(stderr, "bench-client: not a loop device: %s\n", *devs);
                        failed = 1;
                        continue;
                }
                /* EBUSY: still attached or open; left alone. */
                if (ioctl(ctl, LOOP_CTL_REMOVE, (int) nr) < 0 && errno != ENODEV) {
                        fprintf(stderr, "bench-client: cannot remove %s: %m\n", *devs);
                        failed = 1;
                }
        }
        return failed;
}

int main(int argc, char **argv) {
        if (argc == 4 && streq(argv[1], "latency"))
                return latency(argv[2], strtol(argv[3], NULL, 10));
        if (argc >= 5 && streq(argv[1], "start"))
                return start(argv[2], argv[3], argv + 4);
        if (argc >= 2 && streq(argv[1], "remove-loops"))
                return remove_loops(argv + 2);
        if (argc == 5 && streq(argv[1], "events"))
                return events(argv[2], argv[3], strtol(argv[4], NULL, 10));
        fprintf(stderr, "usage: %s latency SOCKET MS | start SOCKET LOG COMMAND... | events SOCKET DIR COUNT | "
                "remove-loops DEVNODE...\n",
                argv[0]);
        return 2;
}
