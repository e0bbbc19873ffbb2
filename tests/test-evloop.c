/* Description: ev_io, ev_timer and ev_defer call back exactly when due and never once
 * freed or cancelled, also from callbacks; ev_loop_run returns the ev_loop_exit code. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "evloop.h"
#include "log.h"
#include "util.h"

#define MSEC USEC_PER_MSEC

struct env {
        struct ev_loop *loop;
        int p[2];  /* pipe */
        int q[2];  /* second pipe */
        int s[2];  /* socketpair */
};

static int setup(void **state) {
        struct env *e = calloc(1, sizeof(*e));
        int r;

        if (!e)
                return -1;
        r = ev_loop_new(64, &e->loop);
        if (r < 0) {
                fprintf(stderr, "ev_loop_new: %s\n", strerror(-r));
                free(e);
                return -1;
        }
        if (pipe2(e->p, O_NONBLOCK | O_CLOEXEC) < 0 || pipe2(e->q, O_NONBLOCK | O_CLOEXEC) < 0 ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, e->s) < 0)
                return -1;
        *state = e;
        return 0;
}

static int teardown(void **state) {
        struct env *e = *state;

        ev_loop_free(e->loop);
        for (int i = 0; i < 2; i++) {
                close(e->p[i]);
                close(e->q[i]);
                close(e->s[i]);
        }
        free(e);
        return 0;
}

/* What a callback saw, and what it should do. */
struct rec {
        unsigned calls;
        uint32_t revents;
        int drain_fd;                  /* read what is there, so a level stays low */
        bool free_self;
        struct ev_io **free_other;     /* frees *free_other and sets it NULL */
        uint32_t set_events;           /* applied in the callback when non-zero */
        bool set_events_zero;
};

static void io_cb(struct ev_io *io, uint32_t revents, void *userdata) {
        struct rec *r = userdata;
        char buf[256];

        r->calls++;
        r->revents = revents;
        if (r->drain_fd >= 0)
                while (read(r->drain_fd, buf, sizeof(buf)) > 0)
                        ;
        if (r->set_events)
                assert_int_equal(ev_io_set_events(io, r->set_events), 0);
        if (r->set_events_zero)
                assert_int_equal(ev_io_set_events(io, 0), 0);
        if (r->free_other && *r->free_other) {
                ev_io_free(*r->free_other);
                *r->free_other = NULL;
        }
        if (r->free_self)
                ev_io_free(io);
}

static void put(int fd) {
        assert_int_equal(write(fd, "x", 1), 1);
}

/* Iterates for about usec, whatever happens. */
static void spin(struct env *e, int64_t usec) {
        int64_t end = now_monotonic_usec() + usec;

        for (int64_t left; (left = end - now_monotonic_usec()) > 0;)
                assert_int_equal(ev_loop_iterate(e->loop, left), 0);
}

/* Iterates until *counter reaches want or usec passed; returns the time it took. */
static int64_t spin_until(struct env *e, const unsigned *counter, unsigned want, int64_t usec) {
        int64_t start = now_monotonic_usec(), end = start + usec;

        for (int64_t left; *counter < want && (left = end - now_monotonic_usec()) > 0;)
                assert_int_equal(ev_loop_iterate(e->loop, left), 0);
        return now_monotonic_usec() - start;
}

/* ------------------------------------------------------------------------------------- */

static void test_io_pollin(void **state) {
        struct env *e = *state;
        struct rec r = { .drain_fd = e->p[0] };
        struct ev_io *io;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &r, &io), 0);
        assert_int_equal(ev_io_get_events(io), POLLIN);
        spin(e, 50 * MSEC);
        assert_int_equal(r.calls, 0);

        put(e->p[1]);
        spin_until(e, &r.calls, 1, 2 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(r.revents & POLLIN);

        /* Drained in the callback: no more calls until the next write, which re-arms. */
        spin(e, 50 * MSEC);
        assert_int_equal(r.calls, 1);
        put(e->p[1]);
        spin(e, 100 * MSEC);
        assert_int_equal(r.calls, 2);
        ev_io_free(io);
}

