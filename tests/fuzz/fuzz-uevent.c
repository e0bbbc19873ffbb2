/* Description: fuzzes what the daemon makes of a device's udev properties: the
 * observation built from them (observation_add_udev_property, as observe.c does), the
 * facts, identity and qualifier read from it (device.c, identity.c), the scope check,
 * a rule's BLKLEDGER_ON_ADD action, the observation's text form both ways, and the
 * record clients would see. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ftw.h>
#include <stdint.h>

#include "device.h"
#include "identity.h"
#include "observation.h"
#include "scope.h"
#include "util.h"
#include "varlink.h"
#include "volumes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: a kernel uevent as the netlink socket carries it, "ACTION@DEVPATH" then
 * "KEY=VALUE" entries, each ended by a NUL (the last may lack it). Like libudev, the
 * device's name is DEVPATH's last component ('!' stands for '/'), and ACTION and
 * DEVPATH are properties too. Entries whose key is "A:attr" or "B:KEY" stand for sysfs
 * attributes and libblkid results, which observe.c and probe.c add from the device
 * (a device, through its firmware or its content, controls them as much as udev's
 * properties); "X:" keys are the daemon's own and are not taken from the input.
 */

static struct scope scope;
static char *scope_dir;

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void at_exit(void) {
        scope_done(&scope);
        if (scope_dir)
                (void) nftw(scope_dir, rm_entry, 4, FTW_DEPTH | FTW_PHYS);
        free(scope_dir);
}

/* "loop:DIR" needs DIR to exist; inputs name files under it, or not. */
static void init(void) {
        _cleanup_free_ char *spec = NULL;
        const char *why = NULL;

        scope_dir = strdup("/tmp/fuzz-uevent.XXXXXX");
        if (!scope_dir || !mkdtemp(scope_dir) || asprintf(&spec, "loop:%s", scope_dir) < 0 ||
            scope_add(&scope, spec, &why) < 0) {
                fprintf(stderr, "fuzz-uevent: cannot set up the scope: %s\n", why ? why : strerror(errno));
                abort();
        }
        atexit(at_exit);
}

static void check(bool ok, const char *what, const char *detail) {
        if (ok)
                return;
        fprintf(stderr, "fuzz-uevent: %s: %s\n", what, detail ? detail : "(null)");
        abort();
}

/* What a client is sent must pass the client's strict parser (valid UTF-8 above all). */
static void check_client_json(json_object *o, const char *what) {
        size_t len;
        const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
        json_object *back = NULL;

        check(s && vl_json_parse(s, len, VL_MAX_DEPTH, &back) == 0, what, s);
        json_object_put(back);
}

/* The text form reads back as written. */
static void check_text_form(const struct observation *o) {
        _cleanup_free_ char *text = NULL, *again = NULL;
        struct observation back = {};
        unsigned line = 0;

        check(observation_format(o, &text) == 0, "observation_format failed", o->kname);
        check(observation_parse(text, &back, &line) == 0, "the text form does not parse", text);
        check(observation_format(&back, &again) == 0 && streq(text, again), "the text form changed", text);
        observation_done(&back);
}

