/* Description: the Varlink server answers and rejects calls as documented, enforces its
 * limits, streams watches in order without loss, and replaces only stale sockets. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "libblkledger.h"
#include "log.h"
#include "server.h"
#include "util.h"
#include "varlink.h"

#define MSEC USEC_PER_MSEC

static const char test_interface_description[] =
        "# A test interface.\n"
        "interface io.blkledger\n"
        "\n"
        "method Echo() -> ()\n";

static const struct server_info test_info = {
        .interface = "io.blkledger",
        .interface_description = test_interface_description,
        .version = "0.0-test",
};

struct env {
        char *dir;
        char *sock;
        int fd;
        int lock_fd;
        struct ev_loop *loop;
        struct server *server;
        json_object **events; /* the fake history: events[i] has seq i + 1 */
        size_t n_events;
        size_t pad;           /* bytes of padding in each new event */
        unsigned echo_calls;
        unsigned read_calls;
        struct server_call *deferred; /* held by m_later */
};

/* ------------------------------------------------------------------------------------- */
/* The method table and the history the server is given. */

static int m_echo(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct env *e = userdata;

        e->echo_calls++;
        return server_reply(c, params);
}

/* Only reads (no METHOD_SIDE_EFFECTS): counts calls so the test sees whether it ran. */
static int m_read(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct env *e = userdata;

        e->read_calls++;
        return server_reply(c, NULL);
}

/* Answers later: the test ends the call itself. */
static int m_later(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct env *e = userdata;

        e->deferred = server_call_defer(c);
        return e->deferred ? 0 : -ENOMEM;
}

/* A small call with a large reply (16 KiB). */
static int m_big(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static char filler[16384];
        json_object *p = json_object_new_object();
        int r;

        memset(filler, 'x', sizeof(filler) - 1);
        json_object_object_add(p, "x", json_object_new_string(filler));
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int m_fail(struct client *c, json_object *params, unsigned flags, void *userdata) {
        json_object *p = json_object_new_object();
        int r;

        json_object_object_add(p, "name", json_object_new_string("nope"));
        r = server_reply_error(c, "io.blkledger.NoSuchDevice", p);
        json_object_put(p);
        return r;
}

static int m_typed(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "count", PARAM_INT }, { "name", PARAM_STRING }, { "flag", PARAM_BOOL }, {},
        };
        json_object *p;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        p = json_object_new_object();
        json_object_object_add(p, "ok", json_object_new_boolean(1));
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int m_root(struct client *c, json_object *params, unsigned flags, void *userdata) {
        json_object *p = json_object_new_object();
        int r;

        json_object_object_add(p, "uid", json_object_new_int64(client_uid(c)));
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int m_broken(struct client *c, json_object *params, unsigned flags, void *userdata) {
        return -EIO; /* and no reply */
}

static int m_watch(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = { { "since", PARAM_INT }, {} };
        json_object *since;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        since = param_get(params, "since");
        return server_start_watch(c, since ? json_object_get_int64(since) : -1);
}

static const struct method test_methods[] = {
        { "io.blkledger.Echo", m_echo, METHOD_SIDE_EFFECTS },
        { "io.blkledger.Read", m_read, 0 },
        { "io.blkledger.Big", m_big, 0 },
        { "io.blkledger.Later", m_later, METHOD_SIDE_EFFECTS },
        { "io.blkledger.Fail", m_fail, 0 },
        { "io.blkledger.Typed", m_typed, 0 },
        { "io.blkledger.RootOnly", m_root, METHOD_ROOT_ONLY },
        { "io.blkledger.Broken", m_broken, 0 },
        { "io.blkledger.Watch", m_watch, METHOD_MORE_ONLY },
        {},
};

static int64_t hist_last_seq(void *userdata) {
        struct env *e = userdata;
        return (int64_t) e->n_events;
}

static int hist_fetch(void *userdata, int64_t since, int64_t limit, json_object *array) {
        struct env *e = userdata;
        int n = 0;

        for (int64_t i = since < 0 ? 0 : since; i < (int64_t) e->n_events && n < limit; i++, n++)
                json_object_array_add(array, json_object_get(e->events[i]));
        return n;
}

static const struct server_history test_history = {
        .last_seq = hist_last_seq,
        .fetch = hist_fetch,
};

static void hist_add(struct env *e) {
        json_object *ev = json_object_new_object(), *after = json_object_new_object();
        int64_t seq = (int64_t) e->n_events + 1;

        assert_non_null(ev);
        assert_non_null(after);
        e->events = realloc(e->events, (e->n_events + 1) * sizeof(*e->events));
        assert_non_null(e->events);
        json_object_object_add(ev, "seq", json_object_new_int64(seq));
        json_object_object_add(ev, "time", json_object_new_string("2025-11-20T09:00:00.000000Z"));
        json_object_object_add(ev, "device_id", json_object_new_int64(1));
        json_object_object_add(ev, "kind", json_object_new_string("changed"));
        json_object_object_add(ev, "before", NULL);
        json_object_object_add(after, "n", json_object_new_int64(seq));
        if (e->pad > 0) {
                char *pad = malloc(e->pad + 1);
                assert_non_null(pad);
                memset(pad, 'p', e->pad);
                pad[e->pad] = 0;
                json_object_object_add(after, "pad", json_object_new_string(pad));
                free(pad);
        }
        json_object_object_add(ev, "after", after);
        e->events[e->n_events++] = ev;
}

/* ------------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");
        struct env *e = calloc(1, sizeof(*e));
        char *err = NULL;
        int r;

        if (!e)
                return -1;
        e->fd = e->lock_fd = -1;
        if (asprintf(&e->dir, "%s/test-server.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(e->dir))
                return -1;
        /* An unprivileged client must reach the socket. */
        if (chmod(e->dir, 0755) < 0 || asprintf(&e->sock, "%s/s.sock", e->dir) < 0)
                return -1;
        r = server_bind(e->sock, &e->fd, &e->lock_fd, &err);
        if (r < 0) {
                fprintf(stderr, "server_bind: %s\n", err);
                free(err);
                return -1;
        }
        r = ev_loop_new(256, &e->loop);
        if (r < 0)
                return -1;
        *state = e;
        return 0;
}

static int teardown(void **state) {
        struct env *e = *state;

        server_free(e->server);
        ev_loop_free(e->loop);
        if (e->fd >= 0)
                close(e->fd);
        if (e->lock_fd >= 0)
                close(e->lock_fd);
        for (size_t i = 0; i < e->n_events; i++)
                json_object_put(e->events[i]);
        free(e->events);
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(e->dir);
        free(e->sock);
        free(e);
        return 0;
}

static void start(struct env *e, const struct server_limits *limits) {
        assert_int_equal(server_new(e->loop, e->fd, limits, &test_info, test_methods, &test_history, e,
                                    &e->server),
                         0);
}

static void spin(struct env *e, int64_t usec) {
        int64_t end = now_monotonic_usec() + usec;

        for (int64_t left; (left = end - now_monotonic_usec()) > 0;)
                assert_int_equal(ev_loop_iterate(e->loop, MIN(left, 10 * MSEC)), 0);
}

