/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sysmacros.h>

#include "log.h"
#include "probe-engine.h"
#include "probe.h"
#include "util.h"

/* The read plan: the places libblkid 2.38's probers look at with the ZFS prober left out
 * (strace of blkid -p on blank and ext4 devices: reads within the first 64 KiB, single
 * sectors at 128 KiB to 4 MiB, ~20 small reads within 1.5 MiB of the end, most of them
 * in its last 128 KiB), all read in one batch so that libblkid's ~45 small reads find
 * the page cache full instead of each making a round trip through the driver. Nothing
 * more: the descriptor is POSIX_FADV_RANDOM, so neither these reads nor libblkid's
 * misses pull in the device's readahead window (2.5 MiB for loop devices here). What the
 * plan misses, libblkid reads itself: the plan only decides speed, never what is found.
 * Offsets from the end are negative. */
#define HEAD_BYTES (68u * 1024) /* one read: 0 to 64 KiB and the sector there */
#define PAGE 4096u
static const int64_t plan_pages[] = {
        128 * 1024, 256 * 1024, 512 * 1024, 1 << 20, 2 << 20, 4 << 20,
        -1580544, -507392, -498688, -486912, -466432, -376320, -345600, -302592, -204288, -131584,
        -131072, -65536, -32768, -8192, -4096,
};

/* ZFS keeps four 256 KiB labels, two at each end, each with its name-value list at 16 KiB,
 * which starts with an XDR header: encoding 1, an endianness byte, two zero bytes.
 * libblkid's ZFS prober reads all four labels whole (1 MiB a device, two thirds of all
 * probing I/O), so it only runs where one of the four headers is there. */
#define ZFS_LABEL (256u * 1024)
#define MAX_STUCK_WORKERS 16u
#define WORKER_NICE 5
#define ZFS_NVLIST 16384u

static bool zfs_header(const unsigned char h[4]) {
        return h[0] == 1 && h[1] <= 1 && h[2] == 0 && h[3] == 0;
}

/* A read's ticket outlives its request: a read that timed out may come back long after
 * the probe was reported. */
struct ticket {
        struct probe_engine *engine;
        struct probe_request *req; /* NULL once the request is done */
        dev_t devnum;
        bool stuck;
        struct ticket *prev, *next;
};

/* A libblkid run on a worker, or other work handed to the workers (w != NULL). */
struct job {
        struct probe_work *w;
        struct probe_request *req; /* NULL once abandoned by the watchdog */
        int fd;
        bool skip_zfs;
        dev_t devnum;
        int64_t started;
        struct observation obs;
        int result;
        bool running;
        struct job *next;
};

struct stuck {
        dev_t devnum;
        unsigned count; /* reads or jobs of it still out */
};

struct probe_engine {
        struct ev_loop *loop;
        struct probe_engine_config cfg;
        probe_answered_fn answered;
        void *userdata;

        struct probe_request *queue_head, *queue_tail; /* not started */
        struct probe_request **active;                 /* reading or probing */
        unsigned n_active;
        struct probe_request *done_head, *done_tail;   /* to be reported */
        struct ev_defer report;
        struct ticket *tickets;
        struct stuck *stuck;
        size_t n_stuck;
        char *scratch;

        /* Workers: jobs in, jobs out, an eventfd to wake the loop. Detached and counted:
         * a worker stuck on a device that hung under libblkid is replaced (up to
         * MAX_STUCK_WORKERS), and the one that comes back later leaves again. */
        unsigned alive;          /* workers running */
        unsigned stuck_workers;  /* of them, inside a job the watchdog gave up on */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_cond_t exited;
        struct job *jobs_head, *jobs_tail;
        struct job *running;   /* all jobs handed out and not yet collected */
        struct job *finished;
        bool stopping;
        int efd;
        struct ev_io *efd_io;
};

/* Kept reachable for reads stuck at exit: the kernel may still write into it. */
static char *volatile leftover_scratch; /* volatile: a store never read is not dropped */

