/* Description: lib/varlink.c: buffers, message framing, strict JSON, call/reply validation and names. */
/* The buffer reuses its consumed head before growing; framing finds NUL-terminated
 * messages and refuses one that outgrows the limit; the JSON parser is strict (one value,
 * valid UTF-8, bounded depth); calls and replies are validated field by field with a
 * reason; formatted messages parse back; names follow the Varlink grammar. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/wait.h>

#include "util.h"
#include "varlink.h"

/* sizeof - 1 keeps NUL bytes inside a literal. */
#define LIT(s) (s), (sizeof(s) - 1)

static void buf_append_str(struct vl_buf *b, const char *s, size_t len) {
        assert_int_equal(vl_buf_append(b, s, len), 0);
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("no member '%s' in %s", key, json_object_to_json_string(o));
        return v;
}

/* ---- vl_buf ------------------------------------------------------------------------ */

static void test_buf_append_consume(void **state) {
        struct vl_buf b = {};

        buf_append_str(&b, LIT("hello"));
        buf_append_str(&b, LIT(" world"));
        assert_int_equal(vl_buf_len(&b), 11);
        assert_memory_equal(vl_buf_head(&b), "hello world", 11);

        vl_buf_consume(&b, 6);
        assert_int_equal(vl_buf_len(&b), 5);
        assert_memory_equal(vl_buf_head(&b), "world", 5);
        assert_int_equal(b.start, 6);

        /* Consuming more than there is empties the buffer, and an empty buffer starts
         * over at offset 0 so the next message is written at the front. */
        vl_buf_consume(&b, 1000);
        assert_int_equal(vl_buf_len(&b), 0);
        assert_int_equal(b.start, 0);
        assert_int_equal(b.end, 0);

        buf_append_str(&b, LIT("again"));
        assert_ptr_equal(vl_buf_head(&b), b.data);
        assert_memory_equal(vl_buf_head(&b), "again", 5);

        vl_buf_free(&b);
        assert_null(b.data);
        assert_int_equal(b.alloc, 0);
        assert_int_equal(b.end, 0);
}

static void test_buf_consume_exact_resets(void **state) {
        struct vl_buf b = {};

        buf_append_str(&b, LIT("abc"));
        vl_buf_consume(&b, 3);
        assert_int_equal(b.start, 0);
        assert_int_equal(b.end, 0);
        vl_buf_free(&b);
}

static void test_buf_reserve_grows(void **state) {
        struct vl_buf b = {};
        char chunk[4000];

        memset(chunk, 'x', sizeof(chunk));

        assert_int_equal(vl_buf_reserve(&b, 10), 0);
        assert_non_null(b.data);
        assert_int_equal(b.alloc, 4096);
        assert_int_equal(b.end, 0);

        /* Enough room: nothing moves. */
        buf_append_str(&b, chunk, sizeof(chunk));
        assert_int_equal(vl_buf_reserve(&b, 96), 0);
        assert_int_equal(b.alloc, 4096);

        /* No room and nothing consumed: the allocation doubles until it fits. */
        assert_int_equal(vl_buf_reserve(&b, 200), 0);
        assert_int_equal(b.alloc, 8192);
        assert_int_equal(vl_buf_reserve(&b, 20000), 0);
        assert_int_equal(b.alloc, 32768);
        assert_int_equal(vl_buf_len(&b), sizeof(chunk));
        assert_memory_equal(vl_buf_head(&b), chunk, sizeof(chunk));

        /* A size that cannot be represented fails cleanly. */
        assert_int_equal(vl_buf_reserve(&b, SIZE_MAX), -ENOMEM);
        assert_int_equal(vl_buf_len(&b), sizeof(chunk));

        vl_buf_free(&b);
}

static void test_buf_compaction(void **state) {
        struct vl_buf b = {};
        char chunk[4096];
        char *data;

        for (size_t i = 0; i < sizeof(chunk); i++)
                chunk[i] = (char) ('a' + i % 26);
        buf_append_str(&b, chunk, sizeof(chunk));
        assert_int_equal(b.alloc, 4096);
        data = b.data;

        /* 4000 bytes read: appending 100 more fits once the unread 96 move to the front. */
        vl_buf_consume(&b, 4000);
        assert_int_equal(b.start, 4000);
        buf_append_str(&b, LIT("0123456789"));
        assert_int_equal(b.alloc, 4096);
        assert_ptr_equal(b.data, data);
        assert_int_equal(b.start, 0);
        assert_int_equal(vl_buf_len(&b), 96 + 10);
        assert_memory_equal(vl_buf_head(&b), chunk + 4000, 96);
        assert_memory_equal(vl_buf_head(&b) + 96, "0123456789", 10);

        /* When the moved data plus the new bytes still do not fit, it grows as well. */
        vl_buf_consume(&b, 6);
        assert_int_equal(vl_buf_reserve(&b, 4096), 0);
        assert_int_equal(b.start, 0);
        assert_int_equal(b.alloc, 8192);
        assert_memory_equal(vl_buf_head(&b), chunk + 4006, 90);

        vl_buf_free(&b);
}

