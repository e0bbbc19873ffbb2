/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the reconciler on real loop devices: changes made while the daemon was
 * down show up as exactly those changes; the ledger is served at once after a restart,
 * marked unverified until checked; an image re-attached under another loop number keeps
 * its record (renamed); names follow the device; expectations open and close drift
 * (missing, unexpected_fs, label_mismatch, too_small); cloned images and an image
 * attached twice raise duplicate_uuid and identity_conflict and stay two records. */
#include "config.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        daemon_ = tl_daemon_start("reconcile", NULL);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        return 0;
}

static int64_t last_seq(void) {
        json_object *s = tl_cli_json(daemon_, "status");
        int64_t seq = tl_int(s, "last_seq");

        json_object_put(s);
        return seq;
}

/* Device events after seq. */
static json_object *device_events_since(int64_t seq) {
        _cleanup_free_ char *args = NULL;
        json_object *h, *out = json_object_new_array();

        assert_true(asprintf(&args, "history --since %lld", (long long) seq) > 0);
        h = tl_cli_json(daemon_, args);
        assert_non_null(h);
        for (size_t i = 0; i < json_object_array_length(h); i++) {
                json_object *e = json_object_array_get_idx(h, i);
                if (tl_int(e, "device_id") > 0)
                        json_object_array_add(out, json_object_get(e));
        }
        json_object_put(h);
        return out;
}

static json_object *device_by_file(json_object *list, const char *file) {
        json_object *d = tl_find_device(list, "loop_backing_file", file);
        return d;
}

/* The present device at a device node (gone records may carry the same node). */
static json_object *present_at(json_object *list, const char *devnode) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *d = json_object_array_get_idx(list, i);
                if (streq_ptr(tl_str(d, "devnode"), devnode) && streq_ptr(tl_str(d, "state"), "present"))
                        return d;
        }
        return NULL;
}

static int64_t id_of_file(const char *file) {
        json_object *l = tl_cli_json(daemon_, "list");
        int64_t id = tl_int(device_by_file(l, file), "id");

        json_object_put(l);
        return id;
}

static void reconcile(void) {
        json_object *r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        json_object_put(r);
}

/* Stop the daemon; detach one device, reformat another, grow a third, attach a new one;
 * start it: the history shows exactly those four changes, each with before and after. */
static void test_changes_while_down(void **state) {
        for (int round = 0; round < 2; round++) {
                char name[4][32];
                struct tl_loop *l[4];
                int64_t id[3], seq;
                json_object *ev, *l2;
                _cleanup_free_ char *out = NULL;
                bool seen[4] = {};

                for (int i = 0; i < 4; i++)
                        snprintf(name[i], sizeof(name[i]), "down%d-%d.img", round, i);
                l[0] = tl_loop_new(NULL, name[0], 32 << 20, "mkfs.ext4 -q -F -L gone %s");
                l[1] = tl_loop_new(NULL, name[1], 32 << 20, "mkfs.ext4 -q -F -L before %s");
                l[2] = tl_loop_new(NULL, name[2], 32 << 20, NULL);
                for (int i = 0; i < 3; i++) {
                        assert_non_null(l[i]);
                        reconcile();
                        id[i] = id_of_file(l[i]->file);
                        assert_true(id[i] > 0);
                }
                seq = last_seq();
                assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);

                tl_loop_detach(l[0]);
                assert_int_equal(tl_sh(&out, "mkfs.ext4 -q -F -L after %s 2>&1", l[1]->devnode), 0);
                assert_int_equal(tl_sh(NULL, "truncate -s 48M '%s'", l[2]->file), 0);
                assert_int_equal(ioctl(l[2]->fd, LOOP_SET_CAPACITY, 0), 0);
                l[3] = tl_loop_new(NULL, name[3], 16 << 20, NULL);
                assert_non_null(l[3]);

                assert_int_equal(tl_daemon_restart(daemon_), 0);
                ev = device_events_since(seq);
                if (json_object_array_length(ev) != 4)
                        fail_msg("round %d: %zu device events, not 4: %s", round, json_object_array_length(ev),
                                 json_object_to_json_string(ev));
                for (size_t i = 0; i < 4; i++) {
                        json_object *e = json_object_array_get_idx(ev, i), *b, *a;
                        const char *kind = tl_str(e, "kind");
                        int64_t dev = tl_int(e, "device_id");

                        assert_true(json_object_object_get_ex(e, "before", &b) && b);
                        assert_true(json_object_object_get_ex(e, "after", &a) && a);
                        if (dev == id[0] && streq(kind, "disappeared")) {
                                assert_string_equal(tl_str(a, "state"), "gone");
                                seen[0] = true;
                        } else if (dev == id[1] && streq(kind, "changed")) {
                                assert_string_equal(tl_str(b, "fs_label"), "before");
                                assert_string_equal(tl_str(a, "fs_label"), "after");
                                assert_non_null(tl_str(b, "fs_uuid"));
                                assert_non_null(tl_str(a, "fs_uuid"));
                                assert_string_not_equal(tl_str(b, "fs_uuid"), tl_str(a, "fs_uuid"));
                                seen[1] = true;
                        } else if (dev == id[2] && streq(kind, "changed")) {
                                assert_int_equal(tl_int(b, "size_bytes"), 32 << 20);
                                assert_int_equal(tl_int(a, "size_bytes"), 48 << 20);
                                seen[2] = true;
                        } else if (streq(kind, "appeared")) {
                                assert_string_equal(tl_str(a, "loop_backing_file"), l[3]->file);
                                seen[3] = true;
                        } else
                                fail_msg("unexpected event %s", json_object_to_json_string(e));
                }
                assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
                json_object_put(ev);

                /* And a restart with nothing changed adds nothing. */
                seq = last_seq();
                assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
                assert_int_equal(tl_daemon_restart(daemon_), 0);
                ev = device_events_since(seq);
                assert_int_equal(json_object_array_length(ev), 0);
                json_object_put(ev);

                l2 = tl_cli_json(daemon_, "list");
                assert_string_equal(tl_str(device_by_file(l2, l[0]->file), "state"), "gone");
                json_object_put(l2);
                for (int i = 0; i < 4; i++)
                        tl_loop_free(l[i]);
                reconcile();
        }
}

