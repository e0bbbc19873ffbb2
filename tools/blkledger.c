/* SPDX-License-Identifier: GPL-2.0-or-later */
/* blkledger: the command line client of blkledgerd. */
#include "config.h"

#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>

#include "cli.h"
#include "libblkledger.h"
#include "util.h"

#define JSON_OUT (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)
#define JSON_LINE (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *socket_path(const struct cli_args *a) {
        return a->socket ? a->socket : blkledger_default_socket();
}

static int fail(const char *fmt, ...) _printf_(1, 2);
static int fail(const char *fmt, ...) {
        va_list ap;

        fputs("blkledger: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return -1;
}

static int connect_daemon(const struct cli_args *a, struct blkledger **ret) {
        int r = blkledger_connect(a->socket, ret);

        if (r == -ENOENT || r == -ECONNREFUSED)
                return fail("cannot connect to %s: %s (is blkledgerd running?)", socket_path(a), strerror(-r));
        if (r == -EACCES)
                return fail("cannot connect to %s: permission denied", socket_path(a));
        if (r < 0)
                return fail("cannot connect to %s: %s", socket_path(a), strerror(-r));
        return 0;
}

/* Turns a failed call into one line on stderr. */
/* Turns a failed call into one line on stderr. */
static int call_failed(struct blkledger *b, const char *what, int r) {
        static const struct {
                const char *error, *member, *before, *after; /* before MEMBER after */
        } known[] = {
                { "io.blkledger.NoSuchDevice", "name", "no such device: ", "" },
                { "io.blkledger.NoSuchExpectation", "name", "no such expectation: ", "" },
                { "io.blkledger.NameTaken", "name", "the name ", " is taken by another device" },
                { "io.blkledger.NoSuchVolume", "name", "no such volume: ", "" },
                { "io.blkledger.VolumeExists", "reason", "", "" },
                { "io.blkledger.VolumeBusy", "reason", "the volume is busy: ", "" },
                { "io.blkledger.ActionFailed", "error", "", "" },
                { "io.blkledger.Refused", "reason", "refused: ", "" },
                { "org.varlink.service.InvalidParameter", "parameter", "invalid value for ", "" },
                { "io.blkledger.InternalError", "reason", "the daemon failed: ", "" },
        };
        const char *err = blkledger_get_error(b);
        json_object *p, *v;
        _cleanup_free_ char *e = NULL;

        if (r != -EREMOTEIO || !err) {
                if (r == -ECONNRESET)
                        return fail("%s: the daemon closed the connection", what);
                return fail("%s: %s", what, strerror(-r));
        }
        if (streq(err, "org.varlink.service.PermissionDenied"))
                return fail("%s: permission denied (needs root)", what);
        if (streq(err, "io.blkledger.ShuttingDown"))
                return fail("%s: the daemon is shutting down", what);
        p = json_tokener_parse(blkledger_get_error_parameters(b) ?: "{}");
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (streq(err, known[i].error) && json_object_object_get_ex(p, known[i].member, &v) && v) {
                        e = cli_escape(json_object_get_string(v));
                        json_object_put(p);
                        fprintf(stderr, "blkledger: %s%s%s\n", known[i].before, e ? e : "?", known[i].after);
                        return -1;
                }
        json_object_put(p);
        e = cli_escape(blkledger_get_error_parameters(b) ?: "");
        return fail("%s: %s %s", what, err, e ? e : "");
}

/* Calls method and parses the reply; NULL after printing the error. */
static json_object *call(struct blkledger *b, const char *method, json_object *params) {
        _cleanup_free_ char *reply = NULL;
        json_object *o;
        int r;

        r = blkledger_call(b, method, params ? json_object_to_json_string_ext(params, JSON_LINE) : NULL, &reply);
        if (r < 0) {
                call_failed(b, method + strlen("io.blkledger."), r);
                return NULL;
        }
        o = json_tokener_parse(reply);
        if (!o)
                fail("%s: unreadable reply", method);
        return o;
}

static const char *str_member(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return NULL;
        return json_object_get_string(v);
}

static int64_t int_member(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return 0;
        return json_object_get_int64(v);
}

static int print_json(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_OUT));
        return 0;
}

/* "duplicate_uuid,missing" from the device's drift kinds, or NULL. */
static char *drift_kinds(json_object *d) {
        json_object *arr;
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        if (!json_object_object_get_ex(d, "drift", &arr) || !arr || json_object_array_length(arr) == 0)
                return NULL;
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        for (size_t i = 0; i < json_object_array_length(arr); i++)
                fprintf(f, "%s%s", i ? "," : "", json_object_get_string(json_object_array_get_idx(arr, i)));
        fclose(f);
        return buf;
}

