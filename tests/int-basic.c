/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: on real loop devices (ext4, swap, blank), the daemon's ledger agrees with
 * blkid -p, follows attach, detach and reformat, ignores devices outside its scope,
 * keeps only its documented capabilities with no_new_privs in every thread, and
 * handles SIGHUP and SIGTERM. */
#include "config.h"

#include <dirent.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_loop *ext4, *swap, *blank;
static struct tl_daemon *daemon_;

static int setup(void **state) {
        tl_require_devices();
        ext4 = tl_loop_new(NULL, "ext4.img", 64 << 20, "mkfs.ext4 -q -F -L data %s");
        swap = tl_loop_new(NULL, "swap.img", 64 << 20, "mkswap -L sw %s >/dev/null");
        blank = tl_loop_new(NULL, "blank.img", 64 << 20, NULL);
        if (!ext4 || !swap || !blank)
                return -1;
        daemon_ = tl_daemon_start("basic", NULL);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        if (daemon_ && tl_daemon_alive(daemon_)) {
                tl_daemon_stop(daemon_, SIGTERM);
        }
        tl_daemon_free(daemon_);
        tl_loop_free(ext4);
        tl_loop_free(swap);
        tl_loop_free(blank);
        return 0;
}

static json_object *list(void) {
        json_object *l = tl_cli_json(daemon_, "list");
        assert_non_null(l);
        assert_true(json_object_is_type(l, json_type_array));
        return l;
}

static void assert_rfc3339(const char *s) {
        int64_t t;
        assert_non_null(s);
        assert_int_equal(parse_rfc3339(s, &t), 0);
        assert_true(t > 1500000000LL * USEC_PER_SEC);
}

static void test_list_agrees_with_blkid(void **state) {
        json_object *l = list();
        struct tl_loop *loops[] = { ext4, swap, blank };

        assert_int_equal(json_object_array_length(l), 3);
        for (size_t i = 0; i < ELEMENTSOF(loops); i++) {
                json_object *d = tl_find_device(l, "loop_backing_file", loops[i]->file);
                static const char *const keys[][2] = { { "TYPE", "fs_type" }, { "UUID", "fs_uuid" },
                                                       { "LABEL", "fs_label" } };
                struct stat st;
                char dev[32];

                assert_non_null(d);
                for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
                        _cleanup_free_ char *want = tl_blkid(loops[i]->devnode, keys[k][0]);
                        const char *got = tl_str(d, keys[k][1]);
                        if (!streq_ptr(want, got))
                                fail_msg("%s: blkid says %s=%s, ledger says %s=%s", loops[i]->devnode, keys[k][0],
                                         want ? want : "(none)", keys[k][1], got ? got : "null");
                }
                assert_string_equal(tl_str(d, "state"), "present");
                assert_int_equal(tl_int(d, "size_bytes"), 64 << 20);
                assert_string_equal(tl_str(d, "loop_backing_file"), loops[i]->file);
                assert_int_equal(stat(loops[i]->devnode, &st), 0);
                snprintf(dev, sizeof(dev), "%u:%u", major(st.st_rdev), minor(st.st_rdev));
                assert_string_equal(tl_str(d, "dev"), dev);
                assert_true(tl_int(d, "id") > 0);
                assert_rfc3339(tl_str(d, "first_seen"));
                assert_rfc3339(tl_str(d, "last_seen"));
        }
        /* blkid found what we made, so the comparison above compared something. */
        assert_string_equal(tl_str(tl_find_device(l, "devnode", ext4->devnode), "fs_type"), "ext4");
        assert_string_equal(tl_str(tl_find_device(l, "devnode", ext4->devnode), "fs_label"), "data");
        assert_string_equal(tl_str(tl_find_device(l, "devnode", swap->devnode), "fs_type"), "swap");
        assert_null(tl_str(tl_find_device(l, "devnode", blank->devnode), "fs_type"));
        json_object_put(l);
}

static void test_list_json_shape(void **state) {
        static const char *const keys[] = {
                "id", "devnode", "dev", "state", "size_bytes", "read_only", "fs_type", "fs_uuid", "fs_label",
                "pt_type", "model", "serial", "wwn", "loop_backing_file", "parent", "first_seen", "last_seen",
        };
        json_object *l = list(), *d = json_object_array_get_idx(l, 0), *v;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (!json_object_object_get_ex(d, keys[i], &v))
                        fail_msg("list --json lacks %s", keys[i]);
        /* Absent values are null, not missing or empty strings. */
        assert_true(json_object_object_get_ex(d, "wwn", &v) && v == NULL);
        json_object_put(l);
}