static bool all_verified(void *userdata) {
        json_object *l = tl_cli_json(daemon_, "list"), *v;
        bool ok = l != NULL;

        for (size_t i = 0; ok && i < json_object_array_length(l); i++)
                ok = json_object_object_get_ex(json_object_array_get_idx(l, i), "verified", &v) &&
                     json_object_get_boolean(v);
        json_object_put(l);
        return ok;
}

/* After a restart the ledger is served at once, its records marked unverified until the
 * first pass has checked them; never presented as fresh. */
static void test_served_unverified_at_start(void **state) {
        struct tl_loop *l = tl_loop_new(NULL, "fresh.img", 16 << 20, NULL);
        _cleanup_free_ char *before = NULL;
        json_object *list, *d, *s, *v;

        assert_non_null(l);
        reconcile();
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        tl_daemon_free(daemon_);

        daemon_ = tl_daemon_start_unverified("reconcile", (const char *const[]) { "--initial-pass-delay=3", NULL });
        assert_non_null(daemon_);
        list = tl_cli_json(daemon_, "list");
        assert_non_null(list);
        d = device_by_file(list, l->file);
        assert_non_null(d);
        assert_true(json_object_object_get_ex(d, "verified", &v));
        assert_false(json_object_get_boolean(v));
        assert_non_null(tl_str(d, "last_verified")); /* from the earlier run */
        before = strdup(tl_str(d, "last_verified"));
        json_object_put(list);
        s = tl_cli_json(daemon_, "status");
        assert_true(json_object_object_get_ex(s, "initial_pass_done", &v));
        assert_false(json_object_get_boolean(v));
        json_object_put(s);

        assert_true(tl_wait_for(15000, all_verified, NULL));
        list = tl_cli_json(daemon_, "list");
        d = device_by_file(list, l->file);
        assert_string_not_equal(tl_str(d, "last_verified"), before);
        json_object_put(list);

        /* Back to a daemon without the delay for the other tests. */
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        tl_daemon_free(daemon_);
        daemon_ = tl_daemon_start("reconcile", NULL);
        assert_non_null(daemon_);
        tl_loop_free(l);
}

struct file_state {
        const char *file;
        const char *state;
};