static int cmd_list(struct blkledger *b, const struct cli_args *a) {
        static const char *const headers[] = { "ID", "NAME", "KNAME", "MAJ:MIN", "SIZE", "RO", "FSTYPE",
                                                "LABEL", "UUID", "STATE", "DRIFT" };
        json_object *params = json_object_new_object(), *reply, *devs;
        bool unverified = false;
        struct table *t;

        if (a->state)
                json_object_object_add(params, "state", json_object_new_string(a->state));
        reply = call(b, "io.blkledger.ListDevices", params);
        json_object_put(params);
        if (!reply)
                return -1;
        if (!json_object_object_get_ex(reply, "devices", &devs) || !json_object_is_type(devs, json_type_array)) {
                json_object_put(reply);
                return fail("ListDevices: reply without devices");
        }
        if (a->json) {
                print_json(devs);
                json_object_put(reply);
                return 0;
        }
        t = table_new(headers, ELEMENTSOF(headers));
        if (!t) {
                json_object_put(reply);
                return fail("out of memory");
        }
        table_set_right_aligned(t, 0);
        table_set_right_aligned(t, 4);
        for (size_t i = 0; i < json_object_array_length(devs); i++) {
                json_object *d = json_object_array_get_idx(devs, i), *v;
                char id[24], size[FORMAT_SIZE_MAX] = "-", ro[4] = "-", state[32];
                _cleanup_free_ char *drift = drift_kinds(d);
                bool verified = json_object_object_get_ex(d, "verified", &v) && json_object_get_boolean(v);

                snprintf(id, sizeof(id), "%s", str_member(d, "id") ?: "?");
                if (json_object_object_get_ex(d, "size_bytes", &v) && v)
                        format_size((uint64_t) json_object_get_int64(v), size);
                if (json_object_object_get_ex(d, "read_only", &v) && v)
                        snprintf(ro, sizeof(ro), "%d", json_object_get_boolean(v));
                /* Facts not yet checked by this run are marked, never shown as fresh. */
                snprintf(state, sizeof(state), "%s%s", str_member(d, "state") ?: "?", verified ? "" : "?");
                unverified |= !verified;
                const char *row[] = {
                        id, str_member(d, "name"), str_member(d, "kname"), str_member(d, "dev"), size, ro,
                        str_member(d, "fs_type"), str_member(d, "fs_label"), str_member(d, "fs_uuid"), state,
                        drift ? drift : NULL,
                };
                table_add_row(t, row);
        }
        table_print(t, stdout, !a->no_legend);
        if (unverified && !a->no_legend)
                printf("(?: not yet verified since the daemon started)\n");
        table_free(t);
        json_object_put(reply);
        return 0;
}

/* Resolves DEVICE|ID through GetDevice; returns the device object. */
static json_object *get_device(struct blkledger *b, const char *name) {
        json_object *params = json_object_new_object(), *reply, *dev = NULL;
        int64_t id;

        if (parse_int64(name, &id) == 0)
                json_object_object_add(params, "id", json_object_new_int64(id));
        else
                json_object_object_add(params, "name", json_object_new_string(name));
        reply = call(b, "io.blkledger.GetDevice", params);
        json_object_put(params);
        if (!reply)
                return NULL;
        if (json_object_object_get_ex(reply, "device", &dev))
                json_object_get(dev);
        json_object_put(reply);
        return dev;
}

/* "key value" lines of an object: null as "-", sizes with their bytes, strings escaped. */
static void print_fields(json_object *o, int width) {
        json_object_object_foreach(o, key, val) {
                _cleanup_free_ char *e = NULL;
                char size[FORMAT_SIZE_MAX];

                if (!val)
                        e = strdup("-");
                else if (streq(key, "size_bytes"))
                        (void) asprintf_or_null(&e, "%s (%lld bytes)",
                                                format_size((uint64_t) json_object_get_int64(val), size),
                                                (long long) json_object_get_int64(val));
                else if (json_object_is_type(val, json_type_string))
                        e = cli_escape(json_object_get_string(val));
                else
                        e = cli_escape(json_object_to_json_string_ext(val, JSON_LINE));
                printf("%-*s %s\n", width, key, e ? e : "?");
        }
}

static int cmd_show(struct blkledger *b, const struct cli_args *a) {
        json_object *dev = get_device(b, a->device);

        if (!dev)
                return -1;
        if (a->json)
                print_json(dev);
        else
                print_fields(dev, 20);
        json_object_put(dev);
        return 0;
}