static void test_status(void **state) {
        json_object *s = tl_cli_json(daemon_, "status");
        const char *src;

        assert_non_null(s);
        assert_string_equal(tl_str(s, "version"), PACKAGE_VERSION);
        assert_int_equal(tl_int(s, "devices"), 3);
        src = tl_str(s, "event_source");
        assert_non_null(src);
        assert_true(streq(src, "udev") || streq(src, "kernel"));
        if (access("/run/udev/control", F_OK) < 0)
                assert_string_equal(src, "kernel");
        assert_rfc3339(tl_str(s, "last_full_scan"));
        json_object_put(s);
}

struct gone_check {
        const char *file;
        const char *state;
};

/* By backing file: a loop number is reused by the next attach, a file is not. */
static bool device_in_state(void *userdata) {
        struct gone_check *c = userdata;
        json_object *l = tl_cli_json(daemon_, "list");
        json_object *d = tl_find_device(l, "loop_backing_file", c->file);
        bool ok = d && streq_ptr(tl_str(d, "state"), c->state);

        json_object_put(l);
        return ok;
}

static json_object *events_of(int64_t id, const char *kind) {
        json_object *h = tl_cli_json(daemon_, "history"), *out = json_object_new_array();

        assert_non_null(h);
        for (size_t i = 0; i < json_object_array_length(h); i++) {
                json_object *e = json_object_array_get_idx(h, i);
                if (tl_int(e, "device_id") == id && streq_ptr(tl_str(e, "kind"), kind))
                        json_object_array_add(out, json_object_get(e));
        }
        json_object_put(h);
        return out;
}

static void test_detach_within_a_second(void **state) {
        struct gone_check c = { blank->file, "gone" };
        json_object *l = list(), *ev;
        int64_t id = tl_int(tl_find_device(l, "devnode", blank->devnode), "id");

        json_object_put(l);
        tl_loop_detach(blank);
        assert_true(tl_wait_for(1000, device_in_state, &c));
        ev = events_of(id, "disappeared");
        assert_int_equal(json_object_array_length(ev), 1);
        assert_string_equal(tl_str(json_object_object_get(json_object_array_get_idx(ev, 0), "after"), "state"), "gone");
        json_object_put(ev);
        assert_true(tl_daemon_alive(daemon_));
        /* The record stays, gone, with its last known facts. */
        l = list();
        assert_int_equal(json_object_array_length(l), 3);
        json_object_put(l);
}

static void test_attach_new_device(void **state) {
        struct tl_loop *n = tl_loop_new(NULL, "new.img", 32 << 20, "mkfs.ext4 -q -F -L fresh %s");
        _cleanup_free_ char *file = NULL;
        struct gone_check c;
        json_object *l, *d, *ev;

        assert_non_null(n);
        file = strdup(n->file);
        c = (struct gone_check) { file, "present" };
        assert_true(tl_wait_for(1000, device_in_state, &c));
        l = list();
        d = tl_find_device(l, "loop_backing_file", n->file);
        assert_string_equal(tl_str(d, "devnode"), n->devnode);
        assert_string_equal(tl_str(d, "fs_label"), "fresh");
        ev = events_of(tl_int(d, "id"), "appeared");
        assert_int_equal(json_object_array_length(ev), 1);
        json_object_put(ev);
        json_object_put(l);
        /* Detached again: gone, and the next test reuses its loop number. */
        c.state = "gone";
        tl_loop_free(n);
        assert_true(tl_wait_for(1000, device_in_state, &c));
}

static void test_reattach_same_file_same_record(void **state) {
        json_object *l = list(), *d;
        struct gone_check c;
        int64_t id = tl_int(tl_find_device(l, "loop_backing_file", blank->file), "id");

        json_object_put(l);
        assert_int_equal(tl_loop_attach(blank), 0);
        c = (struct gone_check) { blank->file, "present" };
        assert_true(tl_wait_for(1000, device_in_state, &c));
        l = list();
        d = tl_find_device(l, "loop_backing_file", blank->file);
        /* Identity is the backing file, not the loop number it got this time. */
        assert_int_equal(tl_int(d, "id"), id);
        assert_string_equal(tl_str(d, "devnode"), blank->devnode);
        /* ext4, swap, blank and the gone record of new.img: no duplicate of blank. */
        assert_int_equal(json_object_array_length(l), 4);
        json_object_put(l);
}