static bool file_in_state(void *userdata) {
        struct file_state *f = userdata;
        json_object *l = tl_cli_json(daemon_, "list");
        bool ok = streq_ptr(tl_str(device_by_file(l, f->file), "state"), f->state);

        json_object_put(l);
        return ok;
}

/* Detach an image, attach it again under another loop number: the same record, a
 * "renamed" event, and its name follows. */
static void test_renamed_keeps_record(void **state) {
        struct tl_loop *img = tl_loop_new(NULL, "moving.img", 16 << 20, "mkfs.ext4 -q -F %s");
        _cleanup_free_ char *old_dev = NULL, *out = NULL;
        struct file_state fs;
        json_object *l, *d, *ev;
        int64_t id, seq, n_before;
        bool renamed = false;

        assert_non_null(img);
        fs = (struct file_state) { img->file, "present" };
        assert_true(tl_wait_for(2000, file_in_state, &fs));
        id = id_of_file(img->file);
        assert_int_equal(tl_sh(&out, "'%s/blkledger' --socket '%s' name %lld db-1", tl_builddir(), daemon_->socket,
                               (long long) id),
                         0);
        l = tl_cli_json(daemon_, "list");
        n_before = (int64_t) json_object_array_length(l);
        json_object_put(l);
        seq = last_seq();
        old_dev = strdup(img->devnode);

        tl_loop_detach(img);
        fs.state = "gone";
        assert_true(tl_wait_for(2000, file_in_state, &fs));
        /* Back under a number far from the old one. */
        assert_int_equal(tl_loop_attach_at(img, 4000 + (int) (getpid() % 1000)), 0);
        assert_string_not_equal(img->devnode, old_dev);
        fs.state = "present";
        assert_true(tl_wait_for(2000, file_in_state, &fs));
        reconcile();

        l = tl_cli_json(daemon_, "list");
        d = device_by_file(l, img->file);
        assert_int_equal(tl_int(d, "id"), id);
        assert_string_equal(tl_str(d, "devnode"), img->devnode);
        assert_string_equal(tl_str(d, "name"), "db-1");
        /* No second record for the image. */
        assert_int_equal((int64_t) json_object_array_length(l), n_before);
        json_object_put(l);
        ev = device_events_since(seq);
        for (size_t i = 0; i < json_object_array_length(ev); i++) {
                json_object *e = json_object_array_get_idx(ev, i);
                if (tl_int(e, "device_id") == id && streq_ptr(tl_str(e, "kind"), "renamed")) {
                        assert_string_equal(tl_str(json_object_object_get(e, "after"), "devnode"), img->devnode);
                        assert_string_equal(tl_str(json_object_object_get(e, "before"), "devnode"), old_dev);
                        renamed = true;
                }
                if (tl_int(e, "device_id") == id)
                        assert_string_not_equal(tl_str(e, "kind"), "appeared");
        }
        assert_true(renamed);
        json_object_put(ev);
        /* The name finds it, wherever it is. */
        d = tl_cli_json(daemon_, "show db-1");
        assert_int_equal(tl_int(d, "id"), id);
        json_object_put(d);
        tl_loop_free(img);
}

/* The same while the daemon is down, with every device a chunk of its own: whichever
 * place the pass looks at first, the device is renamed, never gone and back. */
