/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config.h"

#include <ctype.h>

#include "util.h"
#include "varlink.h"

int vl_buf_reserve(struct vl_buf *b, size_t extra) {
        size_t need, n;
        char *p;

        if (b->alloc - b->end >= extra)
                return 0;
        /* Reuse the consumed head before growing. */
        if (b->start > 0) {
                memmove(b->data, b->data + b->start, b->end - b->start);
                b->end -= b->start;
                b->start = 0;
                if (b->alloc - b->end >= extra)
                        return 0;
        }
        if (extra > SIZE_MAX - b->end)
                return -ENOMEM;
        need = b->end + extra;
        n = b->alloc ? b->alloc : 4096;
        while (n < need) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        p = realloc(b->data, n);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->alloc = n;
        return 0;
}

int vl_buf_append(struct vl_buf *b, const void *data, size_t len) {
        int r;

        if (len == 0)
                return 0;
        r = vl_buf_reserve(b, len);
        if (r < 0)
                return r;
        memcpy(b->data + b->end, data, len);
        b->end += len;
        return 0;
}

void vl_buf_consume(struct vl_buf *b, size_t n) {
        b->start += MIN(n, vl_buf_len(b));
        if (b->start == b->end)
                b->start = b->end = 0;
}

void vl_buf_free(struct vl_buf *b) {
        free(b->data);
        *b = (struct vl_buf) {};
}

int vl_frame_next(const struct vl_buf *b, size_t max, size_t *ret_len) {
        size_t len = vl_buf_len(b);
        const char *nul;

        if (len == 0)
                return 0;
        nul = memchr(vl_buf_head(b), 0, MIN(len, max + 1));

        if (nul) {
                *ret_len = (size_t) (nul - vl_buf_head(b));
                return 1;
        }
        return len > max ? -EMSGSIZE : 0;
}

/* A validator for exactly RFC 8259 JSON, run before json-c builds anything: json-c is
 * lenient (single quotes, NaN, leading zeros, raw control characters in strings) and a
 * trust boundary should not depend on which leniencies a library version has. It also
 * bounds nesting and refuses "\u0000", so no string we accept hides a NUL. */
struct json_cursor {
        const char *p, *end;
        int depth, max_depth;
};

static void skip_ws(struct json_cursor *c) {
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
                c->p++;
}

static bool is_digit(char ch) {
        return ch >= '0' && ch <= '9';
}

static bool lit(struct json_cursor *c, const char *word) {
        size_t n = strlen(word);

        if ((size_t) (c->end - c->p) < n || memcmp(c->p, word, n) != 0)
                return false;
        c->p += n;
        return true;
}

static bool number(struct json_cursor *c) {
        if (c->p < c->end && *c->p == '-')
                c->p++;
        if (c->p >= c->end)
                return false;
        if (*c->p == '0')
                c->p++;
        else if (is_digit(*c->p))
                while (c->p < c->end && is_digit(*c->p))
                        c->p++;
        else
                return false;
        if (c->p < c->end && *c->p == '.') {
                c->p++;
                if (c->p >= c->end || !is_digit(*c->p))
                        return false;
                while (c->p < c->end && is_digit(*c->p))
                        c->p++;
        }
        if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
                c->p++;
                if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
                        c->p++;
                if (c->p >= c->end || !is_digit(*c->p))
                        return false;
                while (c->p < c->end && is_digit(*c->p))
                        c->p++;
        }
        return true;
}

static bool string(struct json_cursor *c) {
        c->p++; /* opening quote */
        while (c->p < c->end) {
                unsigned char ch = (unsigned char) *c->p++;

                if (ch == '"')
                        return true;
                if (ch < 0x20)
                        return false;
                if (ch != '\\')
                        continue;
                if (c->p >= c->end)
                        return false;
                ch = (unsigned char) *c->p++;
                if (ch == 'u') {
                        unsigned v = 0;
                        for (int i = 0; i < 4; i++, c->p++) {
                                char h = c->p < c->end ? *c->p : 0;
                                if (!isxdigit((unsigned char) h))
                                        return false;
                                v = v * 16 + (unsigned) (isdigit((unsigned char) h) ? h - '0' : (tolower((unsigned char) h) - 'a' + 10));
                        }
                        if (v == 0)
                                return false;
                } else if (!strchr("\"\\/bfnrt", ch))
                        return false;
        }
        return false;
}