/* ---- vl_frame_next ----------------------------------------------------------------- */

static void test_frame_incomplete(void **state) {
        struct vl_buf b = {};
        size_t len = 12345;

        buf_append_str(&b, LIT("{\"method\":\"io.blkledger.GetStatus\""));
        assert_int_equal(vl_frame_next(&b, 65536, &len), 0);
        assert_int_equal(len, 12345);

        buf_append_str(&b, LIT("}\0"));
        assert_int_equal(vl_frame_next(&b, 65536, &len), 1);
        assert_int_equal(len, strlen("{\"method\":\"io.blkledger.GetStatus\"}"));
        vl_buf_free(&b);
}

static void test_frame_empty_buffer(void **state) {
        /* A connection's input buffer before its first read was never allocated; the
         * client library looks for a reply in it before it reads anything. Checked in a
         * child so that a sanitizer's abort fails this test only. */
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                struct vl_buf b = {};
                size_t len = 12345;
                int r = vl_frame_next(&b, 65536, &len);

                _exit(r == 0 && len == 12345 ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("vl_frame_next() on an empty, unallocated buffer failed (status 0x%x)", status);
}

static void test_frame_two_messages(void **state) {
        struct vl_buf b = {};
        size_t len;

        buf_append_str(&b, LIT("{\"a\":1}\0{\"bb\":22}\0{\"c\""));

        assert_int_equal(vl_frame_next(&b, 65536, &len), 1);
        assert_int_equal(len, 7);
        assert_memory_equal(vl_buf_head(&b), "{\"a\":1}", 7);
        vl_buf_consume(&b, len + 1);

        assert_int_equal(vl_frame_next(&b, 65536, &len), 1);
        assert_int_equal(len, 9);
        assert_memory_equal(vl_buf_head(&b), "{\"bb\":22}", 9);
        vl_buf_consume(&b, len + 1);

        /* The third is still arriving. */
        assert_int_equal(vl_frame_next(&b, 65536, &len), 0);
        assert_int_equal(vl_buf_len(&b), 4);
        vl_buf_free(&b);
}

static void test_frame_limit(void **state) {
        const size_t max = 64;
        char msg[200];
        struct vl_buf b = {};
        size_t len;

        memset(msg, 'x', sizeof(msg));

        /* Exactly max bytes and the NUL: accepted. */
        buf_append_str(&b, msg, max);
        assert_int_equal(vl_frame_next(&b, max, &len), 0); /* max bytes, no NUL yet */
        buf_append_str(&b, LIT("\0"));
        assert_int_equal(vl_frame_next(&b, max, &len), 1);
        assert_int_equal(len, max);
        vl_buf_consume(&b, len + 1);
        assert_int_equal(vl_buf_len(&b), 0);

        /* max + 1 bytes without a terminator can only become an oversized message. */
        buf_append_str(&b, msg, max + 1);
        assert_int_equal(vl_frame_next(&b, max, &len), -EMSGSIZE);
        /* ... and it stays refused when its NUL arrives later. */
        buf_append_str(&b, LIT("\0"));
        assert_int_equal(vl_frame_next(&b, max, &len), -EMSGSIZE);
        vl_buf_free(&b);

        /* A short message followed by the start of a huge one: the first is served. */
        buf_append_str(&b, LIT("{}\0"));
        buf_append_str(&b, msg, sizeof(msg));
        assert_int_equal(vl_frame_next(&b, max, &len), 1);
        assert_int_equal(len, 2);
        vl_buf_consume(&b, len + 1);
        assert_int_equal(vl_frame_next(&b, max, &len), -EMSGSIZE);
        vl_buf_free(&b);
}

/* ---- vl_json_parse ----------------------------------------------------------------- */

/* Every case of vl_json_parse() checks vl_json_valid() too: it accepts what the parser
 * accepts and nothing else. */
static int parse(const char *s, size_t len, json_object **ret) {
        int r = vl_json_parse(s, len, VL_MAX_DEPTH, ret);

        assert_int_equal(vl_json_valid(s, len, VL_MAX_DEPTH), r == 0);
        return r;
}

static void test_json_parse_values(void **state) {
        json_object *o = NULL;

        assert_int_equal(parse(LIT("{\"a\":[1,2,{\"b\":\"c\"}],\"d\":true}"), &o), 0);
        assert_true(json_object_is_type(o, json_type_object));
        assert_int_equal(json_object_array_length(member(o, "a")), 3);
        assert_true(json_object_get_boolean(member(o, "d")));
        json_object_put(o);

        /* Whitespace around the value is allowed. */
        assert_int_equal(parse(LIT(" \t\r\n{\"a\":1} \n\t\r"), &o), 0);
        assert_int_equal(json_object_get_int(member(o, "a")), 1);
        json_object_put(o);

        assert_int_equal(parse(LIT("[]"), &o), 0);
        assert_true(json_object_is_type(o, json_type_array));
        json_object_put(o);

        assert_int_equal(parse(LIT("\"caf\xc3\xa9\""), &o), 0);
        assert_string_equal(json_object_get_string(o), "caf\xc3\xa9");
        json_object_put(o);

        /* Only len bytes are read: what follows in memory is not part of the message. */
        assert_int_equal(parse("{\"a\":1}garbage", 7, &o), 0);
        assert_int_equal(json_object_get_int(member(o, "a")), 1);
        json_object_put(o);
}

static void test_json_parse_scalars(void **state) {
        json_object *o = (json_object *) 0x1;

        /* "null" is one complete JSON value; it parses to NULL with success. */
        assert_int_equal(parse(LIT("null"), &o), 0);
        assert_null(o);

        o = NULL;
        assert_int_equal(parse(LIT("42"), &o), 0);
        assert_true(json_object_is_type(o, json_type_int));
        assert_int_equal(json_object_get_int64(o), 42);
        json_object_put(o);

        o = NULL;
        assert_int_equal(parse(LIT("true"), &o), 0);
        assert_true(json_object_is_type(o, json_type_boolean));
        json_object_put(o);
}

static void test_json_parse_trailing_garbage(void **state) {
        static const char *const bad[] = {
                "{}x", "{} {}", "{}}", "[1]]", "{}\x01", "{},", "\"a\"\"b\"", "{} // comment",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = NULL;
                int r = parse(bad[i], strlen(bad[i]), &o);

                if (r != -EBADMSG)
                        fail_msg("'%s' gave %d, not -EBADMSG", bad[i], r);
                assert_null(o);
        }
}

static void test_json_parse_incomplete_and_malformed(void **state) {
        static const char *const bad[] = {
                "", " ", "{", "[1,", "{\"a\":", "\"abc", "[1,]", "{\"a\":1,}", "{a:1}", "[.5]", "[1e]",
                "[0x10]", "[+1]", "[TRUE]", "[\"\\q\"]", "[truex]", "[nan]", "[1/*x*/]",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = NULL;
                int r = parse(bad[i], strlen(bad[i]), &o);

                if (r != -EBADMSG)
                        fail_msg("'%s' gave %d, not -EBADMSG", bad[i], r);
                assert_null(o);
        }
}

static void test_json_parse_rejects_lax_json(void **state) {
        /* Things lenient parsers take that are not JSON (RFC 8259). */
        static const struct {
                const char *text, *what;
        } bad[] = {
                { "{'a':1}", "single-quoted member name" },
                { "{\"a\":NaN}", "NaN" },
                { "[Infinity]", "Infinity" },
                { "[-Infinity]", "-Infinity" },
                { "[00]", "leading zero" },
                { "[1.]", "fraction without digits" },
                { "[\"a\x01z\"]", "raw control character in a string" },
                { "[\"a\nz\"]", "raw newline in a string" },
        };

        char accepted[1024] = "";

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = NULL;

                if (parse(bad[i].text, strlen(bad[i].text), &o) != -EBADMSG) {
                        json_object_put(o);
                        strncat(accepted, bad[i].what, sizeof(accepted) - strlen(accepted) - 3);
                        strcat(accepted, "; ");
                }
        }
        if (accepted[0])
                fail_msg("accepted: %s", accepted);
}