static void test_renamed_while_down(void **state) {
        struct tl_loop *img = tl_loop_new(NULL, "away.img", 16 << 20, NULL), *taker;
        _cleanup_free_ char *old_dev = NULL;
        json_object *ev, *l;
        int64_t id, seq;
        unsigned renamed = 0, appeared = 0;

        assert_non_null(img);
        reconcile();
        id = id_of_file(img->file);
        old_dev = strdup(img->devnode);
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        tl_daemon_free(daemon_);
        daemon_ = NULL;
        tl_loop_detach(img);
        /* A new device takes the old place; loop9xxx sorts after it, so the pass reaches
         * the old place, taken by another device, before it finds the image. */
        taker = tl_loop_new(NULL, "taker.img", 8 << 20, NULL);
        assert_non_null(taker);
        if (!streq(taker->devnode, old_dev)) {
                tl_loop_detach(taker);
                assert_int_equal(tl_loop_attach_at(taker, atoi(old_dev + strlen("/dev/loop"))), 0);
        }
        assert_string_equal(taker->devnode, old_dev);
        assert_int_equal(tl_loop_attach_at(img, 9000 + (int) (getpid() % 500)), 0);
        assert_string_not_equal(img->devnode, old_dev);

        daemon_ = tl_daemon_start("reconcile", (const char *const[]) { "--pass-chunk=1", NULL });
        assert_non_null(daemon_);
        seq = 0;
        ev = tl_cli_json(daemon_, "history");
        for (size_t i = 0; i < json_object_array_length(ev); i++) {
                json_object *e = json_object_array_get_idx(ev, i);
                if (streq_ptr(tl_str(e, "kind"), "daemon_started"))
                        seq = tl_int(e, "seq");
        }
        json_object_put(ev);
        ev = device_events_since(seq);
        for (size_t i = 0; i < json_object_array_length(ev); i++) {
                json_object *e = json_object_array_get_idx(ev, i);
                const char *kind = tl_str(e, "kind");
                if (tl_int(e, "device_id") != id) {
                        /* The taker is new; nothing else happened. */
                        if (streq(kind, "appeared") &&
                            streq_ptr(tl_str(json_object_object_get(e, "after"), "loop_backing_file"), taker->file))
                                appeared++;
                        else
                                fail_msg("unexpected %s", json_object_to_json_string(e));
                        continue;
                }
                if (streq(kind, "renamed"))
                        renamed++;
                else if (!streq(kind, "changed"))
                        fail_msg("unexpected %s", json_object_to_json_string(e));
        }
        assert_int_equal(renamed, 1);
        assert_int_equal(appeared, 1);
        json_object_put(ev);
        l = tl_cli_json(daemon_, "list");
        assert_int_equal(tl_int(device_by_file(l, img->file), "id"), id);
        assert_string_equal(tl_str(device_by_file(l, img->file), "state"), "present");
        json_object_put(l);

        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        tl_daemon_free(daemon_);
        daemon_ = tl_daemon_start("reconcile", NULL);
        assert_non_null(daemon_);
        tl_loop_free(taker);
        tl_loop_free(img);
}

static void test_names(void **state) {
        struct tl_loop *a = tl_loop_new(NULL, "na.img", 8 << 20, NULL), *b = tl_loop_new(NULL, "nb.img", 8 << 20, NULL);
        _cleanup_free_ char *out = NULL;
        struct file_state fs;
        int r;

        assert_non_null(a);
        assert_non_null(b);
        fs = (struct file_state) { b->file, "present" };
        assert_true(tl_wait_for(2000, file_in_state, &fs));
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' name %s alpha >/dev/null", tl_builddir(), daemon_->socket,
                               a->devnode),
                         0);
        /* Unique: refused in one line, exit status 1. */
        r = tl_sh(&out, "'%s/blkledger' -s '%s' name %s alpha 2>&1", tl_builddir(), daemon_->socket, b->devnode);
        assert_int_equal(r, 1);
        assert_string_equal(out, "blkledger: the name alpha is taken by another device\n");
        free(out);
        out = NULL;
        r = tl_sh(&out, "'%s/blkledger' -s '%s' name %s ../etc 2>&1", tl_builddir(), daemon_->socket, b->devnode);
        assert_int_equal(r, 1);
        assert_non_null(strstr(out, "invalid value for name"));
        free(out);
        out = NULL;
        /* A name may not hide a kernel name, or read as an id. */
        r = tl_sh(&out, "'%s/blkledger' -s '%s' name %s %s 2>&1", tl_builddir(), daemon_->socket, b->devnode,
                  strrchr(a->devnode, '/') + 1);
        assert_int_equal(r, 1);
        assert_non_null(strstr(out, "is taken"));
        free(out);
        out = NULL;
        r = tl_sh(&out, "'%s/blkledger' -s '%s' name %s 42 2>&1", tl_builddir(), daemon_->socket, b->devnode);
        assert_int_equal(r, 1);
        assert_non_null(strstr(out, "invalid value for name"));
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' name alpha --remove >/dev/null", tl_builddir(),
                               daemon_->socket),
                         0);
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' name %s alpha >/dev/null", tl_builddir(), daemon_->socket,
                               b->devnode),
                         0);
        tl_loop_free(a);
        tl_loop_free(b);
}

