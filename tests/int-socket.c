/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the daemon's socket survives a thousand garbage, truncated and oversized
 * messages while a well-behaved client, a stuck client and a client that never reads are
 * connected; reading is open to every user and Reconcile is root-only; watchers stream
 * history and live events, and a watcher too slow to keep up is told where to resume
 * without losing an event; connection limits hold; the CLI fails in one clear line. */
#include "config.h"

#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "libblkledger.h"
#include "testlib.h"
#include "util.h"

static struct tl_loop *disk;
static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        disk = tl_loop_new(NULL, "disk.img", 32 << 20, "mkfs.ext4 -q -F -L disk %s");
        if (!disk)
                return -1;
        daemon_ = tl_daemon_start("socket", (const char *const[]) { "--watch-max-lag=20", NULL });
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        if (daemon_)
                assert_true(tl_daemon_alive(daemon_));
        tl_daemon_free(daemon_);
        tl_loop_free(disk);
        return 0;
}

static int connect_raw(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

static void send_all(int fd, const void *buf, size_t len) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        /* The daemon may close a connection before reading all of it. */
                        if (errno == EPIPE || errno == ECONNRESET)
                                return;
                        fail_msg("send: %m");
                }
                p += n;
                len -= (size_t) n;
        }
}

/* Reads until EOF or timeout; returns bytes read, -1 on timeout. */
static ssize_t read_until_eof(int fd, char *buf, size_t size, int timeout_ms) {
        size_t have = 0;
        int64_t deadline = now_monotonic_usec() + timeout_ms * USEC_PER_MSEC;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int left = (int) ((deadline - now_monotonic_usec()) / USEC_PER_MSEC);
                ssize_t n;

                if (left <= 0 || poll(&p, 1, left) <= 0)
                        return -1;
                n = recv(fd, buf + have, size - have - 1, 0);
                if (n < 0 && errno == ECONNRESET)
                        n = 0;
                if (n <= 0) {
                        buf[have] = 0;
                        return (ssize_t) have;
                }
                have += (size_t) n;
                if (have >= size - 1)
                        return (ssize_t) have;
        }
}

static struct blkledger *good_client(void) {
        struct blkledger *b = NULL;
        assert_int_equal(blkledger_connect(daemon_->socket, &b), 0);
        blkledger_set_timeout(b, 3000);
        return b;
}

/* The well-behaved client gets a correct answer. */
static void assert_served(struct blkledger *b) {
        _cleanup_free_ char *reply = NULL;
        json_object *o, *devs;
        int r = blkledger_call(b, "io.blkledger.ListDevices", NULL, &reply);

        if (r < 0)
                fail_msg("well-behaved client not served: %s (%s)", strerror(-r), blkledger_get_error(b) ?: "");
        o = json_tokener_parse(reply);
        assert_true(json_object_object_get_ex(o, "devices", &devs));
        assert_int_equal(json_object_array_length(devs), 1);
        json_object_put(o);
}