static void wait_clients(struct env *e, unsigned n) {
        int64_t end = now_monotonic_usec() + 5 * USEC_PER_SEC;

        while (server_n_clients(e->server) != n && now_monotonic_usec() < end)
                assert_int_equal(ev_loop_iterate(e->loop, 10 * MSEC), 0);
        assert_int_equal(server_n_clients(e->server), n);
}

/* ------------------------------------------------------------------------------------- */
/* A raw client in this process: non-blocking socket I/O interleaved with the server's
 * loop, so every byte on the wire is under the test's control. */

struct conn {
        int fd;
        struct vl_buf in;
        bool eof;
};

static struct conn *conn_open(struct env *e) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct conn *c = calloc(1, sizeof(*c));

        assert_non_null(c);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(c->fd >= 0);
        strcpy(sa.sun_path, e->sock);
        assert_int_equal(connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return c;
}

static void conn_close(struct conn *c) {
        if (!c)
                return;
        close(c->fd);
        vl_buf_free(&c->in);
        free(c);
}

static void conn_send(struct env *e, struct conn *c, const void *data, size_t len) {
        const char *p = data;
        int64_t end = now_monotonic_usec() + 10 * USEC_PER_SEC;

        while (len > 0) {
                ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN) {
                        assert_true(now_monotonic_usec() < end);
                        assert_int_equal(ev_loop_iterate(e->loop, 10 * MSEC), 0);
                        continue;
                }
                if (n < 0)
                        fail_msg("send: %s", strerror(errno));
                p += n;
                len -= (size_t) n;
        }
}

/* Sends msg with its terminating NUL. */
static void conn_call(struct env *e, struct conn *c, const char *msg) {
        conn_send(e, c, msg, strlen(msg) + 1);
}

/* The next message, or NULL at EOF (c->eof) or after timeout. */
static json_object *conn_recv(struct env *e, struct conn *c, int64_t timeout) {
        int64_t end = now_monotonic_usec() + timeout;

        for (;;) {
                size_t len;
                int r = vl_frame_next(&c->in, SIZE_MAX / 4, &len);

                if (r > 0) {
                        json_object *o = NULL;
                        assert_int_equal(vl_json_parse(vl_buf_head(&c->in), len, 64, &o), 0);
                        assert_non_null(o);
                        assert_true(json_object_is_type(o, json_type_object));
                        vl_buf_consume(&c->in, len + 1);
                        return o;
                }
                if (c->eof)
                        return NULL;
                assert_int_equal(vl_buf_reserve(&c->in, 65536), 0);
                ssize_t n = recv(c->fd, c->in.data + c->in.end, c->in.alloc - c->in.end, MSG_DONTWAIT);
                if (n > 0) {
                        c->in.end += (size_t) n;
                        continue;
                }
                if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                        c->eof = true;
                        continue;
                }
                assert_int_equal(errno, EAGAIN);
                if (now_monotonic_usec() >= end)
                        return NULL;
                assert_int_equal(ev_loop_iterate(e->loop, 5 * MSEC), 0);
        }
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("member %s missing in %s", key, json_object_to_json_string(o));
        return v;
}

static bool has_member(json_object *o, const char *key) {
        return json_object_object_get_ex(o, key, NULL);
}

static const char *error_of(json_object *msg) {
        json_object *v;
        return json_object_object_get_ex(msg, "error", &v) ? json_object_get_string(v) : NULL;
}

static bool continues_of(json_object *msg) {
        json_object *v;
        return json_object_object_get_ex(msg, "continues", &v) && json_object_get_boolean(v);
}

/* Waits for a reply that is not an error; returns it (the whole message). */
static json_object *expect_reply(struct env *e, struct conn *c) {
        json_object *m = conn_recv(e, c, 5 * USEC_PER_SEC);

        if (!m)
                fail_msg("no reply (%s)", c->eof ? "connection closed" : "timeout");
        if (error_of(m))
                fail_msg("unexpected error reply %s", json_object_to_json_string(m));
        assert_true(json_object_is_type(member(m, "parameters"), json_type_object));
        return m;
}

static json_object *expect_error(struct env *e, struct conn *c, const char *error) {
        json_object *m = conn_recv(e, c, 5 * USEC_PER_SEC);

        if (!m)
                fail_msg("no reply, wanted %s (%s)", error, c->eof ? "connection closed" : "timeout");
        if (!error_of(m) || !streq(error_of(m), error))
                fail_msg("wanted error %s, got %s", error, json_object_to_json_string(m));
        assert_false(continues_of(m));
        return m;
}

static void expect_eof(struct env *e, struct conn *c) {
        json_object *m = conn_recv(e, c, 5 * USEC_PER_SEC);

        if (m)
                fail_msg("wanted the connection closed, got %s", json_object_to_json_string(m));
        if (!c->eof)
                fail_msg("the connection stayed open");
}

/* Nothing arrives within usec, and the connection stays open. */
static void expect_silence(struct env *e, struct conn *c, int64_t usec) {
        json_object *m = conn_recv(e, c, usec);

        if (m)
                fail_msg("wanted nothing, got %s", json_object_to_json_string(m));
        assert_false(c->eof);
}

static void assert_json_text(json_object *got, const char *want_text) {
        json_object *want = json_tokener_parse(want_text);

        assert_non_null(want);
        if (!json_object_equal(want, got)) {
                print_error("want %s\n got %s\n", want_text, json_object_to_json_string(got));
                json_object_put(want);
                fail();
        }
        json_object_put(want);
}

/* Calls and checks that the reply's parameters equal want (JSON text). */
static void call_expect(struct env *e, struct conn *c, const char *msg, const char *want) {
        json_object *m;

        conn_call(e, c, msg);
        m = expect_reply(e, c);
        assert_false(continues_of(m));
        assert_json_text(member(m, "parameters"), want);
        json_object_put(m);
}

/* Calls and checks the error and one string parameter of it. */
static void call_expect_error(struct env *e, struct conn *c, const char *msg, const char *error,
                              const char *key, const char *value) {
        json_object *m;

        conn_call(e, c, msg);
        m = expect_error(e, c, error);
        if (key)
                assert_string_equal(json_object_get_string(member(member(m, "parameters"), key)), value);
        json_object_put(m);
}

/* ------------------------------------------------------------------------------------- */

static void test_get_info(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *m, *p;

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"org.varlink.service.GetInfo\"}");
        m = expect_reply(e, c);
        p = member(m, "parameters");
        assert_string_equal(json_object_get_string(member(p, "vendor")), "blkledger");
        assert_string_equal(json_object_get_string(member(p, "product")), "blkledgerd");
        assert_string_equal(json_object_get_string(member(p, "version")), "0.0-test");
        assert_true(json_object_is_type(member(p, "url"), json_type_string));
        assert_json_text(member(p, "interfaces"), "[\"org.varlink.service\",\"io.blkledger\"]");
        json_object_put(m);

        /* GetInfo takes no parameters. */
        call_expect_error(e, c, "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{\"x\":1}}",
                          "org.varlink.service.InvalidParameter", "parameter", "x");
        conn_close(c);
}

