/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "monitor.h"
#include "util.h"

struct monitor {
        struct udev *udev;
        struct ev_loop *loop;
        enum event_source mode;
        bool use_udev; /* the source in use */
        int rcvbuf;
        struct udev_monitor *mon;
        struct ev_io *io;
        struct monitor_callbacks cb;
        void *userdata;
};

bool udevd_is_running(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "/run/udev/control" };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        /* The socket file outlives a killed udevd; only a connection proves it runs. */
        return fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
}

int event_source_from_string(const char *s) {
        if (streq(s, "auto"))
                return EVENT_SOURCE_AUTO;
        if (streq(s, "udev"))
                return EVENT_SOURCE_UDEV;
        if (streq(s, "kernel"))
                return EVENT_SOURCE_KERNEL;
        return -EINVAL;
}

const char *monitor_source_name(const struct monitor *m) {
        /* No monitor: a daemon (or test fixture) that does not listen for events. */
        if (!m)
                return "none";
        return m->use_udev ? "udev" : "kernel";
}

static void monitor_handler(struct ev_io *io, uint32_t revents, void *userdata) {
        struct monitor *m = userdata;

        /* Drain the socket; a batch of events becomes one reconcile pass. */
        for (unsigned i = 0; i < 4096; i++) {
                struct udev_device *dev;

                errno = 0;
                dev = udev_monitor_receive_device(m->mon);
                if (dev) {
                        m->cb.device(dev, m->userdata);
                        udev_device_unref(dev);
                        continue;
                }
                if (errno == ENOBUFS) {
                        log_warning("the netlink queue overflowed: device events were lost; rescanning");
                        m->cb.overflow(m->userdata);
                        continue;
                }
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != 0)
                        log_debug_errno(errno, "dropped an unreadable device event");
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
        }
}

static void stop(struct monitor *m) {
        ev_io_free(m->io);
        m->io = NULL;
        m->mon = udev_monitor_unref(m->mon);
}

static int start(struct monitor *m, bool use_udev) {
        int r;

        m->use_udev = use_udev;
        m->mon = udev_monitor_new_from_netlink(m->udev, use_udev ? "udev" : "kernel");
        if (!m->mon)
                return log_error_errno(errno ?: ENOMEM, "cannot create the %s event monitor",
                                       use_udev ? "udev" : "kernel");
        r = udev_monitor_filter_add_match_subsystem_devtype(m->mon, "block", NULL);
        if (r < 0)
                return log_error_errno(r, "cannot filter device events");
        if (m->rcvbuf > 0) {
                /* SO_RCVBUFFORCE as root: a burst of thousands of events must fit. */
                r = udev_monitor_set_receive_buffer_size(m->mon, m->rcvbuf);
                if (r < 0)
                        log_warning_errno(r, "cannot set the event receive buffer to %d bytes", m->rcvbuf);
        }
        r = udev_monitor_enable_receiving(m->mon);
        if (r < 0)
                return log_error_errno(r, "cannot receive device events");
        r = ev_io_new(m->loop, udev_monitor_get_fd(m->mon), POLLIN, monitor_handler, m, &m->io);
        if (r < 0)
                return log_error_errno(r, "cannot watch device events");
        log_info("following device events from %s", use_udev ? "systemd-udevd" : "the kernel (udevd is not running)");
        return 0;
}

int monitor_new(struct udev *udev, struct ev_loop *loop, enum event_source mode, int rcvbuf,
                const struct monitor_callbacks *cb, void *userdata, struct monitor **ret) {
        struct monitor *m = calloc(1, sizeof(*m));
        bool use_udev;
        int r;

        if (!m)
                return -ENOMEM;
        *m = (struct monitor) { .udev = udev, .loop = loop, .mode = mode, .rcvbuf = rcvbuf, .cb = *cb,
                                .userdata = userdata };
        use_udev = mode == EVENT_SOURCE_UDEV || (mode == EVENT_SOURCE_AUTO && udevd_is_running());
        r = start(m, use_udev);
        if (r < 0) {
                monitor_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

struct monitor *monitor_free(struct monitor *m) {
        if (!m)
                return NULL;
        stop(m);
        free(m);
        return NULL;
}

void monitor_check_source(struct monitor *m) {
        bool running;

        if (m->mode != EVENT_SOURCE_AUTO)
                return;
        running = udevd_is_running();
        if (running == m->use_udev)
                return;
        log_info("systemd-udevd %s; switching the event source", running ? "started" : "stopped");
        stop(m);
        if (start(m, running) < 0 && running) {
                stop(m);
                if (start(m, false) < 0)
                        log_error("no device events are followed; only periodic scans keep the ledger current");
        }
        m->cb.source_changed(m->userdata);
}