static void start_more(struct probe_engine *e);
static void queue_job(struct probe_engine *e, struct job *j);

void probe_request_free(struct probe_request *req) {
        if (!req)
                return;
        free(req->devnode);
        observation_done(&req->result);
        free(req);
}

static struct stuck *find_stuck(const struct probe_engine *e, dev_t devnum) {
        for (size_t i = 0; i < e->n_stuck; i++)
                if (e->stuck[i].devnum == devnum)
                        return &e->stuck[i];
        return NULL;
}

bool probe_engine_is_stuck(const struct probe_engine *e, dev_t devnum) {
        return find_stuck(e, devnum) != NULL;
}

static void stuck_add(struct probe_engine *e, dev_t devnum) {
        struct stuck *s = find_stuck(e, devnum), *n;

        if (s) {
                s->count++;
                return;
        }
        n = realloc(e->stuck, (e->n_stuck + 1) * sizeof(*n));
        if (!n)
                return; /* then it is probed again next time: no worse than before */
        e->stuck = n;
        e->stuck[e->n_stuck++] = (struct stuck) { .devnum = devnum, .count = 1 };
}

/* One read or job of devnum is back; the device answered if ok. */
static void stuck_release(struct probe_engine *e, dev_t devnum, bool ok) {
        struct stuck *s = find_stuck(e, devnum);

        if (!s || --s->count > 0)
                return;
        *s = e->stuck[--e->n_stuck];
        log_info("device %u:%u %s", major(devnum), minor(devnum),
                 ok ? "answers again" : "is no longer read (its stuck read was cancelled)");
        if (e->answered)
                e->answered(devnum, e->userdata);
}

static void report_deferred(void *userdata) {
        struct probe_engine *e = userdata;
        struct probe_request *list = e->done_head;

        e->done_head = e->done_tail = NULL;
        while (list) {
                struct probe_request *req = list;
                list = req->next;
                req->next = NULL;
                req->done(req, req->userdata);
        }
        start_more(e);
}

/* Ends a request: its descriptor closes now (in-flight reads hold their own reference),
 * its result is reported from the loop. */
static void finish(struct probe_engine *e, struct probe_request *req, int error) {
        for (unsigned i = 0; i < e->n_active; i++)
                if (e->active[i] == req) {
                        e->active[i] = e->active[--e->n_active];
                        break;
                }
        if (req->fd >= 0) {
                close(req->fd);
                req->fd = -1;
        }
        if (req->direct_fd >= 0) {
                /* Its read, even one still stuck, holds its own reference to the file. */
                close(req->direct_fd);
                req->direct_fd = -1;
        }
        req->error = error;
        if (error < 0 && !observation_get(&req->result, "X:probe_error"))
                observation_set(&req->result, "X:probe_error",
                                error == -ETIMEDOUT ? "no answer within the probe timeout"
                                : error == -EBUSY   ? "an earlier read is still stuck"
                                                    : strerror(-error));
        req->next = NULL;
        if (e->done_tail)
                e->done_tail->next = req;
        else
                e->done_head = req;
        e->done_tail = req;
        ev_defer_queue(e->loop, &e->report);
}

static void hand_to_worker(struct probe_engine *e, struct probe_request *req) {
        struct job *j = calloc(1, sizeof(*j));

        if (!j) {
                finish(e, req, -ENOMEM);
                return;
        }
        j->req = req;
        j->fd = req->fd;
        req->fd = -1; /* the worker closes it */
        j->devnum = req->devnum;
        /* Too small to carry the four labels, or none of the headers there. */
        j->skip_zfs = true;
        for (unsigned i = 0; i < 4 && req->size >= 2 * ZFS_LABEL; i++)
                if (zfs_header(req->zfs[i]))
                        j->skip_zfs = false;
        if (req->size < 2 * ZFS_LABEL)
                j->skip_zfs = false; /* too small for the plan: libblkid decides alone */
        queue_job(e, j);
}

