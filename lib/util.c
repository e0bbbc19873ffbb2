/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config.h"

#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <time.h>

#include "util.h"

static int64_t clock_usec(clockid_t id) {
        struct timespec ts;

        clock_gettime(id, &ts);
        return (int64_t) ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

int64_t now_realtime_usec(void) {
        return clock_usec(CLOCK_REALTIME);
}

int64_t now_monotonic_usec(void) {
        return clock_usec(CLOCK_MONOTONIC);
}

char *format_rfc3339(int64_t usec, char buf[static RFC3339_MAX]) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        long frac = (long) (usec % USEC_PER_SEC);
        struct tm tm;

        if (frac < 0) {
                frac += USEC_PER_SEC;
                sec -= 1;
        }
        if (!gmtime_r(&sec, &tm)) {
                snprintf(buf, RFC3339_MAX, "1970-01-01T00:00:00.000000Z");
                return buf;
        }
        snprintf(buf, RFC3339_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        return buf;
}

int parse_rfc3339(const char *s, int64_t *ret_usec) {
        struct tm tm = {};
        const char *p;
        long frac = 0;
        int digits = 0;

        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                p++;
                while (isdigit((unsigned char) *p)) {
                        if (digits < 6) {
                                frac = frac * 10 + (*p - '0');
                                digits++;
                        }
                        p++;
                }
                if (digits == 0)
                        return -EINVAL;
                for (; digits < 6; digits++)
                        frac *= 10;
        }
        if (!streq(p, "Z"))
                return -EINVAL;
        *ret_usec = (int64_t) timegm(&tm) * USEC_PER_SEC + frac;
        return 0;
}

char *format_size(uint64_t bytes, char buf[static FORMAT_SIZE_MAX]) {
        static const char units[] = "BKMGTPE";
        unsigned i = 0;
        uint64_t whole = bytes, rem = 0;

        while (whole >= 1024 && i < sizeof(units) - 2) {
                rem = whole % 1024;
                whole /= 1024;
                i++;
        }
        if (i == 0 || rem == 0) {
                snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 "%c", whole, units[i]);
        } else {
                /* One decimal, rounded like lsblk: 1.5G */
                unsigned tenth = (unsigned) ((rem * 10 + 512) / 1024);
                if (tenth >= 10) {
                        whole++;
                        tenth = 0;
                }
                if (tenth == 0)
                        snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 "%c", whole, units[i]);
                else
                        snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 ".%u%c", whole, tenth, units[i]);
        }
        return buf;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
        uint32_t cp;
        size_t len, i;

        if (s[0] == 0)
                return 0;
        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xe0) == 0xc0) {
                len = 2;
                cp = s[0] & 0x1f;
        } else if ((s[0] & 0xf0) == 0xe0) {
                len = 3;
                cp = s[0] & 0x0f;
        } else if ((s[0] & 0xf8) == 0xf0) {
                len = 4;
                cp = s[0] & 0x07;
        } else
                return 0;
        if (len > n)
                return 0;
        for (i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        /* Overlong forms, surrogates and values beyond Unicode are invalid. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return len;
}

bool utf8_is_valid(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *) s;
        size_t i = 0;

        while (i < len) {
                size_t l = utf8_seq_len(p + i, len - i);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}

char *utf8_sanitize(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *) s;
        char *out, *o;
        size_t i = 0;

        /* Worst case every byte becomes the 3-byte replacement character. */
        if (len > (SIZE_MAX - 1) / 3)
                return NULL;
        out = malloc(len * 3 + 1);
        if (!out)
                return NULL;
        o = out;
        while (i < len) {
                size_t l = utf8_seq_len(p + i, len - i);
                if (l == 0) {
                        memcpy(o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(o, p + i, l);
                        o += l;
                        i += l;
                }
        }
        *o = 0;
        return out;
}

char *strdup_strip(const char *s) {
        const char *e;

        while (isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                e--;
        return strndup(s, (size_t) (e - s));
}

int parse_int64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        if (isempty(s) || !(isdigit((unsigned char) s[0]) || s[0] == '-'))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_uint64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int read_one_line(const char *path, char **ret) {
        _cleanup_close_ int fd = -1;
        char buf[4097];
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = 0;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

int fsync_path(const char *path, int flags) {
        int fd = open(path, flags | O_CLOEXEC), r = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

bool path_is_under(const char *path, const char *dir) {
        size_t l = strlen(dir);

        while (l > 1 && dir[l - 1] == '/')
                l--;
        if (l == 1 && dir[0] == '/')
                return path[0] == '/';
        return strncmp(path, dir, l) == 0 && path[l] == '/';
}

char *getopt_error_message(const char *arg, int opt) {
        const char *eq;
        char *m;
        int r;

        if (startswith(arg, "--")) {
                eq = strchr(arg, '=');
                if (opt && eq)
                        r = asprintf(&m, "option '%.*s' takes no argument", (int) (eq - arg), arg);
                else
                        r = asprintf(&m, "unknown option '%s' (see --help)", arg);
        } else
                r = asprintf(&m, "unknown option '-%c' (see --help)", opt);
        return r < 0 ? NULL : m;
}

int asprintf_or_null(char **ret, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(ret, fmt, ap);
        va_end(ap);
        if (r < 0)
                *ret = NULL;
        return r;
}
