/* Description: daemon/device.c and identity.c: facts and identity keys from recorded observations. */
/* Recorded observations of real hardware (tests/data/observations) give the facts read
 * from udev, sysfs and libblkid and identity keys in their documented order (a disk seen
 * with and without udevd gets one key); diffs hold exactly the changed fields; record
 * JSON has every field; hostile values break neither UTF-8 nor JSON. */
#include "config.h"

#include <dirent.h>
#include <libgen.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device.h"
#include "identity.h"
#include "observation.h"
#include "util.h"

#define REPLACEMENT "\xef\xbf\xbd"

/* ---- fixtures ---------------------------------------------------------------------- */

/* tests/data/observations, from $BLKLEDGER_TOP_SRCDIR or next to this source file. */
static char *fixture_dir(void) {
        const char *top = getenv("BLKLEDGER_TOP_SRCDIR");
        char *dir;

        if (!isempty(top)) {
                assert_true(asprintf(&dir, "%s/tests/data/observations", top) > 0);
        } else {
                _cleanup_free_ char *file = strdup(__FILE__);
                assert_non_null(file);
                assert_true(asprintf(&dir, "%s/data/observations", dirname(file)) > 0);
        }
        return dir;
}

static char *read_fixture(const char *name) {
        _cleanup_free_ char *dir = fixture_dir(), *path = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char *text = NULL;
        size_t size = 0;
        FILE *m;
        int c;

        assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
        f = fopen(path, "re");
        if (!f)
                fail_msg("cannot open fixture %s: %s", path, strerror(errno));
        m = open_memstream(&text, &size);
        assert_non_null(m);
        while ((c = fgetc(f)) != EOF)
                fputc(c, m);
        assert_int_equal(fclose(m), 0);
        return text;
}

static void parse_text(const char *what, const char *text, struct observation *ret) {
        unsigned line = 0;
        int r = observation_parse(text, ret, &line);

        if (r < 0)
                fail_msg("%s: parse error on line %u: %s", what, line, strerror(-r));
}

static void load(const char *name, struct observation *ret) {
        _cleanup_free_ char *text = read_fixture(name);

        parse_text(name, text, ret);
}

/* A copy of src without the entries named in drop (NULL-terminated). */
static void copy_without(const struct observation *src, struct observation *ret, const char *const *drop) {
        struct observation o = { .kname = strdup(src->kname) };

        assert_non_null(o.kname);
        for (size_t i = 0; i < src->n_entries; i++) {
                bool skip = false;

                for (const char *const *d = drop; d && *d; d++)
                        if (streq(src->entries[i].key, *d))
                                skip = true;
                if (!skip)
                        assert_int_equal(observation_set(&o, src->entries[i].key, src->entries[i].value), 0);
        }
        *ret = o;
}

static void facts_of(const struct observation *o, struct device_facts *ret) {
        assert_int_equal(device_facts_from_observation(o, ret), 0);
}

static char *identity_of(const struct observation *o) {
        struct device_facts f;
        char *k;

        facts_of(o, &f);
        k = identity_from_observation(o, &f);
        assert_non_null(k);
        device_facts_done(&f);
        return k;
}

static char *identity_of_text(const char *text) {
        struct observation o = {};
        char *k;

        parse_text("inline observation", text, &o);
        k = identity_of(&o);
        observation_done(&o);
        return k;
}

static char *identity_of_fixture(const char *name) {
        struct observation o = {};
        char *k;

        load(name, &o);
        k = identity_of(&o);
        observation_done(&o);
        return k;
}

static void expect_str(const char *what, const char *actual, const char *expected) {
        if (!streq_ptr(actual, expected))
                fail_msg("%s is %s%s%s, expected %s%s%s", what, actual ? "'" : "", actual ? actual : "null",
                         actual ? "'" : "", expected ? "'" : "", expected ? expected : "null",
                         expected ? "'" : "");
}

static void expect_int(const char *what, int64_t actual, int64_t expected) {
        if (actual != expected)
                fail_msg("%s is %lld, expected %lld (null is %lld)", what, (long long) actual,
                         (long long) expected, (long long) FIELD_NULL);
}

#define STR(f, field, v) expect_str(#field, (f).field, (v))
#define INT(f, field, v) expect_int(#field, (f).field, (v))

/* ---- every fixture ----------------------------------------------------------------- */

static const char *const fixtures[] = {
        "sata-ssd-udev.obs",    "sata-ssd-kernel.obs",  "sata-ssd-part1-udev.obs", "nvme-udev.obs",
        "virtio-disk.obs",      "twin-usb-stick-a.obs", "twin-usb-stick-b.obs",    "loop-ext4.obs",
        "loop-empty.obs",       "zram-kernel.obs",
};

/* Each fixture ends as `blkledgerd --observe` output does: "# identity: KEY" or
 * "# not a device ...". Check that against the code, for every *.obs file there is. */
static void check_fixture_expectation(const char *name) {
        _cleanup_free_ char *text = read_fixture(name);
        const char *id_line = strstr(text, "\n# identity: ");
        bool not_device = strstr(text, "\n# not a device") != NULL;
        struct observation o = {};

        parse_text(name, text, &o);
        if (!id_line && !not_device)
                fail_msg("%s says neither '# identity:' nor '# not a device'", name);
        if (not_device) {
                if (observation_is_device(&o))
                        fail_msg("%s: observation_is_device() is true for a non-device", name);
        } else {
                _cleanup_free_ char *want = strndup(id_line + strlen("\n# identity: "),
                                                    strcspn(id_line + strlen("\n# identity: "), "\n"));
                _cleanup_free_ char *got = NULL;

                if (!observation_is_device(&o))
                        fail_msg("%s: observation_is_device() is false", name);
                got = identity_of(&o);
                if (!streq(got, want))
                        fail_msg("%s: identity '%s', the fixture says '%s'", name, got, want);
        }
        observation_done(&o);
}

static void test_fixtures_identities(void **state) {
        _cleanup_free_ char *dir = fixture_dir();
        DIR *d;
        struct dirent *de;
        unsigned n = 0;

        for (size_t i = 0; i < ELEMENTSOF(fixtures); i++)
                check_fixture_expectation(fixtures[i]);

        d = opendir(dir);
        assert_non_null(d);
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l > 4 && streq(de->d_name + l - 4, ".obs")) {
                        check_fixture_expectation(de->d_name);
                        n++;
                }
        }
        closedir(d);
        assert_true(n >= ELEMENTSOF(fixtures));
}

/* ---- SATA disk, udev and kernel ---------------------------------------------------- */

static void test_sata_udev_facts(void **state) {
        struct observation o = {};
        struct device_facts f;

        load("sata-ssd-udev.obs", &o);
        assert_true(observation_is_device(&o));
        facts_of(&o, &f);

        STR(f, kname, "sda");
        STR(f, devnode, "/dev/sda");
        STR(f, dev, "8:0");
        STR(f, devtype, "disk");
        /* sysfs counts 512-byte sectors. */
        INT(f, size_bytes, 976773168LL * 512);
        INT(f, read_only, 0);
        INT(f, removable, 0);
        INT(f, rotational, 0);
        INT(f, logical_block_size, 512);
        INT(f, physical_block_size, 512);
        /* sysfs's model wins over udev's, and loses its padding. */
        STR(f, model, "Samsung SSD 860");
        STR(f, serial, "S3Z1NB0K123456X");
        STR(f, wwn, "0x5002538e40a1b2c3");
        INT(f, diskseq, 1);
        /* A disk holding a partition table has no filesystem of its own. */
        STR(f, fs_type, NULL);
        STR(f, fs_uuid, NULL);
        STR(f, fs_label, NULL);
        STR(f, fs_version, NULL);
        STR(f, fs_usage, NULL);
        STR(f, pt_type, "gpt");
        STR(f, pt_uuid, "3f6e8d1c-9a2b-4c7e-8f15-6d2a0b9c4e71");
        INT(f, part_number, FIELD_NULL);
        STR(f, part_uuid, NULL);
        STR(f, parent, NULL);
        assert_non_null(f.holders);
        assert_int_equal(strv_length(f.holders), 0);
        STR(f, loop_backing_file, NULL);
        STR(f, id_path, "pci-0000:00:17.0-ata-1.0");

        device_facts_done(&f);
        observation_done(&o);
}