static void queue_job(struct probe_engine *e, struct job *j) {
        pthread_mutex_lock(&e->lock);
        if (e->jobs_tail)
                e->jobs_tail->next = j;
        else
                e->jobs_head = j;
        e->jobs_tail = j;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

int probe_engine_run(struct probe_engine *e, struct probe_work *w) {
        struct job *j = calloc(1, sizeof(*j));

        if (!j)
                return -ENOMEM;
        j->w = w;
        j->fd = -1;
        queue_job(e, j);
        return 0;
}

static void read_done(struct ev_read *r, int res, bool late, void *userdata) {
        struct ticket *t = userdata;
        struct probe_engine *e = t->engine;
        struct probe_request *req = t->req;

        if (late) {
                stuck_release(e, t->devnum, res >= 0);
                goto free_ticket;
        }
        if (res == -ETIMEDOUT) {
                /* Still in the kernel: the device stays off limits until it comes back. */
                t->stuck = true;
                stuck_add(e, t->devnum);
                if (req)
                        req->timed_out = true;
        } else if (res < 0 && req && !req->read_error)
                req->read_error = res;
        if (req && --req->reads_out == 0) {
                if (req->timed_out) {
                        log_warning("%s did not answer within %lld s; leaving it alone until it does",
                                    req->devnode, (long long) (e->cfg.timeout / USEC_PER_SEC));
                        finish(e, req, -ETIMEDOUT);
                } else if (req->read_error)
                        finish(e, req, req->read_error);
                else
                        hand_to_worker(e, req);
        }
        t->req = NULL;
        if (t->stuck)
                return; /* freed with its late completion */
free_ticket:
        if (t->prev)
                t->prev->next = t->next;
        else
                e->tickets = t->next;
        if (t->next)
                t->next->prev = t->prev;
        free(t);
}

static int submit_read_fd(struct probe_engine *e, struct probe_request *req, int fd, uint64_t off, unsigned len,
                          void *into) {
        struct ticket *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        *t = (struct ticket) { .engine = e, .req = req, .devnum = req->devnum, .next = e->tickets };
        /* Reads land in the shared scratch buffer unless their bytes matter: only the page
         * cache they fill counts. */
        r = ev_read_submit(e->loop, fd, into ? into : e->scratch, len, off, e->cfg.timeout, read_done, t);
        if (r < 0) {
                free(t);
                return r;
        }
        if (e->tickets)
                e->tickets->prev = t;
        e->tickets = t;
        req->reads_out++;
        return 0;
}

static int submit_read(struct probe_engine *e, struct probe_request *req, uint64_t off, unsigned len, void *into) {
        return submit_read_fd(e, req, req->fd, off, len, into);
}

static void start(struct probe_engine *e, struct probe_request *req) {
        uint64_t size = req->size;
        int r = 0;

        req->started = true;
        e->active[e->n_active++] = req;
        req->direct_fd = -1;
        req->fd = open(req->devnode, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (req->fd < 0) {
                finish(e, req, -errno);
                return;
        }
        /* Only what is asked for: no readahead around the plan, nor around libblkid's
         * own reads. */
        (void) posix_fadvise(req->fd, 0, 0, POSIX_FADV_RANDOM);
        /* Whether the device answers is asked past the page cache: pages cached while
         * someone holds the device open (a mounted file system, a held loop device) would
         * answer for a device that no longer does. One direct read of the first page. */
        if (size >= PAGE) {
                req->direct_fd = open(req->devnode, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_DIRECT);
                if (req->direct_fd >= 0)
                        r = submit_read_fd(e, req, req->direct_fd, 0, PAGE, NULL);
        }
        if (r == 0 && size > 0)
                r = submit_read(e, req, 0, (unsigned) MIN(size, (uint64_t) HEAD_BYTES), NULL);
        for (size_t i = 0; r == 0 && i < ELEMENTSOF(plan_pages); i++) {
                int64_t at = plan_pages[i] >= 0 ? plan_pages[i] : (int64_t) size + plan_pages[i];
                bool again = false;

                at &= ~(int64_t) (PAGE - 1);
                if (at < (int64_t) HEAD_BYTES || (uint64_t) at + PAGE > size)
                        continue; /* read with the head, or past the end */
                for (size_t k = 0; k < i && !again; k++) {
                        int64_t before = plan_pages[k] >= 0 ? plan_pages[k] : (int64_t) size + plan_pages[k];
                        again = (before & ~(int64_t) (PAGE - 1)) == at;
                }
                if (!again)
                        r = submit_read(e, req, (uint64_t) at, PAGE, NULL);
        }
        /* The ZFS label headers, into the request's own buffer: their bytes decide. */
        for (unsigned i = 0; r == 0 && i < 4 && size >= 2 * ZFS_LABEL; i++) {
                uint64_t label = i < 2 ? i * ZFS_LABEL : (size & ~(uint64_t) (ZFS_LABEL - 1)) - (4 - i) * ZFS_LABEL;
                r = submit_read(e, req, label + ZFS_NVLIST, sizeof(req->zfs[i]), req->zfs[i]);
        }
        if (r < 0) {
                /* Reads already out complete on their own; the request ends with them. */
                if (req->reads_out == 0)
                        finish(e, req, r);
                else
                        req->read_error = r;
                return;
        }
        if (req->reads_out == 0)
                hand_to_worker(e, req); /* an empty device: libblkid says so */
}

static bool device_active(const struct probe_engine *e, dev_t devnum) {
        for (unsigned i = 0; i < e->n_active; i++)
                if (e->active[i]->devnum == devnum)
                        return true;
        return false;
}

static void start_more(struct probe_engine *e) {
        struct probe_request **link = &e->queue_head, *prev = NULL;

        while (*link && e->n_active < e->cfg.max_inflight) {
                struct probe_request *req = *link;

                /* At most one probe per device: a later one waits for the current. */
                if (device_active(e, req->devnum)) {
                        prev = req;
                        link = &req->next;
                        continue;
                }
                *link = req->next;
                if (e->queue_tail == req)
                        e->queue_tail = prev;
                req->next = NULL;
                if (probe_engine_is_stuck(e, req->devnum)) {
                        e->active[e->n_active++] = req; /* finish() takes it out again */
                        finish(e, req, -EBUSY);
                        continue;
                }
                start(e, req);
        }
}

void probe_engine_submit(struct probe_engine *e, struct probe_request *req) {
        req->fd = -1;
        req->direct_fd = -1;
        req->next = NULL;
        if (e->queue_tail)
                e->queue_tail->next = req;
        else
                e->queue_head = req;
        e->queue_tail = req;
        /* From the loop, never from inside the caller: done may run for it at once. */
        ev_defer_queue(e->loop, &e->report);
}

unsigned probe_engine_workers(struct probe_engine *e) {
        unsigned n;

        pthread_mutex_lock(&e->lock);
        n = e->alive;
        pthread_mutex_unlock(&e->lock);
        return n;
}

unsigned probe_engine_busy(const struct probe_engine *e) {
        unsigned n = e->n_active;

        for (const struct probe_request *r = e->queue_head; r; r = r->next)
                n++;
        for (const struct probe_request *r = e->done_head; r; r = r->next)
                n++;
        return n;
}

static void *worker_main(void *arg) {
        struct probe_engine *e = arg;

        /* Named, for ps -L and for the tests' FUSE file system that hangs only these. */
        (void) pthread_setname_np(pthread_self(), "bl-probe");
        /* Below the event loop: when a pass keeps every CPU busy, the loop (clients,
         * events) still gets one as soon as it has work. Linux applies nice per thread. */
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(), WORKER_NICE);

        pthread_mutex_lock(&e->lock);
        for (;;) {
                struct job *j;
                uint64_t one = 1;

                while (!e->jobs_head && !e->stopping)
                        pthread_cond_wait(&e->cond, &e->lock);
                if (e->stopping)
                        break;
                j = e->jobs_head;
                e->jobs_head = j->next;
                if (!e->jobs_head)
                        e->jobs_tail = NULL;
                j->next = e->running;
                e->running = j;
                j->running = true;
                j->started = now_monotonic_usec();
                pthread_mutex_unlock(&e->lock);

                if (j->w)
                        j->w->run(j->w);
                else {
                        /* libblkid on the descriptor whose page cache the reads just
                         * filled. The last close drops that cache again, which costs:
                         * here, not in the loop. */
                        j->result = probe_content_fd(j->fd, j->skip_zfs, &j->obs);
                        close(j->fd);
                        j->fd = -1;
                }

                pthread_mutex_lock(&e->lock);
                j->running = false;
                (void) !write(e->efd, &one, sizeof(one));
                if (!j->w && !j->req) {
                        /* Back from a device the watchdog gave up on: a replacement took
                         * this worker's place meanwhile. */
                        e->stuck_workers--;
                        if (e->alive > e->cfg.workers + e->stuck_workers)
                                break;
                }
        }
        e->alive--;
        pthread_cond_broadcast(&e->exited);
        pthread_mutex_unlock(&e->lock);
        return NULL;
}

/* Called with the lock held. */
static int spawn_worker(struct probe_engine *e) {
        pthread_attr_t attr;
        pthread_t t;
        int r;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = -pthread_create(&t, &attr, worker_main, e);
        pthread_attr_destroy(&attr);
        if (r == 0)
                e->alive++;
        return r;
}

/* Collects what the workers finished. */
static void on_workers(struct ev_io *io, uint32_t revents, void *userdata) {
        struct probe_engine *e = userdata;
        struct job *done = NULL, **link;
        uint64_t n;

        (void) !read(e->efd, &n, sizeof(n));
        pthread_mutex_lock(&e->lock);
        for (link = &e->running; *link;) {
                struct job *j = *link;
                if (j->running) {
                        link = &j->next;
                        continue;
                }
                *link = j->next;
                j->next = done;
                done = j;
        }
        pthread_mutex_unlock(&e->lock);

        while (done) {
                struct job *j = done;
                done = j->next;
                if (j->w) {
                        j->w->done(j->w);
                        free(j);
                        continue;
                }
                if (j->req) {
                        struct probe_request *req = j->req;
                        /* The worker's observation becomes the request's. */
                        observation_done(&req->result);
                        req->result = j->obs;
                        j->obs = (struct observation) {};
                        finish(e, req, j->result == -ENOMEM ? -ENOMEM : 0);
                } else
                        /* Abandoned by the watchdog: the device came back after all. */
                        stuck_release(e, j->devnum, true);
                observation_done(&j->obs);
                free(j);
        }
}

void probe_engine_set_timeout(struct probe_engine *e, int64_t timeout) {
        /* Read only on the loop thread (submission, the watchdog), never by the workers. */
        e->cfg.timeout = timeout;
}

void probe_engine_tick(struct probe_engine *e, int64_t now) {
        struct probe_request *late[64];
        unsigned n = 0;

        pthread_mutex_lock(&e->lock);
        for (struct job *j = e->running; j && n < ELEMENTSOF(late); j = j->next)
                if (j->running && !j->w && j->req && now - j->started > e->cfg.timeout) {
                        late[n++] = j->req;
                        j->req = NULL;
                        /* Its worker is held by the device: another does its work. */
                        e->stuck_workers++;
                        if (e->stuck_workers <= MAX_STUCK_WORKERS && spawn_worker(e) < 0)
                                log_warning("cannot start a probe worker in place of a stuck one");
                }
        pthread_mutex_unlock(&e->lock);
        for (unsigned i = 0; i < n; i++) {
                log_warning("%s hung while libblkid read it; leaving it alone until it answers", late[i]->devnode);
                stuck_add(e, late[i]->devnum);
                finish(e, late[i], -ETIMEDOUT);
        }
}

int probe_engine_new(struct ev_loop *loop, const struct probe_engine_config *cfg, probe_answered_fn answered,
                     void *userdata, struct probe_engine **ret) {
        struct probe_engine *e = calloc(1, sizeof(*e));
        int r;

        if (!e)
                return -ENOMEM;
        e->loop = loop;
        e->cfg = *cfg;
        e->cfg.workers = MAX(e->cfg.workers, 1u);
        e->cfg.max_inflight = MAX(e->cfg.max_inflight, 1u);
        e->answered = answered;
        e->userdata = userdata;
        e->report = (struct ev_defer) { .fn = report_deferred, .userdata = e };
        e->efd = -1;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->cond, NULL);
        pthread_cond_init(&e->exited, NULL);
        e->active = calloc(e->cfg.max_inflight, sizeof(*e->active));
        /* Aligned for the direct liveness reads, which land here too. */
        if (posix_memalign((void **) &e->scratch, PAGE, HEAD_BYTES) != 0)
                e->scratch = NULL;
        if (!e->active || !e->scratch) {
                r = -ENOMEM;
                goto fail;
        }
        e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (e->efd < 0) {
                r = -errno;
                goto fail;
        }
        r = ev_io_new(loop, e->efd, POLLIN, on_workers, e, &e->efd_io);
        if (r < 0)
                goto fail;
        r = 0;
        pthread_mutex_lock(&e->lock);
        for (unsigned i = 0; r == 0 && i < e->cfg.workers; i++)
                r = spawn_worker(e);
        pthread_mutex_unlock(&e->lock);
        if (r < 0)
                goto fail;
        *ret = e;
        return 0;
fail:
        probe_engine_free(e);
        return r;
}