static void test_get_interface_description(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *m;
        const char *d;

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                        "\"parameters\":{\"interface\":\"io.blkledger\"}}");
        m = expect_reply(e, c);
        assert_string_equal(json_object_get_string(member(member(m, "parameters"), "description")),
                            test_interface_description);
        json_object_put(m);

        conn_call(e, c, "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                        "\"parameters\":{\"interface\":\"org.varlink.service\"}}");
        m = expect_reply(e, c);
        d = json_object_get_string(member(member(m, "parameters"), "description"));
        assert_non_null(strstr(d, "interface org.varlink.service\n"));
        assert_non_null(strstr(d, "method GetInfo()"));
        assert_non_null(strstr(d, "method GetInterfaceDescription(interface: string) -> (description: string)"));
        assert_non_null(strstr(d, "error InterfaceNotFound (interface: string)"));
        json_object_put(m);

        call_expect_error(e, c,
                          "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                          "\"parameters\":{\"interface\":\"com.example.nothing\"}}",
                          "org.varlink.service.InterfaceNotFound", "interface", "com.example.nothing");
        call_expect_error(e, c, "{\"method\":\"org.varlink.service.GetInterfaceDescription\"}",
                          "org.varlink.service.InvalidParameter", "parameter", "interface");
        call_expect_error(e, c,
                          "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                          "\"parameters\":{\"interface\":7}}",
                          "org.varlink.service.InvalidParameter", "parameter", "interface");
        conn_close(c);
}

static void test_unknown_method(void **state) {
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Nothing\"}", "org.varlink.service.MethodNotFound",
                          "method", "io.blkledger.Nothing");
        call_expect_error(e, c, "{\"method\":\"org.varlink.service.Nothing\"}",
                          "org.varlink.service.MethodNotFound", "method", "org.varlink.service.Nothing");
        call_expect_error(e, c, "{\"method\":\"com.example.Thing\"}", "org.varlink.service.InterfaceNotFound",
                          "interface", "com.example");
        call_expect_error(e, c, "{\"method\":\"nodots\"}", "org.varlink.service.MethodNotFound", "method",
                          "nodots");
        /* Method names are case-sensitive. */
        call_expect_error(e, c, "{\"method\":\"io.blkledger.echo\"}", "org.varlink.service.MethodNotFound",
                          "method", "io.blkledger.echo");
        assert_int_equal(e->echo_calls, 0);
        conn_close(c);
}

static void test_invalid_parameter(void **state) {
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        call_expect(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"count\":1,\"name\":\"a\",\"flag\":true}}",
                    "{\"ok\":true}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"count\":null,\"name\":null}}",
                    "{\"ok\":true}");
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"count\":\"1\"}}",
                          "org.varlink.service.InvalidParameter", "parameter", "count");
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"count\":1.5}}",
                          "org.varlink.service.InvalidParameter", "parameter", "count");
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"name\":5}}",
                          "org.varlink.service.InvalidParameter", "parameter", "name");
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"flag\":1}}",
                          "org.varlink.service.InvalidParameter", "parameter", "flag");
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":{\"count\":1,\"bogus\":1}}",
                          "org.varlink.service.InvalidParameter", "parameter", "bogus");
        conn_close(c);
}

static void test_parameters_null_or_absent(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *m;

        start(e, NULL);
        c = conn_open(e);
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":null}", "{}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{}}", "{}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"a\":[1,{\"b\":null}],\"s\":\"/é\"}}",
                    "{\"a\":[1,{\"b\":null}],\"s\":\"/é\"}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":null}", "{\"ok\":true}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Typed\",\"parameters\":null,\"more\":null,\"oneway\":null}",
                    "{\"ok\":true}");
        conn_call(e, c, "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}");
        m = expect_reply(e, c);
        assert_string_equal(json_object_get_string(member(member(m, "parameters"), "product")), "blkledgerd");
        json_object_put(m);
        assert_int_equal(e->echo_calls, 4);
        conn_close(c);
}

static void test_oneway(void **state) {
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Echo\",\"oneway\":true,\"parameters\":{\"n\":1}}");
        conn_call(e, c, "{\"method\":\"io.blkledger.Fail\",\"oneway\":true}");
        conn_call(e, c, "{\"method\":\"io.blkledger.Nothing\",\"oneway\":true}");
        /* The first answer on the connection is the one to the first call that wants one. */
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"n\":2}}", "{\"n\":2}");
        assert_int_equal(e->echo_calls, 2);
        expect_silence(e, c, 100 * MSEC);

        /* A oneway call alone: carried out, never answered. */
        conn_call(e, c, "{\"method\":\"io.blkledger.Echo\",\"oneway\":true,\"parameters\":{\"n\":3}}");
        spin(e, 50 * MSEC);
        assert_int_equal(e->echo_calls, 3);
        expect_silence(e, c, 100 * MSEC);
        conn_close(c);
}

static void test_protocol_error_recovers(void **state) {
        static const char *const bad[] = {
                "{not json",
                "[1,2]",
                "null",
                "{\"method\":5}",
                "{\"parameters\":{}}",
                "{\"method\":\"io.blkledger.Echo\",\"parameters\":[1]}",
                "{\"method\":\"io.blkledger.Echo\",\"more\":\"yes\"}",
                "{\"method\":\"io.blkledger.Echo\",\"more\":true,\"oneway\":true}",
                "{\"method\":\"io.blkledger.Echo\",\"extra\":1}",
                "{\"method\":\"io.blkledger.Echo\"} trailing",
                "{\"method\":\"io.blkledger.Echo\",\"upgrade\":true}",
                "\xff\xfe",
        };
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *m;

                conn_call(e, c, bad[i]);
                m = expect_error(e, c, "io.blkledger.ProtocolError");
                assert_true(strlen(json_object_get_string(member(member(m, "parameters"), "reason"))) > 0);
                json_object_put(m);
                /* Still usable. */
                call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"ok\":1}}", "{\"ok\":1}");
        }
        assert_int_equal(e->echo_calls, ELEMENTSOF(bad));
        conn_close(c);
}

static const char sized_head[] = "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"x\":\"";
static const char sized_tail[] = "\"}}";

/* A call of exactly len bytes (without the NUL). */
static char *sized_call(size_t len) {
        const char *head = sized_head, *tail = sized_tail;
        size_t fill = len - strlen(head) - strlen(tail);
        char *s = malloc(len + 1);

        assert_non_null(s);
        assert_true(len > strlen(head) + strlen(tail));
        strcpy(s, head);
        memset(s + strlen(head), 'a', fill);
        strcpy(s + strlen(head) + fill, tail);
        assert_int_equal(strlen(s), len);
        return s;
}

static void test_message_too_large(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        char *ok = sized_call(1024), *big = sized_call(1025), *huge = sized_call(100000);
        struct conn *c, *c2;
        json_object *m;

        lim.max_message = 1024;
        lim.max_message_root = 1024; /* the test runs as root */
        start(e, &lim);
        c = conn_open(e);

        /* Exactly the limit is fine. */
        conn_call(e, c, ok);
        m = expect_reply(e, c);
        assert_int_equal(strlen(json_object_get_string(member(member(m, "parameters"), "x"))),
                         1024 - strlen(sized_head) - strlen(sized_tail));
        json_object_put(m);

        /* One byte more is not, and ends the connection. */
        conn_call(e, c, big);
        m = expect_error(e, c, "io.blkledger.MessageTooLarge");
        assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "max_bytes")), 1024);
        json_object_put(m);
        expect_eof(e, c);
        assert_int_equal(e->echo_calls, 1);

        /* Much more, without waiting for the answer. */
        c2 = conn_open(e);
        conn_send(e, c2, huge, strlen(huge) + 1);
        m = expect_error(e, c2, "io.blkledger.MessageTooLarge");
        json_object_put(m);
        expect_eof(e, c2);
        wait_clients(e, 0);

        conn_close(c);
        conn_close(c2);
        free(ok);
        free(big);
        free(huge);
}