/* A source that leaves data unread is called again: the poll is re-armed each time. */
static void test_io_level_rearm(void **state) {
        struct env *e = *state;
        struct rec r = { .drain_fd = -1 };
        struct ev_io *io;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &r, &io), 0);
        put(e->p[1]);
        for (int i = 0; i < 5; i++)
                assert_int_equal(ev_loop_iterate(e->loop, 200 * MSEC), 0);
        assert_true(r.calls >= 3);
        ev_io_free(io);
}

static void test_io_set_events(void **state) {
        struct env *e = *state;
        struct rec r = { .drain_fd = -1 };
        struct ev_io *io;

        /* A socket with nothing to read is writable: POLLIN stays silent, POLLOUT fires. */
        assert_int_equal(ev_io_new(e->loop, e->s[0], POLLIN, io_cb, &r, &io), 0);
        spin(e, 50 * MSEC);
        assert_int_equal(r.calls, 0);

        r.set_events_zero = true; /* one POLLOUT is enough */
        assert_int_equal(ev_io_set_events(io, POLLOUT), 0);
        assert_int_equal(ev_io_get_events(io), POLLOUT);
        spin_until(e, &r.calls, 1, 2 * USEC_PER_SEC);
        assert_int_equal(r.calls, 1);
        assert_true(r.revents & POLLOUT);
        assert_false(r.revents & POLLIN);
        spin(e, 50 * MSEC);
        assert_int_equal(r.calls, 1);
        assert_int_equal(ev_io_get_events(io), 0);

        /* Paused: data arriving does not call back. */
        assert_int_equal(write(e->s[1], "y", 1), 1);
        spin(e, 50 * MSEC);
        assert_int_equal(r.calls, 1);

        /* Resumed for reading: the pending data is reported. */
        r.set_events_zero = false;
        r.drain_fd = e->s[0];
        assert_int_equal(ev_io_set_events(io, POLLIN), 0);
        spin_until(e, &r.calls, 2, 2 * USEC_PER_SEC);
        assert_int_equal(r.calls, 2);
        assert_true(r.revents & POLLIN);

        /* Switching from inside the callback takes effect after it. */
        r.set_events = POLLOUT;
        r.drain_fd = -1;
        assert_int_equal(write(e->s[1], "z", 1), 1);
        spin(e, 100 * MSEC);
        assert_true(r.calls >= 3);
        assert_true(r.revents & POLLOUT);
        ev_io_free(io);
}

static void test_io_free_in_own_callback(void **state) {
        struct env *e = *state;
        struct rec r = { .drain_fd = -1, .free_self = true };
        struct ev_io *io;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &r, &io), 0);
        put(e->p[1]);
        spin(e, 100 * MSEC);
        assert_int_equal(r.calls, 1);
        /* Still readable, but the source is gone. */
        put(e->p[1]);
        spin(e, 100 * MSEC);
        assert_int_equal(r.calls, 1);
}

/* Two sources ready in the same batch, each freeing the other: the second completion
 * must be dropped, not delivered to freed memory. */
static void test_io_free_other_in_callback(void **state) {
        struct env *e = *state;
        struct rec ra = { .drain_fd = e->p[0] }, rb = { .drain_fd = e->q[0] };
        struct ev_io *a, *b;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &ra, &a), 0);
        assert_int_equal(ev_io_new(e->loop, e->q[0], POLLIN, io_cb, &rb, &b), 0);
        ra.free_other = &b;
        rb.free_other = &a;
        /* Submitted and waiting before either becomes ready. */
        spin(e, 20 * MSEC);
        put(e->p[1]);
        put(e->q[1]);
        usleep(20 * MSEC);
        spin(e, 200 * MSEC);
        assert_int_equal(ra.calls + rb.calls, 1);
        assert_true((a == NULL) != (b == NULL));

        /* The survivor keeps working; the freed one stays silent. */
        put(e->p[1]);
        put(e->q[1]);
        spin(e, 200 * MSEC);
        if (a) {
                assert_int_equal(ra.calls, 2);
                assert_int_equal(rb.calls, 0);
        } else {
                assert_int_equal(rb.calls, 2);
                assert_int_equal(ra.calls, 0);
        }
        ev_io_free(a);
        ev_io_free(b);
}