static void drop_list(struct probe_request *r) {
        while (r) {
                struct probe_request *next = r->next;
                if (r->fd >= 0)
                        close(r->fd);
                r = next;
        }
}

/* Kept reachable when a worker could not be joined: it still uses the engine. */
static struct probe_engine *volatile leftover_engine;

struct probe_engine *probe_engine_free(struct probe_engine *e) {
        struct timespec deadline;
        bool all_joined = true, reads_out;

        if (!e)
                return NULL;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 1;
        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        pthread_cond_broadcast(&e->cond);
        /* A worker stuck on a hung device must not hold up the exit: it dies with the
         * process. */
        while (e->alive > 0)
                if (pthread_cond_timedwait(&e->exited, &e->lock, &deadline) == ETIMEDOUT)
                        break;
        all_joined = e->alive == 0;
        pthread_mutex_unlock(&e->lock);
        ev_io_free(e->efd_io);
        ev_defer_cancel(e->loop, &e->report);
        drop_list(e->queue_head);
        for (unsigned i = 0; i < e->n_active; i++)
                if (e->active[i]->fd >= 0)
                        close(e->active[i]->fd);
        /* Reads still in flight (a stop in the middle of a probe) land in the scratch
         * buffer whenever the kernel completes them, also after the ring is gone. */
        reads_out = e->tickets != NULL;
        while (e->tickets) {
                struct ticket *t = e->tickets;
                e->tickets = t->next;
                free(t);
        }
        if (!all_joined) {
                /* The stuck worker still reads, locks, and signals the eventfd: all of it
                 * stays until the process ends, so no descriptor number is reused under
                 * it. */
                leftover_engine = e;
                leftover_scratch = e->scratch;
                return NULL;
        }
        while (e->running) {
                struct job *j = e->running;
                e->running = j->next;
                if (j->fd >= 0)
                        close(j->fd);
                observation_done(&j->obs);
                free(j);
        }
        while (e->jobs_head) {
                struct job *j = e->jobs_head;
                e->jobs_head = j->next;
                close(j->fd);
                free(j);
        }
        if (e->efd >= 0)
                close(e->efd);
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cond);
        pthread_cond_destroy(&e->exited);
        free(e->active);
        free(e->stuck);
        if (e->n_stuck > 0 || reads_out)
                /* The kernel may still write into it until the process ends. */
                leftover_scratch = e->scratch;
        else
                free(e->scratch);
        free(e);
        return NULL;
}
