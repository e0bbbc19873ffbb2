/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "loopdev.h"
#include "util.h"

static int open_loop(const char *kname, int flags) {
        char path[64];
        int fd;

        if (!startswith(kname, "loop") || strlen(kname) > 40)
                return -EINVAL;
        snprintf(path, sizeof(path), "/dev/%s", kname);
        fd = open(path, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Whether the loop device kname is attached to the file with st's device and inode. */
static bool holds(const char *kname, const struct stat *st) {
        struct loop_info64 info = {};
        char path[64];
        int fd;
        bool r;

        snprintf(path, sizeof(path), "/dev/%s", kname);
        /* Read-only and closed again at once: no write, no udev re-probe. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return false;
        r = ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == (uint64_t) st->st_dev &&
            info.lo_inode == (uint64_t) st->st_ino;
        close(fd);
        return r;
}

int loopdev_find(const char *file, char knames[][32], unsigned max) {
        _cleanup_free_ char *canon = realpath(file, NULL);
        struct stat st;
        struct dirent *de;
        DIR *dir;
        unsigned n = 0;
        bool exists;

        /* A file that was deleted may still be held by a loop device: the kernel then
         * reports its path with " (deleted)", and there is no inode left to compare. */
        if (!canon && errno == ENOENT && file[0] == '/')
                canon = strdup(file);
        if (!canon)
                return -errno ?: -ENOMEM;
        exists = stat(canon, &st) == 0;
        if (!exists && errno != ENOENT)
                return -errno;
        dir = opendir("/sys/block");
        if (!dir)
                return -errno;
        while ((de = readdir(dir)) && n < max) {
                _cleanup_free_ char *backing = NULL;
                char attr[PATH_MAX];
                size_t l;

                if (!startswith(de->d_name, "loop") || strlen(de->d_name) >= 32)
                        continue;
                snprintf(attr, sizeof(attr), "/sys/block/%s/loop/backing_file", de->d_name);
                if (read_one_line(attr, &backing) < 0)
                        continue; /* not attached */
                /* The path filters cheaply; the inode decides. */
                l = strlen(backing);
                if (l > 10 && streq(backing + l - 10, " (deleted)"))
                        backing[l - 10] = 0;
                if (!streq(backing, canon))
                        continue;
                if (exists && !holds(de->d_name, &st))
                        continue;
                snprintf(knames[n++], 32, "%s", de->d_name);
        }
        closedir(dir);
        return (int) n;
}

int loopdev_attach(const char *file, char ret_kname[static 32]) {
        _cleanup_close_ int ctl = -1, fd = -1;
        _cleanup_free_ char *canon = realpath(file, NULL);

        if (!canon)
                return -errno;
        fd = open(canon, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return -errno;
        /* Another process may take the free device between the two calls: retry. */
        for (int tries = 0; tries < 64; tries++) {
                struct loop_config cfg = { .fd = (unsigned) fd };
                char dev[64];
                int nr, lfd;

                nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0)
                        return -errno;
                snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
                lfd = open(dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0) {
                        if (errno == ENOENT || errno == ENXIO)
                                continue;
                        return -errno;
                }
                snprintf((char *) cfg.info.lo_file_name, LO_NAME_SIZE, "%s", canon);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
                        close(lfd);
                        snprintf(ret_kname, 32, "loop%d", nr);
                        return 0;
                }
                {
                        int e = errno;
                        close(lfd);
                        if (e != EBUSY)
                                return -e;
                }
        }
        return -EBUSY;
}

int loopdev_detach(const char *kname) {
        int fd = open_loop(kname, O_RDONLY | O_NONBLOCK), r = 0;

        if (fd < 0)
                return fd;
        if (ioctl(fd, LOOP_CLR_FD, 0) < 0)
                r = -errno;
        close(fd);
        return r;
}

int loopdev_set_capacity(const char *kname) {
        int fd = open_loop(kname, O_RDONLY | O_NONBLOCK), r = 0;

        if (fd < 0)
                return fd;
        if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
                r = -errno;
        close(fd);
        return r;
}

int loopdev_size(const char *kname, uint64_t *ret) {
        _cleanup_free_ char *s = NULL;
        char attr[128];
        uint64_t sectors;
        int r;

        snprintf(attr, sizeof(attr), "/sys/block/%s/size", kname);
        r = read_one_line(attr, &s);
        if (r < 0)
                return r;
        r = parse_uint64(s, &sectors);
        if (r < 0)
                return r;
        *ret = sectors * 512;
        return 0;
}

static int read_devnum(const char *kname, dev_t *ret) {
        _cleanup_free_ char *s = NULL;
        char attr[128];
        unsigned maj, min;
        int r;

        snprintf(attr, sizeof(attr), "/sys/block/%s/dev", kname);
        r = read_one_line(attr, &s);
        if (r < 0)
                return r;
        if (sscanf(s, "%u:%u", &maj, &min) != 2)
                return -EINVAL;
        *ret = makedev(maj, min);
        return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s) {
        char *w = s;

        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char) ((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else
                        *w++ = *r;
        }
        *w = 0;
}

/* First mount point of the device in a mountinfo file (ours, or init's namespace), by
 * its number or by the mount source (btrfs reports an anonymous number). */
static char *find_mount(const char *mountinfo, dev_t devnum, const char *devnode) {
        _cleanup_fclose_ FILE *f = fopen(mountinfo, "re");
        char *line = NULL, *found = NULL;
        size_t size = 0;

        if (!f)
                return NULL;
        while (!found && getline(&line, &size, f) > 0) {
                unsigned maj, min;
                char mp[PATH_MAX], source[PATH_MAX] = "";
                const char *sep = strstr(line, " - ");

                /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER */
                if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, mp) != 3)
                        continue;
                if (sep && sscanf(sep, " - %*s %4095s", source) == 1)
                        unescape_octal(source);
                if (makedev(maj, min) == devnum || streq(source, devnode)) {
                        unescape_octal(mp);
                        found = strdup(mp);
                }
        }
        free(line);
        return found;
}

