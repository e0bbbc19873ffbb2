/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "libblkledger.h"
#include "util.h"
#include "varlink.h"

/* Largest reply accepted: a ledger of ~200,000 devices. */
#define REPLY_MAX (256u * 1024 * 1024)

struct blkledger {
        unsigned n_ref;
        int fd;
        int timeout_ms;
        bool streaming;    /* a "more" call is in progress */
        bool broken;       /* a reply is owed or a message half sent: unusable */
        struct vl_buf in;
        struct vl_buf out;
        char *error;
        char *error_parameters;
};

_export_ const char *blkledger_default_socket(void) {
        const char *e = getenv("BLKLEDGER_SOCKET");
        return isempty(e) ? BL_DEFAULT_SOCKET : e;
}

_export_ int blkledger_connect(const char *socket_path, struct blkledger **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct blkledger *b;
        _cleanup_close_ int fd = -1;

        if (!ret)
                return -EINVAL;
        if (!socket_path)
                socket_path = blkledger_default_socket();
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, socket_path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->n_ref = 1;
        b->fd = TAKE_FD(fd);
        b->timeout_ms = 30000;
        *ret = b;
        return 0;
}

_export_ struct blkledger *blkledger_ref(struct blkledger *b) {
        if (b)
                b->n_ref++;
        return b;
}

_export_ struct blkledger *blkledger_unref(struct blkledger *b) {
        if (!b || --b->n_ref > 0)
                return NULL;
        close(b->fd);
        vl_buf_free(&b->in);
        vl_buf_free(&b->out);
        free(b->error);
        free(b->error_parameters);
        free(b);
        return NULL;
}

_export_ void blkledger_set_timeout(struct blkledger *b, int timeout_ms) {
        if (b)
                b->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
}

_export_ int blkledger_get_fd(const struct blkledger *b) {
        return b ? b->fd : -EINVAL;
}

_export_ const char *blkledger_get_error(const struct blkledger *b) {
        return b ? b->error : NULL;
}

_export_ const char *blkledger_get_error_parameters(const struct blkledger *b) {
        return b ? b->error_parameters : NULL;
}

static int wait_fd(struct blkledger *b, short events, int64_t deadline) {
        struct pollfd p = { .fd = b->fd, .events = events };
        int timeout = -1, r;

        if (deadline >= 0) {
                int64_t left = deadline - now_monotonic_usec();
                if (left <= 0)
                        return -ETIMEDOUT;
                timeout = (int) MIN((left + 999) / 1000, INT32_MAX);
        }
        r = poll(&p, 1, timeout);
        if (r < 0)
                return -errno; /* -EINTR lets the caller react to its signal */
        if (r == 0)
                return -ETIMEDOUT;
        return 0;
}

static int64_t deadline_of(const struct blkledger *b) {
        return b->timeout_ms < 0 ? -1 : now_monotonic_usec() + b->timeout_ms * USEC_PER_MSEC;
}

