/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The probe engine: content probes of many devices at once, none able to stall the
 * daemon.
 *
 * A probe first reads the regions where signatures live (the first and last 512 KiB,
 * and a few small spots further in) through io_uring, every device's reads submitted
 * together, each read linked to a timeout. The reads fill the device's page cache; then
 * a small pool of worker threads runs libblkid on the same descriptor, which finds
 * almost everything it looks at in memory instead of making ~45 round trips through
 * the driver. libblkid decides what a signature means; the engine only decides how its
 * input arrives.
 *
 * A device whose read does not answer within the timeout is reported -ETIMEDOUT and
 * then left alone: while any read of it is still stuck in the kernel, later probes of it
 * are answered -EBUSY at once, without I/O. When the stuck read finally comes back, the
 * engine says so (answered) and the next probe reads again. At most one probe per device
 * is in flight; at most max_inflight devices are read at once, which bounds the memory
 * (one shared scratch buffer) and the I/O of a pass. Descriptors are opened read-only
 * and closed as soon as the probe ends. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "evloop.h"
#include "observation.h"

struct probe_engine;
struct probe_request;

typedef void (*probe_done_fn)(struct probe_request *req, void *userdata);
/* A device that timed out is reachable again: its stuck read came back. */
typedef void (*probe_answered_fn)(dev_t devnum, void *userdata);

struct probe_request {
        /* Set by the caller, who owns the request until done runs. */
        char *devnode;
        dev_t devnum;
        uint64_t size;
        probe_done_fn done;
        void *userdata;

        /* Set before done: libblkid's results (B:..., X:probed or X:probe_error) and the
         * outcome: 0, -ETIMEDOUT (did not answer in time), -EBUSY (an earlier read of it is
         * still stuck; not touched), -ESHUTDOWN, or another -errno. */
        struct observation result;
        int error;

        /* The engine's. */
        struct probe_request *next;
        int fd;
        int direct_fd; /* for the liveness read, past the page cache */
        unsigned reads_out;
        bool timed_out;
        int read_error;
        bool started;
        unsigned char zfs[4][16]; /* the ZFS label headers, read for their bytes */
};

struct probe_engine_config {
        unsigned workers;      /* libblkid threads */
        unsigned max_inflight; /* devices read at once */
        int64_t timeout;       /* usec a read may take */
};

/* Other work for the engine's threads: run() on a worker, then done() from the loop.
 * run() must not touch what the loop owns. */
struct probe_work {
        void (*run)(struct probe_work *w);
        void (*done)(struct probe_work *w);
};
int probe_engine_run(struct probe_engine *e, struct probe_work *w);

int probe_engine_new(struct ev_loop *loop, const struct probe_engine_config *cfg, probe_answered_fn answered,
                     void *userdata, struct probe_engine **ret);
/* Queues a probe; done runs once, from the event loop, never from inside this call. */
void probe_engine_submit(struct probe_engine *e, struct probe_request *req);
/* Once a second: probes whose libblkid run outlives the timeout (a device that hung after
 * its reads answered) are reported -ETIMEDOUT and their worker left to finish. */
void probe_engine_tick(struct probe_engine *e, int64_t now_mono);
/* A new timeout for reads submitted from now on (a reload); reads in flight keep theirs. */
void probe_engine_set_timeout(struct probe_engine *e, int64_t timeout);
bool probe_engine_is_stuck(const struct probe_engine *e, dev_t devnum);
/* Worker threads running, those held by hung devices included. */
unsigned probe_engine_workers(struct probe_engine *e);
/* Requests queued or running. */
unsigned probe_engine_busy(const struct probe_engine *e);
/* Stops the workers (without waiting for one stuck on a device) and frees what can be
 * freed; requests not yet done are dropped without a call of done. */
struct probe_engine *probe_engine_free(struct probe_engine *e);

void probe_request_free(struct probe_request *req);
