/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <limits.h>
#include <liburing.h>
#include <poll.h>
#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "evloop.h"
#include "log.h"
#include "util.h"

/* Every operation in flight is a small heap object whose address is the SQE's user_data.
 * Its owner (an ev_io or ev_timer) may be freed or re-armed while the kernel still holds
 * the operation: the op is then detached (owner = NULL) and its completion ignored. */
enum op_kind { OP_POLL, OP_TIMEOUT, OP_READ, OP_LINK_TIMEOUT };

struct ev_op {
        enum op_kind kind;
        void *owner; /* struct ev_io or struct ev_timer, NULL when detached */
        struct __kernel_timespec ts;
        struct ev_op *prev, *next; /* all ops in flight, freed at loop exit */
};

struct ev_loop {
        struct io_uring ring;
        struct ev_op *ops;
        struct ev_defer *defer_head, *defer_tail;
        struct ev_defer *round_last; /* last entry of the round being run, or NULL */
        bool exit;
        int exit_code;
};

struct ev_io {
        struct ev_loop *loop;
        int fd;
        uint32_t events;
        struct ev_op *op; /* armed poll, or NULL */
        uint32_t armed_events;
        bool in_callback;
        ev_io_fn fn;
        void *userdata;
};

struct ev_timer {
        struct ev_loop *loop;
        struct ev_op *op;
        ev_timer_fn fn;
        void *userdata;
};

/* A read and its link timeout: two operations, one owner, freed after both came back. */
struct ev_read {
        struct ev_loop *loop;
        ev_read_fn fn;
        void *userdata;
        bool read_back, timeout_back, reported;
};

int ev_loop_new(unsigned entries, struct ev_loop **ret) {
        struct ev_loop *loop = calloc(1, sizeof(*loop));
        int r;

        if (!loop)
                return -ENOMEM;
        r = io_uring_queue_init(entries, &loop->ring, 0);
        if (r < 0) {
                free(loop);
                return r;
        }
        /* Work handed to the kernel's io-wq (the readahead of ev_fadvise, reads that
         * cannot wait without a thread) would each get a thread: hundreds during a pass.
         * A few per CPU keep the devices busy. */
        {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                unsigned workers[2] = { (unsigned) MAX(2L, MIN(cpus, 16L) * 2), 8 };
                (void) io_uring_register_iowq_max_workers(&loop->ring, workers);
        }
        *ret = loop;
        return 0;
}

struct ev_loop *ev_loop_free(struct ev_loop *loop) {
        if (!loop)
                return NULL;
        /* Tearing down the ring cancels whatever is still in flight. */
        io_uring_queue_exit(&loop->ring);
        while (loop->ops) {
                struct ev_op *op = loop->ops;
                loop->ops = op->next;
                /* A read owns two ops; whichever goes last takes the read with it. */
                if (op->owner && (op->kind == OP_READ || op->kind == OP_LINK_TIMEOUT)) {
                        struct ev_read *r = op->owner;
                        if (op->kind == OP_READ)
                                r->read_back = true;
                        else
                                r->timeout_back = true;
                        if (r->read_back && r->timeout_back)
                                free(r);
                }
                free(op);
        }
        free(loop);
        return NULL;
}

static struct io_uring_sqe *get_sqe(struct ev_loop *loop) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

        if (!sqe) {
                /* Submission queue full: hand what we have to the kernel, then retry. */
                io_uring_submit(&loop->ring);
                sqe = io_uring_get_sqe(&loop->ring);
        }
        return sqe;
}

static struct ev_op *op_new(struct ev_loop *loop, enum op_kind kind, void *owner) {
        struct ev_op *op = calloc(1, sizeof(*op));

        if (!op)
                return NULL;
        op->kind = kind;
        op->owner = owner;
        op->next = loop->ops;
        if (loop->ops)
                loop->ops->prev = op;
        loop->ops = op;
        return op;
}

static void op_free(struct ev_loop *loop, struct ev_op *op) {
        if (op->prev)
                op->prev->next = op->next;
        else
                loop->ops = op->next;
        if (op->next)
                op->next->prev = op->prev;
        free(op);
}

