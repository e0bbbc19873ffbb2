/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: managed volumes on real loop devices, real mkfs and resize tools: create
 * (idempotent), list, resize with the filesystem grown and a file's checksum intact,
 * detach and attach, restart, delete; a mounted volume is never detached or deleted
 * without --force; a create that mkfs refuses is rolled back without a trace; a volume
 * detached behind the daemon's back is attached again by the next pass; names that try
 * path tricks are refused. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_daemon *daemon_;
static char *voldir, *mnt;

static int setup(void **state) {
        const char *extra[3] = {};

        tl_require_devices();
        if (access("/usr/sbin/mkfs.ext4", X_OK) < 0 && access("/sbin/mkfs.ext4", X_OK) < 0)
                tl_skip("mkfs.ext4 (e2fsprogs) is not installed");
        /* Outside the test's --scope directory: the daemon adds its own volumes. */
        assert_true(asprintf(&voldir, "%s/vol", tl_tmpdir()) > 0);
        assert_true(asprintf(&mnt, "%s/mnt", tl_tmpdir()) > 0);
        mkdir(mnt, 0755);
        assert_true(asprintf((char **) &extra[0], "--volume-dir=%s", voldir) > 0);
        daemon_ = tl_daemon_start("volume", extra);
        free((char *) extra[0]);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_sh(NULL, "umount '%s' 2>/dev/null", mnt);
        tl_daemon_free(daemon_);
        /* Volumes outlive the daemon by design: detach what the test made. */
        tl_detach_loops_under(voldir);
        free(voldir);
        free(mnt);
        return 0;
}

/* Runs the CLI; returns its exit status, output (stdout and stderr) in *out. */
/* The CLI against the daemon under test. */
#define cli(out, ...) tl_cli(daemon_, out, __VA_ARGS__)

static json_object *volume(const char *name) {
        _cleanup_free_ char *args = NULL;
        json_object *o;

        assert_true(asprintf(&args, "volume show %s", name) > 0);
        o = tl_cli_json(daemon_, args);
        assert_non_null(o);
        return o;
}

static bool listed(const char *name) {
        json_object *l = tl_cli_json(daemon_, "volume list");
        bool found;

        assert_non_null(l);
        found = tl_find_device(l, "name", name) != NULL;
        json_object_put(l);
        return found;
}

/* Loop devices the kernel has attached to file. */
static int loops_of(const char *file) {
        _cleanup_free_ char *out = NULL;
        int64_t n;

        assert_int_equal(tl_sh(&out, "losetup -j '%s' | wc -l", file), 0);
        assert_int_equal(parse_int64(strtok(out, "\n"), &n), 0);
        return (int) n;
}

static char *checksum(void) {
        char *out = NULL;

        assert_int_equal(tl_sh(&out, "sha256sum < '%s/data' | cut -d' ' -f1", mnt), 0);
        return out;
}

static bool have_cap_sys_resource(void) {
        _cleanup_free_ char *out = NULL;
        uint64_t caps;

        if (tl_sh(&out, "awk '/^CapEff/ { print $2 }' /proc/self/status") != 0 || !out)
                return false;
        caps = strtoull(out, NULL, 16);
        return caps & (1ULL << 24);
}