static void interpret(const struct observation *o) {
        struct device_record rec = { .id = 1, .state = DEVICE_PRESENT };
        struct device_facts copy;
        json_object *j;

        if (device_facts_from_observation(o, &rec.facts) < 0)
                return;
        (void) observation_is_device(o);
        rec.identity = identity_from_observation(o, &rec.facts);
        if (rec.identity) {
                check(utf8_is_valid(rec.identity, strlen(rec.identity)), "identity is not UTF-8", rec.identity);
                (void) identity_kind(rec.identity);
                (void) identity_is_weak(rec.identity);
                (void) identity_is_hardware(rec.identity);
                if (identity_aux_from_observation(o, rec.identity, &rec.identity_aux) == 0)
                        check(identity_aux_compatible(rec.identity_aux, rec.identity_aux), "qualifier", rec.identity);
        }
        (void) scope_match(&scope, o);

        /* Facts equal their copy, field for field. */
        device_facts_init(&copy);
        if (device_facts_copy(&copy, &rec.facts) == 0)
                check(device_facts_diff(&rec.facts, &copy, NULL, NULL) == 0, "a copy of the facts differs", rec.identity);
        device_facts_done(&copy);

        j = device_record_to_json(&rec, NULL);
        if (j)
                check_client_json(j, "the record is not valid JSON");
        json_object_put(j);
        free(rec.identity);
        free(rec.identity_aux);
        device_facts_done(&rec.facts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool ready;
        _cleanup_free_ char *buf = NULL;
        struct observation o = {};
        const char *p, *end, *action = NULL, *devpath = NULL, *want = NULL;
        bool first = true;

        if (!ready) {
                init();
                ready = true;
        }
        /* A NUL-terminated copy: the last entry may lack its NUL. */
        buf = malloc(size + 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = 0;

        /* The text form on its own, on the same bytes. */
        {
                struct observation t = {};
                if (observation_parse(buf, &t, NULL) == 0) {
                        check_text_form(&t);
                        observation_done(&t);
                }
        }

        for (p = buf, end = buf + size; p < end; p += strlen(p) + 1, first = false) {
                char *eq, *at;

                if (first && (at = strchr(p, '@')) && !strchr(p, '=')) {
                        *at = 0;
                        action = p;
                        devpath = at + 1;
                        continue;
                }
                eq = strchr(p, '=');
                if (!eq)
                        continue; /* libudev skips what is not KEY=VALUE */
                *eq = 0;
                if (streq(p, "ACTION"))
                        action = eq + 1;
                else if (streq(p, "DEVPATH"))
                        devpath = eq + 1;
                else if (streq(p, "BLKLEDGER_ON_ADD"))
                        want = eq + 1;
                if ((p[0] == 'A' || p[0] == 'B') && p[1] == ':') {
                        if (observation_set(&o, p, eq + 1) == -ENOMEM)
                                goto out;
                        continue;
                }
                if (p[0] == 'X' && p[1] == ':')
                        continue;
                if (observation_add_udev_property(&o, p, eq + 1) == -ENOMEM)
                        goto out;
        }
        if (isempty(devpath))
                goto out;
        {
                /* libudev's sysname: the last component, with '!' for '/'. */
                const char *slash = strrchr(devpath, '/');
                o.kname = strdup(slash ? slash + 1 : devpath);
                if (!o.kname)
                        goto out;
                for (char *c = o.kname; *c; c++)
                        if (*c == '!')
                                *c = '/';
                if (isempty(o.kname))
                        goto out;
        }
        if (action && observation_add_udev_property(&o, "ACTION", action) == -ENOMEM)
                goto out;
        if (observation_add_udev_property(&o, "DEVPATH", devpath) == -ENOMEM)
                goto out;
        {
                const char *devname = observation_get(&o, "E:DEVNAME");
                _cleanup_free_ char *node = NULL;
                if (!isempty(devname)) {
                        if (devname[0] == '/')
                                node = strdup(devname);
                        else if (asprintf(&node, "/dev/%s", devname) < 0)
                                node = NULL;
                        if (node && observation_set(&o, "X:devnode", node) == -ENOMEM)
                                goto out;
                }
        }
        /* A rule's action is checked as reconcile.c takes it (a remove carries none). */
        if (!streq_ptr(action, "remove") && !isempty(want) && strlen(want) < 4096) {
                _cleanup_free_ char *why = NULL;
                if (volumes_check_action(want, &why) < 0)
                        check(why != NULL, "an action was refused without a reason", want);
        }
        interpret(&o);
        if (!strchr(o.kname, '\n'))
                check_text_form(&o);
out:
        observation_done(&o);
        return 0;
}