static bool value(struct json_cursor *c);

static bool container(struct json_cursor *c, char close, bool members) {
        if (++c->depth > c->max_depth)
                return false;
        c->p++; /* opening bracket */
        skip_ws(c);
        if (c->p < c->end && *c->p == close) {
                c->p++;
                c->depth--;
                return true;
        }
        for (;;) {
                if (members) {
                        if (c->p >= c->end || *c->p != '"' || !string(c))
                                return false;
                        skip_ws(c);
                        if (c->p >= c->end || *c->p != ':')
                                return false;
                        c->p++;
                }
                if (!value(c))
                        return false;
                skip_ws(c);
                if (c->p >= c->end)
                        return false;
                if (*c->p == close) {
                        c->p++;
                        c->depth--;
                        return true;
                }
                if (*c->p != ',')
                        return false;
                c->p++;
                skip_ws(c);
        }
}

static bool value(struct json_cursor *c) {
        skip_ws(c);
        if (c->p >= c->end)
                return false;
        switch (*c->p) {
        case '{':
                return container(c, '}', true);
        case '[':
                return container(c, ']', false);
        case '"':
                return string(c);
        case 't':
                return lit(c, "true");
        case 'f':
                return lit(c, "false");
        case 'n':
                return lit(c, "null");
        default:
                return number(c);
        }
}

static bool json_valid(const char *s, size_t len, int max_depth) {
        struct json_cursor c = { .p = s, .end = s + len, .max_depth = max_depth };

        if (!value(&c))
                return false;
        skip_ws(&c);
        return c.p == c.end && c.depth == 0;
}

bool vl_json_valid(const char *s, size_t len, int max_depth) {
        return utf8_is_valid(s, len) && json_valid(s, len, max_depth);
}

int vl_json_parse(const char *s, size_t len, int depth, json_object **ret) {
        json_tokener *tok;
        json_object *o;

        if (len > INT32_MAX)
                return -EMSGSIZE;
        if (!vl_json_valid(s, len, depth))
                return -EBADMSG;
        tok = json_tokener_new_ex(depth);
        if (!tok)
                return -ENOMEM;
        o = json_tokener_parse_ex(tok, s, (int) len);
        /* A bare scalar at the end of input ("42") waits for a delimiter. */
        if (!o && json_tokener_get_error(tok) == json_tokener_continue)
                o = json_tokener_parse_ex(tok, " ", 1);
        if (json_tokener_get_error(tok) != json_tokener_success) {
                json_object_put(o);
                json_tokener_free(tok);
                return -EBADMSG;
        }
        json_tokener_free(tok);
        /* A JSON "null" parses to NULL with success. */
        *ret = o;
        return 0;
}

static int get_bool_field(json_object *msg, const char *key, bool *ret) {
        json_object *v;

        *ret = false;
        if (!json_object_object_get_ex(msg, key, &v) || !v)
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return -EINVAL;
        *ret = json_object_get_boolean(v);
        return 0;
}

/* parameters: absent or null mean an empty object. */
static int take_parameters(json_object *msg, json_object **ret) {
        json_object *v;

        if (!json_object_object_get_ex(msg, "parameters", &v) || !v) {
                *ret = json_object_new_object();
                return *ret ? 0 : -ENOMEM;
        }
        if (!json_object_is_type(v, json_type_object))
                return -EINVAL;
        *ret = json_object_get(v);
        return 0;
}