/* A callback frees itself and another ready source in the same batch. */
static void test_io_free_self_and_other(void **state) {
        struct env *e = *state;
        struct rec ra = { .drain_fd = -1, .free_self = true }, rb = { .drain_fd = -1, .free_self = true };
        struct ev_io *a, *b;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &ra, &a), 0);
        assert_int_equal(ev_io_new(e->loop, e->q[0], POLLIN, io_cb, &rb, &b), 0);
        ra.free_other = &b;
        rb.free_other = &a;
        spin(e, 20 * MSEC);
        put(e->p[1]);
        put(e->q[1]);
        spin(e, 200 * MSEC);
        assert_int_equal(ra.calls + rb.calls, 1);
}

static void test_io_freed_never_calls(void **state) {
        struct env *e = *state;
        struct rec r1 = { .drain_fd = -1 }, r2 = { .drain_fd = -1 };
        struct ev_io *io1, *io2;

        /* Freed after its poll reached the kernel. */
        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &r1, &io1), 0);
        spin(e, 20 * MSEC);
        ev_io_free(io1);
        put(e->p[1]);
        spin(e, 100 * MSEC);
        assert_int_equal(r1.calls, 0);

        /* Freed before it was ever submitted, with the descriptor already ready. */
        put(e->q[1]);
        assert_int_equal(ev_io_new(e->loop, e->q[0], POLLIN, io_cb, &r2, &io2), 0);
        ev_io_free(io2);
        spin(e, 100 * MSEC);
        assert_int_equal(r2.calls, 0);
}

/* Freeing a source whose completion already sits in the queue, from another callback
 * of the same batch, after the freed memory is reused by a new source. */
static void test_io_free_then_new_same_batch(void **state) {
        struct env *e = *state;
        struct rec ra = { .drain_fd = e->p[0] }, rb = { .drain_fd = e->q[0] }, rc = { .drain_fd = -1 };
        struct ev_io *a, *b, *c = NULL;

        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, io_cb, &ra, &a), 0);
        assert_int_equal(ev_io_new(e->loop, e->q[0], POLLIN, io_cb, &rb, &b), 0);
        spin(e, 20 * MSEC);
        ra.free_other = &b;
        rb.free_other = &a;
        put(e->p[1]);
        put(e->q[1]);
        assert_int_equal(ev_loop_iterate(e->loop, 200 * MSEC), 0);
        assert_int_equal(ra.calls + rb.calls, 1);
        /* A new source on the socket; nothing delivered to it but its own events. */
        assert_int_equal(ev_io_new(e->loop, e->s[0], POLLIN, io_cb, &rc, &c), 0);
        spin(e, 50 * MSEC);
        assert_int_equal(rc.calls, 0);
        ev_io_free(a);
        ev_io_free(b);
        ev_io_free(c);
}

/* ------------------------------------------------------------------------------------- */

struct tstate {
        unsigned fired;
        int64_t at;
        struct ev_loop *exit_loop;
        int exit_code;
        bool free_self;
};

static void timer_cb(struct ev_timer *t, void *userdata) {
        struct tstate *s = userdata;

        s->fired++;
        s->at = now_monotonic_usec();
        if (s->exit_loop)
                ev_loop_exit(s->exit_loop, s->exit_code);
        if (s->free_self)
                ev_timer_free(t);
}

static void test_timer_fires(void **state) {
        struct env *e = *state;
        struct tstate s = {};
        struct ev_timer *t;
        int64_t start, took;

        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s, &t), 0);
        assert_false(ev_timer_is_armed(t));
        start = now_monotonic_usec();
        assert_int_equal(ev_timer_arm(t, 200 * MSEC), 0);
        assert_true(ev_timer_is_armed(t));
        took = spin_until(e, &s.fired, 1, 3 * USEC_PER_SEC);
        assert_int_equal(s.fired, 1);
        assert_true(s.at - start >= 100 * MSEC);
        assert_true(took < 2 * USEC_PER_SEC);
        assert_false(ev_timer_is_armed(t));

        /* One-shot. */
        spin(e, 300 * MSEC);
        assert_int_equal(s.fired, 1);

        /* Re-armable after it fired, including from zero. */
        assert_int_equal(ev_timer_arm(t, 0), 0);
        spin_until(e, &s.fired, 2, 2 * USEC_PER_SEC);
        assert_int_equal(s.fired, 2);
        ev_timer_free(t);
}