static void test_sata_kernel_same_identity(void **state) {
        _cleanup_free_ char *with_udev = identity_of_fixture("sata-ssd-udev.obs");
        _cleanup_free_ char *without_udev = identity_of_fixture("sata-ssd-kernel.obs");
        _cleanup_free_ char *udev_wwn_only = NULL;
        struct observation o = {}, no_sysfs_wwid = {};
        struct device_facts f;

        assert_string_equal(with_udev, "wwn:0x5002538e40a1b2c3");
        assert_string_equal(without_udev, with_udev);

        /* Without sysfs's wwid, udev's ID_WWN ("0x...") names the disk the same way. */
        load("sata-ssd-udev.obs", &o);
        copy_without(&o, &no_sysfs_wwid, (const char *const[]) { "A:device/wwid", NULL });
        udev_wwn_only = identity_of(&no_sysfs_wwid);
        assert_string_equal(udev_wwn_only, with_udev);
        observation_done(&o);
        observation_done(&no_sysfs_wwid);

        /* What the kernel alone tells. */
        load("sata-ssd-kernel.obs", &o);
        assert_true(observation_is_device(&o));
        facts_of(&o, &f);
        STR(f, devnode, "/dev/sda");
        STR(f, dev, "8:0");
        STR(f, model, "Samsung SSD 860");
        STR(f, serial, NULL);
        STR(f, wwn, "0x5002538e40a1b2c3");
        STR(f, pt_type, NULL);
        STR(f, id_path, NULL);
        INT(f, size_bytes, 500107862016LL);
        device_facts_done(&f);
        observation_done(&o);
}

static void test_sata_kernel_vs_udev_diff(void **state) {
        static const struct {
                const char *name, *after;
        } changed[] = {
                { "serial", "S3Z1NB0K123456X" },
                { "pt_type", "gpt" },
                { "pt_uuid", "3f6e8d1c-9a2b-4c7e-8f15-6d2a0b9c4e71" },
                { "id_path", "pci-0000:00:17.0-ata-1.0" },
        };
        struct observation k = {}, u = {};
        struct device_facts fk, fu;
        json_object *before = NULL, *after = NULL;

        /* udevd starting up adds what only udev knows; nothing else may change. */
        load("sata-ssd-kernel.obs", &k);
        load("sata-ssd-udev.obs", &u);
        facts_of(&k, &fk);
        facts_of(&u, &fu);

        assert_int_equal(device_facts_diff(&fk, &fu, &before, &after), (int) ELEMENTSOF(changed));
        assert_int_equal(json_object_object_length(before), ELEMENTSOF(changed));
        assert_int_equal(json_object_object_length(after), ELEMENTSOF(changed));
        for (size_t i = 0; i < ELEMENTSOF(changed); i++) {
                json_object *b = (json_object *) 0x1, *a = NULL;

                /* Present with a JSON null before, the string after. */
                assert_true(json_object_object_get_ex(before, changed[i].name, &b));
                assert_null(b);
                assert_true(json_object_object_get_ex(after, changed[i].name, &a));
                assert_string_equal(json_object_get_string(a), changed[i].after);
        }
        json_object_put(before);
        json_object_put(after);
        device_facts_done(&fk);
        device_facts_done(&fu);
        observation_done(&k);
        observation_done(&u);
}

/* ---- partition --------------------------------------------------------------------- */

static void test_partition_facts(void **state) {
        struct observation o = {};
        struct device_facts f;
        _cleanup_free_ char *k = NULL;

        load("sata-ssd-part1-udev.obs", &o);
        assert_true(observation_is_device(&o));
        facts_of(&o, &f);

        STR(f, kname, "sda1");
        STR(f, devnode, "/dev/sda1");
        STR(f, dev, "8:1");
        STR(f, devtype, "partition");
        INT(f, size_bytes, 1050624LL * 512);
        INT(f, read_only, 0);
        /* No removable or queue/ attributes on partitions. */
        INT(f, removable, FIELD_NULL);
        INT(f, rotational, FIELD_NULL);
        INT(f, logical_block_size, FIELD_NULL);
        /* udev's copies of the disk's model, serial and WWN are not the partition's. */
        STR(f, model, NULL);
        STR(f, serial, NULL);
        STR(f, wwn, NULL);
        /* ... nor is the disk's partition table. */
        STR(f, pt_type, NULL);
        STR(f, pt_uuid, NULL);
        INT(f, diskseq, 1);
        STR(f, fs_type, "vfat");
        STR(f, fs_uuid, "1A2B-3C4D");
        STR(f, fs_version, "FAT32");
        STR(f, fs_usage, "filesystem");
        STR(f, fs_label, NULL);
        INT(f, part_number, 1);
        STR(f, part_uuid, "5f3c8a1e-2b7d-4e96-a0c4-81d9e6f2b357");
        STR(f, parent, "sda");

        k = identity_from_observation(&o, &f);
        assert_string_equal(k, "partuuid:5f3c8a1e-2b7d-4e96-a0c4-81d9e6f2b357");
        device_facts_done(&f);
        observation_done(&o);
}

static void test_partition_identity_fallbacks(void **state) {
        struct observation o = {}, c = {};
        _cleanup_free_ char *by_wwn = NULL, *by_fs = NULL, *bare = NULL;

        load("sata-ssd-part1-udev.obs", &o);

        /* Without its table entry's UUID: the disk's WWN with the partition number. */
        copy_without(&o, &c, (const char *const[]) { "E:ID_PART_ENTRY_UUID", NULL });
        by_wwn = identity_of(&c);
        assert_string_equal(by_wwn, "wwn:0x5002538e40a1b2c3/part1");
        observation_done(&c);

        /* Without any of the disk's keys: like a disk, from the filesystem on. */
        copy_without(&o, &c,
                     (const char *const[]) { "E:ID_PART_ENTRY_UUID", "E:ID_WWN", "E:ID_WWN_WITH_EXTENSION",
                                             "E:ID_SERIAL_SHORT", "X:parent_identity", NULL });
        by_fs = identity_of(&c);
        assert_string_equal(by_fs, "fsuuid:1A2B-3C4D");
        observation_done(&c);
        observation_done(&o);

        /* A partition the kernel alone announced, before any probe: its name only. */
        bare = identity_of_text("kname=sda2\nE:DEVTYPE=partition\nE:PARTN=2\nE:MAJOR=8\nE:MINOR=2\n");
        assert_string_equal(bare, "kname:sda2");
        assert_true(identity_is_weak(bare));
}

/* Found by fuzz-uevent: the fallback takes udev's raw copies of the disk's properties,
 * and a key with invalid UTF-8 made every reply listing the device unparseable. */
static void test_partition_fallback_key_is_utf8(void **state) {
        _cleanup_free_ char *k = identity_of_text("kname=sdc2\nE:DEVTYPE=partition\nE:PARTN=2\n"
                                                  "E:ID_SERIAL_SHORT=\\xff\\xfeS\nE:ID_MODEL=M\\xc3\n");

        assert_true(utf8_is_valid(k, strlen(k)));
        assert_string_equal(k, "serial:M\xef\xbf\xbd:\xef\xbf\xbd\xef\xbf\xbdS/part2");
}

static void test_partition_key_extends_disk_key(void **state) {
        /* identity.c and ARCHITECTURE.md: a partition without a table-entry UUID is keyed
         * by "the disk's key with /partN appended". Take the disk without a WWN so that
         * its key is serial:MODEL:SERIAL. */
        static const char *const no_wwn[] = { "A:device/wwid", "E:ID_WWN", "E:ID_WWN_WITH_EXTENSION", NULL };
        static const char *const no_wwn_no_partuuid[] = {
                "E:ID_WWN", "E:ID_WWN_WITH_EXTENSION", "E:ID_PART_ENTRY_UUID", NULL,
        };
        struct observation o = {}, c = {};
        char *disk_key, *part_key, *want;
        char msg[512] = "";

        load("sata-ssd-udev.obs", &o);
        copy_without(&o, &c, no_wwn);
        observation_done(&o);
        disk_key = identity_of(&c);
        observation_done(&c);

        load("sata-ssd-part1-udev.obs", &o);
        copy_without(&o, &c, no_wwn_no_partuuid);
        observation_done(&o);
        /* What observe.c records for a partition: its disk's key, computed from the disk. */
        assert_int_equal(observation_set(&c, "X:parent_identity", disk_key), 0);
        part_key = identity_of(&c);
        observation_done(&c);

        assert_true(asprintf(&want, "%s/part1", disk_key) > 0);
        if (!streq(disk_key, "serial:Samsung SSD 860:S3Z1NB0K123456X"))
                snprintf(msg, sizeof(msg), "disk key '%s'", disk_key);
        else if (!streq(part_key, want))
                snprintf(msg, sizeof(msg), "partition key '%s' does not extend its disk's key '%s'", part_key,
                         disk_key);
        /* Free before failing: a failed assertion jumps past any cleanup. */
        free(disk_key);
        free(part_key);
        free(want);
        if (msg[0])
                fail_msg("%s", msg);
}