static char *garbage(unsigned i, size_t *ret_len, bool *ret_terminate) {
        static const char *const fixed[] = {
                "{", "}", "[]", "null", "123", "\"str\"", "{\"method\":5}", "{\"method\":null}",
                "{\"method\":\"\"}", "{\"method\":\"x\"}", "{\"method\":\"io.blkledger\"}",
                "{\"method\":\"io.blkledger.Nope\"}", "{\"method\":\"io.BlkLedger.ListDevices\"}",
                "{\"method\":\"io.blkledger.ListDevices\",\"parameters\":[]}",
                "{\"method\":\"io.blkledger.ListDevices\",\"parameters\":5}",
                "{\"method\":\"io.blkledger.ListDevices\",\"parameters\":{\"state\":7}}",
                "{\"method\":\"io.blkledger.ListDevices\",\"parameters\":{\"bogus\":1}}",
                "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{\"id\":\"1\"}}",
                "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{}}",
                "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{\"id\":99999999999999999999999}}",
                "{\"method\":\"io.blkledger.ListEvents\",\"parameters\":{\"limit\":-1}}",
                "{\"method\":\"io.blkledger.ListEvents\",\"parameters\":{\"since\":1e400}}",
                "{\"method\":\"io.blkledger.Watch\"}",
                "{\"method\":\"io.blkledger.Watch\",\"more\":true,\"parameters\":{\"since\":-5}}",
                "{\"method\":\"io.blkledger.ListDevices\",\"more\":\"yes\"}",
                "{\"method\":\"io.blkledger.ListDevices\",\"more\":true,\"oneway\":true}",
                "{\"method\":\"io.blkledger.ListDevices\",\"upgrade\":true}",
                "{\"method\":\"io.blkledger.ListDevices\",\"extra\":1}",
                "{\"method\":\"io.blkledger.ListDevices\"}trailing",
                "{\"method\":\"io.blkledger.List\xff\xfe\"}",
                "{\"method\":\"io.blkledger.ListDevices\",\"parameters\":{\"state\":\"\\u0000\"}}",
                "{'method':'io.blkledger.ListDevices'}",
                "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"../../etc\"}}",
        };
        size_t len;
        char *m;

        *ret_terminate = true;
        switch (i % 7) {
        case 0: /* a fixed malformed call */
                m = strdup(fixed[(i / 7) % ELEMENTSOF(fixed)]);
                len = strlen(m);
                break;
        case 1: /* random bytes */
                len = 1 + (size_t) (random() % 512);
                m = malloc(len + 1);
                for (size_t k = 0; k < len; k++)
                        m[k] = (char) (1 + random() % 255);
                break;
        case 2: { /* a valid call cut short, terminated */
                const char *v = "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{\"name\":\"loop0\"}}";
                len = (size_t) (random() % (long) strlen(v));
                m = strndup(v, len);
                break;
        }
        case 3: { /* a valid call cut short, connection closed */
                const char *v = "{\"method\":\"io.blkledger.ListDevices\"}";
                len = 1 + (size_t) (random() % (long) (strlen(v) - 1));
                m = strndup(v, len);
                *ret_terminate = false;
                break;
        }
        case 4: /* oversized: beyond the 64 KiB limit */
                len = 70000 + (size_t) (random() % 10000);
                m = malloc(len + 1);
                memset(m, 'a', len);
                m[0] = '"';
                break;
        case 5: /* deep nesting */
                len = 2000;
                m = malloc(len + 1);
                memset(m, '[', len);
                break;
        default: { /* a huge string parameter within the limit */
                len = 60000;
                m = malloc(len + 100);
                strcpy(m, "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{\"name\":\"");
                size_t h = strlen(m);
                memset(m + h, 'x', len - h - 4);
                strcpy(m + len - 4, "\"}}");
                len = strlen(m);
                break;
        }
        }
        m[len] = 0;
        *ret_len = len;
        return m;
}

static void test_garbage(void **state) {
        struct blkledger *b = good_client();
        int stuck, flood;
        char buf[1 << 16];
        unsigned errors = 0, closed = 0;

        srandom(42);
        /* A client that starts a message and never finishes it... */
        stuck = connect_raw(daemon_->socket);
        send_all(stuck, "{\"method\":\"io.blk", 17);
        /* ...and one that sends calls but never reads a reply. */
        flood = connect_raw(daemon_->socket);
        {
                const char call[] = "{\"method\":\"io.blkledger.ListDevices\"}";
                for (int i = 0; i < 2000; i++) {
                        ssize_t n = send(flood, call, sizeof(call), MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n < 0)
                                break; /* the daemon stopped reading it: backpressure works */
                }
        }

        for (unsigned i = 0; i < 1000; i++) {
                size_t len;
                bool terminate;
                _cleanup_free_ char *m = garbage(i, &len, &terminate);
                int fd = connect_raw(daemon_->socket);
                ssize_t n;

                send_all(fd, m, len + (terminate ? 1 : 0));
                shutdown(fd, SHUT_WR);
                n = read_until_eof(fd, buf, sizeof(buf), 5000);
                close(fd);
                if (n < 0)
                        fail_msg("message %u (kind %u) got neither an answer nor a close", i, i % 7);
                if (n == 0)
                        closed++;
                else {
                        /* Every reply to garbage is an error. */
                        for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
                                json_object *o = json_tokener_parse(p), *e;
                                if (!o || !json_object_object_get_ex(o, "error", &e))
                                        fail_msg("message %u (kind %u) got a non-error reply: %s", i, i % 7, p);
                                json_object_put(o);
                                errors++;
                        }
                }
                if (i % 25 == 0)
                        assert_served(b);
        }
        assert_served(b);
        assert_true(errors > 500);
        assert_true(closed > 0);
        assert_true(tl_daemon_alive(daemon_));
        close(stuck);
        close(flood);
        blkledger_unref(b);
}