static void test_timer_rearm_replaces(void **state) {
        struct env *e = *state;
        struct tstate s = {};
        struct ev_timer *t;
        int64_t start;

        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s, &t), 0);

        /* Earlier: fires at the new time, once. */
        start = now_monotonic_usec();
        assert_int_equal(ev_timer_arm(t, 5 * USEC_PER_SEC), 0);
        spin(e, 10 * MSEC);
        assert_int_equal(ev_timer_arm(t, 100 * MSEC), 0);
        spin_until(e, &s.fired, 1, 3 * USEC_PER_SEC);
        assert_int_equal(s.fired, 1);
        assert_true(s.at - start < 3 * USEC_PER_SEC);
        assert_true(s.at - start >= 50 * MSEC);

        /* Later: the first expiry does not fire. */
        start = now_monotonic_usec();
        assert_int_equal(ev_timer_arm(t, 100 * MSEC), 0);
        spin(e, 10 * MSEC);
        assert_int_equal(ev_timer_arm(t, USEC_PER_SEC), 0);
        spin(e, 400 * MSEC);
        assert_int_equal(s.fired, 1);
        spin_until(e, &s.fired, 2, 3 * USEC_PER_SEC);
        assert_int_equal(s.fired, 2);
        assert_true(s.at - start >= 500 * MSEC);
        spin(e, 200 * MSEC);
        assert_int_equal(s.fired, 2);
        ev_timer_free(t);
}

static void test_timer_disarm(void **state) {
        struct env *e = *state;
        struct tstate s = {}, s2 = {};
        struct ev_timer *t, *t2;

        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s, &t), 0);
        assert_int_equal(ev_timer_arm(t, 50 * MSEC), 0);
        spin(e, 10 * MSEC);
        ev_timer_disarm(t);
        assert_false(ev_timer_is_armed(t));
        /* Disarming twice is harmless. */
        ev_timer_disarm(t);

        /* Freed while armed, before it was even submitted. */
        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s2, &t2), 0);
        assert_int_equal(ev_timer_arm(t2, 30 * MSEC), 0);
        ev_timer_free(t2);

        spin(e, 250 * MSEC);
        assert_int_equal(s.fired, 0);
        assert_int_equal(s2.fired, 0);
        ev_timer_free(t);
}

static void test_timer_free_in_callback(void **state) {
        struct env *e = *state;
        struct tstate s = { .free_self = true };
        struct ev_timer *t;

        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s, &t), 0);
        assert_int_equal(ev_timer_arm(t, 10 * MSEC), 0);
        spin_until(e, &s.fired, 1, 2 * USEC_PER_SEC);
        spin(e, 50 * MSEC);
        assert_int_equal(s.fired, 1);
}

/* ------------------------------------------------------------------------------------- */

struct dstate {
        unsigned runs;
        char *log;
        struct ev_loop *loop;
        struct ev_defer *cancel;   /* cancels this one when run */
        struct ev_defer *requeue;  /* queues this one when run */
};

static void defer_cb(void *userdata) {
        struct dstate *s = userdata;

        s->runs++;
        if (s->log)
                strcat(s->log, "D");
        if (s->cancel)
                ev_defer_cancel(s->loop, s->cancel);
        if (s->requeue)
                ev_defer_queue(s->loop, s->requeue);
}

static void test_defer_once(void **state) {
        struct env *e = *state;
        struct dstate s = {};
        struct ev_defer d = { .fn = defer_cb, .userdata = &s };

        ev_defer_queue(e->loop, &d);
        assert_true(d.queued);
        assert_int_equal(s.runs, 0);
        assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        assert_int_equal(s.runs, 1);
        assert_false(d.queued);
        assert_int_equal(ev_loop_iterate(e->loop, 10 * MSEC), 0);
        assert_int_equal(s.runs, 1);

        /* Queued twice, runs once. */
        ev_defer_queue(e->loop, &d);
        ev_defer_queue(e->loop, &d);
        spin(e, 20 * MSEC);
        assert_int_equal(s.runs, 2);

        /* Cancelled, does not run; can be queued again. */
        ev_defer_queue(e->loop, &d);
        ev_defer_cancel(e->loop, &d);
        assert_false(d.queued);
        spin(e, 20 * MSEC);
        assert_int_equal(s.runs, 2);
        ev_defer_queue(e->loop, &d);
        spin(e, 20 * MSEC);
        assert_int_equal(s.runs, 3);
}