static void print_event_line(json_object *e) {
        _cleanup_free_ char *details = cli_event_details(e);
        json_object *dev;
        char devbuf[32] = "-";

        if (json_object_object_get_ex(e, "device_id", &dev) && dev)
                snprintf(devbuf, sizeof(devbuf), "%lld", (long long) json_object_get_int64(dev));
        printf("%8s  %s  %6s  %-12s %s\n", str_member(e, "seq") ?: "?", str_member(e, "time") ?: "?", devbuf,
               str_member(e, "kind") ?: "?", details ? details : "");
}

static int cmd_history(struct blkledger *b, const struct cli_args *a) {
        json_object *all = json_object_new_array();
        int64_t since = a->since >= 0 ? a->since : 0, device_id = 0, printed = 0;
        bool more = true;

        if (a->device) {
                json_object *dev = get_device(b, a->device), *v;
                if (!dev) {
                        json_object_put(all);
                        return -1;
                }
                if (json_object_object_get_ex(dev, "id", &v))
                        device_id = json_object_get_int64(v);
                json_object_put(dev);
        }
        if (!a->json && !a->no_legend)
                printf("%8s  %-27s  %6s  %-12s %s\n", "SEQ", "TIME", "DEVICE", "KIND", "DETAILS");
        while (more && (a->limit == 0 || printed < a->limit)) {
                json_object *params = json_object_new_object(), *reply, *events, *v;
                int64_t page = 1000;

                if (a->limit > 0)
                        page = MIN(page, a->limit - printed);
                json_object_object_add(params, "since", json_object_new_int64(since));
                json_object_object_add(params, "limit", json_object_new_int64(page));
                if (device_id > 0)
                        json_object_object_add(params, "device_id", json_object_new_int64(device_id));
                reply = call(b, "io.blkledger.ListEvents", params);
                json_object_put(params);
                if (!reply) {
                        json_object_put(all);
                        return -1;
                }
                if (!json_object_object_get_ex(reply, "events", &events) ||
                    !json_object_is_type(events, json_type_array)) {
                        json_object_put(reply);
                        json_object_put(all);
                        return fail("ListEvents: reply without events");
                }
                more = json_object_object_get_ex(reply, "has_more", &v) && json_object_get_boolean(v);
                for (size_t i = 0; i < json_object_array_length(events); i++) {
                        json_object *e = json_object_array_get_idx(events, i), *seq;
                        if (json_object_object_get_ex(e, "seq", &seq))
                                since = json_object_get_int64(seq);
                        if (a->json)
                                json_object_array_add(all, json_object_get(e));
                        else
                                print_event_line(e);
                        printed++;
                }
                if (json_object_array_length(events) == 0)
                        more = false;
                json_object_put(reply);
        }
        if (a->json)
                print_json(all);
        json_object_put(all);
        return 0;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
        interrupted = 1;
}

static int cmd_watch(struct blkledger *b_unused, const struct cli_args *a) {
        int64_t since = a->since;
        struct sigaction sa = { .sa_handler = on_sigint };

        /* No SA_RESTART: the blocking read returns so we can leave cleanly. */
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (!interrupted) {
                struct blkledger *b = NULL;
                json_object *params = json_object_new_object();
                bool resume = false;
                int r;

                if (connect_daemon(a, &b) < 0) {
                        json_object_put(params);
                        return -1;
                }
                blkledger_set_timeout(b, -1);
                if (since >= 0)
                        json_object_object_add(params, "since", json_object_new_int64(since));
                r = blkledger_call_more(b, "io.blkledger.Watch", json_object_to_json_string_ext(params, JSON_LINE));
                json_object_put(params);
                if (r < 0) {
                        call_failed(b, "Watch", r);
                        blkledger_unref(b);
                        return -1;
                }
                if (!a->json && !a->no_legend && since < 0)
                        printf("%8s  %-27s  %6s  %-12s %s\n", "SEQ", "TIME", "DEVICE", "KIND", "DETAILS");
                while (!interrupted) {
                        _cleanup_free_ char *reply = NULL;
                        json_object *o, *e, *seq;
                        int continues = 0;

                        r = blkledger_receive(b, &reply, &continues);
                        if (r == -EINTR || (r < 0 && interrupted))
                                break;
                        if (r == -EREMOTEIO && streq_ptr(blkledger_get_error(b), "io.blkledger.WatchTooSlow")) {
                                json_object *p = json_tokener_parse(blkledger_get_error_parameters(b) ?: "{}"), *v;
                                if (json_object_object_get_ex(p, "resume_since", &v))
                                        since = json_object_get_int64(v);
                                json_object_put(p);
                                fprintf(stderr, "blkledger: fell behind; resuming after event %lld\n", (long long) since);
                                resume = true;
                                break;
                        }
                        if (r < 0) {
                                call_failed(b, "Watch", r);
                                blkledger_unref(b);
                                return -1;
                        }
                        o = json_tokener_parse(reply);
                        if (o && json_object_object_get_ex(o, "event", &e) && e) {
                                if (json_object_object_get_ex(e, "seq", &seq))
                                        since = json_object_get_int64(seq);
                                if (a->json)
                                        puts(json_object_to_json_string_ext(e, JSON_LINE));
                                else
                                        print_event_line(e);
                        } else if (o && since < 0) {
                                json_object *last;
                                /* The first reply says where the stream starts. */
                                if (json_object_object_get_ex(o, "last_seq", &last))
                                        since = json_object_get_int64(last);
                        }
                        json_object_put(o);
                        if (!continues)
                                break;
                }
                blkledger_unref(b);
                if (!resume)
                        break;
        }
        return 0;
}