static void test_varlink_service(void **state) {
        struct blkledger *b = good_client();
        _cleanup_free_ char *reply = NULL, *want = NULL;
        json_object *o, *ifaces, *desc;

        assert_int_equal(blkledger_call(b, "org.varlink.service.GetInfo", NULL, &reply), 0);
        o = json_tokener_parse(reply);
        assert_string_equal(tl_str(o, "version"), PACKAGE_VERSION);
        assert_true(json_object_object_get_ex(o, "interfaces", &ifaces));
        assert_int_equal(json_object_array_length(ifaces), 2);
        json_object_put(o);
        free(reply);
        reply = NULL;
        assert_int_equal(blkledger_call(b, "org.varlink.service.GetInterfaceDescription", "{\"interface\":\"io.blkledger\"}",
                                        &reply),
                         0);
        o = json_tokener_parse(reply);
        assert_true(json_object_object_get_ex(o, "description", &desc));
        assert_int_equal(tl_sh(&want, "cat '%s/lib/io.blkledger.varlink'", tl_srcdir()), 0);
        assert_string_equal(json_object_get_string(desc), want);
        json_object_put(o);
        assert_int_equal(blkledger_call(b, "io.blkledger.Nope", NULL, NULL), -EREMOTEIO);
        assert_string_equal(blkledger_get_error(b), "org.varlink.service.MethodNotFound");
        assert_int_equal(blkledger_call(b, "com.example.Nope", NULL, NULL), -EREMOTEIO);
        assert_string_equal(blkledger_get_error(b), "org.varlink.service.InterfaceNotFound");
        /* Methods named List... work without any parameters at all. */
        assert_int_equal(blkledger_call(b, "io.blkledger.ListEvents", NULL, NULL), 0);
        assert_int_equal(blkledger_call(b, "io.blkledger.ListDevices", "{}", NULL), 0);
        blkledger_unref(b);
}

/* In a child that dropped root: reading works, Reconcile is refused. */
static void test_unprivileged(void **state) {
        pid_t pid;
        int status;

        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct blkledger *b = NULL;
                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(10);
                if (blkledger_connect(daemon_->socket, &b) < 0)
                        _exit(11);
                if (blkledger_call(b, "io.blkledger.ListDevices", NULL, NULL) < 0)
                        _exit(12);
                if (blkledger_call(b, "io.blkledger.GetStatus", NULL, NULL) < 0)
                        _exit(13);
                if (blkledger_call(b, "io.blkledger.Reconcile", NULL, NULL) != -EREMOTEIO)
                        _exit(14);
                if (!streq_ptr(blkledger_get_error(b), "org.varlink.service.PermissionDenied"))
                        _exit(15);
                blkledger_unref(b);
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        /* Root may. */
        {
                struct blkledger *b = good_client();
                assert_int_equal(blkledger_call(b, "io.blkledger.Reconcile", NULL, NULL), 0);
                blkledger_unref(b);
        }
}

static int64_t reply_seq(const char *reply, int64_t *ret_last) {
        json_object *o = json_tokener_parse(reply), *e;
        int64_t seq = -1;

        assert_non_null(o);
        if (json_object_object_get_ex(o, "event", &e) && e)
                seq = tl_int(e, "seq");
        if (ret_last)
                *ret_last = tl_int(o, "last_seq");
        json_object_put(o);
        return seq;
}