int vl_call_parse(const char *msg, size_t len, struct vl_call *ret, const char **reason) {
        json_object *o = NULL, *m;
        bool more, oneway, upgrade;
        const char *why = NULL;
        int r;

        *ret = (struct vl_call) {};
        r = vl_json_parse(msg, len, VL_MAX_DEPTH, &o);
        if (r < 0) {
                why = "message is not valid JSON";
                goto fail;
        }
        r = -EINVAL;
        if (!o || !json_object_is_type(o, json_type_object)) {
                why = "message is not a JSON object";
                goto fail;
        }
        if (!json_object_object_get_ex(o, "method", &m) || !json_object_is_type(m, json_type_string)) {
                why = "'method' is missing or not a string";
                goto fail;
        }
        if (get_bool_field(o, "more", &more) < 0 || get_bool_field(o, "oneway", &oneway) < 0 ||
            get_bool_field(o, "upgrade", &upgrade) < 0) {
                why = "'more', 'oneway' and 'upgrade' must be booleans";
                goto fail;
        }
        if (more && oneway) {
                why = "'more' and 'oneway' exclude each other";
                goto fail;
        }
        json_object_object_foreach(o, key, val) {
                (void) val;
                if (!streq(key, "method") && !streq(key, "parameters") && !streq(key, "more") &&
                    !streq(key, "oneway") && !streq(key, "upgrade")) {
                        why = "unknown field in call";
                        goto fail;
                }
        }
        if (take_parameters(o, &ret->parameters) < 0) {
                why = "'parameters' is not an object";
                goto fail;
        }
        ret->method = strdup(json_object_get_string(m));
        if (!ret->method) {
                r = -ENOMEM;
                why = "out of memory";
                goto fail;
        }
        ret->flags = (more ? VL_CALL_MORE : 0) | (oneway ? VL_CALL_ONEWAY : 0) |
                     (upgrade ? VL_CALL_UPGRADE : 0);
        json_object_put(o);
        return 0;
fail:
        json_object_put(o);
        vl_call_done(ret);
        if (reason)
                *reason = why;
        return r;
}

void vl_call_done(struct vl_call *c) {
        free(c->method);
        json_object_put(c->parameters);
        *c = (struct vl_call) {};
}