static int cmd_status(struct blkledger *b, const struct cli_args *a) {
        json_object *reply = call(b, "io.blkledger.GetStatus", NULL);

        if (!reply)
                return -1;
        if (a->json)
                print_json(reply);
        else
                print_fields(reply, 16);
        json_object_put(reply);
        return 0;
}

static void print_summary(json_object *o) {
        static const char *const keys[] = { "checked", "appeared", "changed", "renamed", "disappeared",
                                            "unresponsive", "drift_open", "duration_ms" };
        int64_t n[ELEMENTSOF(keys)] = {};
        json_object *v;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (json_object_object_get_ex(o, keys[i], &v))
                        n[i] = json_object_get_int64(v);
        printf("pass complete in %lld ms: %lld checked, %lld appeared, %lld changed, %lld renamed, "
               "%lld disappeared, %lld unresponsive; %lld drift open\n",
               (long long) n[7], (long long) n[0], (long long) n[1], (long long) n[2], (long long) n[3],
               (long long) n[4], (long long) n[5], (long long) n[6]);
}

static int cmd_reconcile(struct blkledger *b, const struct cli_args *a) {
        /* Progress only where a person watches, and only if the pass takes a moment:
         * the daemon sends it at most four times a second. */
        bool progress = !a->json && isatty(STDERR_FILENO);
        bool shown = false;
        int r, continues = 1;

        blkledger_set_timeout(b, -1);
        r = blkledger_call_more(b, "io.blkledger.Reconcile", NULL);
        if (r < 0)
                return call_failed(b, "reconcile", r);
        while (continues) {
                _cleanup_free_ char *reply = NULL;
                json_object *o, *v;

                r = blkledger_receive(b, &reply, &continues);
                if (r < 0) {
                        if (shown)
                                fputc('\n', stderr);
                        return call_failed(b, "reconcile", r);
                }
                o = json_tokener_parse(reply);
                if (!o)
                        return fail("reconcile: unreadable reply");
                if (continues) {
                        int64_t done = json_object_object_get_ex(o, "devices_done", &v) ? json_object_get_int64(v) : 0;
                        int64_t total = json_object_object_get_ex(o, "devices_total", &v) ? json_object_get_int64(v) : 0;
                        if (progress) {
                                fprintf(stderr, "\rreconciling: %lld of %lld devices", (long long) done, (long long) total);
                                shown = true;
                        }
                        json_object_put(o);
                        continue;
                }
                if (shown)
                        fputs("\r\033[K", stderr);
                if (a->json)
                        print_json(o);
                else
                        print_summary(o);
                json_object_put(o);
        }
        return 0;
}

static int cmd_name(struct blkledger *b, const struct cli_args *a) {
        json_object *params = json_object_new_object(), *reply, *dev;

        json_object_object_add(params, "device", json_object_new_string(a->device));
        json_object_object_add(params, "name", a->name ? json_object_new_string(a->name) : NULL);
        reply = call(b, "io.blkledger.SetName", params);
        json_object_put(params);
        if (!reply)
                return -1;
        dev = json_object_object_get(reply, "device");
        if (a->json)
                print_json(dev);
        else if (a->name)
                printf("device %s (%s) is named %s\n", str_member(dev, "id") ?: "?", str_member(dev, "kname") ?: "-",
                       a->name);
        else
                printf("device %s (%s) has no name\n", str_member(dev, "id") ?: "?", str_member(dev, "kname") ?: "-");
        json_object_put(reply);
        return 0;
}

