/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"
#include "server.h"
#include "util.h"
#include "varlink.h"

const struct server_limits server_default_limits = {
        .max_message = 65536,
        .max_message_root = 64u << 20,
        .max_clients = 256,
        .max_clients_user = 32,
        .partial_timeout = 10 * USEC_PER_SEC,
        .stall_timeout = 60 * USEC_PER_SEC,
        .watch_max_lag = 100000,
};

/* Replies are produced only while less than this is waiting to be sent. */
#define OUT_WATERMARK (64 * 1024)
/* Events fetched from the journal per watcher per round. */
#define WATCH_BATCH 64
/* Calls of one client handled before the loop serves others. */
#define CALLS_PER_TURN 16

static const char service_interface_description[] =
        "# The Varlink Service Interface is provided by every varlink service. It\n"
        "# describes the service and the interfaces it implements.\n"
        "interface org.varlink.service\n"
        "\n"
        "# Get a list of all the interfaces a service provides and information\n"
        "# about the implementation.\n"
        "method GetInfo() -> (\n"
        "  vendor: string,\n"
        "  product: string,\n"
        "  version: string,\n"
        "  url: string,\n"
        "  interfaces: []string\n"
        ")\n"
        "\n"
        "# Get the description of an interface that is implemented by this service.\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "\n"
        "# The requested interface was not found.\n"
        "error InterfaceNotFound (interface: string)\n"
        "\n"
        "# The requested method was not found\n"
        "error MethodNotFound (method: string)\n"
        "\n"
        "# The interface defines the requested method, but the service does not\n"
        "# implement it.\n"
        "error MethodNotImplemented (method: string)\n"
        "\n"
        "# One of the passed parameters is invalid.\n"
        "error InvalidParameter (parameter: string)\n"
        "\n"
        "# Client is denied access\n"
        "error PermissionDenied ()\n"
        "\n"
        "# Method is expected to be called with 'more' set to true, but wasn't\n"
        "error ExpectedMore ()\n";

struct client {
        struct server *server;
        struct client *prev, *next;
        int fd;
        struct ev_io *io;
        uid_t uid;
        pid_t pid;
        struct vl_buf in, out;
        bool in_call;       /* a method is running (replies not yet complete) */
        bool oneway;        /* the current call wants no reply */
        bool closing;       /* close once out is flushed */
        bool eof;           /* peer shut down its side */
        bool watching;
        unsigned call_flags;  /* VL_CALL_* of the running call */
        int64_t watch_cursor;
        int64_t partial_since; /* monotonic usec; 0 = no partial message */
        int64_t stalled_since; /* monotonic usec; 0 = output is moving */
        bool stall_warned;     /* a stalled watcher was told where to resume */
        struct ev_defer more_calls; /* continues client_process next iteration */
        struct server_call *deferred; /* the running call answers later */
};

struct server_call {
        struct client *client; /* NULL once the client is gone */
        unsigned flags;        /* VL_CALL_* of the call */
};

struct server {
        struct ev_loop *loop;
        int listen_fd;
        struct ev_io *listen_io;
        struct server_limits limits;
        struct server_info info;
        const struct method *methods;
        struct server_history history;
        void *userdata;
        struct client *clients;
        unsigned n_clients;
        bool listen_paused;
};

static void client_update_events(struct client *c);
static bool client_kick(struct client *c, uint32_t revents);

uid_t client_uid(const struct client *c) {
        return c->uid;
}

unsigned server_n_clients(const struct server *s) {
        return s->n_clients;
}

void server_set_limits(struct server *s, const struct server_limits *limits) {
        s->limits = *limits;
}

static void client_free(struct client *c) {
        struct server *s = c->server;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_clients--;
        ev_defer_cancel(s->loop, &c->more_calls);
        if (c->deferred)
                c->deferred->client = NULL;
        ev_io_free(c->io);
        close(c->fd);
        vl_buf_free(&c->in);
        vl_buf_free(&c->out);
        free(c);
}