static void test_partial_timeout(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        struct conn *c, *idle;
        int64_t now;

        lim.partial_timeout = 5 * USEC_PER_SEC;
        start(e, &lim);
        c = conn_open(e);
        idle = conn_open(e);
        call_expect(e, idle, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        conn_send(e, c, "{\"method\":\"io.blkledger.Echo\",", strlen("{\"method\":\"io.blkledger.Echo\","));
        spin(e, 50 * MSEC);
        wait_clients(e, 2);

        /* Younger than the limit: kept. */
        now = now_monotonic_usec();
        server_tick(e->server, now + lim.partial_timeout / 2);
        wait_clients(e, 2);

        /* Far older: dropped, without a reply; the idle client is not affected. */
        server_tick(e->server, now + 3600 * USEC_PER_SEC);
        wait_clients(e, 1);
        expect_eof(e, c);
        call_expect(e, idle, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"still\":true}}",
                    "{\"still\":true}");
        assert_int_equal(e->echo_calls, 2);
        conn_close(c);
        conn_close(idle);
}

/* A message split across writes is answered once complete, and only then. */
static void test_split_message(void **state) {
        struct env *e = *state;
        const char *msg = "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"k\":\"v\"}}";
        struct conn *c;
        json_object *m;

        start(e, NULL);
        c = conn_open(e);
        for (size_t i = 0; i < strlen(msg); i += 7) {
                conn_send(e, c, msg + i, MIN((size_t) 7, strlen(msg) - i));
                expect_silence(e, c, 10 * MSEC);
        }
        conn_send(e, c, "", 1);
        m = expect_reply(e, c);
        assert_json_text(member(m, "parameters"), "{\"k\":\"v\"}");
        json_object_put(m);
        conn_close(c);
}

/* A client that calls but never reads its replies is dropped after stall_timeout, and
 * only then; it cannot make the server buffer without bound meanwhile. */
static void test_stalled_reader_dropped(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        char *msg = sized_call(30000);
        struct conn *c, *other;
        unsigned sent = 0, calls_then;
        int64_t now;

        lim.stall_timeout = 10 * USEC_PER_SEC;
        start(e, &lim);
        c = conn_open(e);
        other = conn_open(e);
        /* Call until the server stops taking calls: replies pile up unread. */
        for (unsigned round = 0; round < 200; round++) {
                ssize_t n = send(c->fd, msg, strlen(msg) + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        assert_int_equal(errno, EAGAIN);
                        break;
                }
                /* A short send leaves a partial message; the rest follows. */
                if ((size_t) n < strlen(msg) + 1) {
                        conn_send(e, c, msg + n, strlen(msg) + 1 - (size_t) n);
                }
                sent++;
                spin(e, 5 * MSEC);
        }
        spin(e, 50 * MSEC);
        calls_then = e->echo_calls;
        /* Backpressure: the server stopped taking calls, so the client could not send all. */
        assert_true(calls_then <= sent);
        assert_true(sent < 200);
        spin(e, 50 * MSEC);
        assert_int_equal(e->echo_calls, calls_then);

        now = now_monotonic_usec();
        server_tick(e->server, now + lim.stall_timeout / 2);
        wait_clients(e, 2);
        server_tick(e->server, now + 3600 * USEC_PER_SEC);
        wait_clients(e, 1);
        call_expect(e, other, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        conn_close(c);
        conn_close(other);
        free(msg);
}

static void test_max_clients(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        struct conn *c1, *c2, *c3, *c4;
        json_object *m;

        lim.max_clients = 2;
        start(e, &lim);
        c1 = conn_open(e);
        c2 = conn_open(e);
        wait_clients(e, 2);

        c3 = conn_open(e);
        m = expect_error(e, c3, "io.blkledger.TooManyClients");
        assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "max")), 2);
        json_object_put(m);
        expect_eof(e, c3);
        assert_int_equal(server_n_clients(e->server), 2);

        call_expect(e, c1, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"c\":1}}", "{\"c\":1}");
        call_expect(e, c2, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"c\":2}}", "{\"c\":2}");

        /* A slot freed is a slot taken. */
        conn_close(c1);
        wait_clients(e, 1);
        c4 = conn_open(e);
        call_expect(e, c4, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"c\":4}}", "{\"c\":4}");
        assert_int_equal(server_n_clients(e->server), 2);
        conn_close(c2);
        conn_close(c3);
        conn_close(c4);
}

static void test_method_fails_without_reply(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *m;

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Broken\"}");
        m = expect_error(e, c, "io.blkledger.InternalError");
        assert_string_equal(json_object_get_string(member(member(m, "parameters"), "reason")), strerror(EIO));
        json_object_put(m);
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Fail\"}", "io.blkledger.NoSuchDevice", "name", "nope");
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        conn_close(c);
}

static void test_pipelined(void **state) {
        struct env *e = *state;
        const unsigned n = 60;
        struct conn *c;
        char *all = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&all, &len);
        json_object *m;

        start(e, NULL);
        c = conn_open(e);
        assert_non_null(f);
        for (unsigned i = 0; i < n; i++) {
                if (i % 10 == 3)
                        fprintf(f, "{\"method\":\"io.blkledger.Fail\"}%c", 0);
                else if (i % 10 == 5)
                        fprintf(f, "{\"method\":\"io.blkledger.Echo\",\"oneway\":true,\"parameters\":{\"skip\":%u}}%c", i, 0);
                else if (i % 10 == 7)
                        fprintf(f, "{\"method\":\"org.varlink.service.GetInfo\"}%c", 0);
                else
                        fprintf(f, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"i\":%u}}%c", i, 0);
        }
        fclose(f);
        /* All calls in one write. */
        conn_send(e, c, all, len);
        free(all);

        for (unsigned i = 0; i < n; i++) {
                if (i % 10 == 5)
                        continue;
                if (i % 10 == 3) {
                        m = expect_error(e, c, "io.blkledger.NoSuchDevice");
                } else if (i % 10 == 7) {
                        m = expect_reply(e, c);
                        assert_string_equal(json_object_get_string(member(member(m, "parameters"), "product")),
                                            "blkledgerd");
                } else {
                        m = expect_reply(e, c);
                        assert_int_equal(json_object_get_int(member(member(m, "parameters"), "i")), i);
                }
                json_object_put(m);
        }
        expect_silence(e, c, 50 * MSEC);
        conn_close(c);
}

static json_object *drain_watch(struct env *e, struct conn *c, int64_t *ret_last, int64_t quiet);

/* Ending a deferred call (as a pass does when it completes, or the daemon when it stops)
 * never runs the client's next calls from inside that code: they wait for the loop. */