/* ---- NVMe, virtio, twins ----------------------------------------------------------- */

static void test_nvme_facts(void **state) {
        struct observation o = {};
        struct device_facts f;
        _cleanup_free_ char *k = NULL;

        load("nvme-udev.obs", &o);
        facts_of(&o, &f);
        STR(f, kname, "nvme0n1");
        STR(f, dev, "259:0");
        INT(f, size_bytes, 1000204886016LL);
        INT(f, rotational, 0);
        /* The controller's padded model and serial, stripped. */
        STR(f, model, "Samsung SSD 970 EVO Plus 1TB");
        STR(f, serial, "S4EWNX0R123456A");
        /* An EUI-64 stays as it is; only "naa." is respelled. */
        STR(f, wwn, "eui.0025385b91b12345");
        INT(f, diskseq, 2);
        STR(f, pt_type, "gpt");
        STR(f, id_path, "pci-0000:01:00.0-nvme-1");

        k = identity_from_observation(&o, &f);
        assert_string_equal(k, "wwn:eui.0025385b91b12345");
        assert_false(identity_is_weak(k));
        device_facts_done(&f);
        observation_done(&o);
}

static void test_virtio_facts(void **state) {
        struct observation o = {};
        struct device_facts f;
        _cleanup_free_ char *k = NULL;

        load("virtio-disk.obs", &o);
        facts_of(&o, &f);
        STR(f, kname, "vda");
        STR(f, dev, "253:0");
        INT(f, size_bytes, 20LL << 30);
        INT(f, rotational, 1);
        STR(f, serial, "8b1d3a52-4c6f-4e8a-9");
        STR(f, model, NULL);
        STR(f, wwn, NULL);
        STR(f, pt_type, "dos");
        STR(f, pt_uuid, "6a2f8c1d");

        /* No model: the key keeps its empty field. */
        k = identity_from_observation(&o, &f);
        assert_string_equal(k, "serial::8b1d3a52-4c6f-4e8a-9");
        assert_false(identity_is_weak(k));
        device_facts_done(&f);
        observation_done(&o);
}

static void test_twins_same_identity(void **state) {
        static const char *const differ[] = { "kname", "devnode", "dev", "diskseq", "pt_uuid", "id_path" };
        struct observation a = {}, b = {};
        struct device_facts fa, fb;
        json_object *after = NULL;
        _cleanup_free_ char *ka = NULL, *kb = NULL;

        load("twin-usb-stick-a.obs", &a);
        load("twin-usb-stick-b.obs", &b);
        facts_of(&a, &fa);
        facts_of(&b, &fb);

        STR(fa, model, "Flash Disk");
        STR(fa, serial, "8A5E3C2F");
        INT(fa, removable, 1);
        STR(fb, model, "Flash Disk");
        STR(fb, serial, "8A5E3C2F");

        /* One key for both: keeping them apart is the ledger's job. */
        ka = identity_from_observation(&a, &fa);
        kb = identity_from_observation(&b, &fb);
        assert_string_equal(ka, "serial:Flash Disk:8A5E3C2F");
        assert_string_equal(kb, ka);

        /* They differ only in where they are plugged and what they hold. */
        assert_int_equal(device_facts_diff(&fa, &fb, NULL, &after), (int) ELEMENTSOF(differ));
        for (size_t i = 0; i < ELEMENTSOF(differ); i++)
                if (!json_object_object_get_ex(after, differ[i], NULL))
                        fail_msg("'%s' missing from the diff of the twins", differ[i]);
        json_object_put(after);

        device_facts_done(&fa);
        device_facts_done(&fb);
        observation_done(&a);
        observation_done(&b);
}

/* ---- loop devices ------------------------------------------------------------------ */

static void test_loop_facts(void **state) {
        struct observation o = {}, c = {};
        struct device_facts f;
        _cleanup_free_ char *k = NULL, *by_path = NULL;

        load("loop-ext4.obs", &o);
        assert_true(observation_is_device(&o));
        facts_of(&o, &f);
        STR(f, kname, "loop0");
        STR(f, dev, "7:0");
        INT(f, size_bytes, 1LL << 30);
        STR(f, loop_backing_file, "/var/tmp/scratch.img");
        STR(f, fs_type, "ext4");
        STR(f, fs_uuid, "4b9a7f0e-3c1d-4e2a-9b8f-1d6c5e4a3b21");
        STR(f, fs_label, "scratch");
        STR(f, fs_version, "1.0");
        STR(f, fs_usage, "filesystem");
        STR(f, pt_type, NULL);
        STR(f, model, NULL);
        STR(f, serial, NULL);
        STR(f, id_path, NULL);

        /* The backing file's device and inode beat the filesystem UUID. */
        k = identity_from_observation(&o, &f);
        assert_string_equal(k, "loop:259:2:1835017");
        assert_false(identity_is_weak(k));
        device_facts_done(&f);

        /* When the file could not be stat()ed: its path. */
        copy_without(&o, &c, (const char *const[]) { "X:backing_dev", "X:backing_ino", NULL });
        by_path = identity_of(&c);
        assert_string_equal(by_path, "loopfile:/var/tmp/scratch.img");
        observation_done(&c);
        observation_done(&o);
}

static void test_blkid_wins_over_udev(void **state) {
        struct observation o = {}, c = {};
        struct device_facts f;

        /* udev's probe is older than ours: the label was changed since. */
        load("loop-ext4.obs", &o);
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL_ENC", "old\\x20label"), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_TYPE", "ext2"), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_VERSION", "0.9"), 0);
        assert_int_equal(observation_set(&o, "E:ID_PART_TABLE_TYPE", "dos"), 0);
        facts_of(&o, &f);
        STR(f, fs_label, "scratch");
        STR(f, fs_type, "ext4");
        STR(f, fs_version, "1.0");
        /* blkid found no table, so there is none, whatever udev thought. */
        STR(f, pt_type, NULL);
        device_facts_done(&f);

        /* Our probe did not run (X:probed missing): udev's values, decoded. */
        copy_without(&o, &c, (const char *const[]) { "X:probed", NULL });
        facts_of(&c, &f);
        STR(f, fs_label, "old label");
        STR(f, fs_type, "ext2");
        STR(f, fs_version, "0.9");
        STR(f, pt_type, "dos");
        STR(f, fs_uuid, "4b9a7f0e-3c1d-4e2a-9b8f-1d6c5e4a3b21");
        device_facts_done(&f);
        observation_done(&c);

        /* The probe ran and found nothing: nothing, even though udev had values. */
        copy_without(&o, &c, (const char *const[]) { "B:TYPE", "B:UUID", "B:LABEL", "B:VERSION", "B:USAGE", NULL });
        facts_of(&c, &f);
        STR(f, fs_type, NULL);
        STR(f, fs_label, NULL);
        STR(f, fs_uuid, NULL);
        device_facts_done(&f);
        observation_done(&c);

        /* blkid's values are raw, not udev-encoded: a backslash stays one. */
        assert_int_equal(observation_set(&o, "B:LABEL", "a\\x20b"), 0);
        facts_of(&o, &f);
        STR(f, fs_label, "a\\x20b");
        device_facts_done(&f);
        observation_done(&o);
}

