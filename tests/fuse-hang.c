/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A FUSE file system with one file, "disk.img", whose reads can be made to hang: the
 * tests attach a loop device to it to have a disk that stops answering.
 *
 *   fuse-hang MOUNTPOINT BACKING-FILE MAX-HANG-SECONDS
 *
 * SIGUSR1 makes reads block, SIGUSR2 lets them go on; SIGRTMIN makes only the reads of
 * threads named "bl-probe..." block (blkledgerd's libblkid workers, when a test points
 * the probe engine at a file in here directly). A blocked read waits at most
 * MAX-HANG-SECONDS and then completes normally, so a test that dies cannot leave a
 * machine with a device hung for good. The file is opened with direct_io, so every read
 * of the loop device reaches us. A second file, "mode", never hangs and reads as the mode
 * now in force ("none", "all" or "probe"), so a test can wait until its signal has been
 * handled instead of racing it. */
#define FUSE_USE_VERSION 31
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int backing_fd = -1;
static int max_hang;
enum { HANG_NONE, HANG_ALL, HANG_PROBE_WORKERS };
static volatile sig_atomic_t hang_mode;

static void on_signal(int sig) {
        /* The readers poll it. */
        hang_mode = sig == SIGUSR1 ? HANG_ALL : sig == SIGUSR2 ? HANG_NONE : HANG_PROBE_WORKERS;
}

/* Whether this read is one to hang: the kernel names the calling thread. */
static bool hangs(void) {
        char path[64], comm[32] = "";
        FILE *f;

        if (hang_mode != HANG_PROBE_WORKERS)
                return hang_mode == HANG_ALL;
        snprintf(path, sizeof(path), "/proc/%d/comm", (int) fuse_get_context()->pid);
        f = fopen(path, "re");
        if (!f)
                return false;
        if (!fgets(comm, sizeof(comm), f))
                comm[0] = 0;
        fclose(f);
        return strncmp(comm, "bl-probe", 8) == 0;
}

static const char *mode_name(void) {
        return hang_mode == HANG_ALL ? "all\n" : hang_mode == HANG_PROBE_WORKERS ? "probe\n" : "none\n";
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
        memset(st, 0, sizeof(*st));
        if (strcmp(path, "/") == 0) {
                st->st_mode = S_IFDIR | 0755;
                st->st_nlink = 2;
                return 0;
        }
        if (strcmp(path, "/mode") == 0) {
                st->st_mode = S_IFREG | 0444;
                st->st_nlink = 1;
                st->st_size = 16; /* read with direct_io: the read says how much there is */
                return 0;
        }
        if (strcmp(path, "/disk.img") == 0) {
                struct stat b;
                if (fstat(backing_fd, &b) < 0)
                        return -errno;
                st->st_mode = S_IFREG | 0644;
                st->st_nlink = 1;
                st->st_size = b.st_size;
                return 0;
        }
        return -ENOENT;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
        if (strcmp(path, "/") != 0)
                return -ENOENT;
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        fill(buf, "disk.img", NULL, 0, 0);
        fill(buf, "mode", NULL, 0, 0);
        return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
        if (strcmp(path, "/disk.img") != 0 && strcmp(path, "/mode") != 0)
                return -ENOENT;
        fi->direct_io = 1;
        return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
        time_t until = time(NULL) + max_hang;
        ssize_t n;

        if (strcmp(path, "/mode") == 0) {
                const char *m = mode_name();
                size_t len = strlen(m);
                if (off >= (off_t) len)
                        return 0;
                len = MIN(size, len - (size_t) off);
                memcpy(buf, m + off, len);
                return (int) len;
        }
        /* Hang while asked to, up to the limit; then answer as if nothing happened. */
        while (hangs() && time(NULL) < until)
                usleep(50 * 1000);
        n = pread(backing_fd, buf, size, off);
        return n < 0 ? -errno : (int) n;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
        if (strcmp(path, "/disk.img") != 0)
                return -EACCES;
        ssize_t n = pwrite(backing_fd, buf, size, off);
        return n < 0 ? -errno : (int) n;
}

static const struct fuse_operations ops = {
        .getattr = fs_getattr,
        .readdir = fs_readdir,
        .open = fs_open,
        .read = fs_read,
        .write = fs_write,
};

int main(int argc, char **argv) {
        struct sigaction sa = { .sa_handler = on_signal };
        /* Foreground, multithreaded: a hung read holds one thread, not the file system. */
        char *fargv[] = { argv[0], "-f", argv[1], NULL };

        if (argc != 4) {
                fprintf(stderr, "usage: %s MOUNTPOINT BACKING-FILE MAX-HANG-SECONDS\n", argv[0]);
                return 2;
        }
        max_hang = atoi(argv[3]);
        backing_fd = open(argv[2], O_RDWR | O_CLOEXEC);
        if (backing_fd < 0) {
                perror(argv[2]);
                return 1;
        }
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);
        sigaction(SIGRTMIN, &sa, NULL);
        return fuse_main(3, fargv, &ops, NULL);
}