static int flush_out(struct blkledger *b, int64_t deadline) {
        while (vl_buf_len(&b->out) > 0) {
                ssize_t n = send(b->fd, vl_buf_head(&b->out), vl_buf_len(&b->out),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                int r = wait_fd(b, POLLOUT, deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return errno == EPIPE ? -ECONNRESET : -errno;
                }
                vl_buf_consume(&b->out, (size_t) n);
        }
        return 0;
}

static void clear_error(struct blkledger *b) {
        free(b->error);
        free(b->error_parameters);
        b->error = b->error_parameters = NULL;
}

static int read_reply(struct blkledger *b, char **ret_parameters, int *ret_continues, int64_t deadline);

static int start_call(struct blkledger *b, const char *method, const char *parameters,
                      unsigned flags) {
        json_object *params = NULL;
        int r;

        if (!b || isempty(method))
                return -EINVAL;
        if (b->broken)
                return -ENOTCONN;
        if (b->streaming)
                return -EBUSY;
        clear_error(b);
        if (parameters) {
                r = vl_json_parse(parameters, strlen(parameters), VL_MAX_DEPTH, &params);
                if (r < 0)
                        return -EINVAL;
                if (params && !json_object_is_type(params, json_type_object)) {
                        json_object_put(params);
                        return -EINVAL;
                }
        }
        r = vl_append_call(&b->out, method, params, flags);
        json_object_put(params);
        if (r < 0)
                return r;
        r = flush_out(b, deadline_of(b));
        if (r == -ECONNRESET) {
                /* The daemon may have said why before it closed (TooManyClients). */
                b->broken = true;
                if (read_reply(b, NULL, NULL, now_monotonic_usec()) == -EREMOTEIO)
                        return -EREMOTEIO;
                return r;
        }
        if (r < 0) {
                /* Part of the call may be on its way: the connection cannot be reused. */
                b->broken = true;
                return r;
        }
        b->streaming = flags & VL_CALL_MORE;
        return 0;
}

/* Reads one reply; returns 0 or negative errno (-EREMOTEIO for an error reply). */
static int read_reply(struct blkledger *b, char **ret_parameters, int *ret_continues, int64_t deadline) {
        struct vl_reply reply;
        size_t len;
        int r;

        for (;;) {
                r = vl_frame_next(&b->in, REPLY_MAX, &len);
                if (r < 0)
                        return -EBADMSG;
                if (r > 0)
                        break;
                r = vl_buf_reserve(&b->in, 65536);
                if (r < 0)
                        return r;
                ssize_t n = recv(b->fd, b->in.data + b->in.end, b->in.alloc - b->in.end,
                                 MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = wait_fd(b, POLLIN, deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                b->in.end += (size_t) n;
        }

        r = vl_reply_parse(vl_buf_head(&b->in), len, &reply, NULL);
        vl_buf_consume(&b->in, len + 1);
        if (r < 0)
                return -EBADMSG;
        if (!reply.continues)
                b->streaming = false;
        if (ret_continues)
                *ret_continues = reply.continues;
        if (reply.error) {
                b->streaming = false;
                b->error = TAKE_PTR(reply.error);
                b->error_parameters = strdup(json_object_to_json_string_ext(
                        reply.parameters, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                vl_reply_done(&reply);
                return -EREMOTEIO;
        }
        if (ret_parameters) {
                *ret_parameters = strdup(json_object_to_json_string_ext(
                        reply.parameters, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                if (!*ret_parameters) {
                        vl_reply_done(&reply);
                        return -ENOMEM;
                }
        }
        vl_reply_done(&reply);
        return 0;
}

_export_ int blkledger_call(struct blkledger *b, const char *method, const char *parameters,
                            char **ret_parameters) {
        int r = start_call(b, method, parameters, 0);
        if (r < 0)
                return r;
        r = read_reply(b, ret_parameters, NULL, deadline_of(b));
        /* A reply that did not arrive in time would answer the next call: give up on the
         * connection instead. */
        if (r < 0 && r != -EREMOTEIO)
                b->broken = true;
        return r;
}

_export_ int blkledger_call_more(struct blkledger *b, const char *method, const char *parameters) {
        return start_call(b, method, parameters, VL_CALL_MORE);
}

_export_ int blkledger_receive(struct blkledger *b, char **ret_parameters, int *ret_continues) {
        int r;

        if (!b)
                return -EINVAL;
        if (!b->streaming)
                return -ENOMSG;
        clear_error(b);
        r = read_reply(b, ret_parameters, ret_continues, deadline_of(b));
        /* After a timeout or a signal the stream goes on; other failures end it. */
        if (r < 0 && r != -EREMOTEIO && r != -ETIMEDOUT && r != -EINTR)
                b->broken = true;
        return r;
}

_export_ int blkledger_pending(const struct blkledger *b) {
        size_t len;

        if (!b)
                return -EINVAL;
        return vl_frame_next(&b->in, REPLY_MAX, &len) == 1;
}