/* Sends what it can without blocking. Returns -errno when the connection is dead. */
static int client_flush(struct client *c) {
        while (vl_buf_len(&c->out) > 0) {
                ssize_t n = send(c->fd, vl_buf_head(&c->out), vl_buf_len(&c->out),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                if (c->stalled_since == 0)
                                        c->stalled_since = now_monotonic_usec();
                                return 0;
                        }
                        return -errno;
                }
                vl_buf_consume(&c->out, (size_t) n);
                c->stalled_since = 0;
        }
        c->stalled_since = 0;
        return 0;
}

static int append_or_fail(struct client *c, int r) {
        if (r < 0) {
                /* Out of memory while formatting: the reply is lost, so is the stream. */
                log_error_errno(r, "cannot format reply for client pid %d", (int) c->pid);
                c->closing = true;
        }
        return r;
}

static int reply_full(struct client *c, json_object *params, bool continues) {
        if (c->oneway) {
                c->in_call = continues;
                return 0;
        }
        c->in_call = continues;
        return append_or_fail(c, vl_append_reply(&c->out, params, continues));
}

int server_reply(struct client *c, json_object *params) {
        return reply_full(c, params, false);
}

int server_reply_error(struct client *c, const char *error, json_object *params) {
        int r = 0;

        c->in_call = false;
        c->watching = false;
        if (!c->oneway)
                r = append_or_fail(c, vl_append_error(&c->out, error, params));
        return r;
}

int server_reply_error_string(struct client *c, const char *error, const char *key, const char *value) {
        json_object *p = json_object_new_object();
        int r;

        if (!p)
                return -ENOMEM;
        if (key)
                json_object_object_add(p, key, json_object_new_string(value));
        r = server_reply_error(c, error, p);
        json_object_put(p);
        return r;
}

static int reply_error_int(struct client *c, const char *error, const char *key, int64_t value) {
        json_object *p = json_object_new_object();
        int r;

        if (!p)
                return -ENOMEM;
        json_object_object_add(p, key, json_object_new_int64(value));
        r = server_reply_error(c, error, p);
        json_object_put(p);
        return r;
}

int server_reply_invalid_parameter(struct client *c, const char *parameter) {
        return server_reply_error_string(c, "org.varlink.service.InvalidParameter", "parameter", parameter);
}

json_object *param_get(json_object *params, const char *name) {
        json_object *v = NULL;

        if (!params || !json_object_object_get_ex(params, name, &v))
                return NULL;
        return v;
}

int server_check_params(struct client *c, json_object *params, const struct param_spec *spec) {
        json_object_object_foreach(params, key, val) {
                const struct param_spec *p;
                bool ok = false;

                for (p = spec; p && p->name; p++)
                        if (streq(p->name, key))
                                break;
                if (p && p->name) {
                        switch (p->type) {
                        case PARAM_INT:
                                ok = !val || json_object_is_type(val, json_type_int);
                                break;
                        case PARAM_STRING:
                                ok = !val || json_object_is_type(val, json_type_string);
                                break;
                        case PARAM_BOOL:
                                ok = !val || json_object_is_type(val, json_type_boolean);
                                break;
                        }
                }
                if (!ok) {
                        server_reply_invalid_parameter(c, key);
                        return -EINVAL;
                }
        }
        return 0;
}

static int method_get_info(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct server *s = c->server;
        json_object *p, *ifaces;
        int r;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        p = json_object_new_object();
        ifaces = json_object_new_array();
        if (!p || !ifaces) {
                json_object_put(p);
                json_object_put(ifaces);
                return -ENOMEM;
        }
        json_object_object_add(p, "vendor", json_object_new_string("blkledger"));
        json_object_object_add(p, "product", json_object_new_string("blkledgerd"));
        json_object_object_add(p, "version", json_object_new_string(s->info.version));
        json_object_object_add(p, "url", json_object_new_string(PACKAGE_URL));
        json_object_array_add(ifaces, json_object_new_string("org.varlink.service"));
        json_object_array_add(ifaces, json_object_new_string(s->info.interface));
        json_object_object_add(p, "interfaces", ifaces);
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static int method_get_interface_description(struct client *c, json_object *params, unsigned flags,
                                            void *userdata) {
        static const struct param_spec spec[] = { { "interface", PARAM_STRING }, {} };
        struct server *s = c->server;
        json_object *iface, *p;
        const char *name, *desc;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        iface = param_get(params, "interface");
        if (!iface)
                return server_reply_invalid_parameter(c, "interface");
        name = json_object_get_string(iface);
        if (streq(name, "org.varlink.service"))
                desc = service_interface_description;
        else if (streq(name, s->info.interface))
                desc = s->info.interface_description;
        else
                return server_reply_error_string(c, "org.varlink.service.InterfaceNotFound", "interface", name);
        p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "description", json_object_new_string(desc));
        r = server_reply(c, p);
        json_object_put(p);
        return r;
}