/* Asks the kernel to drop op and forgets its owner; the completion will free it. */
static void op_cancel(struct ev_loop *loop, struct ev_op *op) {
        struct io_uring_sqe *sqe = get_sqe(loop);

        op->owner = NULL;
        if (!sqe)
                return; /* It completes on its own (poll: when ready; timeout: when due). */
        if (op->kind == OP_POLL)
                io_uring_prep_poll_remove(sqe, (__u64) (uintptr_t) op);
        else
                io_uring_prep_timeout_remove(sqe, (__u64) (uintptr_t) op, 0);
        io_uring_sqe_set_data64(sqe, 0);
}

static int io_arm(struct ev_io *io) {
        struct io_uring_sqe *sqe;
        struct ev_op *op;

        /* The op first: a taken submission slot must always be filled. */
        op = op_new(io->loop, OP_POLL, io);
        if (!op)
                return -ENOMEM;
        sqe = get_sqe(io->loop);
        if (!sqe) {
                op_free(io->loop, op);
                return -EBUSY;
        }
        io_uring_prep_poll_add(sqe, io->fd, io->events);
        io_uring_sqe_set_data(sqe, op);
        io->op = op;
        io->armed_events = io->events;
        return 0;
}

int ev_io_new(struct ev_loop *loop, int fd, uint32_t events, ev_io_fn fn, void *userdata,
              struct ev_io **ret) {
        struct ev_io *io = calloc(1, sizeof(*io));
        int r;

        if (!io)
                return -ENOMEM;
        *io = (struct ev_io) { .loop = loop, .fd = fd, .events = events, .fn = fn, .userdata = userdata };
        if (events) {
                r = io_arm(io);
                if (r < 0) {
                        free(io);
                        return r;
                }
        }
        *ret = io;
        return 0;
}

int ev_io_set_events(struct ev_io *io, uint32_t events) {
        io->events = events;
        /* Inside the callback the poll is not armed; dispatch re-arms afterwards. */
        if (io->in_callback)
                return 0;
        if (io->op && io->armed_events == events)
                return 0;
        if (io->op) {
                op_cancel(io->loop, io->op);
                io->op = NULL;
        }
        return events ? io_arm(io) : 0;
}

uint32_t ev_io_get_events(const struct ev_io *io) {
        return io->events;
}

void ev_io_free(struct ev_io *io) {
        if (!io)
                return;
        if (io->op)
                op_cancel(io->loop, io->op);
        if (io->in_callback) {
                /* dispatch_poll frees it after the callback returns. */
                io->fn = NULL;
                io->op = NULL;
                return;
        }
        free(io);
}

static void dispatch_poll(struct ev_loop *loop, struct ev_io *io, int res) {
        io->op = NULL;
        if (res == -ECANCELED)
                goto rearm;
        io->in_callback = true;
        if (res < 0) {
                /* A poll on a descriptor fails only if it is unusable: report it as an
                 * error condition so the owner closes it. */
                log_debug_errno(res, "poll on fd %d failed", io->fd);
                io->fn(io, POLLERR, io->userdata);
        } else
                io->fn(io, (uint32_t) res, io->userdata);
        io->in_callback = false;
        if (!io->fn) {
                free(io);
                return;
        }
rearm:
        if (io->events && !io->op && io_arm(io) < 0) {
                /* A source that silently stops (the listener, the signals) is worse than
                 * an exit the service manager restarts. */
                log_error("cannot re-arm poll on fd %d; stopping", io->fd);
                ev_loop_exit(loop, -ENOMEM);
        }
}

int ev_timer_new(struct ev_loop *loop, ev_timer_fn fn, void *userdata, struct ev_timer **ret) {
        struct ev_timer *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        *t = (struct ev_timer) { .loop = loop, .fn = fn, .userdata = userdata };
        *ret = t;
        return 0;
}

int ev_timer_arm(struct ev_timer *t, int64_t usec) {
        struct io_uring_sqe *sqe;
        struct ev_op *op;

        ev_timer_disarm(t);
        op = op_new(t->loop, OP_TIMEOUT, t);
        if (!op)
                return -ENOMEM;
        sqe = get_sqe(t->loop);
        if (!sqe) {
                op_free(t->loop, op);
                return -EBUSY;
        }
        if (usec < 0)
                usec = 0;
        op->ts.tv_sec = usec / USEC_PER_SEC;
        op->ts.tv_nsec = (usec % USEC_PER_SEC) * 1000;
        io_uring_prep_timeout(sqe, &op->ts, 0, 0);
        io_uring_sqe_set_data(sqe, op);
        t->op = op;
        return 0;
}

