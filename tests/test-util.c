/* Description: lib/util.c: RFC 3339 times, sizes, UTF-8 checks, integer parsing and path_is_under. */
/* Times round-trip to the microsecond and junk is refused; sizes print in lsblk's binary
 * units; UTF-8 validation refuses overlong forms, surrogates, values past U+10FFFF,
 * truncated sequences and NUL, and sanitizing replaces each bad byte by U+FFFD; number
 * parsing refuses junk and overflow; path_is_under is not fooled by shared prefixes. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "util.h"

#define REPLACEMENT "\xef\xbf\xbd"

/* ---- RFC 3339 ---------------------------------------------------------------------- */

static void test_rfc3339_format_known(void **state) {
        char buf[RFC3339_MAX];

        assert_string_equal(format_rfc3339(0, buf), "1970-01-01T00:00:00.000000Z");
        assert_string_equal(format_rfc3339(1795820462123456LL, buf), "2026-11-27T23:01:02.123456Z");
        /* 2000 was a leap year: the 29th of February exists. */
        assert_string_equal(format_rfc3339(951825600000001LL, buf), "2000-02-29T12:00:00.000001Z");
        /* Past the 32-bit time_t limit. */
        assert_string_equal(format_rfc3339(2147483648LL * USEC_PER_SEC, buf), "2038-01-19T03:14:08.000000Z");
        /* The return value is the buffer, so calls can be nested in printf(). */
        assert_ptr_equal(format_rfc3339(0, buf), buf);
}

static void test_rfc3339_format_negative(void **state) {
        char buf[RFC3339_MAX];

        /* Before the epoch the fraction still counts up within the second. */
        assert_string_equal(format_rfc3339(-1, buf), "1969-12-31T23:59:59.999999Z");
        assert_string_equal(format_rfc3339(-1500000, buf), "1969-12-31T23:59:58.500000Z");
        assert_string_equal(format_rfc3339(-USEC_PER_SEC, buf), "1969-12-31T23:59:59.000000Z");
        assert_string_equal(format_rfc3339(-14182940LL * USEC_PER_SEC, buf), "1969-07-20T20:17:40.000000Z");
}

static void test_rfc3339_round_trip(void **state) {
        static const int64_t values[] = {
                0,
                1,
                -1,
                999999,
                -999999,
                1000000,
                -1500000,
                -14182940LL * USEC_PER_SEC + 250000,
                951825600000001LL,
                1795820462123456LL,
                2147483648LL * USEC_PER_SEC - 1,
                4102444799999999LL, /* 2099-12-31T23:59:59.999999Z */
        };
        char buf[RFC3339_MAX];

        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                int64_t back = 42;

                format_rfc3339(values[i], buf);
                assert_int_equal(parse_rfc3339(buf, &back), 0);
                if (back != values[i])
                        fail_msg("%s parsed back as %lld, not %lld", buf, (long long) back,
                                 (long long) values[i]);
        }
}