static const struct method service_methods[] = {
        { "org.varlink.service.GetInfo", method_get_info, 0 },
        { "org.varlink.service.GetInterfaceDescription", method_get_interface_description, 0 },
        {},
};

static const struct method *find_method(const struct method *table, const char *name) {
        for (; table && table->name; table++)
                if (streq(table->name, name))
                        return table;
        return NULL;
}

static void dispatch(struct client *c, const char *msg, size_t len) {
        struct server *s = c->server;
        struct vl_call call;
        const struct method *m;
        const char *reason = "invalid call";
        _cleanup_free_ char *iface = NULL;
        const char *member;
        int r;

        c->oneway = false;
        r = vl_call_parse(msg, len, &call, &reason);
        if (r < 0) {
                log_debug("client pid %d: %s", (int) c->pid, reason);
                server_reply_error_string(c, "io.blkledger.ProtocolError", "reason", reason);
                return;
        }
        c->oneway = call.flags & VL_CALL_ONEWAY;
        if (call.flags & VL_CALL_UPGRADE) {
                server_reply_error_string(c, "io.blkledger.ProtocolError", "reason", "upgrade is not supported");
                goto done;
        }
        if (vl_method_split(call.method, &iface, &member) < 0) {
                server_reply_error_string(c, "org.varlink.service.MethodNotFound", "method", call.method);
                goto done;
        }
        m = find_method(service_methods, call.method);
        if (!m)
                m = find_method(s->methods, call.method);
        if (!m) {
                if (!streq(iface, "org.varlink.service") && !streq(iface, s->info.interface))
                        server_reply_error_string(c, "org.varlink.service.InterfaceNotFound", "interface", iface);
                else
                        server_reply_error_string(c, "org.varlink.service.MethodNotFound", "method", call.method);
                goto done;
        }
        if ((m->flags & METHOD_ROOT_ONLY) && c->uid != 0) {
                server_reply_error(c, "org.varlink.service.PermissionDenied", NULL);
                goto done;
        }
        if ((m->flags & METHOD_MORE_ONLY) && !(call.flags & VL_CALL_MORE)) {
                server_reply_error(c, "org.varlink.service.ExpectedMore", NULL);
                goto done;
        }
        if (c->oneway && !(m->flags & METHOD_SIDE_EFFECTS))
                goto done; /* no reply wanted and nothing to change: nothing to do */
        c->in_call = true;
        c->call_flags = call.flags;
        r = m->fn(c, call.parameters, call.flags, s->userdata);
        if (c->in_call && !c->watching && !c->deferred) {
                /* The method failed without saying why (or forgot to reply). */
                log_warning_errno(r, "%s failed", call.method);
                server_reply_error_string(c, "io.blkledger.InternalError", "reason",
                                          r < 0 ? strerror(-r) : "no reply");
        }
done:
        vl_call_done(&call);
}