static void test_reconcile_sees_reformat(void **state) {
        _cleanup_free_ char *out = NULL;
        json_object *r, *l, *d, *ev, *e;

        /* Without udevd nothing reports a plain write to a device (mkfs would: it asks
         * the kernel to re-read the partition table, which sends "change"). A file
         * system written past the page cache, without an event; a pass looks anyway. */
        assert_int_equal(tl_sh(&out,
                               "f=%s/relabel.img && truncate -s $(blockdev --getsize64 %s) $f && "
                               "mkfs.ext4 -q -F -L relabel $f && dd if=$f of=%s bs=1M oflag=direct conv=fsync,sparse "
                               "status=none && rm -f $f 2>&1",
                               tl_tmpdir(), blank->devnode, blank->devnode),
                         0);
        r = tl_cli_json(daemon_, "reconcile");
        assert_non_null(r);
        assert_int_equal(tl_int(r, "checked"), 3);
        assert_true(tl_int(r, "changed") >= 1);
        json_object_put(r);
        l = list();
        d = tl_find_device(l, "loop_backing_file", blank->file);
        assert_string_equal(tl_str(d, "fs_type"), "ext4");
        assert_string_equal(tl_str(d, "fs_label"), "relabel");
        ev = events_of(tl_int(d, "id"), "changed");
        assert_true(json_object_array_length(ev) >= 1);
        e = json_object_array_get_idx(ev, json_object_array_length(ev) - 1);
        assert_string_equal(tl_str(json_object_object_get(e, "after"), "fs_label"), "relabel");
        assert_true(json_object_object_get_ex(json_object_object_get(e, "before"), "fs_label", NULL));
        assert_null(tl_str(json_object_object_get(e, "before"), "fs_label"));
        json_object_put(ev);
        json_object_put(l);
}

/* Deleting the backing file of an attached loop device keeps the device what it was:
 * the loop driver still knows the file's inode. */
static void test_deleted_backing_file_keeps_record(void **state) {
        _cleanup_free_ char *deleted = NULL;
        json_object *l, *d, *r;
        int64_t id, appeared_before, appeared_after;

        l = list();
        d = tl_find_device(l, "loop_backing_file", swap->file);
        id = tl_int(d, "id");
        json_object_put(l);
        l = tl_cli_json(daemon_, "history");
        appeared_before = 0;
        for (size_t i = 0; i < json_object_array_length(l); i++)
                appeared_before += streq_ptr(tl_str(json_object_array_get_idx(l, i), "kind"), "appeared");
        json_object_put(l);

        assert_int_equal(unlink(swap->file), 0);
        r = tl_cli_json(daemon_, "reconcile");
        assert_int_equal(tl_int(r, "appeared"), 0);
        assert_int_equal(tl_int(r, "disappeared"), 0);
        json_object_put(r);
        assert_true(asprintf(&deleted, "%s (deleted)", swap->file) > 0);
        l = list();
        d = tl_find_device(l, "loop_backing_file", deleted);
        assert_non_null(d);
        assert_int_equal(tl_int(d, "id"), id);
        assert_string_equal(tl_str(d, "state"), "present");
        json_object_put(l);
        l = tl_cli_json(daemon_, "history");
        appeared_after = 0;
        for (size_t i = 0; i < json_object_array_length(l); i++)
                appeared_after += streq_ptr(tl_str(json_object_array_get_idx(l, i), "kind"), "appeared");
        json_object_put(l);
        assert_int_equal(appeared_after, appeared_before);
}

static void test_out_of_scope_invisible(void **state) {
        _cleanup_free_ char *other = NULL;
        struct tl_loop *o;
        json_object *r, *l;

        assert_true(asprintf(&other, "%s/elsewhere", tl_tmpdir()) > 0);
        o = tl_loop_new(other, "x.img", 16 << 20, "mkfs.ext4 -q -F %s");
        assert_non_null(o);
        r = tl_cli_json(daemon_, "reconcile");
        json_object_put(r);
        l = list();
        assert_null(tl_find_device(l, "devnode", o->devnode));
        assert_null(tl_find_device(l, "loop_backing_file", o->file));
        json_object_put(l);
        tl_loop_free(o);
}

/* The capability fields and NoNewPrivs of /proc/.../status, the sets as masks. */
struct creds {
        uint64_t inh, prm, eff, bnd, amb;
        int nnp;
};