static void test_lifecycle(void **state) {
        _cleanup_free_ char *out = NULL, *file = NULL, *sum = NULL, *sum2 = NULL;
        json_object *v, *dev, *list;
        char devnode[64];

        assert_int_equal(cli(&out, "volume create data --size 64M --fs ext4 --label vdata"), 0);
        v = volume("data");
        assert_string_equal(tl_str(v, "state"), "attached");
        assert_int_equal(tl_int(v, "size_bytes"), 64 << 20);
        assert_string_equal(tl_str(v, "fs_type"), "ext4");
        assert_non_null(tl_str(v, "devnode"));
        snprintf(devnode, sizeof(devnode), "%s", tl_str(v, "devnode"));
        file = strdup(tl_str(v, "backing_file"));
        assert_true(startswith(file, voldir) != NULL);
        json_object_put(v);
        assert_int_equal(loops_of(file), 1);
        {
                _cleanup_free_ char *type = tl_blkid(devnode, "TYPE"), *label = tl_blkid(devnode, "LABEL");
                assert_string_equal(type, "ext4");
                assert_string_equal(label, "vdata");
        }

        /* The same create again: the same volume, no error, no second device. */
        free(out);
        assert_int_equal(cli(&out, "volume create data --size 64M --fs ext4 --label vdata"), 0);
        assert_int_equal(loops_of(file), 1);
        /* Other parameters: refused, nothing changed. */
        free(out);
        assert_int_equal(cli(&out, "volume create data --size 32M"), 1);
        assert_non_null(strstr(out, "exists"));

        /* The volume directory is in the daemon's scope: the ledger sees the device. */
        assert_int_equal(cli(NULL, "reconcile"), 0);
        list = tl_cli_json(daemon_, "list --state present");
        dev = tl_find_device(list, "loop_backing_file", file);
        assert_non_null(dev);
        assert_string_equal(tl_str(dev, "fs_type"), "ext4");
        json_object_put(list);

        /* Mounted: delete and detach are refused and change nothing. */
        assert_int_equal(tl_sh(NULL, "mount '%s' '%s' && head -c 3M /dev/urandom > '%s/data' && sync", devnode, mnt,
                               mnt),
                         0);
        sum = checksum();
        free(out);
        assert_int_equal(cli(&out, "volume delete data"), 1);
        assert_non_null(strstr(out, "mounted on"));
        free(out);
        assert_int_equal(cli(&out, "volume detach data"), 1);
        assert_non_null(strstr(out, "--force"));
        v = volume("data");
        assert_string_equal(tl_str(v, "state"), "attached");
        json_object_put(v);
        assert_int_equal(access(file, F_OK), 0);
        assert_int_equal(loops_of(file), 1);

        /* Online growth needs CAP_SYS_RESOURCE (EXT4_IOC_RESIZE_FS); without it the
         * action fails, says why, and leaves the volume as it was. */
        free(out);
        if (have_cap_sys_resource()) {
                assert_int_equal(cli(&out, "volume resize data --size 96M"), 0);
                v = volume("data");
                assert_int_equal(tl_int(v, "size_bytes"), 96 << 20);
                json_object_put(v);
        } else {
                assert_int_equal(cli(&out, "volume resize data --size 96M"), 1);
                assert_non_null(strstr(out, "resize2fs"));
                v = volume("data");
                assert_string_equal(tl_str(v, "state"), "attached");
                assert_int_equal(tl_int(v, "size_bytes"), 64 << 20);
                json_object_put(v);
        }
        assert_int_equal(tl_sh(NULL, "umount '%s'", mnt), 0);

        /* Offline growth: e2fsck, then resize2fs; the file, the device, the fs grow. */
        free(out);
        assert_int_equal(cli(&out, "volume resize data --size 128M"), 0);
        v = volume("data");
        assert_int_equal(tl_int(v, "size_bytes"), 128 << 20);
        json_object_put(v);
        free(out);
        assert_int_equal(tl_sh(&out, "blockdev --getsize64 %s", devnode), 0);
        assert_int_equal(strtoll(out, NULL, 10), 128 << 20);
        free(out);
        assert_int_equal(tl_sh(&out, "dumpe2fs -h %s 2>/dev/null | awk -F: '/^Block count/ { c = $2 } /^Block size/ "
                                     "{ s = $2 } END { print c * s }'",
                               devnode),
                         0);
        assert_int_equal(strtoll(out, NULL, 10), 128 << 20);

        /* Detach, twice; attach, twice. */
        free(out);
        assert_int_equal(cli(&out, "volume detach data"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume detach data"), 0);
        v = volume("data");
        assert_string_equal(tl_str(v, "state"), "detached");
        assert_null(tl_str(v, "devnode"));
        json_object_put(v);
        assert_int_equal(loops_of(file), 0);
        free(out);
        assert_int_equal(cli(&out, "volume attach data"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume attach data"), 0);
        assert_int_equal(loops_of(file), 1);

        /* A restart keeps everything; the content is intact. */
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_int_equal(loops_of(file), 1); /* volumes outlive the daemon */
        assert_int_equal(tl_daemon_restart(daemon_), 0);
        v = volume("data");
        assert_string_equal(tl_str(v, "state"), "attached");
        assert_int_equal(tl_int(v, "size_bytes"), 128 << 20);
        snprintf(devnode, sizeof(devnode), "%s", tl_str(v, "devnode"));
        json_object_put(v);
        assert_int_equal(tl_sh(NULL, "mount '%s' '%s'", devnode, mnt), 0);
        sum2 = checksum();
        assert_string_equal(sum, sum2);
        assert_int_equal(tl_sh(NULL, "umount '%s'", mnt), 0);

        /* Delete, twice: the second is a no-op, not an error. */
        free(out);
        assert_int_equal(cli(&out, "volume delete data"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume delete data"), 0);
        assert_false(listed("data"));
        assert_int_equal(access(file, F_OK), -1);
        assert_int_equal(loops_of(file), 0);
        free(out);
        assert_int_equal(cli(&out, "volume delete never-was"), 1);
        assert_non_null(strstr(out, "no such volume"));

        /* Every action left an ended intent. */
        list = tl_cli_json(daemon_, "intents");
        assert_non_null(list);
        assert_true(json_object_array_length(list) >= 6);
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *it = json_object_array_get_idx(list, i), *x;
                assert_true(json_object_object_get_ex(it, "id", &x));
                assert_true(json_object_object_get_ex(it, "attempts", &x));
                assert_true(json_object_object_get_ex(it, "last_error", &x));
                assert_string_equal(tl_str(it, "target"), "data");
                assert_true(streq(tl_str(it, "state"), "succeeded") || streq(tl_str(it, "state"), "failed"));
        }
        json_object_put(list);
}

static void test_refusals(void **state) {
        static const char *const bad_names[] = { "../escape", "a/b", ".hidden", "123", "loop0" };
        _cleanup_free_ char *out = NULL, *ls = NULL;

        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                free(out);
                assert_int_equal(cli(&out, "volume create --size 1M -- '%s'", bad_names[i]), 1);
                assert_non_null(strstr(out, "invalid value for name"));
        }
        free(out);
        assert_int_equal(cli(&out, "volume create odd --size 1000"), 1);
        assert_non_null(strstr(out, "size_bytes"));
        free(out);
        assert_int_equal(cli(&out, "volume create odd --size 1M --fs zfs"), 1);
        assert_non_null(strstr(out, "fs_type"));
        free(out);
        assert_int_equal(cli(&out, "volume show nothing-here"), 1);
        assert_non_null(strstr(out, "no such volume"));
        free(out);
        assert_int_equal(cli(&out, "volume create"), 2); /* the CLI says what is missing */
        /* Shrinking is refused. */
        free(out);
        assert_int_equal(cli(&out, "volume create small --size 8M"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume resize small --size 4M"), 1);
        assert_non_null(strstr(out, "only grow"));
        free(out);
        assert_int_equal(cli(&out, "volume delete small"), 0);
        assert_int_equal(tl_sh(&ls, "ls -A '%s'", voldir), 0);
        assert_string_equal(ls ? ls : "", "");
}

static bool no_loop_in_voldir(void *userdata) {
        _cleanup_free_ char *ls = NULL;

        (void) userdata;
        return tl_sh(&ls, "losetup -a | grep -c '%s/' || true", voldir) == 0 && strtol(ls, NULL, 10) == 0;
}

static void test_rollback(void **state) {
        _cleanup_free_ char *out = NULL, *file = NULL;
        json_object *list, *last;

        if (access("/usr/sbin/mkfs.xfs", X_OK) < 0 && access("/sbin/mkfs.xfs", X_OK) < 0)
                skip();
        /* mkfs.xfs refuses 16 MiB: the create is undone, file, device and row. */
        assert_int_equal(cli(&out, "volume create tiny --size 16M --fs xfs"), 1);
        assert_non_null(strstr(out, "mkfs.xfs"));
        assert_false(listed("tiny"));
        assert_true(asprintf(&file, "%s/tiny.img", voldir) > 0);
        assert_int_equal(access(file, F_OK), -1);
        /* A device that udev (or anyone) still has open is detached by the kernel at its
         * last close (autoclear, see loopdev.h): not always by the time the CLI returns. */
        assert_true(tl_wait_for(5000, no_loop_in_voldir, NULL));
        list = tl_cli_json(daemon_, "intents");
        last = json_object_array_get_idx(list, json_object_array_length(list) - 1);
        assert_string_equal(tl_str(last, "target"), "tiny");
        assert_string_equal(tl_str(last, "state"), "rolled_back");
        assert_non_null(strstr(tl_str(last, "last_error"), "mkfs.xfs"));
        json_object_put(list);
        /* The name is free again. */
        free(out);
        assert_int_equal(cli(&out, "volume create tiny --size 16M"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume delete tiny"), 0);
}

static bool reattached(void *userdata) {
        json_object *v = volume(userdata);
        bool r = tl_str(v, "devnode") != NULL;
        json_object_put(v);
        return r;
}

static void test_reattach(void **state) {
        _cleanup_free_ char *out = NULL;
        json_object *v;

        assert_int_equal(cli(&out, "volume create keep --size 8M"), 0);
        v = volume("keep");
        /* Detached behind the daemon's back (or gone with a reboot): desired state
         * "attached" is carried out again by the next pass. */
        assert_int_equal(tl_sh(NULL, "losetup -d %s", tl_str(v, "devnode")), 0);
        json_object_put(v);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        assert_true(tl_wait_for(10000, reattached, "keep"));
        free(out);
        assert_int_equal(cli(&out, "volume delete keep"), 0);
}

static void test_idempotency_key(void **state) {
        _cleanup_free_ char *out = NULL;
        json_object *list;
        size_t n;

        assert_int_equal(cli(&out, "volume create keyed --size 8M --idempotency-key k-1"), 0);
        list = tl_cli_json(daemon_, "intents");
        n = json_object_array_length(list);
        json_object_put(list);
        /* The same key: the first call's outcome, no new intent. */
        free(out);
        assert_int_equal(cli(&out, "volume create keyed --size 8M --idempotency-key k-1"), 0);
        list = tl_cli_json(daemon_, "intents");
        assert_int_equal(json_object_array_length(list), n);
        json_object_put(list);
        /* The key belongs to that call: another action with it is refused. */
        free(out);
        assert_int_equal(cli(&out, "volume delete keyed --idempotency-key k-1"), 1);
        assert_non_null(strstr(out, "idempotency_key"));
        free(out);
        assert_int_equal(cli(&out, "volume delete keyed --idempotency-key k-2"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume delete keyed --idempotency-key k-2"), 0);
}

static json_object *drift_named(const char *name) {
        json_object *d = tl_cli_json(daemon_, "drift"), *r;

        assert_non_null(d);
        r = tl_find_device(d, "name", name);
        r = r ? json_object_get(r) : NULL;
        json_object_put(d);
        return r;
}

static void test_orphans(void **state) {
        _cleanup_free_ char *out = NULL, *stray = NULL, *gone = NULL;
        struct tl_loop *l;
        json_object *d, *v;

        /* A file nobody claims, then a loop device on it: drift both ways. */
        assert_true(asprintf(&stray, "%s/stray.img", voldir) > 0);
        assert_int_equal(tl_sh(NULL, "truncate -s 8M '%s'", stray), 0);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        d = drift_named("stray.img");
        assert_non_null(d);
        assert_string_equal(tl_str(d, "kind"), "orphan_file");
        json_object_put(d);
        l = tl_loop_attach_file(stray);
        assert_non_null(l);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        d = drift_named(l->devnode + strlen("/dev/"));
        assert_non_null(d);
        assert_string_equal(tl_str(d, "kind"), "orphan_loop");
        json_object_put(d);

        /* Adopting is deliberate; the drift closes. */
        assert_int_equal(cli(&out, "volume adopt '%s'", stray), 0);
        v = volume("stray");
        assert_string_equal(tl_str(v, "state"), "attached");
        assert_string_equal(tl_str(v, "devnode"), l->devnode);
        json_object_put(v);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        assert_null(drift_named("stray.img"));
        assert_null(drift_named(l->devnode + strlen("/dev/")));
        /* This test holds the device open for writing: refused without --force. */
        free(out);
        assert_int_equal(cli(&out, "volume delete stray"), 1);
        assert_non_null(strstr(out, "open for writing"));
        free(out);
        assert_int_equal(cli(&out, "volume delete stray --force"), 0);
        tl_loop_free(l);
        assert_int_equal(access(stray, F_OK), -1);

        /* A row whose file vanished: drift; forgetting it is deliberate too. */
        free(out);
        assert_int_equal(cli(&out, "volume create gone --size 8M"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume detach gone"), 0);
        assert_true(asprintf(&gone, "%s/gone.img", voldir) > 0);
        assert_int_equal(unlink(gone), 0);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        d = drift_named("gone");
        assert_non_null(d);
        assert_string_equal(tl_str(d, "kind"), "volume_file_missing");
        json_object_put(d);
        free(out);
        assert_int_equal(cli(&out, "volume forget gone"), 0);
        free(out);
        assert_int_equal(cli(&out, "volume forget gone"), 0);
        assert_false(listed("gone"));
        assert_int_equal(cli(NULL, "reconcile"), 0);
        assert_null(drift_named("gone"));
}

static void test_device_named(void **state) {
        _cleanup_free_ char *out = NULL, *file = NULL;
        json_object *list, *dev;

        assert_int_equal(cli(&out, "volume create named-one --size 8M"), 0);
        assert_true(asprintf(&file, "%s/named-one.img", voldir) > 0);
        assert_int_equal(cli(NULL, "reconcile"), 0);
        list = tl_cli_json(daemon_, "list --state present");
        dev = tl_find_device(list, "loop_backing_file", file);
        assert_non_null(dev);
        assert_string_equal(tl_str(dev, "name"), "named-one");
        json_object_put(list);
        free(out);
        assert_int_equal(cli(&out, "volume delete named-one"), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lifecycle),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_rollback),
                cmocka_unit_test(test_reattach),
                cmocka_unit_test(test_idempotency_key),
                cmocka_unit_test(test_orphans),
                cmocka_unit_test(test_device_named),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