static void test_json_parse_embedded_nul(void **state) {
        json_object *o = NULL;

        assert_int_equal(parse(LIT("{}\0"), &o), -EBADMSG);
        assert_int_equal(parse(LIT("\0{}"), &o), -EBADMSG);
        assert_int_equal(parse(LIT("{\"a\":\"b\0c\"}"), &o), -EBADMSG);
        assert_int_equal(parse(LIT("{\"a\0\":1}"), &o), -EBADMSG);
        assert_null(o);
}

static void test_json_parse_malformed_utf8(void **state) {
        static const char *const bad[] = {
                "\"\xff\"", "\"\xfe\"", "\"\x80\"", "\"a\xc3\"", "\"\xe2\x82\"", "{\"\xff\":1}",
                "[\"ok\",\"\xc3(\"]",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = NULL;
                int r = parse(bad[i], strlen(bad[i]), &o);

                if (r != -EBADMSG) {
                        json_object_put(o);
                        fail_msg("accepted malformed UTF-8 #%zu: returned %d", i, r);
                }
        }
}

static void test_json_parse_invalid_code_points(void **state) {
        /* Well-formed byte patterns that still are not UTF-8 (RFC 3629). */
        static const struct {
                const char *text, *what;
        } bad[] = {
                { "\"\xc0\xaf\"", "overlong '/' (2 bytes)" },
                { "\"\xe0\x80\xaf\"", "overlong '/' (3 bytes)" },
                { "\"\xed\xa0\x80\"", "UTF-16 surrogate U+D800" },
                { "\"\xf4\x90\x80\x80\"", "U+110000" },
                { "\"\xf5\x80\x80\x80\"", "lead byte 0xf5" },
        };

        char accepted[1024] = "";

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = NULL;

                if (parse(bad[i].text, strlen(bad[i].text), &o) != -EBADMSG) {
                        json_object_put(o);
                        strncat(accepted, bad[i].what, sizeof(accepted) - strlen(accepted) - 3);
                        strcat(accepted, "; ");
                }
        }
        if (accepted[0])
                fail_msg("accepted: %s", accepted);
}