static void test_deferred_reply_not_reentrant(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *m;

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Later\"}");
        conn_call(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"after\":1}}");
        for (int i = 0; i < 100 && !e->deferred; i++)
                assert_int_equal(ev_loop_iterate(e->loop, 10 * MSEC), 0);
        assert_non_null(e->deferred);
        spin(e, 20 * MSEC);
        assert_int_equal(e->echo_calls, 0); /* waits behind the deferred call */
        assert_int_equal(server_call_error(e->deferred, "io.blkledger.ShuttingDown", NULL), 0);
        e->deferred = NULL;
        assert_int_equal(e->echo_calls, 0); /* not from inside server_call_error */
        m = expect_error(e, c, "io.blkledger.ShuttingDown");
        json_object_put(m);
        /* Then the loop runs the pipelined call, in order. */
        m = expect_reply(e, c);
        assert_json_text(member(m, "parameters"), "{\"after\":1}");
        json_object_put(m);
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\",\"parameters\":{\"n\":2}}", "{\"n\":2}");
        assert_int_equal(e->echo_calls, 2); /* the pipelined call ran, in order, then this one */
        conn_close(c);
}

/* A deferred call whose client left: the reply goes nowhere, the handle is freed. */
static void test_deferred_client_gone(void **state) {
        struct env *e = *state;
        struct conn *c;
        json_object *p = json_object_new_object();

        start(e, NULL);
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Later\",\"more\":true}");
        for (int i = 0; i < 100 && !e->deferred; i++)
                assert_int_equal(ev_loop_iterate(e->loop, 10 * MSEC), 0);
        assert_non_null(e->deferred);
        assert_true(server_call_wants_more(e->deferred));
        conn_close(c);
        wait_clients(e, 0);
        assert_false(server_call_connected(e->deferred));
        assert_int_equal(server_call_reply(e->deferred, p, true), 0);  /* progress: dropped */
        assert_int_equal(server_call_reply(e->deferred, p, false), 0); /* final: frees it */
        e->deferred = NULL;
        json_object_put(p);
}



/* A oneway call of a method that only reads has nothing to do: it is not run, so a
 * client cannot make the daemon work for replies nobody reads. */
static void test_oneway_reads_not_run(void **state) {
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        for (int i = 0; i < 50; i++)
                conn_call(e, c, "{\"method\":\"io.blkledger.Read\",\"oneway\":true}");
        call_expect(e, c, "{\"method\":\"io.blkledger.Read\"}", "{}");
        assert_int_equal(e->read_calls, 1);
        conn_close(c);
}

/* One client's pipeline of calls is handled a slice at a time: another client is served
 * long before the pipeline is done. */
static void test_pipeline_does_not_starve_others(void **state) {
        struct env *e = *state;
        const unsigned n = 2000;
        struct conn *greedy, *other;
        char *all = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&all, &len);
        json_object *m;
        unsigned served_after;

        start(e, NULL);
        greedy = conn_open(e);
        other = conn_open(e);
        spin(e, 20 * MSEC);
        assert_non_null(f);
        /* oneway calls with side effects: they run, but produce no output that would
         * hold the client back. */
        for (unsigned i = 0; i < n; i++)
                fprintf(f, "{\"method\":\"io.blkledger.Echo\",\"oneway\":true}%c", 0);
        fclose(f);
        conn_send(e, greedy, all, MIN(len, (size_t) 60000));
        free(all);
        conn_call(e, other, "{\"method\":\"io.blkledger.Read\"}");
        m = expect_reply(e, other);
        served_after = e->echo_calls;
        json_object_put(m);
        if (served_after >= 500)
                fail_msg("the other client waited for %u of the greedy client's calls", served_after);
        /* The greedy client's calls all run in the end. */
        spin(e, 200 * MSEC);
        assert_true(e->echo_calls > served_after);
        conn_close(greedy);
        conn_close(other);
}

/* Pipelined calls waiting behind unread replies are not a "message left unfinished". */
static void test_pipelined_calls_not_partial(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        const char call[] = "{\"method\":\"io.blkledger.Big\"}";
        char all[sizeof(call) * 1000];
        struct conn *c;
        int64_t now;

        lim.partial_timeout = 1 * USEC_PER_SEC;
        lim.stall_timeout = 3600 * USEC_PER_SEC;
        start(e, &lim);
        c = conn_open(e);
        /* A thousand complete calls in one write; their replies (16 MiB) pile up unread,
         * so most calls wait, complete, in the server's input. */
        for (size_t i = 0; i < 1000; i++)
                memcpy(all + i * sizeof(call), call, sizeof(call));
        conn_send(e, c, all, sizeof(all));
        spin(e, 100 * MSEC);
        now = now_monotonic_usec();
        server_tick(e->server, now + 10 * lim.partial_timeout);
        spin(e, 20 * MSEC);
        wait_clients(e, 1);
        conn_close(c);
}

/* A watcher whose peer went away is freed at once, not at the next event. */
static void test_dead_watcher_freed(void **state) {
        struct env *e = *state;
        struct conn *w[5];
        json_object *m;

        start(e, NULL);
        for (int i = 0; i < 5; i++) {
                w[i] = conn_open(e);
                conn_call(e, w[i], "{\"method\":\"io.blkledger.Watch\",\"more\":true}");
                m = expect_reply(e, w[i]);
                json_object_put(m);
        }
        wait_clients(e, 5);
        for (int i = 0; i < 5; i++)
                conn_close(w[i]);
        wait_clients(e, 0);
}

/* A watcher that stops reading for the stall timeout is told where to resume, and gets
 * one more period to read that before it is dropped. */
static void test_stalled_watcher_told_where_to_resume(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        struct conn *c;
        json_object *m;
        int64_t last, now;

        lim.stall_timeout = 10 * USEC_PER_SEC;
        start(e, &lim);
        e->pad = 2000;
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Watch\",\"more\":true}");
        spin(e, 20 * MSEC);
        for (unsigned i = 0; i < 1000; i++) {
                hist_add(e);
                server_notify_events(e->server);
                assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        }
        now = now_monotonic_usec();
        server_tick(e->server, now + 2 * lim.stall_timeout);
        wait_clients(e, 1);
        m = drain_watch(e, c, &last, 2 * USEC_PER_SEC);
        assert_non_null(m);
        assert_string_equal(error_of(m), "io.blkledger.WatchTooSlow");
        assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "resume_since")), last);
        assert_true(last < 1000);
        json_object_put(m);
        expect_eof(e, c);
        wait_clients(e, 0);
        conn_close(c);
}

/* ------------------------------------------------------------------------------------- */

static int64_t event_seq(json_object *msg) {
        json_object *ev = member(member(msg, "parameters"), "event");

        assert_non_null(ev);
        return json_object_get_int64(member(ev, "seq"));
}

