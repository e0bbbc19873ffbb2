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

void log_msg(int level, const char *fmt, ...) _printf_(2, 3);
/* Appends ": strerror(errnum)" and returns -|errnum| so callers can return it. */
int log_errno(int level, int errnum, const char *fmt, ...) _printf_(3, 4);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_error_errno(e, ...) log_errno(LOG_LEVEL_ERROR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_errno(LOG_LEVEL_WARNING, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_errno(LOG_LEVEL_DEBUG, (e), __VA_ARGS__)
