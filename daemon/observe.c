/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "device.h"
#include "identity.h"
#include "log.h"
#include "observe.h"
#include "util.h"

/* The sysfs attributes device.c interprets. */
static const char *const attrs[] = {
        "size", "ro", "removable", "queue/rotational", "queue/logical_block_size",
        "queue/physical_block_size", "device/model", "device/serial", "serial", "wwid",
        "device/wwid", "diskseq", "loop/backing_file", "partition",
};

/* One sysfs attribute (small text), without its trailing newline. */
static int read_attr(int dfd, const char *name, char *buf, size_t size) {
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        while (n > 0 && buf[n - 1] == '\n')
                n--;
        buf[n] = 0;
        return 0;
}

static int observe_holders(const char *syspath, struct observation *o) {
        _cleanup_free_ char *path = NULL, *list = NULL;
        size_t len = 0;
        struct dirent *de;
        DIR *d;

        if (asprintf(&path, "%s/holders", syspath) < 0)
                return -ENOMEM;
        d = opendir(path);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                size_t n = strlen(de->d_name);
                char *l = realloc(list, len + n + 2);
                if (!l) {
                        closedir(d);
                        return -ENOMEM;
                }
                list = l;
                if (len > 0)
                        list[len++] = ' ';
                memcpy(list + len, de->d_name, n + 1);
                len += n;
                if (len > OBS_VALUE_MAX)
                        break;
        }
        closedir(d);
        return list ? observation_set(o, "X:holders", list) : 0;
}

/* A partition is keyed by its disk's hardware key plus its number, when it has no
 * partition-table entry UUID: the disk's key must be computed from the disk's own
 * observation, exactly as for the disk, or the two would drift apart. */
static int observe_parent_identity(struct udev_device *parent, struct observation *o) {
        _cleanup_free_ char *key = NULL;
        struct observation po = {};
        struct device_facts f;
        int r;

        r = observe_udev_device(parent, &po);
        if (r < 0)
                return r == -ENOMEM ? r : 0;
        r = device_facts_from_observation(&po, &f);
        if (r == 0) {
                key = identity_from_observation(&po, &f);
                device_facts_done(&f);
        }
        observation_done(&po);
        if (r < 0 || !key)
                return -ENOMEM;
        if (!identity_is_hardware(key))
                return 0;
        return observation_set(o, "X:parent_identity", key);
}

/* The loop driver knows the backing file's device and inode even after the file was
 * deleted (sysfs then shows "PATH (deleted)", which stat cannot find), and asking it
 * does not touch the backing file system, which may be the one that hangs. The birth
 * time, which tells a recycled inode from the original, comes from statx() on the path
 * when the path still leads to that inode; it stays unknown otherwise. */
static int loop_backing_inode(const char *devnode, const char *path, dev_t *ret_dev, ino_t *ret_ino,
                              char ret_btime[static 48]) {
        struct loop_info64 info;
        struct statx stx;
        bool known = false;

        ret_btime[0] = 0;
        if (devnode) {
                _cleanup_close_ int fd = open(devnode, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
                if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
                        *ret_dev = (dev_t) info.lo_device;
                        *ret_ino = (ino_t) info.lo_inode;
                        known = true;
                }
        }
        if (statx(AT_FDCWD, path, AT_STATX_DONT_SYNC, STATX_INO | STATX_BTIME, &stx) < 0)
                return known ? 0 : -errno;
        if (!known) {
                *ret_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
                *ret_ino = stx.stx_ino;
        } else if (makedev(stx.stx_dev_major, stx.stx_dev_minor) != *ret_dev || stx.stx_ino != *ret_ino)
                return 0; /* the path now names another file */
        if (stx.stx_mask & STATX_BTIME)
                snprintf(ret_btime, 48, "%lld.%09u", (long long) stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec);
        return 0;
}