static void test_watch_history_and_live(void **state) {
        struct blkledger *w = good_client();
        int64_t last, seq, n = 0;
        int continues;
        struct tl_loop *l;
        bool seen = false;

        assert_int_equal(blkledger_call_more(w, "io.blkledger.Watch", "{\"since\":0}"), 0);
        {
                _cleanup_free_ char *r = NULL;
                assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                assert_true(continues);
                assert_int_equal(reply_seq(r, &last), -1);
                assert_true(last >= 2);
        }
        /* The whole history, in order... */
        while (n < last) {
                _cleanup_free_ char *r = NULL;
                assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                seq = reply_seq(r, NULL);
                assert_int_equal(seq, n + 1);
                n = seq;
        }
        /* ...then what happens now. */
        l = tl_loop_new(NULL, "live.img", 16 << 20, NULL);
        assert_non_null(l);
        while (!seen) {
                _cleanup_free_ char *r = NULL;
                json_object *o, *e;
                assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                o = json_tokener_parse(r);
                e = json_object_object_get(o, "event");
                assert_int_equal(tl_int(e, "seq"), n + 1);
                n++;
                if (streq_ptr(tl_str(e, "kind"), "appeared") &&
                    streq_ptr(tl_str(json_object_object_get(e, "after"), "loop_backing_file"), l->file))
                        seen = true;
                json_object_put(o);
        }
        tl_loop_free(l);
        blkledger_unref(w);
}

static int64_t want_present;

static bool present_count_is(void *userdata) {
        json_object *s = tl_cli_json(daemon_, "status");
        bool ok = tl_int(s, "devices_present") == want_present;

        json_object_put(s);
        return ok;
}

static void test_slow_watcher_resumes_without_loss(void **state) {
        enum { N = 320 };
        struct tl_loop *l[N];
        int fd = connect_raw(daemon_->socket);
        const char call[] = "{\"method\":\"io.blkledger.Watch\",\"more\":true}";
        int64_t first_new = -1, resume = -1, expect, last_seen = 0;
        static char buf[8 << 20];
        ssize_t n;
        json_object *s;
        struct blkledger *w;

        s = tl_cli_json(daemon_, "status");
        first_new = tl_int(s, "last_seq") + 1;
        json_object_put(s);
        send_all(fd, call, sizeof(call));
        /* Hundreds of events while this watcher reads nothing: its socket buffer and the
         * daemon's output watermark fill up, then it falls more than 20 events behind. */
        for (int i = 0; i < N; i++) {
                char name[32];
                snprintf(name, sizeof(name), "burst%d.img", i);
                l[i] = tl_loop_new(NULL, name, 1 << 20, NULL);
                assert_non_null(l[i]);
        }
        /* Let the daemon record every one (a device detached before it looked at it
         * would make no event at all), then take them all away again. */
        want_present = 1 + N;
        assert_true(tl_wait_for(20000, present_count_is, NULL));
        for (int i = 0; i < N; i++)
                tl_loop_free(l[i]);
        want_present = 1;
        assert_true(tl_wait_for(20000, present_count_is, NULL));

        n = read_until_eof(fd, buf, sizeof(buf), 15000);
        close(fd);
        assert_true(n > 0);
        expect = first_new;
        for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
                json_object *o = json_tokener_parse(p), *e, *err;
                assert_non_null(o);
                if (json_object_object_get_ex(o, "error", &err)) {
                        assert_string_equal(json_object_get_string(err), "io.blkledger.WatchTooSlow");
                        resume = tl_int(json_object_object_get(o, "parameters"), "resume_since");
                        json_object_put(o);
                        assert_true(p + strlen(p) + 1 >= buf + n); /* the error is the last message */
                        break;
                }
                e = json_object_object_get(json_object_object_get(o, "parameters"), "event");
                if (e) {
                        /* Every event up to the error, none skipped. */
                        assert_int_equal(tl_int(e, "seq"), expect);
                        last_seen = expect++;
                }
                json_object_put(o);
        }
        assert_true(resume > 0);
        assert_int_equal(resume, last_seen);

        /* Resuming from there delivers the rest, again without a gap. */
        {
                _cleanup_free_ char *params = NULL;
                int64_t last, got = resume;
                int continues;
                assert_true(asprintf(&params, "{\"since\":%lld}", (long long) resume) > 0);
                w = good_client();
                assert_int_equal(blkledger_call_more(w, "io.blkledger.Watch", params), 0);
                _cleanup_free_ char *r0 = NULL;
                assert_int_equal(blkledger_receive(w, &r0, &continues), 0);
                reply_seq(r0, &last);
                while (got < last) {
                        _cleanup_free_ char *r = NULL;
                        assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                        assert_int_equal(reply_seq(r, NULL), got + 1);
                        got++;
                }
                blkledger_unref(w);
        }
}

/* A connection the daemon took as a client: it answers a call. The CLI calls that
 * waited for the daemon's start may still hold slots the daemon has not seen them leave
 * yet (likely under valgrind); a connection refused for that is made again. */