static json_object *drift_of(const char *kind, const char *name) {
        json_object *all = tl_cli_json(daemon_, "drift"), *out = json_object_new_array();

        assert_non_null(all);
        for (size_t i = 0; i < json_object_array_length(all); i++) {
                json_object *d = json_object_array_get_idx(all, i);
                if (streq_ptr(tl_str(d, "kind"), kind) && (!name || streq_ptr(tl_str(d, "name"), name)))
                        json_object_array_add(out, json_object_get(d));
        }
        json_object_put(all);
        return out;
}

static size_t count_drift(const char *kind, const char *name) {
        json_object *d = drift_of(kind, name);
        size_t n = json_object_array_length(d);

        json_object_put(d);
        return n;
}

static void test_expectations(void **state) {
        _cleanup_free_ char *file = NULL, *out = NULL;
        struct tl_loop *l;
        json_object *d, *h;
        int64_t seq;
        bool closed = false;

        /* An expectation for an image that is not attached: missing. */
        assert_true(asprintf(&file, "%s/img/expected.img", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' expect web --match loop-file=%s --fs-type ext4 "
                                     "--fs-label web --min-size 16M >/dev/null",
                               tl_builddir(), daemon_->socket, file),
                         0);
        d = drift_of("missing", "web");
        assert_int_equal(json_object_array_length(d), 1);
        assert_non_null(tl_str(json_object_array_get_idx(d, 0), "since"));
        assert_null(json_object_object_get(json_object_array_get_idx(d, 0), "device_id"));
        json_object_put(d);

        /* Attaching it clears the drift, with an event. */
        seq = last_seq();
        l = tl_loop_new(NULL, "expected.img", 32 << 20, "mkfs.ext4 -q -F -L web %s");
        assert_non_null(l);
        reconcile();
        assert_int_equal(count_drift("missing", "web"), 0);
        assert_int_equal(count_drift("unexpected_fs", "web"), 0);
        assert_int_equal(count_drift("label_mismatch", "web"), 0);
        assert_int_equal(count_drift("too_small", "web"), 0);
        h = tl_cli_json(daemon_, "history");
        for (size_t i = 0; i < json_object_array_length(h); i++) {
                json_object *e = json_object_array_get_idx(h, i);
                if (tl_int(e, "seq") > seq && streq_ptr(tl_str(e, "kind"), "drift_closed") &&
                    streq_ptr(tl_str(json_object_object_get(e, "before"), "kind"), "missing"))
                        closed = true;
        }
        json_object_put(h);
        assert_true(closed);

        /* Another filesystem on it: unexpected_fs, naming the device and both sides. */
        assert_int_equal(tl_sh(&out, "mkswap %s 2>&1", l->devnode), 0);
        reconcile();
        d = drift_of("unexpected_fs", "web");
        assert_int_equal(json_object_array_length(d), 1);
        assert_int_equal(tl_int(json_object_array_get_idx(d, 0), "device_id"), id_of_file(l->file));
        assert_string_equal(tl_str(json_object_object_get(json_object_array_get_idx(d, 0), "detail"), "expected"), "ext4");
        assert_string_equal(tl_str(json_object_object_get(json_object_array_get_idx(d, 0), "detail"), "actual"), "swap");
        json_object_put(d);
        assert_int_equal(count_drift("label_mismatch", "web"), 1);

        /* Too small: the expectation asks for more than the device has. */
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' expect web --match loop-file=%s --min-size 1G >/dev/null",
                               tl_builddir(), daemon_->socket, file),
                         0);
        assert_int_equal(count_drift("too_small", "web"), 1);
        assert_int_equal(count_drift("unexpected_fs", "web"), 0); /* replaced: no fs wish any more */

        /* The list marks the device. */
        d = tl_cli_json(daemon_, "list");
        assert_string_equal(json_object_get_string(json_object_array_get_idx(
                                    json_object_object_get(device_by_file(d, l->file), "drift"), 0)),
                            "too_small");
        json_object_put(d);

        /* reconcile succeeds whatever drift it finds. */
        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' reconcile >/dev/null", tl_builddir(), daemon_->socket), 0);

        assert_int_equal(tl_sh(NULL, "'%s/blkledger' -s '%s' unexpect web", tl_builddir(), daemon_->socket), 0);
        assert_int_equal(count_drift("too_small", "web"), 0);
        free(out);
        out = NULL;
        assert_int_equal(tl_sh(&out, "'%s/blkledger' -s '%s' unexpect web 2>&1", tl_builddir(), daemon_->socket), 1);
        assert_string_equal(out, "blkledger: no such expectation: web\n");
        tl_loop_free(l);
}