static void watch_pump(struct client *c) {
        struct server *s = c->server;
        int64_t last;

        if (!c->watching)
                return;
        last = s->history.last_seq(s->userdata);
        /* Backed up (replies waiting for the peer) and far behind: tell it where to
         * resume instead of keeping an ever older position open. */
        if (vl_buf_len(&c->out) > 0 && c->stalled_since && last - c->watch_cursor > s->limits.watch_max_lag) {
                log_warning("watcher pid %d fell %lld events behind; ending its watch at %lld", (int) c->pid,
                            (long long) (last - c->watch_cursor), (long long) c->watch_cursor);
                reply_error_int(c, "io.blkledger.WatchTooSlow", "resume_since", c->watch_cursor);
                c->closing = true;
                return;
        }
        while (c->watch_cursor < last && vl_buf_len(&c->out) < OUT_WATERMARK) {
                json_object *arr = json_object_new_array();
                int n;

                if (!arr)
                        return;
                n = s->history.fetch(s->userdata, c->watch_cursor, WATCH_BATCH, arr);
                if (n <= 0) {
                        json_object_put(arr);
                        if (n < 0)
                                log_warning_errno(n, "cannot read history for watcher pid %d", (int) c->pid);
                        return;
                }
                for (int i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(arr, (size_t) i);
                        json_object *p = json_object_new_object(), *seq;
                        if (!p)
                                break;
                        json_object_object_add(p, "event", json_object_get(e));
                        json_object_object_add(p, "last_seq", json_object_new_int64(last));
                        reply_full(c, p, true);
                        json_object_put(p);
                        if (json_object_object_get_ex(e, "seq", &seq))
                                c->watch_cursor = json_object_get_int64(seq);
                }
                json_object_put(arr);
        }
}

int server_start_watch(struct client *c, int64_t since) {
        struct server *s = c->server;
        json_object *p = json_object_new_object();
        int64_t last = s->history.last_seq(s->userdata);
        int r;

        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "event", NULL);
        json_object_object_add(p, "last_seq", json_object_new_int64(last));
        r = reply_full(c, p, true);
        json_object_put(p);
        if (r < 0)
                return r;
        c->watching = true;
        c->watch_cursor = since < 0 ? last : since;
        watch_pump(c);
        return 0;
}

void server_notify_events(struct server *s) {
        for (struct client *c = s->clients, *next; c; c = next) {
                next = c->next;
                if (!c->watching)
                        continue;
                client_kick(c, 0);
        }
}

/* Root's messages may be larger: an Import carries a whole export. The small limit
 * guards against unprivileged clients; root is trusted with the daemon anyway. */
static size_t max_message(const struct client *c) {
        return c->uid == 0 ? c->server->limits.max_message_root : c->server->limits.max_message;
}