static int cmd_expect(struct blkledger *b, const struct cli_args *a) {
        json_object *params = json_object_new_object(), *reply;

        json_object_object_add(params, "name", json_object_new_string(a->name));
        json_object_object_add(params, "match_kind", json_object_new_string(a->match_kind));
        json_object_object_add(params, "match_value", json_object_new_string(a->match_value));
        if (a->fs_type)
                json_object_object_add(params, "fs_type", json_object_new_string(a->fs_type));
        if (a->fs_label)
                json_object_object_add(params, "fs_label", json_object_new_string(a->fs_label));
        if (a->min_size >= 0)
                json_object_object_add(params, "min_size", json_object_new_int64(a->min_size));
        if (a->on_appear)
                json_object_object_add(params, "on_appear", json_object_new_string(a->on_appear));
        reply = call(b, "io.blkledger.Expect", params);
        json_object_put(params);
        if (!reply)
                return -1;
        if (a->json)
                print_json(json_object_object_get(reply, "expectation"));
        else
                printf("expectation %s recorded; 'blkledger drift' shows where reality differs\n", a->name);
        json_object_put(reply);
        return 0;
}

static int cmd_unexpect(struct blkledger *b, const struct cli_args *a) {
        json_object *params = json_object_new_object(), *reply;

        json_object_object_add(params, "name", json_object_new_string(a->name));
        reply = call(b, "io.blkledger.Unexpect", params);
        json_object_put(params);
        if (!reply)
                return -1;
        if (a->json)
                print_json(reply);
        json_object_put(reply);
        return 0;
}

static int cmd_expectations(struct blkledger *b, const struct cli_args *a) {
        static const char *const headers[] = { "NAME", "MATCH", "FSTYPE", "LABEL", "MIN-SIZE" };
        json_object *reply = call(b, "io.blkledger.ListExpectations", NULL), *arr;
        struct table *t;

        if (!reply)
                return -1;
        arr = json_object_object_get(reply, "expectations");
        if (a->json) {
                print_json(arr);
                json_object_put(reply);
                return 0;
        }
        t = table_new(headers, ELEMENTSOF(headers));
        for (size_t i = 0; t && i < json_object_array_length(arr); i++) {
                json_object *e = json_object_array_get_idx(arr, i), *v;
                char size[FORMAT_SIZE_MAX] = "-", match[4200] = "-";
                if (json_object_object_get_ex(e, "min_size", &v) && v)
                        format_size((uint64_t) json_object_get_int64(v), size);
                if (json_object_object_get_ex(e, "match", &v) && v) {
                        json_object_object_foreach(v, key, val)
                                snprintf(match, sizeof(match), "%s=%s", key, json_object_get_string(val));
                }
                const char *row[] = { str_member(e, "name"), match, str_member(e, "fs_type"), str_member(e, "fs_label"),
                                      size };
                table_add_row(t, row);
        }
        if (t) {
                table_set_right_aligned(t, 4);
                table_print(t, stdout, !a->no_legend);
        }
        table_free(t);
        json_object_put(reply);
        return t ? 0 : fail("out of memory");
}

static int cmd_drift(struct blkledger *b, const struct cli_args *a) {
        static const char *const headers[] = { "KIND", "NAME", "DEVICE", "SINCE", "DETAIL" };
        json_object *reply = call(b, "io.blkledger.ListDrift", NULL), *arr;
        struct table *t;

        if (!reply)
                return -1;
        arr = json_object_object_get(reply, "drift");
        if (a->json) {
                print_json(arr);
                json_object_put(reply);
                return 0;
        }
        t = table_new(headers, ELEMENTSOF(headers));
        for (size_t i = 0; t && i < json_object_array_length(arr); i++) {
                json_object *e = json_object_array_get_idx(arr, i), *detail;
                detail = json_object_object_get(e, "detail");
                const char *row[] = { str_member(e, "kind"), str_member(e, "name"), str_member(e, "device_id"),
                                      str_member(e, "since"),
                                      detail ? json_object_to_json_string_ext(detail, JSON_LINE) : NULL };
                table_add_row(t, row);
        }
        if (t)
                table_print(t, stdout, !a->no_legend);
        table_free(t);
        json_object_put(reply);
        return t ? 0 : fail("out of memory");
}


/* A volume action: waits as long as the action takes (mkfs of a large volume). */
static int volume_action(struct blkledger *b, const struct cli_args *a, const char *method, json_object *params,
                         const char *done) {
        json_object *reply, *v;

        json_object_object_add(params, a->command == CMD_VOLUME_ADOPT ? "path" : "name", json_object_new_string(a->name));
        if (a->idempotency_key)
                json_object_object_add(params, "idempotency_key", json_object_new_string(a->idempotency_key));
        blkledger_set_timeout(b, -1);
        reply = call(b, method, params);
        json_object_put(params);
        if (!reply)
                return -1;
        v = json_object_object_get(reply, "volume");
        if (a->json)
                print_json(v ? v : reply);
        else if (v)
                printf("volume %s %s%s%s\n", str_member(v, "name") ?: a->name, done, str_member(v, "devnode") ? " as " : "",
                       str_member(v, "devnode") ?: "");
        else
                printf("volume %s %s\n", a->name, done);
        json_object_put(reply);
        return 0;
}

