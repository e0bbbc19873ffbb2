/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

#include "log.h"
#include "privilege.h"
#include "util.h"

#define MAX_THREADS 256

static const struct {
        int cap;
        const char *name;
} names[] = {
        { CAP_SYS_ADMIN, "cap_sys_admin" },
        { CAP_SYS_PTRACE, "cap_sys_ptrace" },
        { CAP_DAC_READ_SEARCH, "cap_dac_read_search" },
        { CAP_SYS_RESOURCE, "cap_sys_resource" },
};

/* What every thread applies to itself, computed once by the caller. */
static struct {
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
        uint64_t bounding_drop;
} plan;
static atomic_int slots, acks, failures;
static _Atomic pid_t acked[MAX_THREADS];

static int capget_self(uint64_t *ret_permitted, uint64_t *ret_effective) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};

        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        *ret_permitted = d[0].permitted | (uint64_t) d[1].permitted << 32;
        *ret_effective = d[0].effective | (uint64_t) d[1].effective << 32;
        return 0;
}

/* For the calling thread; async-signal-safe (it also runs in a signal handler). */
static int apply(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };

        /* The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. */
        for (int c = 0; c < 64; c++)
                if ((plan.bounding_drop & PRIVILEGE_CAP(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
                        return -errno;
        /* EINVAL: a kernel before 4.3, without ambient capabilities. */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return -errno;
        if (syscall(SYS_capset, &h, plan.data) < 0)
                return -errno;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        return 0;
}

static void on_signal(int sig) {
        int saved = errno, i;

        if (apply() < 0)
                atomic_fetch_add(&failures, 1);
        /* Who, then how many: a count the caller sees has its thread ids written. */
        i = atomic_fetch_add(&slots, 1);
        if (i < MAX_THREADS)
                atomic_store(&acked[i], (pid_t) syscall(SYS_gettid));
        atomic_fetch_add(&acks, 1);
        errno = saved;
}

static bool was_acked(pid_t tid) {
        int n = MIN(atomic_load(&acks), MAX_THREADS);

        for (int i = 0; i < n; i++)
                if (atomic_load(&acked[i]) == tid)
                        return true;
        return false;
}

static bool thread_exists(pid_t tid) {
        char path[64];

        snprintf(path, sizeof(path), "/proc/self/task/%d", (int) tid);
        return access(path, F_OK) == 0;
}

/* io_uring's own workers (iou-wrk-*, iou-sqp-*) run no code of ours and take no signal;
 * they act with the credentials of the thread that submitted the request. */
static bool is_io_worker(pid_t tid) {
        _cleanup_free_ char *comm = NULL;
        char path[64];

        snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int) tid);
        return read_one_line(path, &comm) == 0 && startswith(comm, "iou-");
}

/* Has every other thread apply the plan from a signal handler (like glibc's set*id
 * broadcast): only the daemon's own threads exist (the probe workers), all idle. */
static int apply_to_other_threads(unsigned *ret_n) {
        struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART }, old;
        pid_t self = (pid_t) syscall(SYS_gettid), sent[MAX_THREADS];
        int sig = SIGRTMIN + 2, r = 0;
        unsigned n = 0;
        struct dirent *de;
        DIR *dir;

        dir = opendir("/proc/self/task");
        if (!dir)
                return -errno;
        sigfillset(&sa.sa_mask);
        if (sigaction(sig, &sa, &old) < 0) {
                r = -errno;
                closedir(dir);
                return r;
        }
        while ((de = readdir(dir))) {
                pid_t tid = (pid_t) atoi(de->d_name);

                if (tid <= 0 || tid == self || is_io_worker(tid))
                        continue;
                if (n == MAX_THREADS) {
                        r = -E2BIG;
                        break;
                }
                if (syscall(SYS_tgkill, getpid(), tid, sig) < 0) {
                        if (errno == ESRCH)
                                continue; /* gone */
                        r = -errno;
                        break;
                }
                sent[n++] = tid;
        }
        closedir(dir);
        /* Idle threads answer at once; seconds only under valgrind. */
        for (int i = 0; i < 10000 && (unsigned) atomic_load(&acks) < n; i++)
                nanosleep(&(struct timespec) { .tv_nsec = 1000000 }, NULL);
        for (unsigned i = 0; r == 0 && i < n; i++)
                if (!was_acked(sent[i]) && thread_exists(sent[i])) {
                        log_error("thread %d did not drop its capabilities", (int) sent[i]);
                        r = -ETIMEDOUT;
                }
        if (r == 0 && atomic_load(&failures) > 0)
                r = -EPERM;
        /* The default action of a real-time signal ends the process: a thread that has
         * not answered yet must find the signal ignored, not that. */
        (void) sigaction(sig, r == 0 ? &old : &(struct sigaction) { .sa_handler = SIG_IGN }, NULL);
        *ret_n = n;
        return r;
}

static void describe(uint64_t set, char *buf, size_t size) {
        size_t len = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (set & PRIVILEGE_CAP(names[i].cap) && len < size)
                        len += (size_t) snprintf(buf + len, size - len, "%s%s", len ? " " : "", names[i].name);
        if (!buf[0])
                snprintf(buf, size, "none");
}

int privilege_drop(void) {
        uint64_t permitted = 0, effective = 0, bounding = 0, keep_permitted, keep_effective;
        char kept_p[128], kept_e[128];
        unsigned threads = 0;
        int r;

        r = capget_self(&permitted, &effective);
        if (r < 0)
                return log_error_errno(r, "cannot read our capabilities");
        for (int c = 0; c < 64; c++) {
                int b = prctl(PR_CAPBSET_READ, c, 0, 0, 0);
                if (b < 0)
                        break; /* past the kernel's last capability */
                if (b > 0)
                        bounding |= PRIVILEGE_CAP(c);
        }
        keep_permitted = permitted & PRIVILEGE_PERMITTED;
        keep_effective = permitted & PRIVILEGE_EFFECTIVE;
        plan.data[0].permitted = (uint32_t) keep_permitted;
        plan.data[1].permitted = (uint32_t) (keep_permitted >> 32);
        plan.data[0].effective = (uint32_t) keep_effective;
        plan.data[1].effective = (uint32_t) (keep_effective >> 32);
        /* Inheritable stays empty, and with it ambient. */
        plan.bounding_drop = bounding & ~PRIVILEGE_PERMITTED;
        if (plan.bounding_drop && !(effective & PRIVILEGE_CAP(CAP_SETPCAP))) {
                /* Not root, or a service manager that set the bounding set already (and
                 * took CAP_SETPCAP out with the rest). Without privileges, no program we
                 * start can gain any: no_new_privs stops setuid and file capabilities. */
                if (permitted)
                        log_warning("cannot narrow the capability bounding set without CAP_SETPCAP");
                plan.bounding_drop = 0;
        }
        r = apply_to_other_threads(&threads);
        if (r < 0)
                return log_error_errno(r, "cannot drop the capabilities of the daemon's threads");
        r = apply();
        if (r < 0)
                return log_error_errno(r, "cannot drop capabilities");
        describe(keep_permitted, kept_p, sizeof(kept_p));
        describe(keep_effective, kept_e, sizeof(kept_e));
        log_debug("capabilities kept: %s (effective: %s); bounding set %s; no_new_privs set (%u other threads)",
                  kept_p, kept_e, plan.bounding_drop ? "narrowed" : "unchanged", threads);
        return 0;
}
