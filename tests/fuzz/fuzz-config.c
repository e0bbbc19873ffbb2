/* Description: fuzzes the configuration file parser (config_parse_text, and through it
 * options_set, the command line's checks of every value) on arbitrary bytes: it must
 * accept or refuse without crashing, and every refusal names file and line. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdint.h>

#include "config-file.h"
#include "options.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *error = NULL;
        struct options o;
        int r;

        /* A file is at most CONFIG_FILE_MAX bytes (config_load_file refuses more). */
        if (size > CONFIG_FILE_MAX)
                return 0;
        options_init(&o);
        /* Exactly size bytes, no terminator: the parser must not read past them. */
        r = config_parse_text((const char *) data, size, "fuzz.conf", &o, &error);
        if (r < 0 && (!error || !startswith(error, "fuzz.conf:"))) {
                fprintf(stderr, "fuzz-config: refused (%s) without a 'fuzz.conf:LINE:' message: %s\n", strerror(-r),
                        error ? error : "(none)");
                abort();
        }
        if (r > 0) {
                fprintf(stderr, "fuzz-config: config_parse_text returned %d\n", r);
                abort();
        }
        options_done(&o);
        return 0;
}