void ev_timer_disarm(struct ev_timer *t) {
        if (t && t->op) {
                op_cancel(t->loop, t->op);
                t->op = NULL;
        }
}

bool ev_timer_is_armed(const struct ev_timer *t) {
        return t && t->op;
}

void ev_timer_free(struct ev_timer *t) {
        if (!t)
                return;
        ev_timer_disarm(t);
        free(t);
}

int ev_read_submit(struct ev_loop *loop, int fd, void *buf, unsigned len, uint64_t off, int64_t timeout_usec,
                   ev_read_fn fn, void *userdata) {
        struct io_uring_sqe *sqe_read, *sqe_timeout;
        struct ev_op *op_read, *op_timeout;
        struct ev_read *r = calloc(1, sizeof(*r));

        if (!r)
                return -ENOMEM;
        *r = (struct ev_read) { .loop = loop, .fn = fn, .userdata = userdata };
        op_read = op_new(loop, OP_READ, r);
        op_timeout = op_new(loop, OP_LINK_TIMEOUT, r);
        if (!op_read || !op_timeout)
                goto oom;
        /* Both SQEs in one go: a link must not be split by a submission in between. */
        if (io_uring_sq_space_left(&loop->ring) < 2)
                io_uring_submit(&loop->ring);
        sqe_read = io_uring_get_sqe(&loop->ring);
        sqe_timeout = sqe_read ? io_uring_get_sqe(&loop->ring) : NULL;
        if (!sqe_read || !sqe_timeout) {
                /* Cannot happen after the submit above, unless the ring is tiny. */
                if (sqe_read)
                        io_uring_prep_nop(sqe_read), io_uring_sqe_set_data64(sqe_read, 0);
                goto oom;
        }
        io_uring_prep_read(sqe_read, fd, buf, len, off);
        io_uring_sqe_set_data(sqe_read, op_read);
        /* Not IOSQE_ASYNC: issued inline, a read of a page not yet there parks on the
         * page's wait queue (or, direct, on its bio) instead of holding one of io-wq's
         * few threads for as long as the device does not answer, and the linked
         * timeout starts now, not when a busy io-wq gets to the read. */
        sqe_read->flags |= IOSQE_IO_LINK;
        if (timeout_usec < 0)
                timeout_usec = 0;
        op_timeout->ts.tv_sec = timeout_usec / USEC_PER_SEC;
        op_timeout->ts.tv_nsec = (timeout_usec % USEC_PER_SEC) * 1000;
        io_uring_prep_link_timeout(sqe_timeout, &op_timeout->ts, 0);
        io_uring_sqe_set_data(sqe_timeout, op_timeout);
        return 0;
oom:
        if (op_read)
                op_free(loop, op_read);
        if (op_timeout)
                op_free(loop, op_timeout);
        free(r);
        return -ENOMEM;
}

int ev_fadvise(struct ev_loop *loop, int fd, uint64_t off, unsigned len, int advice) {
        struct io_uring_sqe *sqe = get_sqe(loop);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_fadvise(sqe, fd, off, len, advice);
        /* On an io-wq thread: starting readahead allocates pages and submits I/O. */
        sqe->flags |= IOSQE_ASYNC;
        io_uring_sqe_set_data64(sqe, 0);
        return 0;
}

static void dispatch_read(struct ev_read *r, enum op_kind kind, int res) {
        if (kind == OP_READ) {
                r->read_back = true;
                /* A read that the timeout cancelled says -ECANCELED: already reported. */
                if (!r->reported) {
                        r->reported = true;
                        r->fn(r, res, false, r->userdata);
                } else
                        /* The read that timed out is no longer in flight: -ECANCELED if
                         * the cancellation took, else what it finally got. */
                        r->fn(r, res, true, r->userdata);
        } else {
                r->timeout_back = true;
                /* -ECANCELED: the read came back in time. Anything else: the time ran
                 * out first. -ETIME if the read could be cancelled; -EALREADY or
                 * -ENOENT if not (inside the driver, or parked on a page that the
                 * device has not filled), and then it comes back when the device
                 * answers. */
                if (res != -ECANCELED && !r->read_back && !r->reported) {
                        r->reported = true;
                        r->fn(r, -ETIMEDOUT, false, r->userdata);
                }
        }
        if (r->read_back && r->timeout_back)
                free(r);
}

