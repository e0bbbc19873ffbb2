/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's one logging module.
 *
 * Levels: error = the daemon cannot do something it should (a device it cannot record, a
 * failed commit); warning = something is wrong outside the daemon or will be retried
 * (a lost event, a misbehaving client); info = a change a person wants to see in the log
 * (a device appeared or disappeared, start, stop); debug = everything that helps to follow
 * a single event through the code.
 *
 * In the foreground messages go to stderr; as a service to the journal. */
#pragma once

#include <stdbool.h>

#include "util.h"

enum log_level { LOG_LEVEL_ERROR = 3, LOG_LEVEL_WARNING = 4, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };

void log_setup(bool foreground, int level);
int log_get_level(void);
int log_parse_level(const char *s);

/* Stable MESSAGE_IDs of the events a service manager or a monitoring rule wants to find
 * in the journal (journalctl MESSAGE_ID=...); never change one once released. */
#define MSGID_DEVICE_APPEARED "1c1cdaa1a4f84828a39d99664f2e8fdd"
#define MSGID_DEVICE_DISAPPEARED "0941459a82794f48a5dd9d87b0e18d8e"
#define MSGID_DRIFT_OPENED "c4f0644fb2cb436087101ea778897c29"
#define MSGID_DRIFT_CLOSED "d05daae623d14011b2f937c6084eaeee"
#define MSGID_INTENT_FAILED "e0ecc18ad69a40cf8a3dab2800cb8b9b"
#define MSGID_DEVICE_UNRESPONSIVE "34580a33225942bca37380f47dca449c"
#define MSGID_STORAGE_DEGRADED "ea7fb044f6ce4ff19c4ebc36039b4581"
#define MSGID_STORAGE_RECOVERED "3a50966b34b14a9cb6ff11a1991ec1ca"
#define MSGID_LEDGER_RESTORED "e23fd2f3b4f24d1e9e26c188b0121970"

void log_msg(int level, const char *fmt, ...) _printf_(2, 3);
/* log_msg with a MESSAGE_ID (in the foreground, "[id]" before the text). */
void log_msg_id(int level, const char *message_id, const char *fmt, ...) _printf_(3, 4);
/* Appends ": strerror(errnum)" and returns -|errnum| so callers can return it. */
int log_errno(int level, int errnum, const char *fmt, ...) _printf_(3, 4);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_error_errno(e, ...) log_errno(LOG_LEVEL_ERROR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_errno(LOG_LEVEL_WARNING, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_errno(LOG_LEVEL_DEBUG, (e), __VA_ARGS__)
