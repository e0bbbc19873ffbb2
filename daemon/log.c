/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdarg.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "log.h"

static bool log_foreground = true;
static int log_level = LOG_LEVEL_INFO;

void log_setup(bool foreground, int level) {
        log_foreground = foreground;
        log_level = level;
}

int log_get_level(void) {
        return log_level;
}

int log_parse_level(const char *s) {
        if (streq(s, "error"))
                return LOG_LEVEL_ERROR;
        if (streq(s, "warning"))
                return LOG_LEVEL_WARNING;
        if (streq(s, "info"))
                return LOG_LEVEL_INFO;
        if (streq(s, "debug"))
                return LOG_LEVEL_DEBUG;
        return -EINVAL;
}

static void log_write_id(int level, const char *message_id, const char *msg) {
        static const char *const names[] = {
                [LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARNING] = "warning",
                [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
        };

        if (log_foreground) {
                char ts[RFC3339_MAX];
                fprintf(stderr, "%s blkledgerd[%d]: %s: %s\n",
                        format_rfc3339(now_realtime_usec(), ts), (int) getpid(),
                        names[level] ? names[level] : "log", msg);
                return;
        }
        /* The journal's native protocol; when journald is absent it fails and we fall
         * back to syslog so nothing is lost on systems without it. */
        if ((message_id ? sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level, "SYSLOG_IDENTIFIER=blkledgerd",
                                          "MESSAGE_ID=%s", message_id, NULL)
                        : sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level, "SYSLOG_IDENTIFIER=blkledgerd",
                                          NULL)) < 0)
                syslog(level, "%s", msg);
}

static void log_write(int level, const char *msg) {
        log_write_id(level, NULL, msg);
}

static void log_va(int level, int errnum, const char *fmt, va_list ap) _printf_(3, 0);
static void log_va(int level, int errnum, const char *fmt, va_list ap) {
        char buf[2048];
        int n;

        n = vsnprintf(buf, sizeof(buf), fmt, ap);
        if (n < 0)
                return;
        if (errnum != 0 && (size_t) n < sizeof(buf))
                snprintf(buf + n, sizeof(buf) - (size_t) n, ": %s", strerror(abs(errnum)));
        log_write(level, buf);
}

void log_msg_id(int level, const char *message_id, const char *fmt, ...) {
        char buf[2048];
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, fmt);
        if (vsnprintf(buf, sizeof(buf), fmt, ap) >= 0)
                log_write_id(level, message_id, buf);
        va_end(ap);
}

void log_msg(int level, const char *fmt, ...) {
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, fmt);
        log_va(level, 0, fmt, ap);
        va_end(ap);
}

int log_errno(int level, int errnum, const char *fmt, ...) {
        va_list ap;

        if (level <= log_level) {
                int saved = errno;
                va_start(ap, fmt);
                log_va(level, errnum, fmt, ap);
                va_end(ap);
                errno = saved;
        }
        return -abs(errnum);
}