static int cmd_volume(struct blkledger *b, const struct cli_args *a) {
        json_object *p = json_object_new_object();

        if (!p)
                return fail("out of memory");
        switch (a->command) {
        case CMD_VOLUME_CREATE:
                json_object_object_add(p, "size_bytes", json_object_new_int64(a->size));
                if (a->fs_type)
                        json_object_object_add(p, "fs_type", json_object_new_string(a->fs_type));
                if (a->fs_label)
                        json_object_object_add(p, "fs_label", json_object_new_string(a->fs_label));
                return volume_action(b, a, "io.blkledger.CreateVolume", p, "created");
        case CMD_VOLUME_RESIZE:
                json_object_object_add(p, "size_bytes", json_object_new_int64(a->size));
                return volume_action(b, a, "io.blkledger.ResizeVolume", p, "resized");
        case CMD_VOLUME_ATTACH:
                return volume_action(b, a, "io.blkledger.AttachVolume", p, "attached");
        case CMD_VOLUME_DETACH:
                if (a->force)
                        json_object_object_add(p, "force", json_object_new_boolean(true));
                return volume_action(b, a, "io.blkledger.DetachVolume", p, "detached");
        case CMD_VOLUME_DELETE:
                if (a->force)
                        json_object_object_add(p, "force", json_object_new_boolean(true));
                if (a->keep_file)
                        json_object_object_add(p, "keep_file", json_object_new_boolean(true));
                return volume_action(b, a, "io.blkledger.DeleteVolume", p, "deleted");
        case CMD_VOLUME_ADOPT:
                return volume_action(b, a, "io.blkledger.AdoptVolume", p, "adopted");
        case CMD_VOLUME_FORGET:
                return volume_action(b, a, "io.blkledger.ForgetVolume", p, "forgotten");
        case CMD_VOLUME_SHOW: {
                json_object *reply;
                json_object_object_add(p, "name", json_object_new_string(a->name));
                reply = call(b, "io.blkledger.GetVolume", p);
                json_object_put(p);
                if (!reply)
                        return -1;
                if (a->json)
                        print_json(json_object_object_get(reply, "volume"));
                else
                        print_fields(json_object_object_get(reply, "volume"), 14);
                json_object_put(reply);
                return 0;
        }
        default: {
                static const char *const headers[] = { "NAME", "STATE", "SIZE", "FSTYPE", "LABEL", "DEVICE", "FILE" };
                json_object *reply = call(b, "io.blkledger.ListVolumes", NULL), *arr;
                struct table *t;

                json_object_put(p);
                if (!reply)
                        return -1;
                arr = json_object_object_get(reply, "volumes");
                if (a->json) {
                        print_json(arr);
                        json_object_put(reply);
                        return 0;
                }
                t = table_new(headers, ELEMENTSOF(headers));
                for (size_t i = 0; t && i < json_object_array_length(arr); i++) {
                        json_object *v = json_object_array_get_idx(arr, i), *sz;
                        char size[FORMAT_SIZE_MAX] = "-";
                        if (json_object_object_get_ex(v, "size_bytes", &sz) && sz)
                                format_size((uint64_t) json_object_get_int64(sz), size);
                        const char *row[] = { str_member(v, "name"),     str_member(v, "state"),
                                              size,                      str_member(v, "fs_type"),
                                              str_member(v, "fs_label"), str_member(v, "devnode"),
                                              str_member(v, "backing_file") };
                        table_add_row(t, row);
                }
                if (t) {
                        table_set_right_aligned(t, 2);
                        table_print(t, stdout, !a->no_legend);
                }
                table_free(t);
                json_object_put(reply);
                return t ? 0 : fail("out of memory");
        }
        }
}

static int cmd_intents(struct blkledger *b, const struct cli_args *a) {
        static const char *const headers[] = { "ID", "OP", "TARGET", "STATE", "STEP", "ATTEMPTS", "UPDATED", "ERROR" };
        json_object *p = json_object_new_object(), *reply, *arr;
        struct table *t;

        if (a->unfinished)
                json_object_object_add(p, "unfinished", json_object_new_boolean(true));
        if (a->limit > 0)
                json_object_object_add(p, "limit", json_object_new_int64(MIN(a->limit, 10000)));
        reply = call(b, "io.blkledger.ListIntents", p);
        json_object_put(p);
        if (!reply)
                return -1;
        arr = json_object_object_get(reply, "intents");
        if (a->json) {
                print_json(arr);
                json_object_put(reply);
                return 0;
        }
        t = table_new(headers, ELEMENTSOF(headers));
        for (size_t i = 0; t && i < json_object_array_length(arr); i++) {
                json_object *it = json_object_array_get_idx(arr, i);
                const char *row[] = { str_member(it, "id"),    str_member(it, "op"),       str_member(it, "target"),
                                      str_member(it, "state"), str_member(it, "step"),     str_member(it, "attempts"),
                                      str_member(it, "updated"), str_member(it, "last_error") };
                table_add_row(t, row);
        }
        if (t) {
                table_set_right_aligned(t, 0);
                table_print(t, stdout, !a->no_legend);
        }
        table_free(t);
        json_object_put(reply);
        return t ? 0 : fail("out of memory");
}