static int connect_client(const char *path) {
        static const char call[] = "{\"method\":\"org.varlink.service.GetInfo\"}";

        for (int tries = 0; tries < 100; tries++) {
                int fd = connect_raw(path);
                char buf[16384];
                size_t have = 0;

                send_all(fd, call, sizeof(call));
                while (have < sizeof(buf) - 1 && !memchr(buf, 0, have)) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        ssize_t n;
                        if (poll(&p, 1, 10000 * tl_timeout_scale()) <= 0)
                                break;
                        n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
                        if (n <= 0)
                                break;
                        have += (size_t) n;
                }
                buf[have] = 0;
                if (memchr(buf, 0, have) && !strstr(buf, "TooManyClients"))
                        return fd;
                close(fd);
                usleep(50000);
        }
        fail_msg("no client slot became free");
        return -1;
}

static void test_max_clients(void **state) {
        struct tl_daemon *d = tl_daemon_start("limited", (const char *const[]) { "--max-clients=3", NULL });
        int fds[3];
        char buf[4096];
        ssize_t n;
        int extra;
        json_object *o;

        assert_non_null(d);
        for (int i = 0; i < 3; i++)
                fds[i] = connect_client(d->socket);
        extra = connect_raw(d->socket);
        n = read_until_eof(extra, buf, sizeof(buf), 3000 * tl_timeout_scale());
        close(extra);
        assert_true(n > 0);
        o = json_tokener_parse(buf);
        assert_string_equal(tl_str(o, "error"), "io.blkledger.TooManyClients");
        json_object_put(o);
        /* The library reports the refusal as the daemon's error, not as a lost line. */
        {
                struct blkledger *b = NULL;
                assert_int_equal(blkledger_connect(d->socket, &b), 0);
                assert_int_equal(blkledger_call(b, "io.blkledger.GetStatus", NULL, NULL), -EREMOTEIO);
                assert_string_equal(blkledger_get_error(b), "io.blkledger.TooManyClients");
                blkledger_unref(b);
        }
        /* One leaves, another gets in. */
        close(fds[0]);
        usleep(100000 * tl_timeout_scale());
        {
                struct blkledger *b = NULL;
                assert_int_equal(blkledger_connect(d->socket, &b), 0);
                assert_int_equal(blkledger_call(b, "io.blkledger.GetStatus", NULL, NULL), 0);
                blkledger_unref(b);
        }
        close(fds[1]);
        close(fds[2]);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        tl_daemon_free(d);
}

/* A call that timed out must not leave its late reply to answer the next call. */
static void test_library_timeout_breaks_connection(void **state) {
        struct blkledger *b = good_client();
        _cleanup_free_ char *reply = NULL;
        int r;

        blkledger_set_timeout(b, 0);
        r = blkledger_call(b, "io.blkledger.Reconcile", NULL, NULL);
        if (r == 0) {
                /* The reply beat a zero timeout: nothing was left behind to test. */
                blkledger_unref(b);
                skip();
        }
        assert_int_equal(r, -ETIMEDOUT);
        usleep(200000);
        blkledger_set_timeout(b, 3000);
        assert_int_equal(blkledger_call(b, "io.blkledger.GetStatus", NULL, &reply), -ENOTCONN);
        blkledger_unref(b);
}

/* Replies the library read ahead are announced by blkledger_pending(), so a caller that
 * polls the descriptor does not wait for what it already has. */
static void test_library_pending(void **state) {
        struct blkledger *w = good_client();
        _cleanup_free_ char *first = NULL;
        int continues, n = 0;

        assert_int_equal(blkledger_call_more(w, "io.blkledger.Watch", "{\"since\":0}"), 0);
        usleep(300000); /* all of the history is on its way in one go */
        assert_int_equal(blkledger_receive(w, &first, &continues), 0);
        assert_int_equal(blkledger_pending(w), 1);
        while (blkledger_pending(w) == 1) {
                _cleanup_free_ char *r = NULL;
                assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                n++;
        }
        assert_true(n >= 2);
        blkledger_unref(w);
}