static bool read_creds(const char *path, struct creds *c) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[256];
        int n = 0;

        *c = (struct creds) { .nnp = -1 };
        if (!f)
                return false;
        while (fgets(line, sizeof(line), f)) {
                n += sscanf(line, "CapInh: %" SCNx64, &c->inh) + sscanf(line, "CapPrm: %" SCNx64, &c->prm) +
                     sscanf(line, "CapEff: %" SCNx64, &c->eff) + sscanf(line, "CapBnd: %" SCNx64, &c->bnd) +
                     sscanf(line, "CapAmb: %" SCNx64, &c->amb) + sscanf(line, "NoNewPrivs: %d", &c->nnp);
        }
        return n == 6;
}

/* The set units/blkledgerd.service.in documents (CapabilityBoundingSet=), as far as this
 * test has it itself: a container may lack some (CAP_SYS_RESOURCE, say). */
static void test_least_privilege(void **state) {
        const uint64_t permitted = (UINT64_C(1) << CAP_SYS_ADMIN) | (UINT64_C(1) << CAP_SYS_PTRACE) |
                                   (UINT64_C(1) << CAP_DAC_READ_SEARCH) | (UINT64_C(1) << CAP_SYS_RESOURCE);
        /* CAP_SYS_RESOURCE is for the tools only (online resize2fs). */
        const uint64_t effective = permitted & ~(UINT64_C(1) << CAP_SYS_RESOURCE);
        struct creds self, c;
        char path[128];
        struct dirent *de;
        unsigned threads = 0;
        DIR *dir;

        assert_true(read_creds("/proc/self/status", &self));
        snprintf(path, sizeof(path), "/proc/%d/status", (int) daemon_->pid);
        assert_true(read_creds(path, &c));
        assert_true(c.prm == (permitted & self.bnd));
        assert_true(c.eff == (effective & self.bnd));
        assert_true(c.bnd == (permitted & self.bnd));
        assert_true(c.inh == 0 && c.amb == 0);
        assert_int_equal(c.nnp, 1);
        /* Capabilities and no_new_privs are per thread: the probe workers too. io_uring's
         * own workers (iou-*) run no code of ours and act with the submitter's. */
        snprintf(path, sizeof(path), "/proc/%d/task", (int) daemon_->pid);
        assert_non_null(dir = opendir(path));
        while ((de = readdir(dir))) {
                _cleanup_free_ char *comm = NULL;
                char p[512];

                if (de->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "%s/%s/comm", path, de->d_name);
                if (read_one_line(p, &comm) < 0 || startswith(comm, "iou-"))
                        continue;
                snprintf(p, sizeof(p), "%s/%s/status", path, de->d_name);
                if (!read_creds(p, &c))
                        continue; /* exited meanwhile */
                fprintf(stderr, "thread %s (%s): CapPrm %" PRIx64 " CapEff %" PRIx64 " CapBnd %" PRIx64
                                " NoNewPrivs %d\n", de->d_name, comm, c.prm, c.eff, c.bnd, c.nnp);
                assert_true(c.prm == (permitted & self.bnd) && c.eff == (effective & self.bnd) &&
                            c.bnd == (permitted & self.bnd) && c.nnp == 1);
                threads++;
        }
        closedir(dir);
        assert_true(threads >= 2); /* the loop and at least one probe worker */
}

static void test_sighup_harmless(void **state) {
        json_object *s;

        kill(daemon_->pid, SIGHUP);
        usleep(200000);
        assert_true(tl_daemon_alive(daemon_));
        s = tl_cli_json(daemon_, "status");
        assert_non_null(s);
        json_object_put(s);
}

static void test_sigterm_clean_exit(void **state) {
        _cleanup_free_ char *out = NULL;

        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_int_equal(access(daemon_->socket, F_OK), -1);
        /* The journal holds the stop. */
        assert_int_equal(tl_sh(&out, "sqlite3 '%s/ledger.db' \"SELECT kind FROM events ORDER BY seq DESC LIMIT 1\"",
                               daemon_->state_dir), 0);
        assert_string_equal(out, "daemon_stopped\n");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_list_agrees_with_blkid),
                cmocka_unit_test(test_list_json_shape),
                cmocka_unit_test(test_status),
                cmocka_unit_test(test_detach_within_a_second),
                cmocka_unit_test(test_attach_new_device),
                cmocka_unit_test(test_reattach_same_file_same_record),
                cmocka_unit_test(test_reconcile_sees_reformat),
                cmocka_unit_test(test_deleted_backing_file_keeps_record),
                cmocka_unit_test(test_out_of_scope_invisible),
                cmocka_unit_test(test_least_privilege),
                cmocka_unit_test(test_sighup_harmless),
                cmocka_unit_test(test_sigterm_clean_exit),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