/* "[[[...]]]" nested n deep. */
static char *nested_arrays(unsigned n) {
        char *s = malloc(2 * n + 1);

        assert_non_null(s);
        memset(s, '[', n);
        memset(s + n, ']', n);
        s[2 * n] = 0;
        return s;
}

static void test_json_parse_depth(void **state) {
        _cleanup_free_ char *ok = nested_arrays(VL_MAX_DEPTH);
        _cleanup_free_ char *deep = nested_arrays(VL_MAX_DEPTH + 1);
        _cleanup_free_ char *very_deep = nested_arrays(10000);
        json_object *o = NULL;

        assert_int_equal(parse(ok, strlen(ok), &o), 0);
        assert_non_null(o);
        json_object_put(o);

        o = NULL;
        assert_int_equal(parse(deep, strlen(deep), &o), -EBADMSG);
        assert_null(o);
        assert_int_equal(parse(very_deep, strlen(very_deep), &o), -EBADMSG);

        /* The limit is the caller's. */
        assert_int_equal(vl_json_parse(deep, strlen(deep), VL_MAX_DEPTH + 1, &o), 0);
        json_object_put(o);
        assert_int_equal(vl_json_parse(LIT("[[[]]]"), 2, &o), -EBADMSG);
}

/* ---- vl_call_parse ----------------------------------------------------------------- */

static void test_call_parse_valid(void **state) {
        struct vl_call c;
        const char *why = "untouched";

        assert_int_equal(vl_call_parse(LIT("{\"method\":\"io.blkledger.ListDevices\","
                                           "\"parameters\":{\"state\":\"present\"},\"more\":true}"),
                                       &c, &why),
                         0);
        assert_string_equal(c.method, "io.blkledger.ListDevices");
        assert_true(json_object_is_type(c.parameters, json_type_object));
        assert_string_equal(json_object_get_string(member(c.parameters, "state")), "present");
        assert_int_equal(c.flags, VL_CALL_MORE);
        /* Success leaves the reason alone. */
        assert_string_equal(why, "untouched");
        vl_call_done(&c);
        assert_null(c.method);
        assert_null(c.parameters);

        assert_int_equal(vl_call_parse(LIT("{\"method\":\"io.blkledger.Reconcile\",\"oneway\":true}"), &c, NULL), 0);
        assert_int_equal(c.flags, VL_CALL_ONEWAY);
        vl_call_done(&c);

        assert_int_equal(vl_call_parse(LIT("{\"method\":\"io.blkledger.Reconcile\",\"upgrade\":true,"
                                           "\"more\":false,\"oneway\":false}"),
                                       &c, NULL),
                         0);
        assert_int_equal(c.flags, VL_CALL_UPGRADE);
        vl_call_done(&c);
}

static void test_call_parse_empty_parameters(void **state) {
        static const char *const msgs[] = {
                "{\"method\":\"io.blkledger.GetStatus\"}",
                "{\"method\":\"io.blkledger.GetStatus\",\"parameters\":null}",
                "{\"method\":\"io.blkledger.GetStatus\",\"parameters\":{}}",
        };

        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                struct vl_call c;

                assert_int_equal(vl_call_parse(msgs[i], strlen(msgs[i]), &c, NULL), 0);
                assert_non_null(c.parameters);
                assert_true(json_object_is_type(c.parameters, json_type_object));
                assert_int_equal(json_object_object_length(c.parameters), 0);
                assert_int_equal(c.flags, 0);
                vl_call_done(&c);
        }
}