static void test_empty_loop_slot(void **state) {
        struct observation o = {};

        load("loop-empty.obs", &o);
        assert_false(observation_is_device(&o));

        /* An empty backing_file attribute is no file either. */
        assert_int_equal(observation_set(&o, "A:loop/backing_file", ""), 0);
        assert_false(observation_is_device(&o));
        /* Attached: a device. */
        assert_int_equal(observation_set(&o, "A:loop/backing_file", "/var/tmp/x.img"), 0);
        assert_true(observation_is_device(&o));
        observation_done(&o);

        /* The rule is for loop disks only: a partition of a loop device (extended minors,
         * major 259) or another disk without a backing file is a device. */
        parse_text("loop partition", "kname=loop0p1\nE:MAJOR=259\nE:MINOR=8\nE:DEVTYPE=partition\n", &o);
        assert_true(observation_is_device(&o));
        observation_done(&o);
        parse_text("sda", "kname=sda\nE:MAJOR=8\nE:MINOR=0\nE:DEVTYPE=disk\n", &o);
        assert_true(observation_is_device(&o));
        observation_done(&o);
        parse_text("loop7 partition", "kname=loop7p1\nE:MAJOR=7\nE:MINOR=8\nE:DEVTYPE=partition\n", &o);
        assert_true(observation_is_device(&o));
        observation_done(&o);
}

/* ---- weak identities --------------------------------------------------------------- */

static void test_weak_identity(void **state) {
        struct observation o = {};
        struct device_facts f;
        _cleanup_free_ char *zram = identity_of_fixture("zram-kernel.obs");
        _cleanup_free_ char *ram = NULL;

        assert_string_equal(zram, "kname:zram0");
        assert_true(identity_is_weak(zram));

        /* Nothing at all but a kernel name (a brd RAM disk). */
        parse_text("ram0", "kname=ram0\n", &o);
        assert_true(observation_is_device(&o));
        facts_of(&o, &f);
        STR(f, kname, "ram0");
        STR(f, devnode, NULL);
        STR(f, dev, NULL);
        INT(f, size_bytes, FIELD_NULL);
        INT(f, read_only, FIELD_NULL);
        assert_non_null(f.holders);
        assert_int_equal(strv_length(f.holders), 0);
        ram = identity_from_observation(&o, &f);
        assert_string_equal(ram, "kname:ram0");
        assert_true(identity_is_weak(ram));
        device_facts_done(&f);
        observation_done(&o);
}

static void test_identity_is_weak(void **state) {
        static const char *const weak[] = { "path:pci-0000:00:17.0-ata-1.0", "kname:sda", "kname:" };
        static const char *const strong[] = {
                "wwn:0x5002538e40a1b2c3", "serial:Flash Disk:8A5E3C2F", "serial::x", "loop:259:2:1835017",
                "loopfile:/var/tmp/x.img", "fsuuid:1A2B-3C4D", "ptuuid:6a2f8c1d",
                "partuuid:5f3c8a1e-2b7d-4e96-a0c4-81d9e6f2b357", "wwn:0x5002538e40a1b2c3/part1",
                "pathname:x", "knamex:y",
        };

        for (size_t i = 0; i < ELEMENTSOF(weak); i++)
                if (!identity_is_weak(weak[i]))
                        fail_msg("'%s' should be weak", weak[i]);
        for (size_t i = 0; i < ELEMENTSOF(strong); i++)
                if (identity_is_weak(strong[i]))
                        fail_msg("'%s' should not be weak", strong[i]);
}