static void test_duplicates(void **state) {
        struct tl_loop *a, *b, *c1, *c2;
        _cleanup_free_ char *clone_cmd = NULL;
        json_object *d;
        int64_t ida, idb, id1, id2;

        /* A cloned image: the same filesystem UUID on two devices. */
        a = tl_loop_new(NULL, "orig.img", 16 << 20, "mkfs.ext4 -q -F %s");
        assert_non_null(a);
        assert_true(asprintf(&clone_cmd, "cp --sparse=always '%s' %%s", a->file) > 0);
        b = tl_loop_new(NULL, "clone.img", 16 << 20, clone_cmd);
        assert_non_null(b);
        reconcile();
        ida = id_of_file(a->file);
        idb = id_of_file(b->file);
        assert_true(ida > 0 && idb > 0 && ida != idb);
        d = drift_of("duplicate_uuid", NULL);
        {
                bool sa = false, sb = false;
                for (size_t i = 0; i < json_object_array_length(d); i++) {
                        int64_t id = tl_int(json_object_array_get_idx(d, i), "device_id");
                        sa |= id == ida;
                        sb |= id == idb;
                }
                assert_true(sa && sb);
        }
        json_object_put(d);
        /* Different images: no identity conflict. */
        assert_int_equal(count_drift("identity_conflict", NULL), 0);

        /* One image attached twice: two records, identity_conflict on both. */
        c1 = tl_loop_new(NULL, "twice.img", 16 << 20, NULL);
        assert_non_null(c1);
        c2 = tl_loop_attach_again(c1);
        assert_non_null(c2);
        reconcile();
        d = tl_cli_json(daemon_, "list");
        id1 = tl_int(present_at(d, c1->devnode), "id");
        id2 = tl_int(present_at(d, c2->devnode), "id");
        assert_true(id1 > 0 && id2 > 0 && id1 != id2);
        assert_string_equal(tl_str(present_at(d, c1->devnode), "identity"), tl_str(present_at(d, c2->devnode), "identity"));
        json_object_put(d);
        assert_int_equal(count_drift("identity_conflict", NULL), 2);

        /* Detach the second: the conflict closes by itself. */
        tl_loop_detach(c2);
        reconcile();
        assert_int_equal(count_drift("identity_conflict", NULL), 0);
        tl_loop_free(c2);
        tl_loop_free(c1);
        tl_loop_free(a);
        tl_loop_free(b);
        reconcile();
        assert_int_equal(count_drift("duplicate_uuid", NULL), 0);
}

static void test_reconcile_cli(void **state) {
        _cleanup_free_ char *out = NULL;
        json_object *r;

        r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        assert_true(tl_int(r, "checked") >= 0);
        assert_true(tl_int(r, "duration_ms") >= 0);
        assert_int_equal(tl_int(r, "unresponsive"), 0);
        assert_true(json_object_object_get_ex(r, "appeared", NULL));
        assert_true(json_object_object_get_ex(r, "disappeared", NULL));
        assert_true(json_object_object_get_ex(r, "changed", NULL));
        json_object_put(r);
        assert_int_equal(tl_sh(&out, "'%s/blkledger' reconcile --help", tl_builddir()), 0);
        assert_non_null(strstr(out, "Usage: blkledger"));
        free(out);
        out = NULL;
        /* Root only. */
        assert_int_equal(tl_sh(&out, "setpriv --reuid=65534 --regid=65534 --clear-groups '%s/blkledger' -s '%s' "
                                     "reconcile 2>&1",
                               tl_builddir(), daemon_->socket),
                         1);
        assert_non_null(strstr(out, "permission denied"));
        r = tl_cli_json(daemon_, "status");
        assert_true(tl_int(r, "rescans") >= 1);
        assert_int_equal(tl_int(r, "overflows"), 0);
        json_object_put(r);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_changes_while_down),
                cmocka_unit_test(test_served_unverified_at_start),
                cmocka_unit_test(test_renamed_keeps_record),
                cmocka_unit_test(test_renamed_while_down),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_expectations),
                cmocka_unit_test(test_duplicates),
                cmocka_unit_test(test_reconcile_cli),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