static void test_call_parse_rejects(void **state) {
        static const struct {
                const char *msg;
                int r;
                const char *reason;
        } cases[] = {
                { "{\"method\":\"a.b.C\"", -EBADMSG, "message is not valid JSON" },
                { "{\"method\":\"a.b.C\"}x", -EBADMSG, "message is not valid JSON" },
                { "[]", -EINVAL, "message is not a JSON object" },
                { "\"io.blkledger.GetStatus\"", -EINVAL, "message is not a JSON object" },
                { "{\"method\":\"a.b.C\",\"parameters\":[]}", -EINVAL, "'parameters' is not an object" },
                { "{\"method\":\"a.b.C\",\"parameters\":\"x\"}", -EINVAL, "'parameters' is not an object" },
                { "{\"method\":\"a.b.C\",\"parameters\":1}", -EINVAL, "'parameters' is not an object" },
                { "{\"method\":\"a.b.C\",\"parameters\":false}", -EINVAL, "'parameters' is not an object" },
                { "{}", -EINVAL, "'method' is missing or not a string" },
                { "{\"parameters\":{}}", -EINVAL, "'method' is missing or not a string" },
                { "{\"method\":1}", -EINVAL, "'method' is missing or not a string" },
                { "{\"method\":null}", -EINVAL, "'method' is missing or not a string" },
                { "{\"method\":[\"a.b.C\"]}", -EINVAL, "'method' is missing or not a string" },
                { "{\"method\":\"a.b.C\",\"more\":\"true\"}", -EINVAL,
                  "'more', 'oneway' and 'upgrade' must be booleans" },
                { "{\"method\":\"a.b.C\",\"more\":1}", -EINVAL, "'more', 'oneway' and 'upgrade' must be booleans" },
                { "{\"method\":\"a.b.C\",\"oneway\":0}", -EINVAL,
                  "'more', 'oneway' and 'upgrade' must be booleans" },
                { "{\"method\":\"a.b.C\",\"upgrade\":{}}", -EINVAL,
                  "'more', 'oneway' and 'upgrade' must be booleans" },
                { "{\"method\":\"a.b.C\",\"more\":true,\"oneway\":true}", -EINVAL,
                  "'more' and 'oneway' exclude each other" },
                { "{\"method\":\"a.b.C\",\"foo\":1}", -EINVAL, "unknown field in call" },
                { "{\"method\":\"a.b.C\",\"Method\":\"x\"}", -EINVAL, "unknown field in call" },
                { "{\"method\":\"a.b.C\",\"continues\":true}", -EINVAL, "unknown field in call" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vl_call c = { .method = (char *) "stale" };
                const char *why = NULL;
                int r = vl_call_parse(cases[i].msg, strlen(cases[i].msg), &c, &why);

                if (r != cases[i].r)
                        fail_msg("%s: returned %d, not %d", cases[i].msg, r, cases[i].r);
                if (!why || !streq(why, cases[i].reason))
                        fail_msg("%s: reason '%s', not '%s'", cases[i].msg, why ? why : "(null)",
                                 cases[i].reason);
                /* A failed parse leaves nothing to free. */
                assert_null(c.method);
                assert_null(c.parameters);
                assert_int_equal(c.flags, 0);

                /* The reason is optional. */
                assert_int_equal(vl_call_parse(cases[i].msg, strlen(cases[i].msg), &c, NULL), cases[i].r);
        }
}

static void test_call_parse_deep_parameters(void **state) {
        struct vl_call c;
        const char *why = NULL;
        char msg[1024];
        int n;

        /* Moderate nesting, as a client's filters might have: fine. */
        n = snprintf(msg, sizeof(msg), "{\"method\":\"a.b.C\",\"parameters\":{\"x\":%s}}", "[[[[]]]]");
        assert_int_equal(vl_call_parse(msg, (size_t) n, &c, NULL), 0);
        vl_call_done(&c);

        /* Nesting past VL_MAX_DEPTH is refused before anything looks at it. */
        {
                _cleanup_free_ char *deep = nested_arrays(VL_MAX_DEPTH);
                n = snprintf(msg, sizeof(msg), "{\"method\":\"a.b.C\",\"parameters\":{\"x\":%s}}", deep);
        }
        assert_int_equal(vl_call_parse(msg, (size_t) n, &c, &why), -EBADMSG);
        assert_string_equal(why, "message is not valid JSON");
}

/* ---- vl_reply_parse ---------------------------------------------------------------- */

static void test_reply_parse(void **state) {
        struct vl_reply r;

        assert_int_equal(vl_reply_parse(LIT("{\"parameters\":{\"devices\":[]}}"), &r, NULL), 0);
        assert_null(r.error);
        assert_false(r.continues);
        assert_int_equal(json_object_array_length(member(r.parameters, "devices")), 0);
        vl_reply_done(&r);
        assert_null(r.parameters);

        assert_int_equal(vl_reply_parse(LIT("{\"parameters\":{\"seq\":7},\"continues\":true}"), &r, NULL), 0);
        assert_true(r.continues);
        assert_int_equal(json_object_get_int(member(r.parameters, "seq")), 7);
        vl_reply_done(&r);

        assert_int_equal(vl_reply_parse(LIT("{\"continues\":false}"), &r, NULL), 0);
        assert_false(r.continues);
        assert_int_equal(json_object_object_length(r.parameters), 0);
        vl_reply_done(&r);

        assert_int_equal(vl_reply_parse(LIT("{\"parameters\":null}"), &r, NULL), 0);
        assert_true(json_object_is_type(r.parameters, json_type_object));
        assert_int_equal(json_object_object_length(r.parameters), 0);
        vl_reply_done(&r);
}

static void test_reply_parse_error(void **state) {
        struct vl_reply r;

        assert_int_equal(vl_reply_parse(LIT("{\"error\":\"io.blkledger.NoSuchDevice\","
                                            "\"parameters\":{\"device\":\"sdz\"}}"),
                                        &r, NULL),
                         0);
        assert_string_equal(r.error, "io.blkledger.NoSuchDevice");
        assert_string_equal(json_object_get_string(member(r.parameters, "device")), "sdz");
        assert_false(r.continues);
        vl_reply_done(&r);
        assert_null(r.error);

        /* An error without parameters still has an (empty) parameter object. */
        assert_int_equal(vl_reply_parse(LIT("{\"error\":\"org.varlink.service.MethodNotFound\"}"), &r, NULL), 0);
        assert_string_equal(r.error, "org.varlink.service.MethodNotFound");
        assert_int_equal(json_object_object_length(r.parameters), 0);
        vl_reply_done(&r);

        /* "error": null is no error. */
        assert_int_equal(vl_reply_parse(LIT("{\"error\":null}"), &r, NULL), 0);
        assert_null(r.error);
        vl_reply_done(&r);
}

static void test_reply_parse_rejects(void **state) {
        static const struct {
                const char *msg;
                int r;
                const char *reason;
        } cases[] = {
                { "{", -EBADMSG, "reply is not valid JSON" },
                { "{\"parameters\":{}}}", -EBADMSG, "reply is not valid JSON" },
                { "[]", -EBADMSG, "reply is not a JSON object" },
                { "\"x\"", -EBADMSG, "reply is not a JSON object" },
                { "{\"continues\":\"yes\"}", -EBADMSG, "'continues' is not a boolean" },
                { "{\"continues\":1}", -EBADMSG, "'continues' is not a boolean" },
                { "{\"error\":5}", -EBADMSG, "'error' is not a string" },
                { "{\"error\":{\"name\":\"x\"}}", -EBADMSG, "'error' is not a string" },
                { "{\"parameters\":[]}", -EBADMSG, "'parameters' is not an object" },
                { "{\"error\":\"a.b.E\",\"parameters\":\"x\"}", -EBADMSG, "'parameters' is not an object" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vl_reply r;
                const char *why = NULL;
                int ret = vl_reply_parse(cases[i].msg, strlen(cases[i].msg), &r, &why);

                if (ret != cases[i].r)
                        fail_msg("%s: returned %d, not %d", cases[i].msg, ret, cases[i].r);
                if (!why || !streq(why, cases[i].reason))
                        fail_msg("%s: reason '%s', not '%s'", cases[i].msg, why ? why : "(null)",
                                 cases[i].reason);
                assert_null(r.parameters);
                assert_null(r.error);
        }
}

/* ---- formatting -------------------------------------------------------------------- */

/* Takes the next complete message out of b, checking it is NUL-terminated. */
static char *next_message(struct vl_buf *b) {
        size_t len;
        char *s;

        assert_int_equal(vl_frame_next(b, 65536, &len), 1);
        s = strndup(vl_buf_head(b), len);
        assert_non_null(s);
        vl_buf_consume(b, len + 1);
        return s;
}

static void test_append_call_exact(void **state) {
        struct vl_buf out = {};
        json_object *p = json_object_new_object();
        _cleanup_free_ char *m1 = NULL, *m2 = NULL;

        json_object_object_add(p, "device", json_object_new_string("/dev/sda"));

        assert_int_equal(vl_append_call(&out, "io.blkledger.GetStatus", NULL, 0), 0);
        assert_int_equal(vl_append_call(&out, "io.blkledger.GetDevice", p, 0), 0);
        /* Two messages, each with its NUL. */
        assert_int_equal(vl_buf_len(&out), strlen("{\"method\":\"io.blkledger.GetStatus\"}") + 1 +
                                                   strlen("{\"method\":\"io.blkledger.GetDevice\","
                                                          "\"parameters\":{\"device\":\"/dev/sda\"}}") + 1);
        m1 = next_message(&out);
        m2 = next_message(&out);
        /* Compact, and '/' is not escaped. */
        assert_string_equal(m1, "{\"method\":\"io.blkledger.GetStatus\"}");
        assert_string_equal(m2, "{\"method\":\"io.blkledger.GetDevice\",\"parameters\":{\"device\":\"/dev/sda\"}}");
        assert_int_equal(vl_buf_len(&out), 0);

        /* params is borrowed: the caller still owns its reference. */
        assert_int_equal(json_object_put(p), 1);
        vl_buf_free(&out);
}

static void test_append_call_round_trip(void **state) {
        static const unsigned flags[] = { 0, VL_CALL_MORE, VL_CALL_ONEWAY };

        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                struct vl_buf out = {};
                json_object *p = json_object_new_object();
                struct vl_call c;
                size_t len;

                json_object_object_add(p, "since", json_object_new_int64(5));
                json_object_object_add(p, "label", json_object_new_string("caf\xc3\xa9 \"q\" \x1b"));
                assert_int_equal(vl_append_call(&out, "io.blkledger.Watch", p, flags[i]), 0);
                assert_int_equal(vl_frame_next(&out, 65536, &len), 1);
                assert_int_equal(vl_call_parse(vl_buf_head(&out), len, &c, NULL), 0);
                assert_string_equal(c.method, "io.blkledger.Watch");
                assert_int_equal(c.flags, flags[i]);
                assert_int_equal(json_object_get_int64(member(c.parameters, "since")), 5);
                assert_string_equal(json_object_get_string(member(c.parameters, "label")),
                                    "caf\xc3\xa9 \"q\" \x1b");
                vl_call_done(&c);
                json_object_put(p);
                vl_buf_free(&out);
        }
}

static void test_append_reply_round_trip(void **state) {
        struct vl_buf out = {};
        json_object *p = json_object_new_object();
        struct vl_reply r;
        _cleanup_free_ char *m1 = NULL, *m2 = NULL;

        json_object_object_add(p, "seq", json_object_new_int64(9));
        assert_int_equal(vl_append_reply(&out, NULL, false), 0);
        assert_int_equal(vl_append_reply(&out, p, true), 0);
        json_object_put(p);

        m1 = next_message(&out);
        m2 = next_message(&out);
        /* Varlink wants "parameters" even when there are none. */
        assert_string_equal(m1, "{\"parameters\":{}}");
        assert_string_equal(m2, "{\"continues\":true,\"parameters\":{\"seq\":9}}");

        assert_int_equal(vl_reply_parse(m1, strlen(m1), &r, NULL), 0);
        assert_false(r.continues);
        assert_null(r.error);
        assert_int_equal(json_object_object_length(r.parameters), 0);
        vl_reply_done(&r);

        assert_int_equal(vl_reply_parse(m2, strlen(m2), &r, NULL), 0);
        assert_true(r.continues);
        assert_null(r.error);
        assert_int_equal(json_object_get_int64(member(r.parameters, "seq")), 9);
        vl_reply_done(&r);
        vl_buf_free(&out);
}

/* A string that is not UTF-8 (as a damaged ledger could hold) goes out with U+FFFD for
 * each bad byte, so the whole message stays parsable; valid text around it is kept. */
static void test_append_reply_invalid_utf8(void **state) {
        struct vl_buf out = {};
        json_object *p = json_object_new_object();
        struct vl_reply r;
        _cleanup_free_ char *m = NULL;

        json_object_object_add(p, "name", json_object_new_string_len("ab\xff\xc3(caf\xc3\xa9", 10));
        assert_int_equal(vl_append_reply(&out, p, false), 0);
        json_object_put(p);

        m = next_message(&out);
        assert_string_equal(m, "{\"parameters\":{\"name\":\"ab\xef\xbf\xbd\xef\xbf\xbd(caf\xc3\xa9\"}}");
        assert_int_equal(vl_reply_parse(m, strlen(m), &r, NULL), 0);
        assert_string_equal(json_object_get_string(member(r.parameters, "name")),
                            "ab\xef\xbf\xbd\xef\xbf\xbd(caf\xc3\xa9");
        vl_reply_done(&r);
        vl_buf_free(&out);
}

static void test_append_error_round_trip(void **state) {
        struct vl_buf out = {};
        json_object *p = json_object_new_object();
        struct vl_reply r;
        _cleanup_free_ char *m1 = NULL, *m2 = NULL;

        json_object_object_add(p, "device", json_object_new_string("sdz"));
        assert_int_equal(vl_append_error(&out, "io.blkledger.NoSuchDevice", p), 0);
        assert_int_equal(vl_append_error(&out, "org.varlink.service.MethodNotFound", NULL), 0);
        json_object_put(p);

        m1 = next_message(&out);
        m2 = next_message(&out);
        assert_string_equal(m1, "{\"error\":\"io.blkledger.NoSuchDevice\",\"parameters\":{\"device\":\"sdz\"}}");

        assert_int_equal(vl_reply_parse(m1, strlen(m1), &r, NULL), 0);
        assert_string_equal(r.error, "io.blkledger.NoSuchDevice");
        assert_string_equal(json_object_get_string(member(r.parameters, "device")), "sdz");
        vl_reply_done(&r);

        assert_int_equal(vl_reply_parse(m2, strlen(m2), &r, NULL), 0);
        assert_string_equal(r.error, "org.varlink.service.MethodNotFound");
        assert_int_equal(json_object_object_length(r.parameters), 0);
        vl_reply_done(&r);
        vl_buf_free(&out);
}

/* ---- names ------------------------------------------------------------------------- */

static char *repeat(char c, size_t n) {
        char *s = malloc(n + 1);

        assert_non_null(s);
        memset(s, c, n);
        s[n] = 0;
        return s;
}

static void test_interface_name_valid(void **state) {
        static const char *const good[] = {
                "org.example.ftp", "io.blkledger", "a-b.c", "org.varlink.service", "a.b", "a--b.c",
                "io.9p", "org.example.a1-b2.c3", "x1.y",
        };
        static const char *const bad[] = {
                "io.BlkLedger",  /* upper case */
                "Io.blkledger",
                "io",            /* one label */
                "blkledger",
                "",
                "-io.blkledger", /* leading hyphen */
                "io-.blkledger", /* trailing hyphen */
                "io.-blkledger",
                "io.blkledger-",
                "io..blkledger", /* empty label */
                ".io.blkledger",
                "io.blkledger.",
                ".",
                "1io.blkledger", /* the first label starts with a letter */
                "9.x",
                "io.blk_ledger",
                "io.blk ledger",
                "io.blkledger\n",
                ("io.blkl\xc3\xa9" "dger"),
                "io/blkledger.x",
        };
        _cleanup_free_ char *label = repeat('a', 250);
        _cleanup_free_ char *long_ok = NULL, *too_long = NULL;

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                if (!vl_interface_name_valid(good[i]))
                        fail_msg("rejected interface name '%s'", good[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (vl_interface_name_valid(bad[i]))
                        fail_msg("accepted interface name '%s'", bad[i]);
        assert_false(vl_interface_name_valid(NULL));

        /* 255 characters at most. */
        assert_true(asprintf(&long_ok, "%s.abcd", label) > 0);
        assert_int_equal(strlen(long_ok), 255);
        assert_true(vl_interface_name_valid(long_ok));
        assert_true(asprintf(&too_long, "%s.abcde", label) > 0);
        assert_false(vl_interface_name_valid(too_long));
}

static void test_member_name_valid(void **state) {
        static const char *const good[] = { "ListDevices", "A", "GetStatus2", "NoSuchDevice", "X9y" };
        static const char *const bad[] = {
                "listDevices", "", "9List", "List_Devices", "List-Devices", "List.Devices", "List Devices",
                "ListDevices\n", "\xc3\x89tat",
        };
        _cleanup_free_ char *ok = repeat('A', 255), *too_long = repeat('A', 256);

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                if (!vl_member_name_valid(good[i]))
                        fail_msg("rejected member name '%s'", good[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (vl_member_name_valid(bad[i]))
                        fail_msg("accepted member name '%s'", bad[i]);
        assert_false(vl_member_name_valid(NULL));
        assert_true(vl_member_name_valid(ok));
        assert_false(vl_member_name_valid(too_long));
}

static void test_method_split(void **state) {
        static const char *const bad[] = {
                "ListDevices",              /* no interface */
                "io.blkledger.",            /* no member */
                "io.blkledger.listDevices", /* member must start upper case */
                "blkledger.ListDevices",    /* one-label interface */
                ".ListDevices",
                "io.BlkLedger.ListDevices",
                "io..blkledger.ListDevices",
                "",
        };
        const char *method = "io.blkledger.ListDevices";
        char *iface = NULL;
        const char *memb = NULL;

        assert_int_equal(vl_method_split(method, &iface, &memb), 0);
        assert_string_equal(iface, "io.blkledger");
        assert_string_equal(memb, "ListDevices");
        /* The member points into the method name; only the interface is allocated. */
        assert_ptr_equal(memb, method + strlen("io.blkledger."));
        free(iface);

        assert_int_equal(vl_method_split("org.varlink.service.GetInterfaceDescription", &iface, &memb), 0);
        assert_string_equal(iface, "org.varlink.service");
        assert_string_equal(memb, "GetInterfaceDescription");
        free(iface);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                iface = NULL;
                memb = NULL;
                if (vl_method_split(bad[i], &iface, &memb) != -EINVAL)
                        fail_msg("split '%s'", bad[i]);
                assert_null(iface);
                assert_null(memb);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_buf_append_consume),
                cmocka_unit_test(test_buf_consume_exact_resets),
                cmocka_unit_test(test_buf_reserve_grows),
                cmocka_unit_test(test_buf_compaction),
                cmocka_unit_test(test_frame_incomplete),
                cmocka_unit_test(test_frame_empty_buffer),
                cmocka_unit_test(test_frame_two_messages),
                cmocka_unit_test(test_frame_limit),
                cmocka_unit_test(test_json_parse_values),
                cmocka_unit_test(test_json_parse_scalars),
                cmocka_unit_test(test_json_parse_trailing_garbage),
                cmocka_unit_test(test_json_parse_incomplete_and_malformed),
                cmocka_unit_test(test_json_parse_rejects_lax_json),
                cmocka_unit_test(test_json_parse_embedded_nul),
                cmocka_unit_test(test_json_parse_malformed_utf8),
                cmocka_unit_test(test_json_parse_invalid_code_points),
                cmocka_unit_test(test_json_parse_depth),
                cmocka_unit_test(test_call_parse_valid),
                cmocka_unit_test(test_call_parse_empty_parameters),
                cmocka_unit_test(test_call_parse_rejects),
                cmocka_unit_test(test_call_parse_deep_parameters),
                cmocka_unit_test(test_reply_parse),
                cmocka_unit_test(test_reply_parse_error),
                cmocka_unit_test(test_reply_parse_rejects),
                cmocka_unit_test(test_append_call_exact),
                cmocka_unit_test(test_append_call_round_trip),
                cmocka_unit_test(test_append_reply_round_trip),
                cmocka_unit_test(test_append_reply_invalid_utf8),
                cmocka_unit_test(test_append_error_round_trip),
                cmocka_unit_test(test_interface_name_valid),
                cmocka_unit_test(test_member_name_valid),
                cmocka_unit_test(test_method_split),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
