/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The configuration file, blkledgerd.conf(5): "KEY = VALUE" lines whose keys are the
 * daemon's long options, applied through the same code as the command line
 * (options_set()); and its reload on SIGHUP.
 *
 * (Not "config.h": that name is autoconf's, and a quoted include of it from daemon/
 * would find this file first.) */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "options.h"

#define CONFIG_LINE_MAX 4096           /* bytes of one line, without its newline */
#define CONFIG_FILE_MAX (1024 * 1024) /* bytes of a whole file */

struct daemon;

/* Applies the settings of text (len bytes, any bytes, not NUL-terminated) to o, in order.
 * The first bad line stops it: negative errno, and "FILENAME:LINE: reason" in
 * *ret_error (free it). o then holds the lines before it; options_done() it in every
 * case. No global state: safe to call from a fuzzer. */
int config_parse_text(const char *text, size_t len, const char *filename, struct options *o, char **ret_error);

/* Reads path and applies it to o. Returns 1 when read, 0 when it does not exist and
 * need not, negative errno with a message in *ret_error otherwise. */
int config_load_file(const char *path, bool must_exist, struct options *o, char **ret_error);

/* SIGHUP: reads the file again (with the command line over it, as at start). On an
 * error nothing changes. Settings that can change at run time are applied; for the
 * others a warning names each, and the running value stays until a restart. */
int config_reload(struct daemon *d);
