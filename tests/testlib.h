/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers for the integration tests (tests/int-*.c): they run as root against real loop
 * devices, the real kernel uevents and the real daemon binary.
 *
 * Everything a helper creates is registered and removed at exit, also when a test fails
 * (cmocka longjmps out of a failed assertion, the process then exits normally) or is
 * terminated by the harness (SIGTERM handler). Loop devices are attached with
 * LO_FLAGS_AUTOCLEAR while this process holds them open, so even SIGKILL detaches them;
 * daemons get PR_SET_PDEATHSIG and die with the test. tests/harness.sh sweeps up after
 * all of that once more. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Exits 77 (skip) with the reason unless the test can run here: root, loop devices. */
void tl_require_devices(void);
_Noreturn void tl_skip(const char *why);

const char *tl_tmpdir(void);   /* private directory of this test run */
const char *tl_builddir(void); /* where blkledgerd and blkledger are */
const char *tl_srcdir(void);
/* Records a pid for the harness to kill if this test does not stop it itself. */
void tl_register_pid(pid_t pid);

struct tl_loop {
        char *file;    /* backing file */
        char *devnode; /* /dev/loopN while attached, else NULL */
        int fd;        /* held open; with autoclear, closing it detaches */
        bool shared;   /* the file belongs to another tl_loop: never unlinked */
};

/* Creates a sparse file DIR/name of size bytes, optionally formats it with a shell
 * command ("%s" is the file), and attaches it. dir NULL means tl_tmpdir()/img. */
struct tl_loop *tl_loop_new(const char *dir, const char *name, uint64_t size, const char *mkfs_fmt);
int tl_loop_attach(struct tl_loop *l);
/* Attaches at loop number nr or above (the first that is free from nr on), so a test
 * can make a device come back under another number. */
int tl_loop_attach_at(struct tl_loop *l, int nr);
/* Attaches another loop device to the file of l (one image attached twice). */
struct tl_loop *tl_loop_attach_again(const struct tl_loop *l);
/* Attaches a loop device to an existing file, which is never removed. */
struct tl_loop *tl_loop_attach_file(const char *file);
void tl_loop_detach(struct tl_loop *l);
void tl_loop_free(struct tl_loop *l);

struct tl_daemon {
        pid_t pid;
        char *state_dir;
        char *socket;
        char *log;
        char **args; /* extra arguments */
        int exit_status; /* when it exited during a start: WIFEXITED... status */
};

/* Starts blkledgerd --foreground --state-dir ... --socket ... --scope loop:tmpdir/img
 * plus extra (NULL-terminated, may be NULL), waits for READY=1 on $NOTIFY_SOCKET and then
 * until its first pass is complete (every record verified). Returns NULL (after printing
 * the daemon's log) when it exits or is not ready in time. */
struct tl_daemon *tl_daemon_start(const char *name, const char *const *extra);
/* The same without waiting for the first pass: it serves from READY=1 on. */
struct tl_daemon *tl_daemon_start_unverified(const char *name, const char *const *extra);
int tl_daemon_wait_verified(struct tl_daemon *d);
/* Like tl_daemon_start, for a daemon expected to fail: returns its exit status. */
int tl_daemon_run_expect_exit(const char *name, const char *const *args, char **ret_output);
/* Sends sig and waits (10 s at most); returns the exit status or -signal. */
int tl_daemon_stop(struct tl_daemon *d, int sig);
/* Starts again with the same state, socket and arguments; waits for the first pass. */
int tl_daemon_restart(struct tl_daemon *d);
/* Starts again and waits for READY=1 only; -ECHILD (exit_status set) when it exited
 * before that, as a daemon armed to crash in recovery does. */
int tl_daemon_spawn(struct tl_daemon *d);
bool tl_daemon_alive(struct tl_daemon *d);
void tl_daemon_print_log(struct tl_daemon *d);
void tl_daemon_free(struct tl_daemon *d);

/* systemd-udevd for the tests that need it: started when it is not running (exits 77
 * when it cannot be), stopped again by tl_udevd_stop() only if this test started it;
 * the harness kills it if the test dies. */
void tl_udevd_start(void);
void tl_udevd_stop(void);

/* tests/fuse-hang, a FUSE file system serving one file whose reads block on SIGUSR1
 * (all threads) or SIGRTMIN (libblkid's threads only), let go on SIGUSR2 and by
 * themselves after hang_max seconds. tl_fuse_hang_require() exits 77 unless it was built
 * and /dev/fuse works; tl_fuse_hang_start() serves backing as mountpoint/disk.img and
 * returns the server's pid once the file is there (-1 on failure); tl_fuse_hang_stop()
 * releases any hang, ends the server and unmounts. */
void tl_fuse_hang_require(void);
pid_t tl_fuse_hang_start(const char *mountpoint, const char *backing, int hang_max);
/* Sets the FUSE file system's hang mode ("none", "all", or "probe": only the probe
 * engine's workers) and waits until it is in force. */
bool tl_fuse_hang_mode(pid_t pid, const char *mountpoint, const char *mode);
void tl_fuse_hang_stop(pid_t pid, const char *mountpoint);

/* Runs a shell command; returns its exit status (or -1); output in *ret_out if non-NULL. */
int tl_sh(char **ret_out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Runs "blkledger --socket SOCK ARGS" (the format is printf's); returns its exit status,
 * its stdout and stderr in *ret_out if non-NULL, and logs both to stderr. */
int tl_cli(struct tl_daemon *d, char **ret_out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Detaches every loop device backed by a file under dir (what a daemon made there). */
void tl_detach_loops_under(const char *dir);
/* Runs "blkledger --socket SOCK ARGS --json" and parses stdout; NULL on failure. */
json_object *tl_cli_json(struct tl_daemon *d, const char *args);
/* Device of the list with the given devnode, borrowed from list. */
json_object *tl_find_device(json_object *list, const char *key, const char *value);

/* blkid -p -o export: value of key (TYPE, UUID, LABEL) or NULL. */
char *tl_blkid(const char *devnode, const char *key);

/* Multiplies the time limits of these helpers: BLKLEDGER_TIMEOUT_SCALE, else 10 under
 * valgrind (BLKLEDGER_VALGRIND=1: daemons run under memcheck, each one's report is
 * checked when it exits, and errors fail the test at exit), else 1. */
int tl_timeout_scale(void);

/* Polls cond every 20 ms until it holds or timeout_ms (times tl_timeout_scale()) passed. */
bool tl_wait_for(int timeout_ms, bool (*cond)(void *userdata), void *userdata);

/* String member helpers that accept JSON null. */
const char *tl_str(json_object *o, const char *key);
int64_t tl_int(json_object *o, const char *key);
