/* Description: runs a fuzz harness's LLVMFuzzerTestOneInput on every file of the given
 * directories (and on given files), so make check replays the corpora with the normal
 * compiler, under ASan and UBSan in a sanitizer build. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs larger than this are not corpus files (libFuzzer's default -max_len is 4 KiB;
 * the Varlink limit is 64 KiB). */
#define REPLAY_MAX (1024 * 1024)

static int replay_file(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        size_t len = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -errno;
        }
        if (st.st_size > REPLAY_MAX) {
                fprintf(stderr, "replay: %s: larger than %d bytes\n", path, REPLAY_MAX);
                return -EFBIG;
        }
        /* An exact-size heap copy, so ASan sees any read past the input. */
        buf = malloc((size_t) st.st_size ? (size_t) st.st_size : 1);
        if (!buf)
                return -ENOMEM;
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t) st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        fprintf(stderr, "replay: %s: short read\n", path);
                        return -EIO;
                }
                len += (size_t) n;
        }
        LLVMFuzzerTestOneInput(buf, len);
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Files of a directory in name order, so runs are repeatable. */
static int replay_dir(const char *dir, unsigned *count) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        int r = 0;

        if (!d) {
                fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
                return -errno;
        }
        while ((de = readdir(d))) {
                char **grown;
                if (de->d_name[0] == '.')
                        continue;
                grown = realloc(names, (n + 1) * sizeof(*names));
                if (!grown || !(grown[n] = strdup(de->d_name))) {
                        names = grown ? grown : names;
                        r = -ENOMEM;
                        break;
                }
                names = grown;
                n++;
        }
        closedir(d);
        if (names)
                qsort(names, n, sizeof(*names), cmp_str);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL;
                if (r == 0 && asprintf(&path, "%s/%s", dir, names[i]) < 0)
                        r = -ENOMEM;
                if (r == 0)
                        r = replay_file(path);
                if (r == 0)
                        (*count)++;
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv) {
        unsigned count = 0;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s DIR|FILE...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
                        return 1;
                }
                if (S_ISDIR(st.st_mode))
                        r = replay_dir(argv[i], &count);
                else if ((r = replay_file(argv[i])) == 0)
                        count++;
                if (r < 0)
                        return 1;
        }
        printf("replay: %u inputs ran\n", count);
        return 0;
}
