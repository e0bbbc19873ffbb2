/* Description: daemon/observation.c: key validation, value and entry limits, and a lossless text form. */
/* Keys are namespaced and validated, values are copied and cut at OBS_VALUE_MAX, an
 * observation holds at most OBS_ENTRIES_MAX entries, and the text form round-trips any
 * byte (control characters, backslashes, bytes >= 0x80) while parse errors name their
 * line. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "observation.h"
#include "util.h"

static void test_set_get(void **state) {
        struct observation o = {};
        char value[] = "/dev/sda";

        assert_int_equal(observation_set(&o, "E:DEVNAME", value), 0);
        assert_int_equal(observation_set(&o, "A:size", "976773168"), 0);
        assert_int_equal(observation_set(&o, "A:queue/rotational", "0"), 0);
        assert_int_equal(o.n_entries, 3);

        /* The value is a copy. */
        value[0] = 'X';
        assert_string_equal(observation_get(&o, "E:DEVNAME"), "/dev/sda");
        assert_string_equal(observation_get(&o, "A:size"), "976773168");
        assert_string_equal(observation_get(&o, "A:queue/rotational"), "0");

        /* Lookups are exact: namespace and case matter. */
        assert_null(observation_get(&o, "A:DEVNAME"));
        assert_null(observation_get(&o, "E:devname"));
        assert_null(observation_get(&o, "E:DEVNAM"));
        assert_null(observation_get(&o, "DEVNAME"));

        observation_done(&o);
        assert_int_equal(o.n_entries, 0);
        assert_null(o.entries);
        assert_null(o.kname);
        assert_null(observation_get(&o, "E:DEVNAME"));
}

static void test_replace(void **state) {
        struct observation o = {};

        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", "old"), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_TYPE", "ext4"), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", "new"), 0);
        assert_int_equal(o.n_entries, 2);
        assert_string_equal(observation_get(&o, "E:ID_FS_LABEL"), "new");
        assert_string_equal(observation_get(&o, "E:ID_FS_TYPE"), "ext4");
        /* The entry keeps its place. */
        assert_string_equal(o.entries[0].key, "E:ID_FS_LABEL");

        /* NULL stores an empty value. */
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", NULL), 0);
        assert_string_equal(observation_get(&o, "E:ID_FS_LABEL"), "");
        assert_int_equal(o.n_entries, 2);
        observation_done(&o);
}

static void test_value_cut(void **state) {
        struct observation o = {};
        _cleanup_free_ char *big = malloc(100 * 1024 + 1);
        const char *v;

        assert_non_null(big);
        for (size_t i = 0; i < 100 * 1024; i++)
                big[i] = (char) ('a' + i % 26);
        big[100 * 1024] = 0;

        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", big), 0);
        v = observation_get(&o, "E:ID_FS_LABEL");
        assert_int_equal(strlen(v), OBS_VALUE_MAX);
        assert_memory_equal(v, big, OBS_VALUE_MAX);

        /* Exactly OBS_VALUE_MAX is kept whole. */
        big[OBS_VALUE_MAX] = 0;
        assert_int_equal(observation_set(&o, "E:ID_MODEL", big), 0);
        assert_string_equal(observation_get(&o, "E:ID_MODEL"), big);
        observation_done(&o);
}

static void test_entries_max(void **state) {
        struct observation o = {};
        char key[32];

        for (unsigned i = 0; i < OBS_ENTRIES_MAX; i++) {
                snprintf(key, sizeof(key), "E:KEY_%u", i);
                assert_int_equal(observation_set(&o, key, "v"), 0);
        }
        assert_int_equal(o.n_entries, OBS_ENTRIES_MAX);

        /* Full: a new key is refused and nothing changes ... */
        assert_int_equal(observation_set(&o, "E:ONE_TOO_MANY", "v"), -E2BIG);
        assert_int_equal(o.n_entries, OBS_ENTRIES_MAX);
        assert_null(observation_get(&o, "E:ONE_TOO_MANY"));

        /* ... but a key already there can still be replaced. */
        assert_int_equal(observation_set(&o, "E:KEY_0", "replaced"), 0);
        assert_string_equal(observation_get(&o, "E:KEY_0"), "replaced");
        snprintf(key, sizeof(key), "E:KEY_%u", OBS_ENTRIES_MAX - 1);
        assert_string_equal(observation_get(&o, key), "v");
        observation_done(&o);
}

