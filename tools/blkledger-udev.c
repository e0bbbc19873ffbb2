/* SPDX-License-Identifier: GPL-2.0-or-later */
/* blkledger-udev: what the ledger knows about one block device, as udev properties.
 *
 * Run by 60-blkledger.rules as IMPORT{program} for every block device event. A udev
 * worker waits for it, so it answers within a deadline (250 ms by default) or not at
 * all: when the daemon is not running, is slow, or does not know the device, it prints
 * nothing and exits 0. Values are printed only when every byte is from a small safe set,
 * so no value from a device (a label, a serial) can inject another property. */
#include "config.h"

#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <sys/time.h>

#include "libblkledger.h"
#include "util.h"

#define DEFAULT_TIMEOUT_MS 250

static void help(void) {
        printf("Usage: blkledger-udev [OPTION]... KERNEL-NAME [MAJOR:MINOR]\n"
               "Print what blkledgerd knows about a block device as udev properties\n"
               "(BLKLEDGER_ID, BLKLEDGER_NAME, BLKLEDGER_STATE, BLKLEDGER_IDENTITY_KIND,\n"
               "BLKLEDGER_VOLUME). For udev rules: IMPORT{program}=\"blkledger-udev $kernel $major:$minor\".\n"
               "\n"
               "  -s, --socket PATH   daemon socket (default $BLKLEDGER_SOCKET or %s)\n"
               "  -t, --timeout MS    give up after MS milliseconds in all (default %d)\n"
               "  -h, --help          show this help\n"
               "  -V, --version       show the version\n"
               "\n"
               "Prints nothing and exits 0 when the daemon is not there or does not answer in\n"
               "time. Exit status 2: a bad command line. See blkledger-udev(8).\n",
               BL_DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS);
}

static void on_alarm(int sig) {
        /* The deadline passed wherever we were: say nothing, fail nothing. */
        _exit(0);
}

/* Letters, digits and . _ - : / only: nothing udev or a shell would read as syntax. */
static bool safe(const char *s) {
        if (isempty(s) || strlen(s) > 256)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("._-:/", *p)))
                        return false;
        return true;
}

static const char *member(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : NULL;
}

static void put(const char *key, const char *value) {
        if (safe(value))
                printf("%s=%s\n", key, value);
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "socket", required_argument, NULL, 's' },
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        const char *socket = NULL, *kname, *devnum = NULL, *state;
        _cleanup_free_ char *params = NULL, *reply = NULL;
        struct itimerval deadline = {};
        struct blkledger *b = NULL;
        json_object *o = NULL, *dev;
        int64_t timeout = DEFAULT_TIMEOUT_MS;
        int c, r;

        while ((c = getopt_long(argc, argv, "s:t:hV", longopts, NULL)) >= 0)
                switch (c) {
                case 's':
                        socket = optarg;
                        break;
                case 't':
                        if (parse_int64(optarg, &timeout) < 0 || timeout < 1 || timeout > 60000) {
                                fprintf(stderr, "blkledger-udev: --timeout needs 1 to 60000 milliseconds\n");
                                return 2;
                        }
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("blkledger-udev %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "blkledger-udev: bad option (see --help)\n");
                        return 2;
                }
        if (optind >= argc || argc - optind > 2) {
                fprintf(stderr, "blkledger-udev: needs KERNEL-NAME [MAJOR:MINOR] (see --help)\n");
                return 2;
        }
        kname = argv[optind];
        if (argc - optind == 2)
                devnum = argv[optind + 1];
        if (!safe(kname) || strchr(kname, '/'))
                return 0; /* not a kernel name we could have */

        /* One deadline over connect, call and reply, whatever blocks. */
        signal(SIGALRM, on_alarm);
        deadline.it_value.tv_sec = timeout / 1000;
        deadline.it_value.tv_usec = (timeout % 1000) * 1000;
        setitimer(ITIMER_REAL, &deadline, NULL);

        if (blkledger_connect(socket, &b) < 0)
                return 0;
        blkledger_set_timeout(b, (int) timeout);
        o = json_object_new_object();
        if (!o)
                return 0;
        json_object_object_add(o, "name", json_object_new_string(kname));
        params = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
        r = params ? blkledger_call(b, "io.blkledger.GetDevice", params, &reply) : -ENOMEM;
        blkledger_unref(b);
        if (r < 0 || !reply)
                return 0;
        o = json_tokener_parse(reply);
        if (!o || !json_object_object_get_ex(o, "device", &dev) || !dev) {
                json_object_put(o);
                return 0;
        }
        /* Only the device at this name now: a gone record, or a name a ledger name
         * shadows, or another device number, says nothing about this one. */
        state = member(dev, "state");
        if (!state || streq(state, "gone") || !streq_ptr(member(dev, "kname"), kname) ||
            (devnum && !streq_ptr(member(dev, "dev"), devnum))) {
                json_object_put(o);
                return 0;
        }
        put("BLKLEDGER_ID", member(dev, "id"));
        put("BLKLEDGER_STATE", state);
        put("BLKLEDGER_IDENTITY_KIND", member(dev, "identity_kind"));
        put("BLKLEDGER_NAME", member(dev, "name"));
        put("BLKLEDGER_VOLUME", member(dev, "volume"));
        json_object_put(o);
        fflush(stdout);
        return 0;
}