static void test_watch(void **state) {
        struct env *e = *state;
        struct conn *c, *c2;
        json_object *m, *p;

        start(e, NULL);
        hist_add(e);
        hist_add(e);

        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Watch\",\"more\":true}");
        m = expect_reply(e, c);
        assert_true(continues_of(m));
        p = member(m, "parameters");
        assert_true(has_member(p, "event"));
        assert_null(member(p, "event"));
        assert_int_equal(json_object_get_int64(member(p, "last_seq")), 2);
        json_object_put(m);
        /* From now: the old events are not sent. */
        expect_silence(e, c, 50 * MSEC);

        hist_add(e);
        server_notify_events(e->server);
        m = expect_reply(e, c);
        assert_true(continues_of(m));
        assert_int_equal(event_seq(m), 3);
        assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "last_seq")), 3);
        assert_json_text(member(member(member(m, "parameters"), "event"), "after"), "{\"n\":3}");
        json_object_put(m);

        for (int i = 0; i < 3; i++)
                hist_add(e);
        server_notify_events(e->server);
        for (int64_t seq = 4; seq <= 6; seq++) {
                m = expect_reply(e, c);
                assert_true(continues_of(m));
                assert_int_equal(event_seq(m), seq);
                assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "last_seq")), 6);
                json_object_put(m);
        }
        expect_silence(e, c, 50 * MSEC);

        /* A second watcher from the start of history, alongside. */
        c2 = conn_open(e);
        conn_call(e, c2, "{\"method\":\"io.blkledger.Watch\",\"more\":true,\"parameters\":{\"since\":0}}");
        m = expect_reply(e, c2);
        assert_null(member(member(m, "parameters"), "event"));
        assert_int_equal(json_object_get_int64(member(member(m, "parameters"), "last_seq")), 6);
        json_object_put(m);
        for (int64_t seq = 1; seq <= 6; seq++) {
                m = expect_reply(e, c2);
                assert_int_equal(event_seq(m), seq);
                json_object_put(m);
        }
        hist_add(e);
        server_notify_events(e->server);
        m = expect_reply(e, c);
        assert_int_equal(event_seq(m), 7);
        json_object_put(m);
        m = expect_reply(e, c2);
        assert_int_equal(event_seq(m), 7);
        json_object_put(m);

        /* A watcher owns its connection: a call on it is a protocol error. */
        conn_call(e, c, "{\"method\":\"io.blkledger.Echo\"}");
        m = expect_error(e, c, "io.blkledger.ProtocolError");
        json_object_put(m);
        expect_eof(e, c);
        assert_int_equal(e->echo_calls, 0);
        conn_close(c);
        conn_close(c2);
}

static void test_watch_needs_more(void **state) {
        struct env *e = *state;
        struct conn *c;

        start(e, NULL);
        c = conn_open(e);
        call_expect_error(e, c, "{\"method\":\"io.blkledger.Watch\"}", "org.varlink.service.ExpectedMore", NULL, NULL);
        /* The connection is still usable for ordinary calls. */
        call_expect(e, c, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        conn_close(c);
}

/* Reads a watch to its end; checks the events are 1..k without gaps, returns k and the
 * final message (or NULL if the stream just stopped). */
static json_object *drain_watch(struct env *e, struct conn *c, int64_t *ret_last, int64_t quiet) {
        json_object *m;
        int64_t last = 0;

        m = expect_reply(e, c);
        assert_null(member(member(m, "parameters"), "event"));
        json_object_put(m);
        for (;;) {
                m = conn_recv(e, c, quiet);
                if (!m || error_of(m))
                        break;
                assert_true(continues_of(m));
                if (event_seq(m) != last + 1)
                        fail_msg("after event %lld came %lld", (long long) last, (long long) event_seq(m));
                last = event_seq(m);
                json_object_put(m);
        }
        *ret_last = last;
        return m;
}

/* A watcher that stops reading while events keep coming (one commit, one notification,
 * as the daemon does): it must be told WatchTooSlow, and resuming from resume_since must
 * neither skip nor repeat an event. */
static void test_watch_too_slow(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        const unsigned total = 20000;
        struct conn *c;
        json_object *m;
        int64_t last, resume;

        lim.watch_max_lag = 10;
        start(e, &lim);
        e->pad = 300;
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Watch\",\"more\":true}");
        spin(e, 20 * MSEC);
        for (unsigned i = 0; i < total; i++) {
                hist_add(e);
                server_notify_events(e->server);
                assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        }

        m = drain_watch(e, c, &last, 3 * USEC_PER_SEC);
        if (!m) {
                bool eof = c->eof;
                conn_close(c);
                fail_msg("the watcher got events 1..%lld of %u and then nothing for 3s, no WatchTooSlow "
                         "(connection %s)", (long long) last, total, eof ? "closed" : "open");
        }
        if (!streq(error_of(m), "io.blkledger.WatchTooSlow"))
                fail_msg("wanted WatchTooSlow, got %s", json_object_to_json_string(m));
        resume = json_object_get_int64(member(member(m, "parameters"), "resume_since"));
        json_object_put(m);
        assert_true(last < total);
        /* Everything up to resume_since was delivered, nothing after it. */
        assert_int_equal(resume, last);
        expect_eof(e, c);
        conn_close(c);

        /* Resuming there gives the next event first. */
        c = conn_open(e);
        {
                char call[128];
                snprintf(call, sizeof(call),
                         "{\"method\":\"io.blkledger.Watch\",\"more\":true,\"parameters\":{\"since\":%lld}}",
                         (long long) resume);
                conn_call(e, c, call);
        }
        m = expect_reply(e, c);
        json_object_put(m);
        m = expect_reply(e, c);
        assert_int_equal(event_seq(m), resume + 1);
        json_object_put(m);
        conn_close(c);
}

/* A watcher that was blocked for a while (but within its allowed lag) and then reads
 * gets every committed event, without waiting for the next commit. */
static void test_watch_backlog_drains(void **state) {
        struct env *e = *state;
        const unsigned total = 5000;
        struct conn *c;
        json_object *m;
        int64_t last;
        bool eof;

        start(e, NULL);
        e->pad = 300;
        c = conn_open(e);
        conn_call(e, c, "{\"method\":\"io.blkledger.Watch\",\"more\":true}");
        spin(e, 20 * MSEC);
        for (unsigned i = 0; i < total; i++) {
                hist_add(e);
                server_notify_events(e->server);
                assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        }

        m = drain_watch(e, c, &last, 3 * USEC_PER_SEC);
        eof = c->eof;
        /* Closed before judging, so that a failure leaks nothing under ASan. */
        conn_close(c);
        if (m) {
                print_error("unexpected %s after event %lld\n", json_object_to_json_string(m), (long long) last);
                json_object_put(m);
                fail();
        }
        if (last != total)
                fail_msg("the watcher got events 1..%lld of %u and then nothing for 3s", (long long) last, total);
        assert_false(eof);
}

/* ------------------------------------------------------------------------------------- */
/* Clients in child processes: libblkledger, and other users. */

