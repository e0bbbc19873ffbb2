/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Varlink wire format: NUL-terminated JSON messages (https://varlink.org).
 * Framing, parsing and formatting shared by the daemon's server and the client library.
 * Nothing here does I/O. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* Nesting depth accepted in any message. Our interface needs 4; the margin is for
 * clients that send deeper but harmless parameters. */
#define VL_MAX_DEPTH 16

/* A growable byte buffer with a read offset. */
struct vl_buf {
        char *data;
        size_t start; /* first unread byte */
        size_t end;   /* one past the last byte */
        size_t alloc;
};

static inline size_t vl_buf_len(const struct vl_buf *b) {
        return b->end - b->start;
}
static inline const char *vl_buf_head(const struct vl_buf *b) {
        return b->data + b->start;
}
int vl_buf_reserve(struct vl_buf *b, size_t extra);
int vl_buf_append(struct vl_buf *b, const void *data, size_t len);
void vl_buf_consume(struct vl_buf *b, size_t n);
void vl_buf_free(struct vl_buf *b);

/* Looks for one complete message at the head of b. Returns 1 and sets *ret_len to the
 * length without the NUL, 0 when more bytes are needed, -EMSGSIZE when max bytes arrived
 * without a terminator. The caller consumes ret_len + 1 bytes. */
int vl_frame_next(const struct vl_buf *b, size_t max, size_t *ret_len);

/* Strict JSON parser: whole input must be one value, valid UTF-8, at most depth levels. */
int vl_json_parse(const char *s, size_t len, int depth, json_object **ret);
/* vl_json_parse()'s checks (UTF-8, one value, depth) without building objects. */
bool vl_json_valid(const char *s, size_t len, int depth);

enum {
        VL_CALL_MORE = 1 << 0,
        VL_CALL_ONEWAY = 1 << 1,
        VL_CALL_UPGRADE = 1 << 2,
};

struct vl_call {
        char *method;           /* full name, e.g. io.blkledger.ListDevices */
        json_object *parameters; /* always an object (absent or null become {}) */
        unsigned flags;
};

/* Parses a call. On failure returns negative errno and, when reason is non-NULL, a static
 * string saying what was wrong. */
int vl_call_parse(const char *msg, size_t len, struct vl_call *ret, const char **reason);
void vl_call_done(struct vl_call *c);

struct vl_reply {
        json_object *parameters; /* always an object */
        char *error;             /* NULL unless an error reply */
        bool continues;
};
int vl_reply_parse(const char *msg, size_t len, struct vl_reply *ret, const char **reason);
void vl_reply_done(struct vl_reply *r);

/* Formatting: each appends one NUL-terminated message to out. params may be NULL. */
int vl_append_call(struct vl_buf *out, const char *method, json_object *params, unsigned flags);
int vl_append_reply(struct vl_buf *out, json_object *params, bool continues);
int vl_append_error(struct vl_buf *out, const char *error, json_object *params);

/* Name grammar of the Varlink interface definition language. */
bool vl_interface_name_valid(const char *s);
bool vl_member_name_valid(const char *s); /* method, type and error names */
/* Splits a qualified method name; ret_interface is allocated. */
int vl_method_split(const char *method, char **ret_interface, const char **ret_member);