/* Reads what is there. Returns 0, or -errno when the connection is finished. */
static int client_read(struct client *c) {
        for (;;) {
                ssize_t n;
                int r;

                if (vl_buf_len(&c->in) > max_message(c))
                        return 0; /* client_process reports the oversized message */
                r = vl_buf_reserve(&c->in, 16384);
                if (r < 0)
                        return r;
                n = recv(c->fd, c->in.data + c->in.end, c->in.alloc - c->in.end, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                if (n == 0) {
                        c->eof = true;
                        return 0;
                }
                c->in.end += (size_t) n;
        }
}

/* Handles complete messages while the client keeps up with its replies. */
/* Handles complete messages while the client keeps up with its replies, at most
 * CALLS_PER_TURN at a time: a client that pipelines (or sends oneway calls, which
 * produce no output to hold it back) cannot keep the loop from everyone else. */
static void client_process(struct client *c) {
        struct server *s = c->server;
        unsigned calls = 0;
        size_t len;
        int r;

        while (!c->closing && !c->in_call && vl_buf_len(&c->out) < OUT_WATERMARK) {
                r = vl_frame_next(&c->in, max_message(c), &len);
                if (r < 0) {
                        log_warning("client pid %d sent a message over %zu bytes; closing it", (int) c->pid,
                                    max_message(c));
                        reply_error_int(c, "io.blkledger.MessageTooLarge", "max_bytes", (int64_t) max_message(c));
                        c->closing = true;
                        break;
                }
                if (r == 0)
                        break;
                if (calls++ == CALLS_PER_TURN) {
                        /* The rest waits for the next loop iteration. */
                        ev_defer_queue(s->loop, &c->more_calls);
                        break;
                }
                dispatch(c, vl_buf_head(&c->in), len);
                vl_buf_consume(&c->in, len + 1);
        }
        /* A watcher owns its connection: anything it sends is a protocol error. */
        if (c->watching && vl_buf_len(&c->in) > 0) {
                server_reply_error_string(c, "io.blkledger.ProtocolError", "reason",
                                          "no calls are accepted during a watch");
                c->closing = true;
        }
        /* Only a message that has not arrived in full can be "left unfinished"; complete
         * calls waiting for output space are the stall timeout's business. */
        r = vl_frame_next(&c->in, s->limits.max_message, &len);
        if (vl_buf_len(&c->in) > 0 && r == 0 && !c->closing) {
                if (c->partial_since == 0)
                        c->partial_since = now_monotonic_usec();
        } else
                c->partial_since = 0;
        /* The peer is done sending: close once every complete call it sent is answered
         * (pipelined calls may still wait for output space). */
        if (c->eof && !c->watching && !c->in_call && r != 1)
                c->closing = true;
}

static void client_update_events(struct client *c) {
        uint32_t ev = 0;

        if (vl_buf_len(&c->out) > 0)
                ev |= POLLOUT;
        /* Stop reading while replies pile up (backpressure) or while closing. */
        if (!c->closing && !c->eof && (vl_buf_len(&c->out) < OUT_WATERMARK || c->watching))
                ev |= POLLIN;
        /* After end of input a watcher may still be read from (the peer only shut down
         * its sending side); POLLHUP says the peer is gone entirely. */
        if (ev == 0 && c->eof)
                ev = POLLHUP;
        ev_io_set_events(c->io, ev);
}

/* Moves a client forward: runs complete calls, feeds its watch, sends, and closes it
 * when it is finished. Returns false when the client was freed. */
static bool client_kick(struct client *c, uint32_t revents) {
        int r;

        client_process(c);
        /* A watcher behind the journal is fed as long as its socket takes data: the
         * pump stops at the output watermark, the flush makes room again. */
        for (;;) {
                int64_t before = c->watch_cursor;
                size_t pending = vl_buf_len(&c->out);

                watch_pump(c);
                r = client_flush(c);
                if (r < 0 || !c->watching || vl_buf_len(&c->out) > 0 ||
                    c->watch_cursor >= c->server->history.last_seq(c->server->userdata))
                        break;
                /* Nothing was waiting and the pump found nothing: no progress to make. */
                if (pending == 0 && c->watch_cursor == before)
                        break;
        }
        if (r < 0 || (revents & POLLERR) || (c->closing && vl_buf_len(&c->out) == 0)) {
                client_free(c);
                return false;
        }
        /* A peer that hung up entirely cannot read what is left. */
        if ((revents & POLLHUP) && c->eof && !(revents & POLLIN)) {
                client_free(c);
                return false;
        }
        client_update_events(c);
        return true;
}

static void more_calls(void *userdata) {
        client_kick(userdata, 0);
}

static void client_handler(struct ev_io *io, uint32_t revents, void *userdata) {
        struct client *c = userdata;

        if (revents & (POLLIN | POLLHUP | POLLERR)) {
                if (client_read(c) < 0) {
                        client_free(c);
                        return;
                }
        }
        client_kick(c, revents);
}

static unsigned count_user(const struct server *s, uid_t uid) {
        unsigned n = 0;
        for (const struct client *c = s->clients; c; c = c->next)
                n += c->uid == uid;
        return n;
}

static void refuse(int fd, const char *why, unsigned max) {
        struct vl_buf b = {};
        json_object *p = json_object_new_object();

        if (p) {
                json_object_object_add(p, "max", json_object_new_int64(max));
                if (vl_append_error(&b, "io.blkledger.TooManyClients", p) == 0)
                        (void) !send(fd, vl_buf_head(&b), vl_buf_len(&b), MSG_NOSIGNAL | MSG_DONTWAIT);
                json_object_put(p);
        }
        vl_buf_free(&b);
        log_warning("refusing a connection: %s", why);
        close(fd);
}

static void listen_handler(struct ev_io *io, uint32_t revents, void *userdata) {
        struct server *s = userdata;

        for (;;) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                struct client *c;
                int fd, r;

                fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* The connection stays queued; polling again at once would
                                 * spin. Try again on the next tick. */
                                log_warning_errno(errno, "cannot accept connections for now");
                                ev_io_set_events(s->listen_io, 0);
                                s->listen_paused = true;
                        } else if (errno != EAGAIN)
                                log_warning_errno(errno, "accept failed");
                        return;
                }
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                        log_warning_errno(errno, "cannot read peer credentials");
                        close(fd);
                        continue;
                }
                if (s->n_clients >= s->limits.max_clients) {
                        refuse(fd, "too many clients", s->limits.max_clients);
                        continue;
                }
                if (cred.uid != 0 && count_user(s, cred.uid) >= s->limits.max_clients_user) {
                        refuse(fd, "too many clients of one user", s->limits.max_clients_user);
                        continue;
                }
                c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->server = s;
                c->fd = fd;
                c->uid = cred.uid;
                c->pid = cred.pid;
                c->more_calls = (struct ev_defer) { .fn = more_calls, .userdata = c };
                r = ev_io_new(s->loop, fd, POLLIN, client_handler, c, &c->io);
                if (r < 0) {
                        log_error_errno(r, "cannot watch client connection");
                        close(fd);
                        free(c);
                        continue;
                }
                c->next = s->clients;
                if (s->clients)
                        s->clients->prev = c;
                s->clients = c;
                s->n_clients++;
                log_debug("client connected: pid %d uid %d", (int) c->pid, (int) c->uid);
        }
}