static int cmd_backup(struct blkledger *b, const struct cli_args *a) {
        json_object *reply;

        blkledger_set_timeout(b, -1);
        reply = call(b, "io.blkledger.Backup", NULL);
        if (!reply)
                return -1;
        if (a->json)
                print_json(reply);
        else
                printf("%s\n", str_member(reply, "path") ?: "?");
        json_object_put(reply);
        return 0;
}

static int cmd_check(struct blkledger *b, const struct cli_args *a) {
        json_object *reply, *problems, *ok;
        bool sound;

        blkledger_set_timeout(b, -1);
        reply = call(b, "io.blkledger.CheckIntegrity", NULL);
        if (!reply)
                return -1;
        sound = json_object_object_get_ex(reply, "ok", &ok) && json_object_get_boolean(ok);
        if (a->json)
                print_json(reply);
        else if (sound)
                printf("ok (%lld ms)\n", (long long) int_member(reply, "duration_ms"));
        else if (json_object_object_get_ex(reply, "problems", &problems))
                for (size_t i = 0; i < json_object_array_length(problems); i++) {
                        _cleanup_free_ char *p = cli_escape(json_object_get_string(json_object_array_get_idx(problems, i)));
                        printf("%s\n", p ?: "?");
                }
        json_object_put(reply);
        return sound ? 0 : fail("check: the ledger is damaged; see RECOVERY in blkledgerd(8)");
}

static int cmd_export(struct blkledger *b, const struct cli_args *a) {
        json_object *reply, *e;

        blkledger_set_timeout(b, -1);
        reply = call(b, "io.blkledger.Export", NULL);
        if (!reply)
                return -1;
        /* The export is JSON whichever way it is asked for: a file to keep and import. */
        if (!json_object_object_get_ex(reply, "export", &e) || !e) {
                json_object_put(reply);
                return fail("export: the daemon's reply has no export");
        }
        print_json(e);
        json_object_put(reply);
        return fflush(stdout) == 0 && !ferror(stdout) ? 0 : fail("export: cannot write: %s", strerror(errno));
}

#define IMPORT_MAX (64u << 20)

static char *read_all(const char *path) {
        FILE *f = streq(path, "-") ? stdin : fopen(path, "re");
        char *buf = NULL;
        size_t len = 0, alloc = 0;

        if (!f) {
                fail("import: cannot open %s: %s", path, strerror(errno));
                return NULL;
        }
        for (;;) {
                size_t n;
                if (alloc - len < 65536) {
                        char *x = alloc + 65536 > IMPORT_MAX + 1 ? NULL : realloc(buf, alloc + 65536);
                        if (!x) {
                                fail("import: %s is larger than %u MiB", path, IMPORT_MAX >> 20);
                                goto fail;
                        }
                        buf = x;
                        alloc += 65536;
                }
                n = fread(buf + len, 1, alloc - len - 1, f);
                len += n;
                if (n == 0)
                        break;
        }
        if (ferror(f)) {
                fail("import: cannot read %s", path);
                goto fail;
        }
        buf[len] = 0;
        if (strlen(buf) != len) {
                fail("import: %s is not an export (it holds NUL bytes)", path);
                goto fail;
        }
        if (f != stdin)
                fclose(f);
        return buf;
fail:
        if (f != stdin)
                fclose(f);
        free(buf);
        return NULL;
}

static json_object *import_call(struct blkledger *b, const char *data, bool apply, bool force) {
        json_object *p = json_object_new_object(), *reply;

        if (!p)
                return NULL;
        json_object_object_add(p, "data", json_object_new_string(data));
        json_object_object_add(p, "apply", json_object_new_boolean(apply));
        json_object_object_add(p, "force", json_object_new_boolean(force));
        reply = call(b, "io.blkledger.Import", p);
        json_object_put(p);
        return reply;
}