static void test_rfc3339_parse_fraction(void **state) {
        static const struct {
                const char *text;
                int64_t usec;
        } cases[] = {
                { "1970-01-01T00:00:00Z", 0 },
                { "1970-01-01T00:00:01Z", 1000000 },
                { "1970-01-01T00:00:00.5Z", 500000 },
                { "1970-01-01T00:00:00.123Z", 123000 },
                { "1970-01-01T00:00:00.000001Z", 1 },
                { "1970-01-01T00:00:00.123456Z", 123456 },
                /* Beyond microseconds the digits are accepted and dropped, not rounded. */
                { "1970-01-01T00:00:00.1234569Z", 123456 },
                { "1970-01-01T00:00:00.999999999Z", 999999 },
                { "2026-11-27T23:01:02.123456Z", 1795820462123456LL },
                { "1969-12-31T23:59:59.999999Z", -1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int64_t v = 42;

                assert_int_equal(parse_rfc3339(cases[i].text, &v), 0);
                if (v != cases[i].usec)
                        fail_msg("%s parsed as %lld, not %lld", cases[i].text, (long long) v,
                                 (long long) cases[i].usec);
        }
}

static void test_rfc3339_parse_rejects(void **state) {
        static const char *const bad[] = {
                "",
                "now",
                "1795820462",
                "2026-11-27",
                "2026-11-27T23:01:02",        /* no zone */
                "2026-11-27T23:01:02.123456", /* no zone */
                "2026-11-27T23:01:02+00:00",  /* only UTC, spelled Z */
                "2026-11-27T23:01:02z",
                "2026-11-27T23:01:02.Z",      /* a dot needs digits */
                "2026-11-27T23:01:02ZZ",
                "2026-11-27T23:01:02Z ",
                "2026-11-27T23:01:02.12x3Z",
                "2026-11-27 23:01:02Z",
                "2026-13-27T23:01:02Z",
                "2026-11-27T24:01:02Z",
                "2026-11-27T23:61:02Z",
                "27/11/2026 23:01:02Z",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int64_t v = 42;
                int r = parse_rfc3339(bad[i], &v);

                if (r != -EINVAL)
                        fail_msg("'%s' gave %d, not -EINVAL", bad[i], r);
                /* A failed parse leaves the output alone. */
                assert_int_equal(v, 42);
        }
}

/* ---- format_size ------------------------------------------------------------------- */

static void test_format_size(void **state) {
        static const struct {
                uint64_t bytes;
                const char *text;
        } cases[] = {
                { 0, "0B" },
                { 1, "1B" },
                { 512, "512B" },
                { 1023, "1023B" },
                { 1024, "1K" },
                { 1536, "1.5K" },
                { 1600, "1.6K" },  /* 1.5625 */
                { 4096, "4K" },
                { 64ULL << 20, "64M" },
                { (3ULL << 30) / 2, "1.5G" },
                /* One decimal, rounded half up on the last unit's remainder. */
                { 1556925644ULL, "1.4G" }, /* 1.44999 */
                { 1567000000ULL, "1.5G" }, /* 1.4594 */
                { 2104533975ULL, "2G" },   /* 1.96: rounds up to a whole unit */
                { 99ULL * 1024 + 1000, "100K" },
                /* Like lsblk: a decimal above 100 units too (a "500 GB" disk). */
                { 500107862016ULL, "465.8G" },
                { 1ULL << 40, "1T" },
                { 128ULL << 30, "128G" },
                { 1023ULL << 20, "1023M" },
                { 1ULL << 50, "1P" },
                { 1ULL << 60, "1E" },
                /* E is the last unit: the largest value is just under 16E. */
                { UINT64_MAX, "16E" },
        };
        char buf[FORMAT_SIZE_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                format_size(cases[i].bytes, buf);
                if (!streq(buf, cases[i].text))
                        fail_msg("%llu bytes gave '%s', not '%s'", (unsigned long long) cases[i].bytes, buf,
                                 cases[i].text);
        }
        assert_ptr_equal(format_size(1, buf), buf);
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

struct bytes {
        const char *s;
        size_t len;
        const char *what;
};
#define B(lit, what) { lit, sizeof(lit) - 1, what }

static void test_utf8_valid(void **state) {
        static const struct bytes good[] = {
                B("", "empty"),
                B("sda1", "ASCII"),
                B("\x7f", "DEL is a valid code point"),
                B("caf\xc3\xa9", "U+00E9, two bytes"),
                B("\xe2\x82\xac", "U+20AC, three bytes"),
                B("\xf0\x9d\x84\x9e", "U+1D11E, four bytes"),
                B("\xed\x9f\xbf", "U+D7FF, just below the surrogates"),
                B("\xee\x80\x80", "U+E000, just above the surrogates"),
                B("\xef\xbf\xbd", "U+FFFD"),
                B("\xf4\x8f\xbf\xbf", "U+10FFFF, the last code point"),
                B("\xc2\x80", "U+0080, shortest two-byte form"),
                B("\xe0\xa0\x80", "U+0800, shortest three-byte form"),
                B("\xf0\x90\x80\x80", "U+10000, shortest four-byte form"),
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                if (!utf8_is_valid(good[i].s, good[i].len))
                        fail_msg("rejected valid UTF-8: %s", good[i].what);
}

static const struct bytes bad_utf8[] = {
        B("\x80", "lone continuation byte"),
        B("a\xbf", "continuation byte after ASCII"),
        B("\xfe", "0xfe"),
        B("\xff", "0xff"),
        B("\xc0\xaf", "overlong '/' in two bytes"),
        B("\xc1\xbf", "overlong U+007F"),
        B("\xc0\x80", "overlong NUL"),
        B("\xe0\x80\xaf", "overlong '/' in three bytes"),
        B("\xe0\x9f\xbf", "overlong U+07FF"),
        B("\xf0\x80\x80\xaf", "overlong '/' in four bytes"),
        B("\xf0\x8f\xbf\xbf", "overlong U+FFFF"),
        B("\xed\xa0\x80", "surrogate U+D800"),
        B("\xed\xbf\xbf", "surrogate U+DFFF"),
        B("\xed\xa0\xbd\xed\xb2\xa9", "CESU-8 surrogate pair"),
        B("\xf4\x90\x80\x80", "U+110000"),
        B("\xf5\x80\x80\x80", "lead byte 0xf5"),
        B("\xf7\xbf\xbf\xbf", "U+1FFFFF"),
        B("\xf8\x88\x80\x80\x80", "five-byte form"),
        B("\xfc\x84\x80\x80\x80\x80", "six-byte form"),
        B("\xc3", "truncated two-byte sequence"),
        B("\xe2\x82", "truncated three-byte sequence"),
        B("\xf0\x9d\x84", "truncated four-byte sequence"),
        B("\xe2\x82(", "three-byte sequence cut by ASCII"),
        B("\xc3\xc3\xa9", "lead byte followed by a lead byte"),
        B("a\0b", "embedded NUL"),
        B("\0", "NUL alone"),
};

static void test_utf8_invalid(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_utf8); i++)
                if (utf8_is_valid(bad_utf8[i].s, bad_utf8[i].len))
                        fail_msg("accepted invalid UTF-8: %s", bad_utf8[i].what);
}

static void test_utf8_valid_respects_length(void **state) {
        /* Only len bytes count: a valid prefix is valid, a cut sequence is not. */
        assert_true(utf8_is_valid("abc\xff", 3));
        assert_false(utf8_is_valid("caf\xc3\xa9", 4));
        assert_true(utf8_is_valid("caf\xc3\xa9", 5));
        assert_true(utf8_is_valid("\xff", 0));
}

static void test_utf8_sanitize(void **state) {
        static const struct {
                struct bytes in;
                const char *out;
        } cases[] = {
                { B("", "empty"), "" },
                { B("sda", "ASCII"), "sda" },
                { B("caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e", "valid multibyte"),
                  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e" },
                { B("a\xffz", "one bad byte"), "a" REPLACEMENT "z" },
                { B("a\0b", "embedded NUL"), "a" REPLACEMENT "b" },
                { B("\0", "NUL alone"), REPLACEMENT },
                /* Each byte that starts no valid sequence is replaced on its own. */
                { B("\xc0\xaf", "overlong"), REPLACEMENT REPLACEMENT },
                { B("\xed\xa0\x80", "surrogate"), REPLACEMENT REPLACEMENT REPLACEMENT },
                { B("\xf4\x90\x80\x80", "past U+10FFFF"), REPLACEMENT REPLACEMENT REPLACEMENT REPLACEMENT },
                { B("x\xe2\x82", "truncated at the end"), "x" REPLACEMENT REPLACEMENT },
                { B("\xe2\x82(\xc3\xa9", "truncated, then valid"), REPLACEMENT REPLACEMENT "(\xc3\xa9" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = utf8_sanitize(cases[i].in.s, cases[i].in.len);

                assert_non_null(s);
                if (!streq(s, cases[i].out))
                        fail_msg("sanitizing %s gave the wrong bytes", cases[i].in.what);
                assert_true(utf8_is_valid(s, strlen(s)));
        }
}

static void test_utf8_sanitize_always_valid(void **state) {
        /* Whatever goes in, valid UTF-8 without NUL comes out. */
        for (size_t i = 0; i < ELEMENTSOF(bad_utf8); i++) {
                _cleanup_free_ char *s = utf8_sanitize(bad_utf8[i].s, bad_utf8[i].len);

                assert_non_null(s);
                if (!utf8_is_valid(s, strlen(s)))
                        fail_msg("sanitized %s is not valid UTF-8", bad_utf8[i].what);
                assert_non_null(strstr(s, REPLACEMENT));
        }
}

/* ---- strdup_strip ------------------------------------------------------------------ */

static void test_strdup_strip(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "" },
                { "   ", "" },
                { "\t\n\v\f\r ", "" },
                { "x", "x" },
                { "Samsung SSD 860 ", "Samsung SSD 860" },
                { "  S4EWNX0R123456A     ", "S4EWNX0R123456A" },
                { "\ta b\tc\n", "a b\tc" },
                { "caf\xc3\xa9 ", "caf\xc3\xa9" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = strdup_strip(cases[i].in);

                assert_non_null(s);
                assert_string_equal(s, cases[i].out);
        }
}

/* ---- integers ---------------------------------------------------------------------- */

static void test_parse_int64(void **state) {
        static const struct {
                const char *text;
                int r;
                int64_t v;
        } cases[] = {
                { "0", 0, 0 },
                { "42", 0, 42 },
                { "007", 0, 7 },
                { "-42", 0, -42 },
                { "9223372036854775807", 0, INT64_MAX },
                { "-9223372036854775808", 0, INT64_MIN },
                { "9223372036854775808", -ERANGE, 0 },
                { "-9223372036854775809", -ERANGE, 0 },
                { "99999999999999999999999", -ERANGE, 0 },
                { "", -EINVAL, 0 },
                { "-", -EINVAL, 0 },
                { "+42", -EINVAL, 0 },
                { " 42", -EINVAL, 0 },
                { "42 ", -EINVAL, 0 },
                { "42\n", -EINVAL, 0 },
                { "4 2", -EINVAL, 0 },
                { "42x", -EINVAL, 0 },
                { "0x10", -EINVAL, 0 },
                { "1e3", -EINVAL, 0 },
                { "1.5", -EINVAL, 0 },
                { "abc", -EINVAL, 0 },
                { "--1", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int64_t v = 12345;
                int r = parse_int64(cases[i].text, &v);

                if (r != cases[i].r)
                        fail_msg("parse_int64('%s') returned %d, not %d", cases[i].text, r, cases[i].r);
                /* Only success writes the result. */
                assert_int_equal(v, r == 0 ? cases[i].v : 12345);
        }
        assert_int_equal(parse_int64(NULL, &(int64_t) { 0 }), -EINVAL);
}

static void test_parse_uint64(void **state) {
        static const struct {
                const char *text;
                int r;
                uint64_t v;
        } cases[] = {
                { "0", 0, 0 },
                { "976773168", 0, 976773168 },
                { "18446744073709551615", 0, UINT64_MAX },
                { "18446744073709551616", -ERANGE, 0 },
                /* strtoull() would take these and wrap them around. */
                { "-1", -EINVAL, 0 },
                { "-0", -EINVAL, 0 },
                { "+1", -EINVAL, 0 },
                { " 1", -EINVAL, 0 },
                { "1 ", -EINVAL, 0 },
                { "", -EINVAL, 0 },
                { "0x1f", -EINVAL, 0 },
                { "12k", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 12345;
                int r = parse_uint64(cases[i].text, &v);

                if (r != cases[i].r)
                        fail_msg("parse_uint64('%s') returned %d, not %d", cases[i].text, r, cases[i].r);
                assert_true(v == (r == 0 ? cases[i].v : 12345));
        }
        assert_int_equal(parse_uint64(NULL, &(uint64_t) { 0 }), -EINVAL);
}

/* ---- path_is_under ----------------------------------------------------------------- */

static void test_path_is_under(void **state) {
        static const struct {
                const char *path, *dir;
                bool under;
        } cases[] = {
                { "/a/b/c", "/a/b", true },
                { "/a/b/c/d.img", "/a/b", true },
                { "/a/b/c", "/a", true },
                /* A shared prefix of the name is not containment. */
                { "/a/bc", "/a/b", false },
                { "/a/bc/d", "/a/b", false },
                { "/a/b-old/x.img", "/a/b", false },
                { "/a", "/a/b", false },
                { "/x/b/c", "/a/b", false },
                { "a/b/c", "/a/b", false },
                /* The directory itself holds no backing file. */
                { "/a/b", "/a/b", false },
                /* Trailing slashes of the directory do not matter. */
                { "/a/b/c", "/a/b/", true },
                { "/a/b/c", "/a/b//", true },
                { "/a/bc", "/a/b/", false },
                { "/a/b", "/a/b/", false },
                /* Everything absolute is under the root. */
                { "/x", "/", true },
                { "/var/tmp/x.img", "/", true },
                { "/x", "//", true },
                { "x", "/", false },
                { "", "/", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (path_is_under(cases[i].path, cases[i].dir) != cases[i].under)
                        fail_msg("path_is_under('%s', '%s') should be %s", cases[i].path, cases[i].dir,
                                 cases[i].under ? "true" : "false");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rfc3339_format_known),
                cmocka_unit_test(test_rfc3339_format_negative),
                cmocka_unit_test(test_rfc3339_round_trip),
                cmocka_unit_test(test_rfc3339_parse_fraction),
                cmocka_unit_test(test_rfc3339_parse_rejects),
                cmocka_unit_test(test_format_size),
                cmocka_unit_test(test_utf8_valid),
                cmocka_unit_test(test_utf8_invalid),
                cmocka_unit_test(test_utf8_valid_respects_length),
                cmocka_unit_test(test_utf8_sanitize),
                cmocka_unit_test(test_utf8_sanitize_always_valid),
                cmocka_unit_test(test_strdup_strip),
                cmocka_unit_test(test_parse_int64),
                cmocka_unit_test(test_parse_uint64),
                cmocka_unit_test(test_path_is_under),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