void ev_defer_queue(struct ev_loop *loop, struct ev_defer *d) {
        if (d->queued)
                return;
        d->queued = true;
        d->next = NULL;
        if (loop->defer_tail)
                loop->defer_tail->next = d;
        else
                loop->defer_head = d;
        loop->defer_tail = d;
}

void ev_defer_cancel(struct ev_loop *loop, struct ev_defer *d) {
        struct ev_defer *prev = NULL, *i;

        if (!d->queued)
                return;
        for (i = loop->defer_head; i && i != d; i = i->next)
                prev = i;
        if (!i)
                return;
        if (prev)
                prev->next = d->next;
        else
                loop->defer_head = d->next;
        if (loop->defer_tail == d)
                loop->defer_tail = prev;
        /* Cancelling the end of the running round ends the round one entry earlier. */
        if (loop->round_last == d)
                loop->round_last = prev;
        d->queued = false;
        d->next = NULL;
}

static void run_deferred(struct ev_loop *loop) {
        /* One round runs what was queued when it began; work queued meanwhile waits for
         * the next round, so a callback that keeps re-queuing itself cannot starve the
         * completions. Entries stay on the list until they run, so a callback may cancel
         * or re-queue any of them. */
        loop->round_last = loop->defer_tail;
        while (loop->round_last) {
                struct ev_defer *d = loop->defer_head;

                loop->defer_head = d->next;
                if (!loop->defer_head)
                        loop->defer_tail = NULL;
                if (loop->round_last == d)
                        loop->round_last = NULL;
                d->queued = false;
                d->next = NULL;
                d->fn(d->userdata);
        }
}

static void dispatch(struct ev_loop *loop, struct ev_op *op, int res) {
        void *owner = op->owner;
        enum op_kind kind = op->kind;

        op_free(loop, op);
        if (!owner)
                return; /* cancelled or replaced */
        if (kind == OP_POLL)
                dispatch_poll(loop, owner, res);
        else if (kind == OP_READ || kind == OP_LINK_TIMEOUT)
                dispatch_read(owner, kind, res);
        else {
                struct ev_timer *t = owner;
                t->op = NULL;
                if (res == -ETIME || res == 0)
                        t->fn(t, t->userdata);
        }
}

int ev_loop_iterate(struct ev_loop *loop, int64_t timeout_usec) {
        struct io_uring_cqe *cqe;
        int r;

        run_deferred(loop);
        if (loop->exit)
                return 0;
        if (loop->defer_head)
                timeout_usec = 0;

        /* valgrind (3.19 at least) runs io_uring_enter holding the lock that lets one
         * thread run at a time: a wait there would stop the probe workers until the next
         * completion. poll(2) on the ring lets them run. */
        if (RUNNING_ON_VALGRIND && timeout_usec != 0 && !io_uring_cq_ready(&loop->ring)) {
                struct pollfd p = { .fd = loop->ring.ring_fd, .events = POLLIN };

                r = io_uring_submit(&loop->ring);
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
                        return r;
                (void) poll(&p, 1, timeout_usec < 0 ? -1 : (int) MIN((timeout_usec + 999) / 1000, (int64_t) INT_MAX));
                timeout_usec = 0;
        }
        if (timeout_usec < 0)
                r = io_uring_submit_and_wait(&loop->ring, 1);
        else {
                struct __kernel_timespec ts = {
                        .tv_sec = timeout_usec / USEC_PER_SEC,
                        .tv_nsec = (timeout_usec % USEC_PER_SEC) * 1000,
                };
                r = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
        }
        if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
                return r;

        while (io_uring_peek_cqe(&loop->ring, &cqe) == 0) {
                uint64_t data = io_uring_cqe_get_data64(cqe);
                int res = cqe->res;

                io_uring_cqe_seen(&loop->ring, cqe);
                if (data)
                        dispatch(loop, (struct ev_op *) (uintptr_t) data, res);
        }
        run_deferred(loop);
        return 0;
}

int ev_loop_run(struct ev_loop *loop) {
        while (!loop->exit) {
                int r = ev_loop_iterate(loop, -1);
                if (r < 0)
                        return r;
        }
        return loop->exit_code;
}

void ev_loop_exit(struct ev_loop *loop, int code) {
        loop->exit = true;
        loop->exit_code = code;
}