/* Work queued by deferred work does not wait for the iteration's timeout. */
static void test_defer_does_not_wait(void **state) {
        struct env *e = *state;
        struct dstate s2 = {};
        struct ev_defer d2 = { .fn = defer_cb, .userdata = &s2 };
        struct dstate s1 = { .loop = e->loop, .requeue = &d2 };
        struct ev_defer d1 = { .fn = defer_cb, .userdata = &s1 };
        int64_t start = now_monotonic_usec();

        ev_defer_queue(e->loop, &d1);
        assert_int_equal(ev_loop_iterate(e->loop, 5 * USEC_PER_SEC), 0);
        assert_int_equal(s1.runs, 1);
        assert_int_equal(s2.runs, 1);
        assert_true(now_monotonic_usec() - start < USEC_PER_SEC);
}

static void test_defer_cancel_middle_of_queue(void **state) {
        struct env *e = *state;
        struct dstate s1 = {}, s2 = {}, s3 = {}, s4 = {};
        struct ev_defer d1 = { .fn = defer_cb, .userdata = &s1 }, d2 = { .fn = defer_cb, .userdata = &s2 },
                        d3 = { .fn = defer_cb, .userdata = &s3 }, d4 = { .fn = defer_cb, .userdata = &s4 };

        ev_defer_queue(e->loop, &d1);
        ev_defer_queue(e->loop, &d2);
        ev_defer_queue(e->loop, &d3);
        ev_defer_cancel(e->loop, &d2);
        ev_defer_cancel(e->loop, &d3);
        /* The tail moved back: a new entry must still be reached. */
        ev_defer_queue(e->loop, &d4);
        assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        assert_int_equal(s1.runs, 1);
        assert_int_equal(s2.runs, 0);
        assert_int_equal(s3.runs, 0);
        assert_int_equal(s4.runs, 1);
}

struct batch {
        char log[64];
        struct ev_loop *loop;
        struct ev_defer *defer;
        int drain[2];
        unsigned calls;
};

static void batch_io_cb(struct ev_io *io, uint32_t revents, void *userdata) {
        struct batch *b = userdata;
        char buf[16];

        b->calls++;
        strcat(b->log, "I");
        for (int i = 0; i < 2; i++)
                while (read(b->drain[i], buf, sizeof(buf)) > 0)
                        ;
        ev_defer_queue(b->loop, b->defer);
}

/* Deferred work runs after every completion of the batch that queued it, once. */
static void test_defer_after_batch(void **state) {
        struct env *e = *state;
        struct batch b = { .loop = e->loop, .drain = { e->p[0], e->q[0] } };
        struct dstate s = { .log = b.log };
        struct ev_defer d = { .fn = defer_cb, .userdata = &s };
        struct ev_io *a, *c;

        b.defer = &d;
        assert_int_equal(ev_io_new(e->loop, e->p[0], POLLIN, batch_io_cb, &b, &a), 0);
        assert_int_equal(ev_io_new(e->loop, e->q[0], POLLIN, batch_io_cb, &b, &c), 0);
        spin(e, 20 * MSEC);
        put(e->p[1]);
        put(e->q[1]);
        /* Both completions are there before the loop looks. */
        usleep(20 * MSEC);
        assert_int_equal(ev_loop_iterate(e->loop, USEC_PER_SEC), 0);
        assert_string_equal(b.log, "IID");
        assert_int_equal(s.runs, 1);
        ev_io_free(a);
        ev_io_free(c);
}

/* A deferred callback that cancels another one queued for the same round: the cancel
 * must hold, since the owner may now free it ("must stay valid while queued"). */
static void test_defer_cancel_from_deferred(void **state) {
        struct env *e = *state;
        struct dstate s2 = {};
        struct ev_defer d2 = { .fn = defer_cb, .userdata = &s2 };
        struct dstate s1 = { .loop = e->loop, .cancel = &d2 };
        struct ev_defer d1 = { .fn = defer_cb, .userdata = &s1 };

        ev_defer_queue(e->loop, &d1);
        ev_defer_queue(e->loop, &d2);
        assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        assert_int_equal(s1.runs, 1);
        assert_false(d2.queued);
        assert_int_equal(s2.runs, 0);
}

/* Worse: cancelled and queued again from a deferred callback of the same round. The
 * entries queued after it must still run, once, and stay usable. */