static void test_identity_order(void **state) {
        static const struct {
                const char *text, *key;
        } cases[] = {
                /* 1. WWN beats model and serial. */
                { "kname=sdz\nE:DEVTYPE=disk\nA:device/wwid=naa.5000c500a1b2c3d4\nA:device/model=ST4000NM0035\n"
                  "E:ID_SERIAL_SHORT=ZC1ABCDE\nE:ID_FS_UUID=u\nE:ID_PATH=p\n",
                  "wwn:0x5000c500a1b2c3d4" },
                /* 2. model and serial. */
                { "kname=sdz\nE:DEVTYPE=disk\nA:device/model=ST4000NM0035\nE:ID_SERIAL_SHORT=ZC1ABCDE\n"
                  "E:ID_FS_UUID=u\nE:ID_PATH=p\n",
                  "serial:ST4000NM0035:ZC1ABCDE" },
                /* A serial without a model keeps the empty field. */
                { "kname=sdz\nE:DEVTYPE=disk\nA:serial=ABC123\n", "serial::ABC123" },
                /* 3. a loop device's backing file, beating its filesystem. */
                { "kname=loop3\nE:MAJOR=7\nE:DEVTYPE=disk\nA:loop/backing_file=/srv/img/a.img\n"
                  "X:backing_dev=8:2\nX:backing_ino=42\nE:ID_FS_UUID=u\n",
                  "loop:8:2:42" },
                { "kname=loop3\nE:MAJOR=7\nE:DEVTYPE=disk\nA:loop/backing_file=/srv/img/a.img\nE:ID_FS_UUID=u\n",
                  "loopfile:/srv/img/a.img" },
                /* Half of the inode pair is no inode. */
                { "kname=loop3\nE:MAJOR=7\nE:DEVTYPE=disk\nA:loop/backing_file=/srv/img/a.img\nX:backing_dev=8:2\n",
                  "loopfile:/srv/img/a.img" },
                /* 4. filesystem, then partition table. */
                { "kname=md127\nE:DEVTYPE=disk\nE:ID_FS_UUID=0b5c2e1a\nE:ID_PART_TABLE_UUID=9d3e\nE:ID_PATH=p\n",
                  "fsuuid:0b5c2e1a" },
                { "kname=md127\nE:DEVTYPE=disk\nE:ID_PART_TABLE_UUID=9d3e\nE:ID_PATH=p\n", "ptuuid:9d3e" },
                /* 5. and 6. the weak ones. */
                { "kname=sdz\nE:DEVTYPE=disk\nE:ID_PATH=pci-0000:00:17.0-ata-2.0\n", "path:pci-0000:00:17.0-ata-2.0" },
                { "kname=sdz\nE:DEVTYPE=disk\nE:MAJOR=8\nE:MINOR=16\n", "kname:sdz" },
                /* Partitions: the table entry first, even over the disk's WWN. */
                { "kname=sdz1\nE:DEVTYPE=partition\nE:PARTN=1\nE:ID_WWN=0x5000c500a1b2c3d4\n"
                  "E:ID_PART_ENTRY_UUID=0e8f\nE:ID_FS_UUID=u\n",
                  "partuuid:0e8f" },
                { "kname=sdz3\nE:DEVTYPE=partition\nA:partition=3\nE:PARTN=9\nE:ID_WWN=0x5000c500a1b2c3d4\n",
                  "wwn:0x5000c500a1b2c3d4/part3" },
                /* No partition number: the disk's key alone would name the disk. */
                { "kname=sdz1\nE:DEVTYPE=partition\nE:ID_WWN=0x5000c500a1b2c3d4\nE:ID_FS_UUID=u\n", "fsuuid:u" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *k = identity_of_text(cases[i].text);

                if (!streq(k, cases[i].key))
                        fail_msg("case %zu: identity '%s', expected '%s'", i, k, cases[i].key);
        }
}

/* ---- facts, field by field --------------------------------------------------------- */

static void facts_of_text(const char *text, struct device_facts *ret) {
        struct observation o = {};

        parse_text("inline observation", text, &o);
        facts_of(&o, ret);
        observation_done(&o);
}

static void test_identity_kind(void **state) {
        static const struct {
                const char *key, *kind;
        } cases[] = {
                { "wwn:0x5000c500a1b2c3d4", "wwn" },
                { "serial:Flash Disk:8A5E3C2F", "serial" },
                { "loop:259:2:1835017", "loop" },
                { "loopfile:/var/tmp/a.img", "loop" },
                { "partuuid:0b2e5a3c-01", "part_uuid" },
                { "fsuuid:3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55", "fs_uuid" },
                { "ptuuid:0b2e5a3c", "pt_uuid" },
                { "path:pci-0000:00:17.0-ata-1.0", "weak" },
                { "kname:sda", "weak" },
                { "", "weak" },
                { "wwn", "weak" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (!streq(identity_kind(cases[i].key), cases[i].kind))
                        fail_msg("identity_kind(\"%s\") = %s, expected %s", cases[i].key,
                                 identity_kind(cases[i].key), cases[i].kind);
        /* Every recorded fixture's key has a kind that agrees with identity_is_weak(). */
        {
                _cleanup_free_ char *k = identity_of_fixture("zram-kernel.obs");
                assert_string_equal(identity_kind(k), "weak");
                assert_true(identity_is_weak(k));
        }
}

static void test_identity_aux(void **state) {
        struct observation o = { .kname = strdup("loop3") };
        char *aux = (char *) "sentinel";

        assert_non_null(o.kname);
        /* Without a birth time: unknown (NULL), not an error. */
        assert_int_equal(identity_aux_from_observation(&o, "loop:259:2:77", &aux), 0);
        assert_null(aux);

        assert_int_equal(observation_set(&o, "X:backing_btime", "1795820462.123456789"), 0);
        assert_int_equal(identity_aux_from_observation(&o, "loop:259:2:77", &aux), 0);
        assert_non_null(aux);
        assert_string_equal(aux, "1795820462.123456789");
        free(aux);

        /* Only a loop file's device and inode are recycled: other keys have no qualifier. */
        aux = (char *) "sentinel";
        assert_int_equal(identity_aux_from_observation(&o, "fsuuid:3f1c2a7e", &aux), 0);
        assert_null(aux);
        aux = (char *) "sentinel";
        assert_int_equal(identity_aux_from_observation(&o, "kname:loop3", &aux), 0);
        assert_null(aux);

        /* An empty birth time is no birth time. */
        assert_int_equal(observation_set(&o, "X:backing_btime", ""), 0);
        aux = (char *) "sentinel";
        assert_int_equal(identity_aux_from_observation(&o, "loop:259:2:77", &aux), 0);
        assert_null(aux);
        observation_done(&o);

        assert_true(identity_aux_compatible(NULL, NULL));
        assert_true(identity_aux_compatible("100.0", NULL));
        assert_true(identity_aux_compatible(NULL, "100.0"));
        assert_true(identity_aux_compatible("100.0", "100.0"));
        assert_false(identity_aux_compatible("100.0", "200.0"));
}

static void test_wwn_normalize(void **state) {
        _cleanup_free_ char *a = wwn_normalize("naa.5000C500A1B2C3D4"), *b = wwn_normalize("0x5000c500a1b2c3d4");

        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(a, b);
}

static void test_facts_numbers(void **state) {
        static const struct {
                const char *text;
                int64_t size, ro, removable, rotational, lbs, diskseq;
        } cases[] = {
                { "kname=x\nA:size=2097152\nA:ro=1\nA:removable=0\nA:queue/rotational=1\n"
                  "A:queue/logical_block_size=4096\nA:diskseq=7\nE:DISKSEQ=3\n",
                  1LL << 30, 1, 0, 1, 4096, 7 },
                /* Only "0" and "1" are booleans. */
                { "kname=x\nA:size=0\nA:ro=2\nA:removable=\nA:queue/rotational=true\nE:DISKSEQ=3\n",
                  0, FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL, 3 },
                { "kname=x\nA:ro= 1\nA:removable=1 \nA:queue/rotational=01\n", FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL, FIELD_NULL, FIELD_NULL },
                /* Junk, negative and overflowing sizes are unknown sizes. */
                { "kname=x\nA:size=abc\nA:diskseq=x\n", FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL, FIELD_NULL },
                { "kname=x\nA:size=-8\n", FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL },
                { "kname=x\nA:size=18014398509481984\n", FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL },
                { "kname=x\nA:size=99999999999999999999\n", FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL, FIELD_NULL },
                /* The largest size that fits. */
                { "kname=x\nA:size=18014398509481983\n", INT64_MAX - 511, FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL, FIELD_NULL },
                /* An empty sysfs diskseq falls back to the uevent's. */
                { "kname=x\nA:diskseq=\nE:DISKSEQ=12\n", FIELD_NULL, FIELD_NULL, FIELD_NULL, FIELD_NULL,
                  FIELD_NULL, 12 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct device_facts f;

                facts_of_text(cases[i].text, &f);
                if (f.size_bytes != cases[i].size || f.read_only != cases[i].ro ||
                    f.removable != cases[i].removable || f.rotational != cases[i].rotational ||
                    f.logical_block_size != cases[i].lbs || f.diskseq != cases[i].diskseq)
                        fail_msg("case %zu: size %lld ro %lld removable %lld rotational %lld lbs %lld diskseq %lld",
                                 i, (long long) f.size_bytes, (long long) f.read_only, (long long) f.removable,
                                 (long long) f.rotational, (long long) f.logical_block_size,
                                 (long long) f.diskseq);
                device_facts_done(&f);
        }
}

static void test_facts_devnode_and_dev(void **state) {
        static const struct {
                const char *text, *devnode, *dev;
        } cases[] = {
                /* The uevent's DEVNAME is relative to /dev, udev's absolute. */
                { "kname=sda\nE:DEVNAME=sda\nE:MAJOR=8\nE:MINOR=0\n", "/dev/sda", "8:0" },
                { "kname=sda\nE:DEVNAME=/dev/sda\nE:MAJOR=8\nE:MINOR=0\n", "/dev/sda", "8:0" },
                { "kname=nvme0n1\nE:DEVNAME=nvme0n1\nX:devnode=/dev/nvme0n1\nE:MAJOR=259\nE:MINOR=0\n",
                  "/dev/nvme0n1", "259:0" },
                /* libudev's devnode wins. */
                { "kname=sda\nE:DEVNAME=sdq\nX:devnode=/dev/sda\n", "/dev/sda", NULL },
                { "kname=sda\nE:MAJOR=8\n", NULL, NULL },
                { "kname=sda\nE:MAJOR=x\nE:MINOR=0\n", NULL, NULL },
                { "kname=sda\nE:MAJOR=-8\nE:MINOR=0\n", NULL, NULL },
                { "kname=sda\nE:MAJOR=8\nE:MINOR=\n", NULL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct device_facts f;

                facts_of_text(cases[i].text, &f);
                if (!streq_ptr(f.devnode, cases[i].devnode) || !streq_ptr(f.dev, cases[i].dev))
                        fail_msg("case %zu: devnode %s dev %s", i, f.devnode ? f.devnode : "null",
                                 f.dev ? f.dev : "null");
                device_facts_done(&f);
        }
}

static void test_facts_wwn_normalization(void **state) {
        static const struct {
                const char *text, *wwn;
        } cases[] = {
                { "kname=x\nA:device/wwid=naa.5002538e40a1b2c3\n", "0x5002538e40a1b2c3" },
                { "kname=x\nA:device/wwid=naa.5002538E40A1B2C3\n", "0x5002538e40a1b2c3" },
                { "kname=x\nA:device/wwid=NAA.5002538E40A1B2C3\n", "0x5002538e40a1b2c3" },
                { "kname=x\nE:ID_WWN=0x5002538E40A1B2C3\n", "0x5002538e40a1b2c3" },
                { "kname=x\nA:device/wwid=  naa.5002538e40a1b2c3\\x0a\n", "0x5002538e40a1b2c3" },
                { "kname=x\nA:wwid=eui.0025385B91B12345\n", "eui.0025385b91b12345" },
                /* Namespace wwid before the SCSI device's. */
                { "kname=x\nA:wwid=eui.0025385b91b12345\nA:device/wwid=naa.1111111111111111\n",
                  "eui.0025385b91b12345" },
                /* A 16-byte NAA: udev's WITH_EXTENSION is the whole, ID_WWN only its head. */
                { "kname=x\nE:ID_WWN=0x600508b1001c7f6d\n"
                  "E:ID_WWN_WITH_EXTENSION=0x600508b1001c7f6d5a3e2b1c0d9f8e7a\n",
                  "0x600508b1001c7f6d5a3e2b1c0d9f8e7a" },
                { "kname=x\nA:device/wwid=naa.600508B1001C7F6D5A3E2B1C0D9F8E7A\nE:ID_WWN=0x600508b1001c7f6d\n",
                  "0x600508b1001c7f6d5a3e2b1c0d9f8e7a" },
                /* sysfs first. */
                { "kname=x\nA:device/wwid=naa.5002538e40a1b2c3\nE:ID_WWN=0x9999999999999999\n",
                  "0x5002538e40a1b2c3" },
                { "kname=x\nA:device/wwid=\nE:ID_WWN=0x5002538e40a1b2c3\n", "0x5002538e40a1b2c3" },
                { "kname=x\n", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct device_facts f;

                facts_of_text(cases[i].text, &f);
                if (!streq_ptr(f.wwn, cases[i].wwn))
                        fail_msg("case %zu: wwn %s, expected %s", i, f.wwn ? f.wwn : "null",
                                 cases[i].wwn ? cases[i].wwn : "null");
                device_facts_done(&f);
        }
}

static void test_facts_model_and_serial(void **state) {
        static const struct {
                const char *key, *value, *model;
        } models[] = {
                /* udev's \xNN escapes are decoded, the padding stripped. */
                { "E:ID_MODEL_ENC", "Samsung\\x20SSD\\x20860\\x20EVO\\x20500GB\\x20\\x20\\x20",
                  "Samsung SSD 860 EVO 500GB" },
                { "E:ID_MODEL_ENC", "My\\x2fDisk\\x5c1", "My/Disk\\1" },
                { "E:ID_MODEL_ENC", "A\\x00B", "AB" },             /* NUL is dropped */
                { "E:ID_MODEL_ENC", "50\\xZZ\\x4", "50\\xZZ\\x4" }, /* not escapes: kept */
                { "E:ID_MODEL_ENC", "\\x20\\x20", NULL },          /* only padding */
                { "E:ID_MODEL", "Flash_Disk", "Flash_Disk" },
                { "A:device/model", " \tST4000NM0035-1V4107 \n", "ST4000NM0035-1V4107" },
                { "A:device/model", "    ", NULL },
        };
        struct observation o = {}, c = {};
        struct device_facts f;

        for (size_t i = 0; i < ELEMENTSOF(models); i++) {
                struct observation m = { .kname = strdup("sdz") };

                assert_non_null(m.kname);
                assert_int_equal(observation_set(&m, models[i].key, models[i].value), 0);
                facts_of(&m, &f);
                if (!streq_ptr(f.model, models[i].model))
                        fail_msg("case %zu: model '%s'", i, f.model ? f.model : "null");
                device_facts_done(&f);
                observation_done(&m);
        }

        /* The SATA disk without sysfs's model: udev's full ATA model. */
        load("sata-ssd-udev.obs", &o);
        copy_without(&o, &c, (const char *const[]) { "A:device/model", NULL });
        facts_of(&c, &f);
        STR(f, model, "Samsung SSD 860 EVO 500GB");
        device_facts_done(&f);
        observation_done(&c);
        /* ... and without ID_MODEL_ENC: ID_MODEL as it is. */
        copy_without(&o, &c, (const char *const[]) { "A:device/model", "E:ID_MODEL_ENC", NULL });
        facts_of(&c, &f);
        STR(f, model, "Samsung_SSD_860_EVO_500GB");
        device_facts_done(&f);
        observation_done(&c);
        observation_done(&o);

        /* Serial: the device's attribute, the disk's, then udev's. */
        facts_of_text("kname=x\nA:device/serial= S1 \nA:serial=S2\nE:ID_SERIAL_SHORT=S3\n", &f);
        STR(f, serial, "S1");
        device_facts_done(&f);
        facts_of_text("kname=x\nA:serial=S2\nE:ID_SERIAL_SHORT=S3\n", &f);
        STR(f, serial, "S2");
        device_facts_done(&f);
        facts_of_text("kname=x\nA:device/serial=\nE:ID_SERIAL_SHORT=\\x09S3\\x09\n", &f);
        STR(f, serial, "S3");
        device_facts_done(&f);
        /* udev's long ID_SERIAL is no serial number. */
        facts_of_text("kname=x\nE:ID_SERIAL=Generic_Flash_Disk_8A5E3C2F-0:0\n", &f);
        STR(f, serial, NULL);
        device_facts_done(&f);
}

static void test_facts_labels_and_holders(void **state) {
        struct device_facts f;

        facts_of_text("kname=sdb1\nE:ID_FS_LABEL=raw\nE:ID_FS_LABEL_ENC=my\\\\x20disk\\\\x2fbackup\n"
                      "X:holders=dm-0 dm-1\nX:parent=sdb\n",
                      &f);
        /* ID_FS_LABEL_ENC is decoded; ID_FS_LABEL (with unsafe bytes replaced) is not used. */
        STR(f, fs_label, "my disk/backup");
        STR(f, parent, "sdb");
        assert_int_equal(strv_length(f.holders), 2);
        assert_string_equal(f.holders[0], "dm-0");
        assert_string_equal(f.holders[1], "dm-1");
        assert_null(f.holders[2]);
        device_facts_done(&f);

        facts_of_text("kname=sdb\nX:holders=\n", &f);
        assert_non_null(f.holders);
        assert_int_equal(strv_length(f.holders), 0);
        device_facts_done(&f);

        facts_of_text("kname=sdb\nX:holders=  md0   dm-3 \n", &f);
        assert_int_equal(strv_length(f.holders), 2);
        assert_string_equal(f.holders[0], "md0");
        assert_string_equal(f.holders[1], "dm-3");
        device_facts_done(&f);
}

/* ---- diff and copy ----------------------------------------------------------------- */

static char **strv_new(const char *a, const char *b) {
        char **v = calloc(3, sizeof(char *));

        assert_non_null(v);
        if (a) {
                v[0] = strdup(a);
                assert_non_null(v[0]);
        }
        if (b) {
                v[1] = strdup(b);
                assert_non_null(v[1]);
        }
        return v;
}

static void test_diff_exact_fields(void **state) {
        struct observation o = {};
        struct device_facts old, new;
        json_object *before = NULL, *after = NULL, *v;

        load("loop-ext4.obs", &o);
        facts_of(&o, &old);
        assert_int_equal(device_facts_copy(&new, &old), 0);

        /* Unchanged: no fields, empty objects. */
        assert_int_equal(device_facts_diff(&old, &new, &before, &after), 0);
        assert_int_equal(json_object_object_length(before), 0);
        assert_int_equal(json_object_object_length(after), 0);
        json_object_put(before);
        json_object_put(after);

        /* The image grew, was relabelled and got a holder; rotational became unknown. */
        new.size_bytes *= 2;
        free(new.fs_label);
        new.fs_label = strdup("data");
        new.rotational = FIELD_NULL;
        strv_free(new.holders);
        new.holders = strv_new("dm-0", NULL);

        assert_int_equal(device_facts_diff(&old, &new, &before, &after), 4);
        assert_int_equal(json_object_object_length(before), 4);
        assert_int_equal(json_object_object_length(after), 4);

        assert_true(json_object_object_get_ex(before, "size_bytes", &v));
        assert_int_equal(json_object_get_int64(v), 1LL << 30);
        assert_true(json_object_object_get_ex(after, "size_bytes", &v));
        assert_int_equal(json_object_get_int64(v), 2LL << 30);
        assert_true(json_object_object_get_ex(before, "fs_label", &v));
        assert_string_equal(json_object_get_string(v), "scratch");
        assert_true(json_object_object_get_ex(after, "fs_label", &v));
        assert_string_equal(json_object_get_string(v), "data");
        assert_true(json_object_object_get_ex(before, "rotational", &v));
        assert_true(json_object_is_type(v, json_type_boolean));
        assert_false(json_object_get_boolean(v));
        assert_true(json_object_object_get_ex(after, "rotational", &v));
        assert_null(v);
        assert_true(json_object_object_get_ex(before, "holders", &v));
        assert_int_equal(json_object_array_length(v), 0);
        assert_true(json_object_object_get_ex(after, "holders", &v));
        assert_int_equal(json_object_array_length(v), 1);
        assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)), "dm-0");
        json_object_put(before);
        json_object_put(after);

        /* Only the count when the caller wants no details. */
        assert_int_equal(device_facts_diff(&old, &new, NULL, NULL), 4);
        assert_int_equal(device_facts_diff(&new, &old, &before, NULL), 4);
        assert_true(json_object_object_get_ex(before, "fs_label", &v));
        assert_string_equal(json_object_get_string(v), "data");
        json_object_put(before);

        device_facts_done(&old);
        device_facts_done(&new);
        observation_done(&o);
}

static void test_diff_holders_by_content(void **state) {
        struct device_facts a, b;

        device_facts_init(&a);
        device_facts_init(&b);
        a.holders = strv_new("dm-0", "dm-1");
        b.holders = strv_new("dm-0", "dm-1");
        /* Separate copies of one list are equal. */
        assert_ptr_not_equal(a.holders[0], b.holders[0]);
        assert_int_equal(device_facts_diff(&a, &b, NULL, NULL), 0);

        free(b.holders[1]);
        b.holders[1] = strdup("dm-2");
        assert_int_equal(device_facts_diff(&a, &b, NULL, NULL), 1);

        free(b.holders[1]);
        b.holders[1] = NULL;
        assert_int_equal(device_facts_diff(&a, &b, NULL, NULL), 1);

        /* No list and an empty list are the same: nothing holds the device. */
        strv_free(b.holders);
        b.holders = NULL;
        strv_free(a.holders);
        a.holders = strv_new(NULL, NULL);
        assert_int_equal(device_facts_diff(&a, &b, NULL, NULL), 0);

        device_facts_done(&a);
        device_facts_done(&b);
}

static void test_facts_copy(void **state) {
        struct observation o = {};
        struct device_facts f, c, empty, empty_copy;

        load("nvme-udev.obs", &o);
        facts_of(&o, &f);
        assert_int_equal(device_facts_copy(&c, &f), 0);
        assert_int_equal(device_facts_diff(&f, &c, NULL, NULL), 0);

        /* A deep copy: nothing shared. */
        assert_ptr_not_equal(c.model, f.model);
        assert_ptr_not_equal(c.holders, f.holders);
        free(c.model);
        c.model = strdup("changed");
        STR(f, model, "Samsung SSD 970 EVO Plus 1TB");
        INT(c, size_bytes, 1000204886016LL);
        device_facts_done(&c);

        /* device_facts_done() leaves empty facts that can be used again. */
        INT(c, size_bytes, FIELD_NULL);
        STR(c, model, NULL);

        device_facts_init(&empty);
        assert_int_equal(device_facts_copy(&empty_copy, &empty), 0);
        assert_int_equal(device_facts_diff(&empty, &empty_copy, NULL, NULL), 0);
        INT(empty_copy, diskseq, FIELD_NULL);
        STR(empty_copy, kname, NULL);
        device_facts_done(&empty_copy);
        device_facts_done(&empty);
        device_facts_done(&f);
        observation_done(&o);
}

/* ---- JSON -------------------------------------------------------------------------- */

static void test_device_fields(void **state) {
        /* The one list the journal, the JSON and io.blkledger.varlink follow. */
        static const char *const names[] = {
                "kname", "devnode", "dev", "devtype", "size_bytes", "read_only", "removable", "rotational",
                "logical_block_size", "physical_block_size", "model", "serial", "wwn", "diskseq", "fs_type",
                "fs_uuid", "fs_label", "fs_version", "fs_usage", "pt_type", "pt_uuid", "part_number",
                "part_uuid", "parent", "holders", "loop_backing_file", "id_path",
        };

        assert_int_equal(device_fields_count, ELEMENTSOF(names));
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                assert_string_equal(device_fields[i].name, names[i]);
        assert_int_equal(device_fields[4].type, FIELD_INT);
        assert_int_equal(device_fields[5].type, FIELD_BOOL);
        assert_int_equal(device_fields[24].type, FIELD_STRV);
        assert_int_equal(device_fields[0].type, FIELD_STR);
}

static void test_record_to_json(void **state) {
        struct observation o = {};
        struct device_record *r = calloc(1, sizeof(*r));
        json_object *j, *back, *v;
        const char *text;
        int64_t t;

        assert_non_null(r);
        load("zram-kernel.obs", &o);
        facts_of(&o, &r->facts);
        r->id = 42;
        r->identity = strdup("kname:zram0");
        r->state = DEVICE_GONE;
        r->first_seen = 1795820462123456LL;
        r->last_seen = -1;

        j = device_record_to_json(r, NULL);
        assert_non_null(j);
        for (size_t i = 0; i < device_fields_count; i++)
                if (!json_object_object_get_ex(j, device_fields[i].name, NULL))
                        fail_msg("member '%s' missing", device_fields[i].name);
        /* id, name, identity, identity_kind, state, first_seen, last_seen,
         * unresponsive_since, verified, last_verified, drift, volume */
        assert_int_equal(json_object_object_length(j), device_fields_count + 12);

        /* No name, never verified, not verified since this start, no drift. */
        assert_true(json_object_object_get_ex(j, "name", &v));
        assert_null(v);
        assert_true(json_object_object_get_ex(j, "identity_kind", &v));
        assert_string_equal(json_object_get_string(v), "weak");
        assert_true(json_object_object_get_ex(j, "verified", &v));
        assert_true(json_object_is_type(v, json_type_boolean));
        assert_false(json_object_get_boolean(v));
        assert_true(json_object_object_get_ex(j, "last_verified", &v));
        assert_null(v);
        assert_true(json_object_object_get_ex(j, "drift", &v));
        assert_true(json_object_is_type(v, json_type_array));
        assert_int_equal(json_object_array_length(v), 0);

        assert_true(json_object_object_get_ex(j, "id", &v));
        assert_int_equal(json_object_get_int64(v), 42);
        assert_true(json_object_object_get_ex(j, "identity", &v));
        assert_string_equal(json_object_get_string(v), "kname:zram0");
        assert_true(json_object_object_get_ex(j, "state", &v));
        assert_string_equal(json_object_get_string(v), "gone");
        assert_true(json_object_object_get_ex(j, "first_seen", &v));
        assert_string_equal(json_object_get_string(v), "2026-11-27T23:01:02.123456Z");
        assert_int_equal(parse_rfc3339(json_object_get_string(v), &t), 0);
        assert_int_equal(t, r->first_seen);
        assert_true(json_object_object_get_ex(j, "last_seen", &v));
        assert_string_equal(json_object_get_string(v), "1969-12-31T23:59:59.999999Z");

        /* Absent values are JSON null, not missing and not "". */
        assert_true(json_object_object_get_ex(j, "model", &v));
        assert_null(v);
        assert_true(json_object_object_get_ex(j, "part_number", &v));
        assert_null(v);
        /* Present ones keep their JSON types. */
        assert_true(json_object_object_get_ex(j, "size_bytes", &v));
        assert_true(json_object_is_type(v, json_type_int));
        assert_int_equal(json_object_get_int64(v), 4LL << 30);
        assert_true(json_object_object_get_ex(j, "rotational", &v));
        assert_true(json_object_is_type(v, json_type_boolean));
        assert_true(json_object_object_get_ex(j, "logical_block_size", &v));
        assert_int_equal(json_object_get_int64(v), 4096);
        /* An empty list is an empty array. */
        assert_true(json_object_object_get_ex(j, "holders", &v));
        assert_true(json_object_is_type(v, json_type_array));
        assert_int_equal(json_object_array_length(v), 0);

        /* The text parses back to the same members. */
        text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
        back = json_tokener_parse(text);
        assert_non_null(back);
        assert_int_equal(json_object_object_length(back), json_object_object_length(j));
        assert_true(json_object_object_get_ex(back, "devnode", &v));
        assert_string_equal(json_object_get_string(v), "/dev/zram0");
        json_object_put(back);
        json_object_put(j);

        /* Named, verified in this run, with open drift: the drift array is borrowed (the
         * caller keeps its reference) and shown as given. */
        {
                json_object *drift = json_object_new_array();

                assert_non_null(drift);
                json_object_array_add(drift, json_object_new_string("missing"));
                json_object_array_add(drift, json_object_new_string("duplicate_uuid"));
                free(r->identity);
                r->identity = strdup("wwn:0x5000c500a1b2c3d4");
                r->name = strdup("backup-disk");
                assert_non_null(r->name);
                r->verified_pass = 3;
                r->last_verified = 1795820462123456LL + 1000000;
                j = device_record_to_json(r, drift);
                assert_non_null(j);
                assert_int_equal(json_object_object_length(j), device_fields_count + 12);
                assert_true(json_object_object_get_ex(j, "name", &v));
                assert_string_equal(json_object_get_string(v), "backup-disk");
                assert_true(json_object_object_get_ex(j, "identity_kind", &v));
                assert_string_equal(json_object_get_string(v), "wwn");
                assert_true(json_object_object_get_ex(j, "verified", &v));
                assert_true(json_object_get_boolean(v));
                assert_true(json_object_object_get_ex(j, "last_verified", &v));
                assert_string_equal(json_object_get_string(v), "2026-11-27T23:01:03.123456Z");
                assert_true(json_object_object_get_ex(j, "drift", &v));
                assert_string_equal(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                                    "[\"missing\",\"duplicate_uuid\"]");
                json_object_put(j);
                /* Still ours after the record's JSON is gone. */
                assert_int_equal(json_object_array_length(drift), 2);
                json_object_put(drift);
        }

        /* A record not yet identified still has a string identity. */
        free(r->identity);
        r->identity = NULL;
        r->state = DEVICE_PRESENT;
        j = device_record_to_json(r, NULL);
        assert_true(json_object_object_get_ex(j, "identity", &v));
        assert_string_equal(json_object_get_string(v), "");
        assert_true(json_object_object_get_ex(j, "identity_kind", &v));
        assert_string_equal(json_object_get_string(v), "weak");
        assert_true(json_object_object_get_ex(j, "state", &v));
        assert_string_equal(json_object_get_string(v), "present");
        json_object_put(j);

        device_record_free(r);
        device_record_free(NULL);
        observation_done(&o);
}

static void test_device_state_strings(void **state) {
        assert_string_equal(device_state_to_string(DEVICE_PRESENT), "present");
        assert_string_equal(device_state_to_string(DEVICE_GONE), "gone");
        assert_int_equal(device_state_from_string("present"), DEVICE_PRESENT);
        assert_int_equal(device_state_from_string("gone"), DEVICE_GONE);
        assert_int_equal(device_state_from_string("Present"), -EINVAL);
        assert_int_equal(device_state_from_string(""), -EINVAL);
}

/* ---- hostile values ---------------------------------------------------------------- */

static void test_hostile_invalid_utf8(void **state) {
        struct observation o = { .kname = strdup("sdx") };
        struct device_facts f;

        assert_non_null(o.kname);
        /* udev-encoded bytes that are not UTF-8, and raw ones from sysfs. */
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL_ENC", "bad\\xff\\xfelabel"), 0);
        assert_int_equal(observation_set(&o, "A:device/model", "ST\xc0\xaf" "4000"), 0);
        assert_int_equal(observation_set(&o, "A:device/serial", "\xed\xa0\x80Z"), 0);
        assert_int_equal(observation_set(&o, "X:holders", "dm-\xff"), 0);
        facts_of(&o, &f);

        STR(f, fs_label, "bad" REPLACEMENT REPLACEMENT "label");
        STR(f, model, "ST" REPLACEMENT REPLACEMENT "4000");
        STR(f, serial, REPLACEMENT REPLACEMENT REPLACEMENT "Z");
        assert_string_equal(f.holders[0], "dm-" REPLACEMENT);
        device_facts_done(&f);

        /* Our probe's raw values too. */
        assert_int_equal(observation_set(&o, "X:probed", "blkid"), 0);
        assert_int_equal(observation_set(&o, "B:LABEL", "\xfe\xff"), 0);
        assert_int_equal(observation_set(&o, "B:UUID", "caf\xc3\xa9"), 0);
        facts_of(&o, &f);
        STR(f, fs_label, REPLACEMENT REPLACEMENT);
        STR(f, fs_uuid, "caf\xc3\xa9");
        device_facts_done(&f);
        observation_done(&o);
}

static void test_hostile_control_characters(void **state) {
        static const char label[] = "evil\x1b]0;pwned\x07\x1b[2J\x01\x7f\"\\";
        struct observation o = {};
        struct device_record r = {};
        json_object *j, *back, *v;
        const char *text;

        load("loop-ext4.obs", &o);
        assert_int_equal(observation_set(&o, "B:LABEL", label), 0);
        facts_of(&o, &r.facts);
        /* The facts keep what the device says; escaping is the output's job. */
        STR(r.facts, fs_label, label);

        r.identity = (char *) "loop:259:2:1835017";
        j = device_record_to_json(&r, NULL);
        text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
        assert_non_null(text);
        /* The JSON text carries no raw control character and is valid UTF-8 ... */
        for (const char *p = text; *p; p++)
                if ((unsigned char) *p < 0x20)
                        fail_msg("raw control character 0x%02x in the JSON text", (unsigned char) *p);
        assert_true(utf8_is_valid(text, strlen(text)));
        /* ... and parses back to the same bytes. */
        back = json_tokener_parse(text);
        assert_non_null(back);
        assert_true(json_object_object_get_ex(back, "fs_label", &v));
        assert_string_equal(json_object_get_string(v), label);
        json_object_put(back);
        json_object_put(j);

        device_facts_done(&r.facts);
        observation_done(&o);
}

static void test_hostile_huge_value(void **state) {
        const size_t big = 100 * 1024;
        _cleanup_free_ char *ascii = malloc(big + 1), *euro = malloc(big + 1);
        struct observation o = { .kname = strdup("sdx") };
        struct device_facts f;
        json_object *j;
        struct device_record r = { .identity = (char *) "kname:sdx" };

        assert_non_null(ascii);
        assert_non_null(euro);
        assert_non_null(o.kname);
        memset(ascii, 'M', big);
        ascii[big] = 0;
        /* U+20AC is 3 bytes: the cut at 4096 splits one. */
        for (size_t i = 0; i + 3 <= big; i += 3)
                memcpy(euro + i, "\xe2\x82\xac", 3);
        euro[big - big % 3] = 0;

        assert_int_equal(observation_set(&o, "A:device/model", ascii), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL_ENC", euro), 0);
        facts_of(&o, &f);
        assert_int_equal(strlen(f.model), OBS_VALUE_MAX);
        /* 1365 whole characters, then the cut one's first byte replaced. */
        assert_int_equal(strlen(f.fs_label), OBS_VALUE_MAX / 3 * 3 + 3);
        assert_true(utf8_is_valid(f.fs_label, strlen(f.fs_label)));
        assert_string_equal(f.fs_label + strlen(f.fs_label) - 3, REPLACEMENT);
        assert_memory_equal(f.fs_label, euro, OBS_VALUE_MAX / 3 * 3);

        r.facts = f;
        j = device_record_to_json(&r, NULL);
        assert_non_null(j);
        assert_true(strlen(json_object_to_json_string(j)) < 4 * OBS_VALUE_MAX);
        json_object_put(j);
        device_facts_done(&f);
        observation_done(&o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fixtures_identities),
                cmocka_unit_test(test_sata_udev_facts),
                cmocka_unit_test(test_sata_kernel_same_identity),
                cmocka_unit_test(test_sata_kernel_vs_udev_diff),
                cmocka_unit_test(test_partition_facts),
                cmocka_unit_test(test_partition_identity_fallbacks),
                cmocka_unit_test(test_partition_fallback_key_is_utf8),
                cmocka_unit_test(test_partition_key_extends_disk_key),
                cmocka_unit_test(test_nvme_facts),
                cmocka_unit_test(test_virtio_facts),
                cmocka_unit_test(test_twins_same_identity),
                cmocka_unit_test(test_loop_facts),
                cmocka_unit_test(test_blkid_wins_over_udev),
                cmocka_unit_test(test_empty_loop_slot),
                cmocka_unit_test(test_weak_identity),
                cmocka_unit_test(test_identity_is_weak),
                cmocka_unit_test(test_identity_order),
                cmocka_unit_test(test_identity_kind),
                cmocka_unit_test(test_identity_aux),
                cmocka_unit_test(test_wwn_normalize),
                cmocka_unit_test(test_facts_numbers),
                cmocka_unit_test(test_facts_devnode_and_dev),
                cmocka_unit_test(test_facts_wwn_normalization),
                cmocka_unit_test(test_facts_model_and_serial),
                cmocka_unit_test(test_facts_labels_and_holders),
                cmocka_unit_test(test_diff_exact_fields),
                cmocka_unit_test(test_diff_holders_by_content),
                cmocka_unit_test(test_facts_copy),
                cmocka_unit_test(test_device_fields),
                cmocka_unit_test(test_record_to_json),
                cmocka_unit_test(test_device_state_strings),
                cmocka_unit_test(test_hostile_invalid_utf8),
                cmocka_unit_test(test_hostile_control_characters),
                cmocka_unit_test(test_hostile_huge_value),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
