/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's single event loop, built on one io_uring.
 *
 * Three kinds of sources:
 *  - ev_io: a descriptor watched with IORING_OP_POLL_ADD (one-shot, re-armed after each
 *    callback while the wanted mask is non-zero);
 *  - ev_timer: an IORING_OP_TIMEOUT, one-shot, re-armed by the owner;
 *  - ev_defer: a callback run once after the current batch of completions, used to
 *    coalesce work (a batch of uevents becomes one reconcile pass);
 *  - ev_read: an IORING_OP_READ linked to an IORING_OP_LINK_TIMEOUT, for device reads
 *    that may never answer.
 * Freeing a source whose operation is in flight cancels it; the memory is released when
 * the kernel has returned the operation, so no completion ever points at freed memory. */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

struct ev_loop;
struct ev_io;
struct ev_timer;
struct ev_read;

typedef void (*ev_io_fn)(struct ev_io *io, uint32_t revents, void *userdata);
typedef void (*ev_timer_fn)(struct ev_timer *t, void *userdata);
typedef void (*ev_defer_fn)(void *userdata);

struct ev_defer {
        ev_defer_fn fn;
        void *userdata;
        bool queued;
        struct ev_defer *next;
};

int ev_loop_new(unsigned entries, struct ev_loop **ret);
struct ev_loop *ev_loop_free(struct ev_loop *loop);

/* Runs until ev_loop_exit(); returns the code given there, or negative errno. */
int ev_loop_run(struct ev_loop *loop);
void ev_loop_exit(struct ev_loop *loop, int code);
/* One iteration: submit, wait up to timeout_usec (-1 forever) for completions, dispatch
 * them and run deferred work. For tests and for draining at exit. */
int ev_loop_iterate(struct ev_loop *loop, int64_t timeout_usec);

int ev_io_new(struct ev_loop *loop, int fd, uint32_t events, ev_io_fn fn, void *userdata,
              struct ev_io **ret);
/* Changes the wanted poll mask (POLLIN, POLLOUT, ...); 0 pauses the source. */
int ev_io_set_events(struct ev_io *io, uint32_t events);
uint32_t ev_io_get_events(const struct ev_io *io);
/* Does not close the descriptor. Accepts NULL. */
void ev_io_free(struct ev_io *io);

int ev_timer_new(struct ev_loop *loop, ev_timer_fn fn, void *userdata, struct ev_timer **ret);
/* Fires once after usec (relative); re-arming replaces a pending expiry. */
int ev_timer_arm(struct ev_timer *t, int64_t usec);
void ev_timer_disarm(struct ev_timer *t);
bool ev_timer_is_armed(const struct ev_timer *t);
void ev_timer_free(struct ev_timer *t);

/* A read of len bytes at off into buf (which must stay valid until the last call of fn).
 * fn runs once with the result, or -ETIMEDOUT when timeout_usec passed first. A read that
 * timed out may still be stuck in the kernel (a dead disk blocks it uninterruptibly): fn
 * then runs a second time, with late = true, when it is no longer in flight (res is
 * -ECANCELED if the cancellation took, else what the read finally got). */
typedef void (*ev_read_fn)(struct ev_read *r, int res, bool late, void *userdata);
int ev_read_submit(struct ev_loop *loop, int fd, void *buf, unsigned len, uint64_t off, int64_t timeout_usec,
                   ev_read_fn fn, void *userdata);

/* Fire and forget: posix_fadvise(fd, off, len, advice) on a kernel thread (POSIX_FADV_
 * WILLNEED starts readahead there without copying anything to us). */
int ev_fadvise(struct ev_loop *loop, int fd, uint64_t off, unsigned len, int advice);

/* Queues d (owned by the caller, must stay valid while queued) to run once. */
void ev_defer_queue(struct ev_loop *loop, struct ev_defer *d);
void ev_defer_cancel(struct ev_loop *loop, struct ev_defer *d);