static int cmd_import(struct blkledger *b, const struct cli_args *a) {
        _cleanup_free_ char *data = read_all(a->name);
        json_object *plan, *changes, *done;
        int64_t add, replace, conflict;
        bool apply = a->yes;

        if (!data)
                return -1;
        blkledger_set_timeout(b, -1);
        plan = import_call(b, data, false, a->force);
        if (!plan)
                return -1;
        add = int_member(plan, "add");
        replace = int_member(plan, "replace");
        conflict = int_member(plan, "conflict");
        if (!a->json || !a->yes) {
                FILE *out = a->json ? stderr : stdout;
                if (a->json)
                        print_json(plan);
                else if (json_object_object_get_ex(plan, "changes", &changes))
                        for (size_t i = 0; i < json_object_array_length(changes); i++) {
                                json_object *c = json_object_array_get_idx(changes, i);
                                _cleanup_free_ char *key = cli_escape(str_member(c, "key") ?: "");
                                _cleanup_free_ char *detail = cli_escape(str_member(c, "detail") ?: "");
                                fprintf(out, "%-8s %-12s %s%s%s\n", str_member(c, "action") ?: "?",
                                        str_member(c, "kind") ?: "?", key ?: "", *detail ? ": " : "", detail ?: "");
                        }
                fprintf(out, "%lld to add, %lld to replace, %lld the same, %lld in conflict\n", (long long) add,
                        (long long) replace, (long long) int_member(plan, "same"), (long long) conflict);
        }
        json_object_put(plan);
        if (conflict > 0 && !a->force)
                return fail("import: %lld conflicts; nothing imported (--force replaces what is here)",
                            (long long) conflict);
        if (add + replace == 0) {
                printf("nothing to import\n");
                return 0;
        }
        if (!apply && isatty(STDIN_FILENO) && !streq(a->name, "-")) {
                char answer[16] = "";
                printf("Apply these changes? [y/N] ");
                fflush(stdout);
                apply = fgets(answer, sizeof(answer), stdin) && (answer[0] == 'y' || answer[0] == 'Y');
        }
        if (!apply) {
                printf("not applied: confirm with --yes\n");
                return 0;
        }
        done = import_call(b, data, true, a->force);
        if (!done)
                return -1;
        if (a->json)
                print_json(done);
        else
                printf("imported: %lld added, %lld replaced\n", (long long) int_member(done, "add"),
                       (long long) int_member(done, "replace"));
        json_object_put(done);
        return 0;
}

int main(int argc, char **argv) {
        struct cli_args a;
        _cleanup_free_ char *error = NULL;
        struct blkledger *b = NULL;
        int r;

        r = cli_parse(argc, argv, &a, &error);
        if (r != 0) {
                if (r < 0)
                        fprintf(stderr, "blkledger: %s\n", error ? error : strerror(-r));
                cli_args_done(&a);
                return r > 0 ? 0 : 2;
        }
        if (a.command == CMD_WATCH)
                r = cmd_watch(NULL, &a);
        else if (connect_daemon(&a, &b) < 0)
                r = -1;
        else {
                switch (a.command) {
                case CMD_LIST:
                        r = cmd_list(b, &a);
                        break;
                case CMD_SHOW:
                        r = cmd_show(b, &a);
                        break;
                case CMD_HISTORY:
                        r = cmd_history(b, &a);
                        break;
                case CMD_STATUS:
                        r = cmd_status(b, &a);
                        break;
                case CMD_EXPORT:
                        r = cmd_export(b, &a);
                        break;
                case CMD_CHECK:
                        r = cmd_check(b, &a);
                        break;
                case CMD_IMPORT:
                        r = cmd_import(b, &a);
                        break;
                case CMD_RECONCILE:
                        r = cmd_reconcile(b, &a);
                        break;
                case CMD_NAME:
                        r = cmd_name(b, &a);
                        break;
                case CMD_EXPECT:
                        r = cmd_expect(b, &a);
                        break;
                case CMD_UNEXPECT:
                        r = cmd_unexpect(b, &a);
                        break;
                case CMD_EXPECTATIONS:
                        r = cmd_expectations(b, &a);
                        break;
                case CMD_DRIFT:
                        r = cmd_drift(b, &a);
                        break;
                case CMD_VOLUME_CREATE:
                case CMD_VOLUME_LIST:
                case CMD_VOLUME_SHOW:
                case CMD_VOLUME_RESIZE:
                case CMD_VOLUME_ATTACH:
                case CMD_VOLUME_DETACH:
                case CMD_VOLUME_DELETE:
                case CMD_VOLUME_ADOPT:
                case CMD_VOLUME_FORGET:
                        r = cmd_volume(b, &a);
                        break;
                case CMD_INTENTS:
                        r = cmd_intents(b, &a);
                        break;
                case CMD_BACKUP:
                        r = cmd_backup(b, &a);
                        break;
                default:
                        r = -1;
                }
        }
        blkledger_unref(b);
        cli_args_done(&a);
        if (fflush(stdout) != 0 || ferror(stdout))
                return 1;
        return r < 0 ? 1 : 0;
}