int vl_reply_parse(const char *msg, size_t len, struct vl_reply *ret, const char **reason) {
        json_object *o = NULL, *e;
        const char *why = NULL;
        int r;

        *ret = (struct vl_reply) {};
        r = vl_json_parse(msg, len, VL_MAX_DEPTH * 2, &o);
        if (r < 0) {
                why = "reply is not valid JSON";
                goto fail;
        }
        r = -EBADMSG;
        if (!o || !json_object_is_type(o, json_type_object)) {
                why = "reply is not a JSON object";
                goto fail;
        }
        if (get_bool_field(o, "continues", &ret->continues) < 0) {
                why = "'continues' is not a boolean";
                goto fail;
        }
        if (json_object_object_get_ex(o, "error", &e) && e) {
                if (!json_object_is_type(e, json_type_string)) {
                        why = "'error' is not a string";
                        goto fail;
                }
                ret->error = strdup(json_object_get_string(e));
                if (!ret->error) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        if (take_parameters(o, &ret->parameters) < 0) {
                why = "'parameters' is not an object";
                goto fail;
        }
        json_object_put(o);
        return 0;
fail:
        json_object_put(o);
        vl_reply_done(ret);
        if (reason)
                *reason = why;
        return r;
}

void vl_reply_done(struct vl_reply *r) {
        json_object_put(r->parameters);
        free(r->error);
        *r = (struct vl_reply) {};
}

/* Every message sent is valid UTF-8, so that a peer's strict parser never refuses a
 * whole message for one string. json-c copies bytes >= 0x80 of strings as they are, so
 * a string that is not UTF-8 (from a damaged ledger, say: names and facts are checked
 * when they come in) would pass through; each byte of it that starts no valid sequence
 * is sent as U+FFFD instead. Only string contents can hold such bytes: the JSON around
 * them is ASCII. */
static int append_object(struct vl_buf *out, json_object *o) {
        _cleanup_free_ char *clean = NULL;
        size_t len;
        const char *s = json_object_to_json_string_length(
                o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        int r;

        if (!s)
                return -ENOMEM;
        if (!utf8_is_valid(s, len)) {
                clean = utf8_sanitize(s, len);
                if (!clean)
                        return -ENOMEM;
                s = clean;
                len = strlen(clean);
        }
        r = vl_buf_reserve(out, len + 1);
        if (r < 0)
                return r;
        memcpy(out->data + out->end, s, len);
        out->data[out->end + len] = 0;
        out->end += len + 1;
        return 0;
}

/* Builds {key: value, "parameters": params} around borrowed params. */
static int append_message(struct vl_buf *out, json_object *head, json_object *params) {
        int r;

        if (params)
                json_object_object_add(head, "parameters", json_object_get(params));
        r = append_object(out, head);
        json_object_put(head);
        return r;
}

int vl_append_call(struct vl_buf *out, const char *method, json_object *params, unsigned flags) {
        json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "method", json_object_new_string(method));
        if (flags & VL_CALL_MORE)
                json_object_object_add(o, "more", json_object_new_boolean(1));
        if (flags & VL_CALL_ONEWAY)
                json_object_object_add(o, "oneway", json_object_new_boolean(1));
        return append_message(out, o, params);
}

int vl_append_reply(struct vl_buf *out, json_object *params, bool continues) {
        json_object *o = json_object_new_object();
        json_object *empty = NULL;
        int r;

        if (!o)
                return -ENOMEM;
        if (continues)
                json_object_object_add(o, "continues", json_object_new_boolean(1));
        if (!params)
                params = empty = json_object_new_object();
        r = append_message(out, o, params);
        json_object_put(empty);
        return r;
}

int vl_append_error(struct vl_buf *out, const char *error, json_object *params) {
        json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "error", json_object_new_string(error));
        return append_message(out, o, params);
}

/* [a-z0-9] then ([-]*[a-z0-9])*: no leading, trailing or lone hyphens. */
static bool label_valid(const char *s, size_t n, bool first) {
        size_t i;

        if (n == 0)
                return false;
        if (first ? !islower((unsigned char) s[0]) :
                    !(islower((unsigned char) s[0]) || isdigit((unsigned char) s[0])))
                return false;
        for (i = 1; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '-')
                        continue;
                if (!(islower(c) || isdigit(c)))
                        return false;
        }
        return s[n - 1] != '-';
}

bool vl_interface_name_valid(const char *s) {
        const char *p = s;
        unsigned labels = 0;

        if (!s || strlen(s) > 255)
                return false;
        for (;;) {
                const char *dot = strchr(p, '.');
                size_t n = dot ? (size_t) (dot - p) : strlen(p);
                if (!label_valid(p, n, labels == 0))
                        return false;
                labels++;
                if (!dot)
                        break;
                p = dot + 1;
        }
        return labels >= 2;
}

bool vl_member_name_valid(const char *s) {
        if (!s || !isupper((unsigned char) s[0]) || strlen(s) > 255)
                return false;
        for (s++; *s; s++)
                if (!isalnum((unsigned char) *s))
                        return false;
        return true;
}

int vl_method_split(const char *method, char **ret_interface, const char **ret_member) {
        const char *dot = strrchr(method, '.');
        char *iface;

        if (!dot || !vl_member_name_valid(dot + 1))
                return -EINVAL;
        iface = strndup(method, (size_t) (dot - method));
        if (!iface)
                return -ENOMEM;
        if (!vl_interface_name_valid(iface)) {
                free(iface);
                return -EINVAL;
        }
        *ret_interface = iface;
        *ret_member = dot + 1;
        return 0;
}
