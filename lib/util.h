/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers shared by the daemon, the library and the tools (not exported). */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _export_ __attribute__((visibility("default")))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define USEC_PER_SEC 1000000LL
#define USEC_PER_MSEC 1000LL

static inline void freep(void *p) {
        free(*(void **) p);
}

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hand over ownership of a pointer or descriptor out of a cleanup variable. */
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) ({ int _t = (fd); (fd) = -1; _t; })

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static inline bool isempty(const char *s) {
        return !s || !*s;
}

static inline const char *strempty_null(const char *s) {
        return isempty(s) ? NULL : s;
}

/* Returns the rest of s after prefix, or NULL. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

/* Current time. */
int64_t now_realtime_usec(void);
int64_t now_monotonic_usec(void);

/* RFC 3339 in UTC with microseconds, e.g. 2026-11-27T23:01:02.123456Z.
 * buf must hold at least RFC3339_MAX bytes. */
#define RFC3339_MAX 64
char *format_rfc3339(int64_t usec, char buf[static RFC3339_MAX]);
int parse_rfc3339(const char *s, int64_t *ret_usec);

/* "64M", "1.5G", "512B": binary units like lsblk. buf of FORMAT_SIZE_MAX. */
#define FORMAT_SIZE_MAX 24
char *format_size(uint64_t bytes, char buf[static FORMAT_SIZE_MAX]);

/* True when s (of len bytes) is valid UTF-8 without NUL bytes. */
bool utf8_is_valid(const char *s, size_t len);

/* A copy of s (len bytes) that is valid UTF-8: each byte that does not start a valid
 * sequence becomes U+FFFD, NUL bytes too. Never NULL unless out of memory. */
char *utf8_sanitize(const char *s, size_t len);

/* A copy of s with trailing and leading whitespace removed (ASCII). */
char *strdup_strip(const char *s);

/* Parse a decimal integer (int64: optional minus sign; uint64: digits only); rejects
 * junk, empty strings and overflow. */
int parse_int64(const char *s, int64_t *ret);
int parse_uint64(const char *s, uint64_t *ret);

/* Read a small text file (sysfs attribute); strips one trailing newline. */
int read_one_line(const char *path, char **ret);

/* The message for getopt_long()'s '?': arg is argv[optind - 1], opt is optopt. A long
 * option is named by arg ("--json=yes" for one that takes no argument: optopt is then
 * its value), a short one by opt, also inside a cluster such as "-xj". Allocated; NULL
 * without memory. */
char *getopt_error_message(const char *arg, int opt);

/* asprintf() for messages whose allocation failure is not worth handling: *ret is NULL
 * then (glibc leaves it undefined). Unlike asprintf() under _FORTIFY_SOURCE it is not
 * warn_unused_result, so "(void) asprintf_or_null(...)" builds without warnings. */
int asprintf_or_null(char **ret, const char *fmt, ...) _printf_(2, 3);

/* fsync() of a file or (O_DIRECTORY) a directory by path; negative errno. */
int fsync_path(const char *path, int flags);

/* Path helpers. */
bool path_is_under(const char *path, const char *dir);