#define CHILD_CHECK(x)                                                                            \
        do {                                                                                      \
                if (!(x)) {                                                                       \
                        fprintf(stderr, "child: %s:%d: check failed: %s\n", __FILE__, __LINE__, #x); \
                        return 1;                                                                 \
                }                                                                                 \
        } while (0)

typedef int (*child_fn)(struct env *e, int notify_fd);

static void remember_pid(pid_t pid) {
        const char *dir = getenv("BLKLEDGER_TEST_TMPDIR");
        _cleanup_free_ char *path = NULL;
        FILE *f;

        /* The harness kills what is listed there if the test dies first. */
        if (isempty(dir) || asprintf(&path, "%s/pids", dir) < 0)
                return;
        f = fopen(path, "ae");
        if (f) {
                fprintf(f, "%d\n", (int) pid);
                fclose(f);
        }
}

/* Runs fn in a child while this process serves. Each byte the child writes to its
 * notify_fd adds one event to the history. Returns the child's exit status. */
static int run_child(struct env *e, child_fn fn) {
        int64_t end = now_monotonic_usec() + 30 * USEC_PER_SEC;
        int pfd[2], status;
        pid_t pid;

        assert_int_equal(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(pfd[0]);
                _exit(fn(e, pfd[1]));
        }
        close(pfd[1]);
        remember_pid(pid);
        for (;;) {
                char b;
                pid_t w;

                while (read(pfd[0], &b, 1) == 1) {
                        hist_add(e);
                        server_notify_events(e->server);
                }
                w = waitpid(pid, &status, WNOHANG);
                assert_true(w >= 0);
                if (w == pid)
                        break;
                if (now_monotonic_usec() > end) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        close(pfd[0]);
                        fail_msg("child did not finish in time");
                }
                assert_int_equal(ev_loop_iterate(e->loop, 5 * MSEC), 0);
        }
        close(pfd[0]);
        if (WIFSIGNALED(status))
                fail_msg("child killed by signal %d", WTERMSIG(status));
        return WEXITSTATUS(status);
}

static bool json_text_equal(const char *a, const char *b) {
        json_object *x = json_tokener_parse(a), *y = json_tokener_parse(b);
        bool eq = x && y && json_object_equal(x, y);

        json_object_put(x);
        json_object_put(y);
        return eq;
}

static int64_t json_text_get_int(const char *text, const char *k1, const char *k2) {
        json_object *o = json_tokener_parse(text), *v = NULL;
        int64_t r = -1;

        if (o && json_object_object_get_ex(o, k1, &v) && (!k2 || json_object_object_get_ex(v, k2, &v)))
                r = v ? json_object_get_int64(v) : -2;
        json_object_put(o);
        return r;
}

static int child_library(struct env *e, int notify_fd) {
        struct blkledger *b = NULL;
        char *out = NULL;
        int more = -1;

        CHILD_CHECK(blkledger_connect(e->sock, &b) == 0);
        blkledger_set_timeout(b, 10000);
        CHILD_CHECK(blkledger_call(b, "org.varlink.service.GetInfo", NULL, &out) == 0);
        CHILD_CHECK(strstr(out, "\"io.blkledger\""));
        free(out);
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Echo", "{\"k\":[1,2,{\"z\":null}],\"s\":\"\\u00e9\"}", &out) == 0);
        CHILD_CHECK(json_text_equal(out, "{\"k\":[1,2,{\"z\":null}],\"s\":\"é\"}"));
        free(out);
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Fail", NULL, NULL) == -EREMOTEIO);
        CHILD_CHECK(streq_ptr(blkledger_get_error(b), "io.blkledger.NoSuchDevice"));
        CHILD_CHECK(json_text_equal(blkledger_get_error_parameters(b), "{\"name\":\"nope\"}"));
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Watch", NULL, NULL) == -EREMOTEIO);
        CHILD_CHECK(streq_ptr(blkledger_get_error(b), "org.varlink.service.ExpectedMore"));

        /* The history holds 3 events; watch from 1. */
        CHILD_CHECK(blkledger_call_more(b, "io.blkledger.Watch", "{\"since\":1}") == 0);
        CHILD_CHECK(blkledger_receive(b, &out, &more) == 0);
        CHILD_CHECK(more == 1);
        CHILD_CHECK(json_text_get_int(out, "event", NULL) == -2);
        CHILD_CHECK(json_text_get_int(out, "last_seq", NULL) == 3);
        free(out);
        for (int64_t seq = 2; seq <= 3; seq++) {
                CHILD_CHECK(blkledger_receive(b, &out, &more) == 0);
                CHILD_CHECK(more == 1);
                CHILD_CHECK(json_text_get_int(out, "event", "seq") == seq);
                free(out);
        }
        /* Ask the parent for one more event. */
        CHILD_CHECK(write(notify_fd, "x", 1) == 1);
        CHILD_CHECK(blkledger_receive(b, &out, &more) == 0);
        CHILD_CHECK(json_text_get_int(out, "event", "seq") == 4);
        CHILD_CHECK(json_text_get_int(out, "last_seq", NULL) == 4);
        free(out);
        blkledger_unref(b);
        return 0;
}

static void test_library_client(void **state) {
        struct env *e = *state;

        start(e, NULL);
        for (int i = 0; i < 3; i++)
                hist_add(e);
        assert_int_equal(run_child(e, child_library), 0);
        assert_int_equal(e->n_events, 4);
        assert_int_equal(e->echo_calls, 1);
}

static int drop_to_nobody(void) {
        CHILD_CHECK(setgroups(0, NULL) == 0);
        CHILD_CHECK(setresgid(65534, 65534, 65534) == 0);
        CHILD_CHECK(setresuid(65534, 65534, 65534) == 0);
        CHILD_CHECK(getuid() == 65534 && geteuid() == 65534);
        return 0;
}

static int child_unprivileged(struct env *e, int notify_fd) {
        struct blkledger *b = NULL;
        char *out = NULL;

        if (drop_to_nobody() != 0)
                return 1;
        CHILD_CHECK(blkledger_connect(e->sock, &b) == 0);
        blkledger_set_timeout(b, 10000);
        CHILD_CHECK(blkledger_call(b, "io.blkledger.RootOnly", NULL, &out) == -EREMOTEIO);
        CHILD_CHECK(streq_ptr(blkledger_get_error(b), "org.varlink.service.PermissionDenied"));
        /* Reading methods stay open to everyone. */
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Echo", "{\"who\":\"nobody\"}", &out) == 0);
        CHILD_CHECK(json_text_equal(out, "{\"who\":\"nobody\"}"));
        free(out);
        blkledger_unref(b);
        return 0;
}

static void test_permission_denied(void **state) {
        struct env *e = *state;
        struct conn *c;

        if (geteuid() != 0) {
                print_message("not root: cannot switch to an unprivileged user; skipping\n");
                skip();
        }
        start(e, NULL);
        assert_int_equal(run_child(e, child_unprivileged), 0);
        assert_int_equal(e->echo_calls, 1);

        /* Root may. */
        c = conn_open(e);
        call_expect(e, c, "{\"method\":\"io.blkledger.RootOnly\"}", "{\"uid\":0}");
        conn_close(c);
}

static int child_two_connections(struct env *e, int notify_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct blkledger *b = NULL;
        struct pollfd p;
        char buf[512] = "";
        ssize_t n;
        int fd;

        if (drop_to_nobody() != 0)
                return 1;
        CHILD_CHECK(blkledger_connect(e->sock, &b) == 0);
        blkledger_set_timeout(b, 10000);
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Echo", NULL, NULL) == 0);

        /* The second connection of this user is refused with a reason. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHILD_CHECK(fd >= 0);
        strcpy(sa.sun_path, e->sock);
        CHILD_CHECK(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        p = (struct pollfd) { .fd = fd, .events = POLLIN };
        CHILD_CHECK(poll(&p, 1, 10000) == 1);
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        CHILD_CHECK(n > 0);
        CHILD_CHECK(strstr(buf, "\"io.blkledger.TooManyClients\""));
        CHILD_CHECK(strstr(buf, "\"max\":1"));
        close(fd);

        /* The first one still works. */
        CHILD_CHECK(blkledger_call(b, "io.blkledger.Echo", NULL, NULL) == 0);
        blkledger_unref(b);
        return 0;
}