/* A process other than us with the device open for writing: "pid 123 (mkfs.ext4)". */
static char *find_writer(const char *kname) {
        char devnode[64], *found = NULL;
        DIR *proc = opendir("/proc");
        struct dirent *pe;

        if (!proc)
                return NULL;
        snprintf(devnode, sizeof(devnode), "/dev/%s", kname);
        while (!found && (pe = readdir(proc))) {
                char path[PATH_MAX];
                DIR *fds;
                struct dirent *fe;
                int64_t pid;

                if (parse_int64(pe->d_name, &pid) < 0 || pid == getpid())
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/fd", pe->d_name);
                fds = opendir(path);
                if (!fds)
                        continue;
                while (!found && (fe = readdir(fds))) {
                        char link[PATH_MAX], target[PATH_MAX];
                        _cleanup_fclose_ FILE *info = NULL;
                        char line[256];
                        ssize_t n;

                        if (fe->d_name[0] == '.')
                                continue;
                        snprintf(link, sizeof(link), "/proc/%s/fd/%s", pe->d_name, fe->d_name);
                        n = readlink(link, target, sizeof(target) - 1);
                        if (n <= 0)
                                continue;
                        target[n] = 0;
                        if (!streq(target, devnode))
                                continue;
                        snprintf(link, sizeof(link), "/proc/%s/fdinfo/%s", pe->d_name, fe->d_name);
                        info = fopen(link, "re");
                        while (info && fgets(line, sizeof(line), info)) {
                                unsigned long flags;
                                if (sscanf(line, "flags: %lo", &flags) == 1 && (flags & O_ACCMODE) != O_RDONLY) {
                                        _cleanup_free_ char *comm = NULL;
                                        snprintf(link, sizeof(link), "/proc/%s/comm", pe->d_name);
                                        (void) read_one_line(link, &comm);
                                        if (asprintf(&found, "open for writing by pid %s (%s)", pe->d_name,
                                                     comm ? comm : "?") < 0)
                                                found = NULL;
                                        break;
                                }
                        }
                }
                closedir(fds);
        }
        closedir(proc);
        return found;
}

bool loopdev_in_use(const char *kname, char **ret_why, char **ret_mountpoint) {
        _cleanup_free_ char *mp = NULL;
        char path[128];
        dev_t devnum;
        DIR *holders;
        struct dirent *de;

        *ret_why = NULL;
        if (ret_mountpoint)
                *ret_mountpoint = NULL;
        if (read_devnum(kname, &devnum) < 0)
                return false;
        snprintf(path, sizeof(path), "/dev/%s", kname);
        mp = find_mount("/proc/self/mountinfo", devnum, path);
        if (!mp)
                mp = find_mount("/proc/1/mountinfo", devnum, path);
        if (mp) {
                if (asprintf(ret_why, "mounted on %s", mp) < 0)
                        *ret_why = NULL;
                if (ret_mountpoint)
                        *ret_mountpoint = TAKE_PTR(mp);
                return true;
        }
        snprintf(path, sizeof(path), "/sys/block/%s/holders", kname);
        holders = opendir(path);
        while (holders && (de = readdir(holders)))
                if (de->d_name[0] != '.') {
                        if (asprintf(ret_why, "held by %s", de->d_name) < 0)
                                *ret_why = NULL;
                        closedir(holders);
                        return true;
                }
        if (holders)
                closedir(holders);
        /* An exclusive claim we cannot name (a mount in another namespace, a holder). */
        snprintf(path, sizeof(path), "/dev/%s", kname);
        {
                int fd = open(path, O_RDONLY | O_EXCL | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0 && errno == EBUSY) {
                        *ret_why = strdup("claimed exclusively (mounted or held)");
                        return true;
                }
                if (fd >= 0)
                        close(fd);
        }
        *ret_why = find_writer(kname);
        return *ret_why != NULL;
}