static void test_defer_cancel_requeue_from_deferred(void **state) {
        struct env *e = *state;
        struct dstate s2 = {}, s3 = {};
        struct ev_defer d2 = { .fn = defer_cb, .userdata = &s2 }, d3 = { .fn = defer_cb, .userdata = &s3 };
        struct dstate s1 = { .loop = e->loop, .cancel = &d2, .requeue = &d2 };
        struct ev_defer d1 = { .fn = defer_cb, .userdata = &s1 };

        ev_defer_queue(e->loop, &d1);
        ev_defer_queue(e->loop, &d2);
        ev_defer_queue(e->loop, &d3);
        assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        spin(e, 20 * MSEC);
        assert_int_equal(s1.runs, 1);
        assert_int_equal(s3.runs, 1);
        assert_false(d3.queued);
        assert_int_equal(s2.runs, 1);
}

/* A deferred callback that queues another one (or itself) gets it run in a later round
 * and loses no entry queued after it. */
static void test_defer_requeue_from_deferred(void **state) {
        struct env *e = *state;
        struct dstate s3 = {};
        struct ev_defer d3 = { .fn = defer_cb, .userdata = &s3 };
        struct dstate s1 = { .loop = e->loop };
        struct ev_defer d1 = { .fn = defer_cb, .userdata = &s1 };
        struct dstate s2 = {};
        struct ev_defer d2 = { .fn = defer_cb, .userdata = &s2 };

        s1.requeue = &d1;
        ev_defer_queue(e->loop, &d1);
        ev_defer_queue(e->loop, &d2);
        ev_defer_queue(e->loop, &d3);
        assert_int_equal(ev_loop_iterate(e->loop, 0), 0);
        assert_true(s1.runs >= 1);
        assert_int_equal(s2.runs, 1);
        assert_int_equal(s3.runs, 1);
        s1.requeue = NULL;
        spin(e, 20 * MSEC);
        assert_int_equal(s2.runs, 1);
        assert_int_equal(s3.runs, 1);
        assert_false(d1.queued);
}

/* ------------------------------------------------------------------------------------- */

static void test_loop_run_exit_code(void **state) {
        struct env *e = *state;
        struct tstate s = { .exit_loop = e->loop, .exit_code = 42 };
        struct ev_timer *t;
        int64_t start = now_monotonic_usec();

        assert_int_equal(ev_timer_new(e->loop, timer_cb, &s, &t), 0);
        assert_int_equal(ev_timer_arm(t, 50 * MSEC), 0);
        assert_int_equal(ev_loop_run(e->loop), 42);
        assert_int_equal(s.fired, 1);
        assert_true(now_monotonic_usec() - start >= 25 * MSEC);
        ev_timer_free(t);
}

static void exit_defer_cb(void *userdata) {
        struct ev_loop *loop = userdata;
        ev_loop_exit(loop, 7);
}

static void test_loop_run_exit_from_defer(void **state) {
        struct env *e = *state;
        struct ev_defer d = { .fn = exit_defer_cb, .userdata = e->loop };

        ev_defer_queue(e->loop, &d);
        assert_int_equal(ev_loop_run(e->loop), 7);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_io_pollin, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_level_rearm, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_set_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_free_in_own_callback, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_free_other_in_callback, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_free_self_and_other, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_freed_never_calls, setup, teardown),
                cmocka_unit_test_setup_teardown(test_io_free_then_new_same_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timer_fires, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timer_rearm_replaces, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timer_disarm, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timer_free_in_callback, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_does_not_wait, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_cancel_middle_of_queue, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_after_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_cancel_from_deferred, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_cancel_requeue_from_deferred, setup, teardown),
                cmocka_unit_test_setup_teardown(test_defer_requeue_from_deferred, setup, teardown),
                cmocka_unit_test_setup_teardown(test_loop_run_exit_code, setup, teardown),
                cmocka_unit_test_setup_teardown(test_loop_run_exit_from_defer, setup, teardown),
        };
        struct ev_loop *probe = NULL;
        int r;

        log_setup(true, LOG_LEVEL_WARNING);
        /* Some sandboxes (seccomp, containers, kernel.io_uring_disabled) forbid io_uring. */
        r = ev_loop_new(8, &probe);
        if (r < 0) {
                printf("io_uring is not available here (io_uring_queue_init: %s); skipping\n", strerror(-r));
                return 77;
        }
        ev_loop_free(probe);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
