/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libblkledger: client library of blkledgerd, the block-device ledger daemon.
 *
 * A connection speaks Varlink (https://varlink.org) over the daemon's Unix socket. Calls
 * take and return JSON text, so the library adds no JSON dependency to its users; the
 * interface is described in io.blkledger.varlink (installed with the headers' docs and
 * served by the daemon through org.varlink.service.GetInterfaceDescription).
 *
 * Conventions: functions that can fail return a negative errno value; a Varlink error
 * reply from the daemon is returned as -EREMOTEIO and its name and parameters are then
 * available from blkledger_get_error() and blkledger_get_error_parameters(). The library
 * never prints anything. Connections are not thread-safe; use one per thread.
 */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

struct blkledger;

/* The socket the library connects to when none is given: $BLKLEDGER_SOCKET if set,
 * else the daemon's default path. */
const char *blkledger_default_socket(void);

/* Connects to the daemon. socket_path may be NULL for blkledger_default_socket().
 * Returns -ENOENT or -ECONNREFUSED when no daemon listens there. */
int blkledger_connect(const char *socket_path, struct blkledger **ret);

struct blkledger *blkledger_ref(struct blkledger *b);
/* Accepts NULL; always returns NULL. */
struct blkledger *blkledger_unref(struct blkledger *b);

/* Time to wait for each reply, in milliseconds (default 30000; -1 waits forever). */
void blkledger_set_timeout(struct blkledger *b, int timeout_ms);

/* The connection's descriptor, for callers that poll before blkledger_receive(). The
 * library may already hold replies it read ahead: call blkledger_receive() while
 * blkledger_pending() says so before polling again. */
int blkledger_get_fd(const struct blkledger *b);
/* 1 when a complete reply is buffered and blkledger_receive() will not block, else 0. */
int blkledger_pending(const struct blkledger *b);

/* Calls method (e.g. "io.blkledger.ListDevices") with parameters given as a JSON object
 * text (NULL means none) and waits for the single reply. On success *ret_parameters (if
 * ret_parameters is non-NULL) receives the reply's parameters as JSON object text, to be
 * freed with free(). If the reply does not come (-ETIMEDOUT, -EINTR, a lost connection),
 * the connection is unusable afterwards and later calls return -ENOTCONN: reconnect. */
int blkledger_call(struct blkledger *b, const char *method, const char *parameters,
                   char **ret_parameters);

/* Starts a call that may stream several replies ("more"); read them with
 * blkledger_receive(). No other call may be made on the connection until the last reply
 * (continues == 0) or an error arrived. */
int blkledger_call_more(struct blkledger *b, const char *method, const char *parameters);

/* Waits for the next reply of a call started with blkledger_call_more(). Sets
 * *ret_continues to 1 when more replies follow. Returns -ETIMEDOUT when the timeout
 * passed and -EINTR when a signal arrived (the stream goes on: call again), -ECONNRESET
 * when the daemon closed the connection. */
int blkledger_receive(struct blkledger *b, char **ret_parameters, int *ret_continues);

/* Name and parameters (JSON text) of the last Varlink error reply, or NULL. Valid until
 * the next call on the connection. */
const char *blkledger_get_error(const struct blkledger *b);
const char *blkledger_get_error_parameters(const struct blkledger *b);

#ifdef __cplusplus
}
#endif