int observe_udev_device(struct udev_device *d, struct observation *ret) {
        struct observation o = {};
        struct udev_list_entry *e;
        struct udev_device *parent;
        const char *v;
        int r = -ENOMEM;

        v = udev_device_get_sysname(d);
        if (!v || !(o.kname = strdup(v)))
                goto fail;

        /* Properties: from the uevent, plus udev's database when udevd processed it. A
         * property we cannot store (hostile name, too many) is dropped, never fatal. */
        udev_list_entry_foreach(e, udev_device_get_properties_list_entry(d)) {
                /* Room stays for the sysfs and derived entries, whatever rules set. */
                int k = observation_add_udev_property(&o, udev_list_entry_get_name(e), udev_list_entry_get_value(e));
                if (k == -ENOSPC)
                        break;
                if (k < 0)
                        goto fail;
        }
        /* Attributes straight from sysfs, relative to the device's directory: libudev
         * resolves every attribute path component by component, some ten opens each,
         * which dominated a pass over a thousand devices. */
        v = udev_device_get_syspath(d);
        if (v) {
                _cleanup_close_ int dfd = open(v, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                for (size_t i = 0; dfd >= 0 && i < ELEMENTSOF(attrs); i++) {
                        char key[64], value[OBS_VALUE_MAX + 1];
                        if (read_attr(dfd, attrs[i], value, sizeof(value)) < 0)
                                continue;
                        snprintf(key, sizeof(key), "A:%s", attrs[i]);
                        if (observation_set(&o, key, value) == -ENOMEM)
                                goto fail;
                }
        }
        if ((v = udev_device_get_devnode(d)) && observation_set(&o, "X:devnode", v) < 0)
                goto fail;
        if ((v = udev_device_get_syspath(d)) && observation_set(&o, "X:syspath", v) < 0)
                goto fail;

        parent = streq_ptr(udev_device_get_devtype(d), "partition")
                         ? udev_device_get_parent_with_subsystem_devtype(d, "block", "disk")
                         : NULL;
        if (parent) {
                if (observation_set(&o, "X:parent", udev_device_get_sysname(parent)) < 0)
                        goto fail;
                v = udev_device_get_sysattr_value(parent, "loop/backing_file");
                if (v && observation_set(&o, "X:parent_backing_file", v) < 0)
                        goto fail;
                r = observe_parent_identity(parent, &o);
                if (r < 0)
                        goto fail;
                r = -ENOMEM;
        }

        if ((v = udev_device_get_syspath(d)) && observe_holders(v, &o) == -ENOMEM)
                goto fail;

        /* A loop device is identified by its backing file's inode, which survives
         * renames of the file and re-attachment under another loop number. */
        v = observation_get(&o, "A:loop/backing_file");
        if (!isempty(v)) {
                dev_t dev = 0;
                ino_t ino = 0;
                char btime[48];
                if (loop_backing_inode(udev_device_get_devnode(d), v, &dev, &ino, btime) == 0) {
                        char buf[64];
                        snprintf(buf, sizeof(buf), "%u:%u", major(dev), minor(dev));
                        if (observation_set(&o, "X:backing_dev", buf) < 0)
                                goto fail;
                        snprintf(buf, sizeof(buf), "%llu", (unsigned long long) ino);
                        if (observation_set(&o, "X:backing_ino", buf) < 0)
                                goto fail;
                        if (btime[0] && observation_set(&o, "X:backing_btime", btime) < 0)
                                goto fail;
                }
        }
        *ret = o;
        return 0;
fail:
        observation_done(&o);
        return r;
}

static pthread_key_t udev_key;
static pthread_once_t udev_key_once = PTHREAD_ONCE_INIT;

static void udev_key_free(void *p) {
        udev_unref(p);
}

static void udev_key_init(void) {
        (void) pthread_key_create(&udev_key, udev_key_free);
}

struct udev *observe_thread_udev(void) {
        struct udev *u;

        pthread_once(&udev_key_once, udev_key_init);
        u = pthread_getspecific(udev_key);
        if (!u) {
                u = udev_new();
                if (u && pthread_setspecific(udev_key, u) != 0)
                        u = udev_unref(u);
        }
        return u;
}
