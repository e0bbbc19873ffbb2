/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The Varlink server: the listening socket, one state machine per client, framing,
 * dispatch to the method table, org.varlink.service, streaming of events to watchers.
 *
 * No client can stall another or the daemon: sockets are non-blocking; a client's next
 * call is read only when its previous replies are (mostly) sent; watchers pull events
 * from the journal at their own pace instead of buffering them; partial messages and
 * replies nobody reads time out. Limits are in struct server_limits. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "evloop.h"

struct server;
struct client;

struct server_limits {
        size_t max_message;        /* bytes of one incoming message */
        size_t max_message_root;   /* the same from root (Import carries a whole export) */
        unsigned max_clients;      /* connections in all */
        unsigned max_clients_user; /* connections of one non-root user */
        int64_t partial_timeout;   /* usec a started message may take to complete */
        int64_t stall_timeout;     /* usec replies may sit unread before we give up */
        int64_t watch_max_lag;     /* events a blocked watcher may fall behind */
};

extern const struct server_limits server_default_limits;

enum {
        METHOD_ROOT_ONLY = 1 << 0,
        METHOD_MORE_ONLY = 1 << 1,
        /* Changes something: run even when called "oneway". Methods without it only
         * read, so a oneway call of them (no reply wanted) is not run at all. */
        METHOD_SIDE_EFFECTS = 1 << 2,
};

/* A method replies with server_reply*() exactly once, unless it returns an error. A
 * negative return without a reply becomes a generic error reply. */
struct method {
        const char *name; /* qualified: interface.Method */
        int (*fn)(struct client *c, json_object *params, unsigned call_flags, void *userdata);
        unsigned flags;
};

/* How the server reaches the history, for Watch. */
struct server_history {
        int64_t (*last_seq)(void *userdata);
        /* Appends up to limit events with seq > since to array; returns count or -errno. */
        int (*fetch)(void *userdata, int64_t since, int64_t limit, json_object *array);
};

struct server_info {
        const char *interface;             /* our interface name */
        const char *interface_description; /* its IDL text */
        const char *version;
};

/* Binds path, replacing a stale socket left by a dead daemon but never a live one;
 * the lock on "path.lock" stays held through *ret_lock_fd. The socket does not accept
 * connections (clients get ECONNREFUSED) until server_new() listens on it. */
int server_bind(const char *path, int *ret_fd, int *ret_lock_fd, char **ret_error);

/* Starts listening on listen_fd and serving its clients. */
int server_new(struct ev_loop *loop, int listen_fd, const struct server_limits *limits,
               const struct server_info *info, const struct method *methods,
               const struct server_history *history, void *userdata, struct server **ret);
struct server *server_free(struct server *s);

/* New events were committed: wake the watchers. */
void server_notify_events(struct server *s);
/* Once a second: time out partial messages and stalled clients. */
void server_tick(struct server *s, int64_t now_mono);
unsigned server_n_clients(const struct server *s);
/* New limits (a reload): connections already accepted stay, even above max_clients. */
void server_set_limits(struct server *s, const struct server_limits *limits);

int server_reply(struct client *c, json_object *params);
int server_reply_error(struct client *c, const char *error, json_object *params);
/* An error whose parameters are one string, {key: value}; key NULL for none. */
int server_reply_error_string(struct client *c, const char *error, const char *key, const char *value);
int server_reply_invalid_parameter(struct client *c, const char *parameter);
/* Turns the connection into a watch starting after seq since. */
int server_start_watch(struct client *c, int64_t since);

uid_t client_uid(const struct client *c);

/* A method that answers later (Reconcile waits for a pass) takes a handle and returns
 * 0 without replying. The handle outlives the client: replying to a call whose client
 * left does nothing. The final reply or error frees it. */
struct server_call;
struct server_call *server_call_defer(struct client *c);
bool server_call_wants_more(const struct server_call *call);
bool server_call_connected(const struct server_call *call);
/* continues: a progress reply, sent only if the call asked for more. */
int server_call_reply(struct server_call *call, json_object *params, bool continues);
int server_call_error(struct server_call *call, const char *error, json_object *params);

/* Parameter checking for method implementations. */
enum param_type { PARAM_INT, PARAM_STRING, PARAM_BOOL };
struct param_spec {
        const char *name;
        enum param_type type;
};
/* Verifies that params holds only the listed members, each of its type or null; on
 * failure replies InvalidParameter and returns -EINVAL. */
int server_check_params(struct client *c, json_object *params, const struct param_spec *spec);
/* Member of params, or NULL when absent or null. */
json_object *param_get(json_object *params, const char *name);