/* Closed watchers do not linger as connections (they would count against the limits). */
static void test_closed_watchers_are_freed(void **state) {
        json_object *s;
        int64_t base;

        s = tl_cli_json(daemon_, "status");
        base = tl_int(s, "clients");
        json_object_put(s);
        for (int i = 0; i < 5; i++) {
                struct blkledger *w = good_client();
                _cleanup_free_ char *r = NULL;
                int continues;
                assert_int_equal(blkledger_call_more(w, "io.blkledger.Watch", NULL), 0);
                assert_int_equal(blkledger_receive(w, &r, &continues), 0);
                blkledger_unref(w);
        }
        usleep(200000);
        s = tl_cli_json(daemon_, "status");
        assert_int_equal(tl_int(s, "clients"), base);
        json_object_put(s);
}

static void test_cli_errors(void **state) {
        _cleanup_free_ char *out = NULL;
        int r;

        r = tl_sh(&out, "'%s/blkledger' --socket '%s/nobody-here.sock' list 2>&1", tl_builddir(), tl_tmpdir());
        assert_int_equal(r, 1);
        assert_non_null(strstr(out, "is blkledgerd running?"));
        assert_int_equal(strchr(out, '\n') - out + 1, (long) strlen(out)); /* one line */
        free(out);
        r = tl_sh(&out, "'%s/blkledger' --socket '%s' show no-such-device 2>&1", tl_builddir(), daemon_->socket);
        assert_int_equal(r, 1);
        assert_string_equal(out, "blkledger: no such device: no-such-device\n");
        free(out);
        r = tl_sh(&out, "'%s/blkledger' frobnicate 2>&1", tl_builddir());
        assert_int_equal(r, 2);
        assert_non_null(strstr(out, "unknown command"));
        free(out);
        out = NULL;
        r = tl_sh(&out, "BLKLEDGER_SOCKET='%s' '%s/blkledger' status", daemon_->socket, tl_builddir());
        assert_int_equal(r, 0);
        assert_non_null(strstr(out, "event_source"));
}

static bool activated_answers(void *userdata) {
        return tl_sh(NULL, "'%s/blkledger' --socket '%s' status >/dev/null 2>&1", tl_builddir(), (char *) userdata) == 0;
}

/* Socket activation: the service manager owns the path and passes the listening socket
 * (systemd-socket-activate does what blkledgerd.socket does); the first client starts the
 * daemon and is answered; a stop leaves the socket to its owner. */
static void test_socket_activation(void **state) {
        _cleanup_free_ char *sock = NULL, *pid = NULL, *log = NULL;
        int64_t p;

        if (access("/usr/bin/systemd-socket-activate", X_OK) < 0)
                skip();
        assert_true(asprintf(&sock, "%s/activated.sock", tl_tmpdir()) > 0);
        assert_true(asprintf(&log, "%s/activated.log", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(&pid,
                               "systemd-socket-activate -l '%s' '%s/blkledgerd' --foreground --state-dir '%s/activated' "
                               "--scope loop:%s/img >'%s' 2>&1 & echo $!",
                               sock, tl_builddir(), tl_tmpdir(), tl_tmpdir(), log),
                         0);
        assert_int_equal(parse_int64(strtok(pid, "\n"), &p), 0);
        tl_register_pid((pid_t) p);
        /* It execs the daemon on the first connection, in its own process. */
        assert_true(tl_wait_for(20000, activated_answers, sock));
        tl_sh(NULL, "cat '%s' >&2", log);
        assert_int_equal(tl_sh(NULL, "grep -q 'serving the socket passed by the service manager' '%s'", log), 0);
        assert_int_equal(kill((pid_t) p, SIGTERM), 0);
        for (int i = 0; i < 100 && kill((pid_t) p, 0) == 0; i++)
                usleep(50000);
        assert_int_equal(tl_sh(NULL, "grep -q 'received SIGTERM' '%s'", log), 0);
        /* Not ours to remove. */
        assert_int_equal(access(sock, F_OK), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_socket_activation),
                cmocka_unit_test(test_varlink_service),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_unprivileged),
                cmocka_unit_test(test_watch_history_and_live),
                cmocka_unit_test(test_slow_watcher_resumes_without_loss),
                cmocka_unit_test(test_max_clients),
                cmocka_unit_test(test_library_timeout_breaks_connection),
                cmocka_unit_test(test_library_pending),
                cmocka_unit_test(test_closed_watchers_are_freed),
                cmocka_unit_test(test_cli_errors),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
