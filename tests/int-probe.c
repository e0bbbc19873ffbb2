/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the probe engine finds what libblkid finds on the real device. One loop
 * device per kind of content, made with Debian's own tools (ext2, ext3, ext4, xfs, btrfs,
 * vfat, exfat, swap, squashfs, iso9660, LUKS1, LUKS2, blank); the daemon probes them all in
 * one pass through its io_uring read plan and worker pool, and every field it records
 * must equal `blkid -p -o export` on the same device: TYPE, UUID, LABEL, VERSION, USAGE,
 * PTTYPE, PTUUID. A blank device must have none. The test is skipped (77) when one of the
 * tools is missing: tools/debian-deps.sh test installs them all. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

struct kind {
        const char *name;
        const char *tool;       /* must be on PATH */
        uint64_t size;
        const char *mkfs;       /* "%s" is the image; NULL: blank */
        const char *expect_type; /* what blkid must say too, so that no test passes by both failing */
        struct tl_loop *loop;
};

#define MIB (1024 * 1024ull)
static struct kind kinds[] = {
        { "ext2", "mkfs.ext2", 64 * MIB, "mkfs.ext2 -q -F -L p-ext2 %s", "ext2" },
        { "ext3", "mkfs.ext3", 64 * MIB, "mkfs.ext3 -q -F -L p-ext3 %s", "ext3" },
        { "ext4", "mkfs.ext4", 64 * MIB, "mkfs.ext4 -q -F -L p-ext4 %s", "ext4" },
        /* xfsprogs 6.1 refuses file systems under 300 MB; the image is sparse. */
        { "xfs", "mkfs.xfs", 320 * MIB, "mkfs.xfs -q -f -L p-xfs %s", "xfs" },
        { "btrfs", "mkfs.btrfs", 128 * MIB, "mkfs.btrfs -q -f -L p-btrfs %s", "btrfs" },
        { "vfat", "mkfs.vfat", 64 * MIB, "mkfs.vfat -n PVFAT %s", "vfat" },
        { "exfat", "mkfs.exfat", 64 * MIB, "mkfs.exfat -L p-exfat %s", "exfat" },
        { "swap", "mkswap", 64 * MIB, "mkswap -L p-swap %s", "swap" },
        /* These two write the whole image themselves, from a directory of a few files. */
        { "squashfs", "mksquashfs", 1 * MIB, "mksquashfs \"$SRC\" %s -noappend -quiet", "squashfs" },
        { "iso9660", "genisoimage", 1 * MIB, "genisoimage -quiet -V P_ISO -o %s \"$SRC\"", "iso9660" },
        /* PBKDF2 with few iterations: the test is about the header, not the key. */
        { "luks1", "cryptsetup", 32 * MIB,
          "cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file \"$KEY\" %s",
          "crypto_LUKS" },
        { "luks2", "cryptsetup", 32 * MIB,
          "cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label p-luks2 "
          "--key-file \"$KEY\" %s",
          "crypto_LUKS" },
        { "blank", NULL, 64 * MIB, NULL, NULL },
};

/* The daemon's field for each of blkid's keys. */
static const char *const keys[][2] = {
        { "TYPE", "fs_type" },     { "UUID", "fs_uuid" },  { "LABEL", "fs_label" }, { "VERSION", "fs_version" },
        { "USAGE", "fs_usage" },   { "PTTYPE", "pt_type" }, { "PTUUID", "pt_uuid" },
};

static struct tl_daemon *daemon_;
static json_object *listing;

static int setup(void **state) {
        _cleanup_free_ char *missing = NULL, *src = NULL, *key = NULL;

        tl_require_devices();
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                char *m;
                if (!kinds[i].tool || tl_sh(NULL, "command -v %s >/dev/null", kinds[i].tool) == 0)
                        continue;
                if (asprintf(&m, "%s %s", missing ? missing : "missing tools (tools/debian-deps.sh test installs them):",
                             kinds[i].tool) < 0)
                        return -1;
                free(missing);
                missing = m;
        }
        if (missing)
                tl_skip(missing);

        /* The mkfs commands find their inputs in the environment. */
        if (asprintf(&src, "%s/src", tl_tmpdir()) < 0 || asprintf(&key, "%s/key", tl_tmpdir()) < 0 ||
            tl_sh(NULL, "mkdir -p '%s' && echo content > '%s/a.txt' && seq 1 10000 > '%s/b.txt' && "
                        "head -c 64 /dev/urandom > '%s'",
                  src, src, src, key) != 0)
                return -1;
        setenv("SRC", src, 1);
        setenv("KEY", key, 1);

        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                _cleanup_free_ char *file = NULL;
                if (asprintf(&file, "%s.img", kinds[i].name) < 0)
                        return -1;
                kinds[i].loop = tl_loop_new(NULL, file, kinds[i].size, kinds[i].mkfs);
                if (!kinds[i].loop) {
                        fprintf(stderr, "cannot make the %s device\n", kinds[i].name);
                        return -1;
                }
        }
        daemon_ = tl_daemon_start("probe", NULL);
        if (!daemon_)
                return -1;
        listing = tl_cli_json(daemon_, "list");
        return listing ? 0 : -1;
}

static int teardown(void **state) {
        json_object_put(listing);
        tl_daemon_free(daemon_);
        return 0;
}

static void check_kind(const struct kind *k) {
        json_object *d = tl_find_device(listing, "devnode", k->loop->devnode);
        _cleanup_free_ char *type = tl_blkid(k->loop->devnode, "TYPE");

        assert_non_null(d);
        assert_string_equal(tl_str(d, "state"), "present");
        assert_true(json_object_get_boolean(json_object_object_get(d, "verified")));
        if (k->expect_type) {
                assert_non_null(type);
                assert_string_equal(type, k->expect_type);
        } else
                assert_null(type);

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                _cleanup_free_ char *want = tl_blkid(k->loop->devnode, keys[i][0]);
                const char *have = tl_str(d, keys[i][1]);

                if (!streq_ptr(want, have))
                        fail_msg("%s: %s is \"%s\" by blkid -p, \"%s\" by the daemon (%s)", k->name, keys[i][0],
                                 want ? want : "(none)", have ? have : "(none)", keys[i][1]);
        }
}

#define KIND_TEST(n)                                                                                      \
        static void test_##n(void **state) {                                                             \
                for (size_t i = 0; i < ELEMENTSOF(kinds); i++)                                           \
                        if (streq(kinds[i].name, #n))                                                    \
                                return check_kind(&kinds[i]);                                            \
                fail_msg("no kind " #n);                                                                 \
        }
KIND_TEST(ext2)
KIND_TEST(ext3)
KIND_TEST(ext4)
KIND_TEST(xfs)
KIND_TEST(btrfs)
KIND_TEST(vfat)
KIND_TEST(exfat)
KIND_TEST(swap)
KIND_TEST(squashfs)
KIND_TEST(iso9660)
KIND_TEST(luks1)
KIND_TEST(luks2)
KIND_TEST(blank)

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ext2),     cmocka_unit_test(test_ext3),  cmocka_unit_test(test_ext4),
                cmocka_unit_test(test_xfs),      cmocka_unit_test(test_btrfs), cmocka_unit_test(test_vfat),
                cmocka_unit_test(test_exfat),    cmocka_unit_test(test_swap),  cmocka_unit_test(test_squashfs),
                cmocka_unit_test(test_iso9660),  cmocka_unit_test(test_luks1), cmocka_unit_test(test_luks2),
                cmocka_unit_test(test_blank),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