static void test_invalid_keys(void **state) {
        static const char *const bad[] = {
                "DEVNAME",        /* no namespace */
                "E:",             /* nothing after it */
                ":DEVNAME",
                "Q:DEVNAME",      /* unknown namespace */
                "e:DEVNAME",
                "EA:DEVNAME",
                "E-DEVNAME",
                "E:ID=FOO",       /* '=' would break the text form */
                "E:ID FOO",       /* spaces */
                "E: ID",
                "E:ID\tFOO",
                "E:ID\nA:size",
                "E:\x1b[2J",
                "E:ID\x7f",
                "E:MOD\xc3\xa9L", /* printable ASCII only */
                "",
        };
        struct observation o = {};
        char long_key[OBS_KEY_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (observation_set(&o, bad[i], "v") != -EINVAL)
                        fail_msg("key #%zu ('%s') was not refused", i, bad[i]);
        assert_int_equal(o.n_entries, 0);

        /* OBS_KEY_MAX bytes at most, namespace included. */
        memset(long_key, 'K', sizeof(long_key) - 1);
        long_key[0] = 'E';
        long_key[1] = ':';
        long_key[OBS_KEY_MAX + 1] = 0;
        assert_int_equal(observation_set(&o, long_key, "v"), -EINVAL);
        long_key[OBS_KEY_MAX] = 0;
        assert_int_equal(observation_set(&o, long_key, "v"), 0);

        /* Shapes that are valid. */
        assert_int_equal(observation_set(&o, "E:A", "v"), 0);
        assert_int_equal(observation_set(&o, "A:loop/backing_file", "v"), 0);
        assert_int_equal(observation_set(&o, "B:PART_ENTRY_UUID", "v"), 0);
        assert_int_equal(observation_set(&o, "X:backing_dev", "v"), 0);
        assert_int_equal(observation_set(&o, "E:.:/-_~!", "v"), 0);
        assert_int_equal(o.n_entries, 6);
        observation_done(&o);
}

static void test_format(void **state) {
        struct observation o = { .kname = strdup("sda") };
        _cleanup_free_ char *text = NULL;

        assert_non_null(o.kname);
        assert_int_equal(observation_set(&o, "E:DEVNAME", "/dev/sda"), 0);
        assert_int_equal(observation_set(&o, "A:size", "976773168"), 0);
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", ""), 0);
        assert_int_equal(observation_format(&o, &text), 0);
        /* kname first, then the entries in the order they were set. */
        assert_string_equal(text, "kname=sda\n"
                                  "E:DEVNAME=/dev/sda\n"
                                  "A:size=976773168\n"
                                  "E:ID_FS_LABEL=\n");
        observation_done(&o);
}

static void test_format_escapes(void **state) {
        struct observation o = { .kname = strdup("sdb") };
        _cleanup_free_ char *text = NULL;

        assert_non_null(o.kname);
        assert_int_equal(observation_set(&o, "E:ID_FS_LABEL", "a\tb\nc\\d\x1b[31m\x7f\x01"), 0);
        assert_int_equal(observation_set(&o, "E:ID_MODEL_ENC", "Flash\\x20Disk"), 0);
        assert_int_equal(observation_set(&o, "B:LABEL", "caf\xc3\xa9\xff"), 0);
        assert_int_equal(observation_format(&o, &text), 0);
        /* Control bytes and the backslash are escaped; bytes >= 0x80 go out as they are,
         * so each entry stays on one line. */
        assert_string_equal(text, "kname=sdb\n"
                                  "E:ID_FS_LABEL=a\\x09b\\x0ac\\\\d\\x1b[31m\\x7f\\x01\n"
                                  "E:ID_MODEL_ENC=Flash\\\\x20Disk\n"
                                  "B:LABEL=caf\xc3\xa9\xff\n");
        observation_done(&o);
}

static void test_round_trip(void **state) {
        static const struct {
                const char *key, *value;
        } entries[] = {
                { "E:DEVNAME", "/dev/sda" },
                { "E:ID_MODEL_ENC", "Samsung\\x20SSD\\x20860\\x20EVO" },
                { "E:ID_FS_LABEL", "tab\there\nnewline\rcr" },
                { "B:LABEL", "esc\x1b[2Jbell\x07" "del\x7f" },
                { "B:UUID", "back\\slash\\\\double\\x41literal" },
                { "A:device/model", "caf\xc3\xa9 \xe2\x82\xac \xff\xfe\x80" },
                { "A:size", "" },
                { "X:holders", "dm-0 dm-1" },
                { "E:EQUALS", "a=b==c=" },
                { "E:HASH", "# not a comment" },
                { "E:SPACES", "  padded  " },
        };
        struct observation o = { .kname = strdup("nvme0n1") }, back = {};
        _cleanup_free_ char *text = NULL, *text2 = NULL;
        unsigned line = 0;

        assert_non_null(o.kname);
        for (size_t i = 0; i < ELEMENTSOF(entries); i++)
                assert_int_equal(observation_set(&o, entries[i].key, entries[i].value), 0);
        assert_int_equal(observation_format(&o, &text), 0);

        assert_int_equal(observation_parse(text, &back, &line), 0);
        assert_string_equal(back.kname, "nvme0n1");
        assert_int_equal(back.n_entries, ELEMENTSOF(entries));
        for (size_t i = 0; i < ELEMENTSOF(entries); i++) {
                const char *v = observation_get(&back, entries[i].key);

                if (!v || !streq(v, entries[i].value))
                        fail_msg("%s did not survive the text form", entries[i].key);
                assert_string_equal(back.entries[i].key, entries[i].key);
        }

        /* And formatting again gives the same text. */
        assert_int_equal(observation_format(&back, &text2), 0);
        assert_string_equal(text, text2);

        observation_done(&o);
        observation_done(&back);
}

static void test_parse(void **state) {
        static const char text[] =
                "# blkledgerd --observe sda\n"
                "\n"
                "kname=sda\n"
                "E:DEVNAME=/dev/sda\n"
                "# a comment between entries\n"
                "E:ID_FS_LABEL=a=b\n"
                "E:ID_MODEL_ENC=Samsung\\\\x20SSD\n"
                "B:LABEL=\\x1b\\x7fok\\xc3\\xa9\n"
                "A:size=\n"
                "A:ro=0"; /* no final newline */
        struct observation o = {};
        unsigned line = 12345;

        assert_int_equal(observation_parse(text, &o, &line), 0);
        /* Success does not touch the line. */
        assert_int_equal(line, 12345);
        assert_string_equal(o.kname, "sda");
        assert_int_equal(o.n_entries, 6);
        assert_string_equal(observation_get(&o, "E:DEVNAME"), "/dev/sda");
        /* The first '=' separates key and value. */
        assert_string_equal(observation_get(&o, "E:ID_FS_LABEL"), "a=b");
        /* udev's own escapes stay literal. */
        assert_string_equal(observation_get(&o, "E:ID_MODEL_ENC"), "Samsung\\x20SSD");
        assert_string_equal(observation_get(&o, "B:LABEL"), "\x1b\x7fok\xc3\xa9");
        assert_string_equal(observation_get(&o, "A:size"), "");
        assert_string_equal(observation_get(&o, "A:ro"), "0");
        observation_done(&o);
}

static void test_parse_kname(void **state) {
        struct observation o = {};
        unsigned line = 0;

        /* kname may come anywhere; the last one counts. */
        assert_int_equal(observation_parse("E:MAJOR=8\nkname=sdx\nkname=sda\n", &o, &line), 0);
        assert_string_equal(o.kname, "sda");
        assert_int_equal(o.n_entries, 1);
        assert_null(observation_get(&o, "kname"));
        observation_done(&o);

        /* Without a kname there is no observation. */
        assert_int_equal(observation_parse("E:MAJOR=8\nE:MINOR=0\n", &o, &line), -EINVAL);
        assert_null(o.kname);
        assert_int_equal(observation_parse("", &o, &line), -EINVAL);
        assert_int_equal(observation_parse("# only a comment\n\n", &o, NULL), -EINVAL);
}

static void test_parse_errors(void **state) {
        static const struct {
                const char *text;
                int r;
                unsigned line;
        } cases[] = {
                { "kname=sda\nE:MAJOR=8\nno equals sign\nE:MINOR=0\n", -EINVAL, 3 },
                { "kname=sda\n# comment\n\nE BAD=1\n", -EINVAL, 4 },
                { "DEVNAME=/dev/sda\nkname=sda\n", -EINVAL, 1 },
                { "kname=sda\nE:A=1\nE:B=2\nQ:C=3\n", -EINVAL, 4 },
                { "kname=sda\nE:A=\\q\n", -EINVAL, 2 },             /* unknown escape */
                { "kname=sda\nE:A=1\nE:A=abc\\\n", -EINVAL, 3 },    /* lone backslash at the end */
                { "kname=sda\nE:A=\\x4\n", -EINVAL, 2 },            /* one hex digit */
                { "kname=sda\nE:A=\\xg0\n", -EINVAL, 2 },
                { "kname=sda\nE:A=a\\x00b\n", -EINVAL, 2 },         /* NUL cannot be stored */
                { "kname=sda\n\n\n\nE:A=ok\nE:B=\\\n", -EINVAL, 6 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct observation o = {};
                unsigned line = 0;
                int r = observation_parse(cases[i].text, &o, &line);

                if (r != cases[i].r)
                        fail_msg("case %zu: returned %d, not %d", i, r, cases[i].r);
                if (r < 0) {
                        if (line != cases[i].line)
                                fail_msg("case %zu: error reported on line %u, not %u", i, line, cases[i].line);
                        /* Nothing is left to free after a failure. */
                        assert_null(o.kname);
                        assert_int_equal(o.n_entries, 0);
                }
                observation_done(&o);
        }
}

static void test_parse_too_many_entries(void **state) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        struct observation o = {};
        unsigned line = 0;

        assert_non_null(f);
        fputs("kname=sda\n", f);
        for (unsigned i = 0; i <= OBS_ENTRIES_MAX; i++)
                fprintf(f, "E:KEY_%u=%u\n", i, i);
        assert_int_equal(fclose(f), 0);

        /* The entry past the limit is on line OBS_ENTRIES_MAX + 2 (kname is line 1). */
        assert_int_equal(observation_parse(buf, &o, &line), -E2BIG);
        assert_int_equal(line, OBS_ENTRIES_MAX + 2);
        free(buf);
}

static void test_parse_long_value_cut(void **state) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        struct observation o = {};

        assert_non_null(f);
        fputs("kname=sda\nE:ID_FS_LABEL=", f);
        for (unsigned i = 0; i < 100 * 1024; i++)
                fputc('L', f);
        fputs("\nE:AFTER=still read\n", f);
        assert_int_equal(fclose(f), 0);

        assert_int_equal(observation_parse(buf, &o, NULL), 0);
        assert_int_equal(strlen(observation_get(&o, "E:ID_FS_LABEL")), OBS_VALUE_MAX);
        assert_string_equal(observation_get(&o, "E:AFTER"), "still read");
        observation_done(&o);
        free(buf);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_set_get),
                cmocka_unit_test(test_replace),
                cmocka_unit_test(test_value_cut),
                cmocka_unit_test(test_entries_max),
                cmocka_unit_test(test_invalid_keys),
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_format_escapes),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_parse_kname),
                cmocka_unit_test(test_parse_errors),
                cmocka_unit_test(test_parse_too_many_entries),
                cmocka_unit_test(test_parse_long_value_cut),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