struct server_call *server_call_defer(struct client *c) {
        struct server_call *call = calloc(1, sizeof(*call));

        if (!call)
                return NULL;
        call->client = c;
        call->flags = c->call_flags;
        c->deferred = call;
        return call;
}

bool server_call_wants_more(const struct server_call *call) {
        return call->flags & VL_CALL_MORE;
}

bool server_call_connected(const struct server_call *call) {
        return call->client != NULL;
}

/* Ends a deferred call: the client may go on with its next calls, but not from here:
 * the caller may be inside a dispatch or shutting down. The next loop turn sends the
 * reply and runs what the client sent meanwhile. */
static void call_finish(struct server_call *call) {
        struct client *c = call->client;

        free(call);
        if (!c)
                return;
        c->deferred = NULL;
        ev_defer_queue(c->server->loop, &c->more_calls);
}

int server_call_reply(struct server_call *call, json_object *params, bool continues) {
        struct client *c = call->client;
        int r = 0;

        if (c) {
                if (continues && !(call->flags & VL_CALL_MORE))
                        return 0; /* progress only for callers who asked for more */
                r = reply_full(c, params, continues);
                if (continues) {
                        ev_defer_queue(c->server->loop, &c->more_calls);
                        return r;
                }
        } else if (continues)
                return 0;
        call_finish(call);
        return r;
}

int server_call_error(struct server_call *call, const char *error, json_object *params) {
        int r = 0;

        if (call->client)
                r = server_reply_error(call->client, error, params);
        call_finish(call);
        return r;
}

void server_tick(struct server *s, int64_t now) {
        if (s->listen_paused) {
                s->listen_paused = false;
                ev_io_set_events(s->listen_io, POLLIN);
        }
        for (struct client *c = s->clients, *next; c; c = next) {
                next = c->next;
                if (c->partial_since && now - c->partial_since > s->limits.partial_timeout) {
                        log_warning("client pid %d left a message unfinished; closing it", (int) c->pid);
                        client_free(c);
                } else if (c->stalled_since && now - c->stalled_since > s->limits.stall_timeout) {
                        if (c->watching && !c->stall_warned) {
                                /* A paused watcher (a pager, a stopped process) learns on
                                 * waking where to resume; it gets one more period to read. */
                                log_warning("watcher pid %d stopped reading; ending its watch at %lld", (int) c->pid,
                                            (long long) c->watch_cursor);
                                reply_error_int(c, "io.blkledger.WatchTooSlow", "resume_since", c->watch_cursor);
                                c->closing = true;
                                c->stall_warned = true;
                                c->stalled_since = now;
                                client_update_events(c);
                                continue;
                        }
                        log_warning("client pid %d stopped reading its replies; closing it", (int) c->pid);
                        client_free(c);
                }
        }
}