static void test_max_clients_per_user(void **state) {
        struct env *e = *state;
        struct server_limits lim = server_default_limits;
        struct conn *r1, *r2;

        if (geteuid() != 0) {
                print_message("not root: cannot switch to an unprivileged user; skipping\n");
                skip();
        }
        lim.max_clients_user = 1;
        start(e, &lim);
        /* Root is not limited per user. */
        r1 = conn_open(e);
        r2 = conn_open(e);
        wait_clients(e, 2);
        assert_int_equal(run_child(e, child_two_connections), 0);
        assert_int_equal(e->echo_calls, 2);
        call_expect(e, r2, "{\"method\":\"io.blkledger.Echo\"}", "{}");
        conn_close(r1);
        conn_close(r2);
}

/* ------------------------------------------------------------------------------------- */
/* server_bind */

static char *path_in(struct env *e, const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", e->dir, name) > 0);
        return p;
}

static ino_t inode_of(const char *path) {
        struct stat st;

        assert_int_equal(lstat(path, &st), 0);
        return st.st_ino;
}

static bool is_socket(const char *path) {
        struct stat st;
        return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Whether a client can connect to path (after listen()). */
static int try_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

        assert_true(fd >= 0);
        strcpy(sa.sun_path, path);
        r = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        close(fd);
        return r;
}

/* path is bound to fd: a connection to path is accepted on fd. */
static void assert_serves(const char *path, int fd) {
        int cfd;

        assert_int_equal(listen(fd, 4), 0);
        assert_int_equal(try_connect(path), 0);
        cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(cfd >= 0);
        close(cfd);
}

static void test_bind_stale_socket(void **state) {
        struct env *e = *state;
        _cleanup_free_ char *path = path_in(e, "stale.sock");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = -1, lock = -1, raw;
        char *err = NULL;

        /* Left by a daemon that died: its descriptors, and so its lock, are gone. */
        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        assert_null(err);
        assert_true(is_socket(path));
        close(fd);
        close(lock);
        assert_true(is_socket(path));
        assert_int_equal(try_connect(path), -ECONNREFUSED);

        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        assert_null(err);
        assert_true(is_socket(path));
        /* Not connectable before listen(), served by the new descriptor after. */
        assert_int_equal(try_connect(path), -ECONNREFUSED);
        assert_serves(path, fd);
        close(fd);
        close(lock);

        /* Left by a daemon that predates the lock file: replaced too. */
        unlink(path);
        raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, path);
        assert_int_equal(bind(raw, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(raw);
        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        assert_null(err);
        assert_serves(path, fd);
        close(fd);
        close(lock);
}

static void test_bind_live_socket(void **state) {
        struct env *e = *state;
        _cleanup_free_ char *path = path_in(e, "live.sock"), *path2 = path_in(e, "live2.sock");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = -1, lock = -1, fd2 = -1, lock2 = -1, raw;
        char *err = NULL;
        ino_t ino;

        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        assert_int_equal(listen(fd, 4), 0);
        ino = inode_of(path);

        assert_int_equal(server_bind(path, &fd2, &lock2, &err), -EADDRINUSE);
        assert_non_null(err);
        assert_non_null(strstr(err, path));
        free(err);
        err = NULL;
        assert_int_equal(fd2, -1);
        assert_int_equal(lock2, -1);
        assert_int_equal(inode_of(path), ino);
        assert_int_equal(try_connect(path), 0);

        /* Still refused while bound but not yet listening: the lock decides. */
        close(fd);
        close(lock);
        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        ino = inode_of(path);
        assert_int_equal(server_bind(path, &fd2, &lock2, &err), -EADDRINUSE);
        free(err);
        err = NULL;
        assert_int_equal(inode_of(path), ino);
        close(fd);
        close(lock);

        /* A live daemon without the lock file (an older one) answers: refused too. */
        raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, path2);
        assert_int_equal(bind(raw, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(raw, 4), 0);
        ino = inode_of(path2);
        assert_int_equal(server_bind(path2, &fd2, &lock2, &err), -EADDRINUSE);
        assert_non_null(err);
        free(err);
        assert_int_equal(inode_of(path2), ino);
        assert_int_equal(try_connect(path2), 0);
        close(raw);
}

static void test_bind_regular_file(void **state) {
        struct env *e = *state;
        _cleanup_free_ char *path = path_in(e, "file.sock");
        int fd = -1, lock = -1, r;
        char *err = NULL, buf[64] = "";
        struct stat st;
        FILE *f;

        f = fopen(path, "we");
        assert_non_null(f);
        fputs("precious\n", f);
        fclose(f);

        r = server_bind(path, &fd, &lock, &err);
        assert_true(r < 0);
        assert_non_null(err);
        free(err);
        assert_int_equal(fd, -1);
        assert_int_equal(lstat(path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        f = fopen(path, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        assert_string_equal(buf, "precious\n");

        /* The lock is not kept by a failed bind: a later attempt is not refused for it. */
        unlink(path);
        assert_int_equal(server_bind(path, &fd, &lock, &err), 0);
        close(fd);
        close(lock);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_get_info, setup, teardown),
                cmocka_unit_test_setup_teardown(test_get_interface_description, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unknown_method, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_parameter, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parameters_null_or_absent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oneway, setup, teardown),
                cmocka_unit_test_setup_teardown(test_protocol_error_recovers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_message_too_large, setup, teardown),
                cmocka_unit_test_setup_teardown(test_partial_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_split_message, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stalled_reader_dropped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_max_clients, setup, teardown),
                cmocka_unit_test_setup_teardown(test_method_fails_without_reply, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oneway_reads_not_run, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deferred_reply_not_reentrant, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deferred_client_gone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pipeline_does_not_starve_others, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pipelined_calls_not_partial, setup, teardown),
                cmocka_unit_test_setup_teardown(test_dead_watcher_freed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stalled_watcher_told_where_to_resume, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch_needs_more, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch_too_slow, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch_backlog_drains, setup, teardown),
                cmocka_unit_test_setup_teardown(test_library_client, setup, teardown),
                cmocka_unit_test_setup_teardown(test_permission_denied, setup, teardown),
                cmocka_unit_test_setup_teardown(test_max_clients_per_user, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bind_stale_socket, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bind_live_socket, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bind_regular_file, setup, teardown),
        };
        struct ev_loop *probe = NULL;
        int r;

        log_setup(true, LOG_LEVEL_ERROR);
        /* Some sandboxes (seccomp, containers, kernel.io_uring_disabled) forbid io_uring. */
        r = ev_loop_new(8, &probe);
        if (r < 0) {
                printf("io_uring is not available here (io_uring_queue_init: %s); skipping\n", strerror(-r));
                return 77;
        }
        ev_loop_free(probe);
        /* A client that went away must not kill the test with SIGPIPE. */
        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