int server_new(struct ev_loop *loop, int listen_fd, const struct server_limits *limits,
               const struct server_info *info, const struct method *methods,
               const struct server_history *history, void *userdata, struct server **ret) {
        struct server *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->listen_fd = listen_fd;
        s->limits = limits ? *limits : server_default_limits;
        s->info = *info;
        s->methods = methods;
        s->history = *history;
        s->userdata = userdata;
        if (listen(listen_fd, SOMAXCONN) < 0) {
                free(s);
                return -errno;
        }
        r = ev_io_new(loop, listen_fd, POLLIN, listen_handler, s, &s->listen_io);
        if (r < 0) {
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

struct server *server_free(struct server *s) {
        if (!s)
                return NULL;
        /* Last words (answers to calls ended by the shutdown) go out if the socket takes
         * them at once; nobody waits for a client at exit. */
        for (struct client *c = s->clients; c; c = c->next)
                (void) client_flush(c);
        while (s->clients)
                client_free(s->clients);
        ev_io_free(s->listen_io);
        free(s);
        return NULL;
}

int server_bind(const char *path, int *ret_fd, int *ret_lock_fd, char **ret_error) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1, lock_fd = -1;
        _cleanup_free_ char *lock_path = NULL;
        struct stat st;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                (void) asprintf_or_null(ret_error, "socket path %s is too long", path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);

        /* Whoever holds path.lock owns path: a live daemon keeps it for its lifetime,
         * a killed one loses it with its last descriptor. */
        if (asprintf(&lock_path, "%s.lock", path) < 0)
                return -ENOMEM;
        lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lock_fd < 0) {
                (void) asprintf_or_null(ret_error, "cannot open %s: %s", lock_path, strerror(errno));
                return -errno;
        }
        if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;
                (void) asprintf_or_null(ret_error, "socket %s belongs to a running daemon", path);
                return e == EWOULDBLOCK ? -EADDRINUSE : -e;
        }

        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode)) {
                        (void) asprintf_or_null(ret_error, "%s exists and is not a socket; not replacing it", path);
                        return -EEXIST;
                }
                /* The lock is free, so no blkledgerd owns the socket. Something else might
                 * still answer on it: that is never replaced. A killed daemon's socket can
                 * answer for a moment after its death (its io_uring lets go of the file
                 * asynchronously), so give that moment before deciding. */
                for (int tries = 0;; tries++) {
                        /* Non-blocking: a listener's full backlog (EAGAIN) answers too. Few
                         * tries: each leaves a connection in a live listener's queue. */
                        _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                        if (probe < 0 || (connect(probe, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EAGAIN))
                                break;
                        if (tries == 2) {
                                (void) asprintf_or_null(ret_error, "socket %s is answered by another program", path);
                                return -EADDRINUSE;
                        }
                        usleep((useconds_t) (tries + 1) * 300 * 1000);
                }
                log_info("replacing stale socket %s", path);
                if (unlink(path) < 0 && errno != ENOENT) {
                        (void) asprintf_or_null(ret_error, "cannot remove stale socket %s: %s", path, strerror(errno));
                        return -errno;
                }
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                (void) asprintf_or_null(ret_error, "cannot bind %s: %s", path, strerror(errno));
                return -errno;
        }
        /* Any local user may read the ledger; methods that change it check for root. */
        if (chmod(path, 0666) < 0) {
                (void) asprintf_or_null(ret_error, "cannot chmod %s: %s", path, strerror(errno));
                return -errno;
        }
        *ret_fd = TAKE_FD(fd);
        *ret_lock_fd = TAKE_FD(lock_fd);
        return 0;
}
