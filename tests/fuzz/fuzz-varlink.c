/* Description: fuzzes the Varlink server end to end: framing (vl_frame_next), the
 * strict JSON parser and call parser (vl_json_parse, vl_call_parse), dispatch, parameter
 * checking and the real io.blkledger method handlers, over a real socket of a daemon
 * fixture with an empty ledger in a private directory; also vl_reply_parse on every
 * frame and on everything the server answers. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <getopt.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "daemon.h"
#include "identity.h"
#include "journal.h"
#include "log.h"
#include "util.h"
#include "varlink.h"
#include "volumes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const char io_blkledger_varlink[];

/* Methods the fixture must not run, answered as for an unprivileged client:
 * - Reconcile starts a pass, which enumerates and probes the host's block devices;
 * - CreateVolume and AdoptVolume start intents that create files, attach loop devices
 *   and run mkfs.
 * Every other method runs for real. The remaining volume actions (resize, attach,
 * detach, delete, forget) act only on a volume that has a row, and with these two
 * excluded none ever has, so they end in their checks. Expectations with on_appear
 * are stored but never act: no pass or event batch runs, so nothing "appears". */
static const char *const excluded[] = {
        "io.blkledger.Reconcile",
        "io.blkledger.CreateVolume",
        "io.blkledger.AdoptVolume",
};

/* State is rebuilt after this many inputs, so what inputs leave behind (expectations,
 * events, backups) stays small and a reproducer needs little history. */
#define INPUTS_PER_FIXTURE 256

static struct fixture {
        bool ready;
        bool verbose; /* FUZZ_VARLINK_LOG: the daemon's debug log and the replies */
        unsigned inputs;
        char *dir;
        char *sock;
        struct daemon d;
        struct method *methods;
} fx;

static const struct server_info fuzz_info = {
        .interface = "io.blkledger",
        .interface_description = io_blkledger_varlink,
        .version = PACKAGE_VERSION,
};

static void die(const char *what, int r) {
        fprintf(stderr, "fuzz-varlink: fixture: %s: %s\n", what, strerror(r < 0 ? -r : r));
        abort();
}

/* Three records for the methods to find (GetDevice, SetName, drift): a loop device with
 * ext4, a disk with serial and WWN, and a device whose filesystem UUID is the loop
 * device's (duplicate_uuid). Their nodes do not exist, and they are in the ledger before
 * the volume table is loaded, so their appearance is history that no on_appear set
 * later acts on (device-actions.c starts from the newest event when one is set). */
static const char *const fixture_devices[] = {
        "kname=fuzz0\nE:DEVTYPE=disk\nE:MAJOR=7\nE:MINOR=200\nA:size=2048\nA:ro=0\n"
        "A:loop/backing_file=/nonexistent/fuzz/a.img\nX:devnode=/nonexistent/fuzz0\nX:backing_dev=0:99\n"
        "X:backing_ino=4242\nX:backing_btime=1795820462.123456789\nX:probed=1\nB:TYPE=ext4\n"
        "B:UUID=4b9a7f0e-3c1d-4e2a-9b8f-1d6c5e4a3b21\nB:LABEL=scratch\n",
        "kname=fuzz1\nE:DEVTYPE=disk\nE:MAJOR=8\nE:MINOR=200\nE:ID_SERIAL_SHORT=FUZZ123\nE:ID_MODEL=Fuzz_Disk\n"
        "E:ID_WWN=0x5000c500deadbeef\nE:ID_PATH=pci-0000:00:17.0-ata-9\nA:size=8388608\nA:removable=1\n"
        "X:devnode=/nonexistent/fuzz1\nX:probed=1\nB:PTTYPE=gpt\nB:PTUUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
        "kname=fuzz2\nE:DEVTYPE=disk\nE:MAJOR=7\nE:MINOR=201\nA:size=4096\nX:devnode=/nonexistent/fuzz2\n"
        "X:probed=1\nB:TYPE=xfs\nB:UUID=4b9a7f0e-3c1d-4e2a-9b8f-1d6c5e4a3b21\n",
};

/* An empty journal at the current schema, made once: migrating a new one from schema 0
 * takes longer than hundreds of inputs. */
static char *template_db;
static size_t template_len;

static void journal_from_template(const char *dir, const char *db) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;

        if (!template_db) {
                struct journal *j = NULL;
                struct stat st;
                int r;

                if (asprintf(&path, "%s/template.db", dir) < 0)
                        die("asprintf", ENOMEM);
                if ((r = journal_open(path, &j, NULL)) < 0)
                        die("journal_open", r);
                journal_close(j); /* the last connection checkpoints the WAL into the file */
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || fstat(fd, &st) < 0 || !(template_db = malloc((size_t) st.st_size)) ||
                    read(fd, template_db, (size_t) st.st_size) != st.st_size)
                        die("template", errno ? errno : EIO);
                template_len = (size_t) st.st_size;
                (void) unlink(path);
                close(fd);
        }
        fd = open(db, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, template_db, template_len) != (ssize_t) template_len)
                die("journal copy", errno ? errno : EIO);
}

static void fixture_records(struct daemon *d) {
        struct ledger_item items[ELEMENTSOF(fixture_devices)] = {};
        struct ledger_stats st = {};
        int r;

        for (size_t i = 0; i < ELEMENTSOF(fixture_devices); i++) {
                struct observation o = {};
                struct device_record *rec = calloc(1, sizeof(*rec));

                if (!rec || observation_parse(fixture_devices[i], &o, NULL) < 0 ||
                    device_facts_from_observation(&o, &rec->facts) < 0 ||
                    !(rec->identity = identity_from_observation(&o, &rec->facts)) ||
                    identity_aux_from_observation(&o, rec->identity, &rec->identity_aux) < 0 ||
                    !(items[i].kname = strdup(o.kname)))
                        die("fixture device", ENOMEM);
                items[i].observed = rec;
                observation_done(&o);
        }
        ledger_begin_pass(&d->ledger);
        if ((r = ledger_apply(&d->ledger, items, ELEMENTSOF(items), now_realtime_usec(), &st)) < 0 ||
            (r = ledger_sweep(&d->ledger, now_realtime_usec(), &st)) < 0)
                die("ledger_apply", r);
        for (size_t i = 0; i < ELEMENTSOF(items); i++)
                ledger_item_done(&items[i]);
}

static int m_excluded(struct client *c, json_object *params, unsigned flags, void *userdata) {
        return server_reply_error(c, "org.varlink.service.PermissionDenied", NULL);
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void fixture_free(void) {
        struct daemon *d = &fx.d;

        if (!fx.ready)
                return;
        d->server = server_free(d->server);
        d->volumes = volumes_free(d->volumes);
        d->loop = ev_loop_free(d->loop);
        drift_done(&d->drift);
        ledger_done(&d->ledger);
        d->journal = journal_close(d->journal);
        if (d->socket_fd >= 0)
                close(d->socket_fd);
        if (d->socket_lock_fd >= 0)
                close(d->socket_lock_fd);
        options_done(&d->opts);
        (void) nftw(fx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(fx.dir);
        free(fx.sock);
        fx.dir = fx.sock = NULL;
        fx.ready = false;
}

static void fixture_init(void) {
        struct daemon *d = &fx.d;
        _cleanup_free_ char *db = NULL, *vols = NULL, *scope = NULL, *error = NULL;
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ?: "/tmp");
        size_t n = 0;
        int r;

        *d = (struct daemon) { .signal_fd = -1, .state_lock_fd = -1, .socket_fd = -1, .socket_lock_fd = -1 };
        if (asprintf(&fx.dir, "%s/fuzz-varlink.XXXXXX", base) < 0 || !mkdtemp(fx.dir))
                die("mkdtemp", errno);
        if (asprintf(&fx.sock, "%s/sock", fx.dir) < 0 || asprintf(&db, "%s/ledger.db", fx.dir) < 0 ||
            asprintf(&vols, "%s/volumes", fx.dir) < 0 || asprintf(&scope, "loop:%s", vols) < 0)
                die("asprintf", ENOMEM);
        if (mkdir(vols, 0700) < 0)
                die("mkdir", errno);
        {
                /* The scope is the empty volume directory: it matches no device. */
                char *argv[] = { (char *) "blkledgerd", (char *) "--foreground", (char *) "--state-dir", fx.dir,
                                 (char *) "--socket", fx.sock, (char *) "--scope", scope, NULL };
                optind = 0;
                r = options_parse((int) ELEMENTSOF(argv) - 1, argv, &d->opts, &error);
                if (r != 0)
                        die(error ? error : "options", r < 0 ? r : EINVAL);
        }
        journal_from_template(fx.dir, db);
        r = journal_open(db, &d->journal, NULL);
        if (r < 0)
                die("journal_open", r);
        if ((r = ledger_load(&d->ledger, d->journal)) < 0 || (r = drift_load(&d->drift, d->journal)) < 0)
                die("load", r);
        if ((r = ev_loop_new(64, &d->loop)) < 0) {
                /* Some sandboxes forbid io_uring: the replay test skips (77), as test-server does. */
                fprintf(stderr, "fuzz-varlink: io_uring is not available here: %s; skipping\n", strerror(-r));
                exit(77);
        }
        fixture_records(d);
        if ((r = volumes_new(d, d->opts.volume_dir, &d->volumes)) < 0)
                die("volumes_new", r);
        d->started_at = now_realtime_usec();
        /* As after the first pass: expectations open and close drift for real. */
        d->initial_pass_done = true;
        reconcile_evaluate_drift(d);

        if (!fx.methods) {
                while (daemon_methods[n].name)
                        n++;
                fx.methods = calloc(n + 1, sizeof(*fx.methods));
                if (!fx.methods)
                        die("calloc", ENOMEM);
                for (size_t i = 0; i < n; i++) {
                        fx.methods[i] = daemon_methods[i];
                        for (size_t k = 0; k < ELEMENTSOF(excluded); k++)
                                if (streq(daemon_methods[i].name, excluded[k]))
                                        fx.methods[i].fn = m_excluded;
                }
        }
        r = server_bind(fx.sock, &d->socket_fd, &d->socket_lock_fd, &error);
        if (r < 0)
                die(error ? error : "server_bind", r);
        r = server_new(d->loop, d->socket_fd, &d->opts.limits, &fuzz_info, fx.methods, &daemon_history, d,
                       &d->server);
        if (r < 0)
                die("server_new", r);
        fx.ready = true;
        fx.inputs = 0;
}

static void at_exit(void) {
        fixture_free();
        free(fx.methods);
        free(template_db);
}

/* What the server sends must be valid JSON as the client's strict parser sees it (UTF-8,
 * one value, depth): every reply up to 8 KiB is checked so, and those up to 1 KiB (errors,
 * names, single records: where an input's bytes end up) are also parsed as replies.
 * Longer ones (the interface description, the event list) are only framed: checking
 * them took most of the harness's time, and anything an input puts in them appears in
 * a shorter reply too. */
#define CHECKED_REPLY_MAX 8192
#define PARSED_REPLY_MAX 1024

static void check_replies(struct vl_buf *in) {
        size_t len;

        while (vl_frame_next(in, SIZE_MAX / 2, &len) == 1) {
                struct vl_reply reply;
                const char *why = NULL;

                if (fx.verbose)
                        fprintf(stderr, "fuzz-varlink: reply: %.*s\n", (int) MIN(len, 300), vl_buf_head(in));
                if (len > CHECKED_REPLY_MAX) {
                        vl_buf_consume(in, len + 1);
                        continue;
                }
                if (!vl_json_valid(vl_buf_head(in), len, VL_MAX_DEPTH * 2))
                        why = "not valid JSON";
                else if (len <= PARSED_REPLY_MAX && vl_reply_parse(vl_buf_head(in), len, &reply, &why) == 0)
                        vl_reply_done(&reply);
                else if (len <= PARSED_REPLY_MAX && !why)
                        why = "?";
                if (why) {
                        fprintf(stderr, "fuzz-varlink: the server sent a malformed reply (%s): %.*s\n", why,
                                (int) MIN(len, 4096), vl_buf_head(in));
                        abort();
                }
                vl_buf_consume(in, len + 1);
        }
}

/* Reads what the server sent (counted in *received); returns 1 at end of stream. */
static int drain(int fd, struct vl_buf *in, size_t *received) {
        for (;;) {
                ssize_t n;

                if (vl_buf_reserve(in, 16384) < 0)
                        abort();
                n = recv(fd, in->data + in->end, in->alloc - in->end, MSG_DONTWAIT);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : 1;
                if (n == 0)
                        return 1;
                in->end += (size_t) n;
                *received += (size_t) n;
                check_replies(in);
        }
}

/* The client's parser on each NUL-terminated frame of the input (the server parses
 * them as calls itself). */
static void parse_frames(const uint8_t *data, size_t size) {
        const char *p = (const char *) data, *end = p + size;

        while (p < end) {
                const char *nul = memchr(p, 0, (size_t) (end - p));
                size_t len = nul ? (size_t) (nul - p) : (size_t) (end - p);
                struct vl_reply reply;

                if (vl_reply_parse(p, len, &reply, NULL) == 0)
                        vl_reply_done(&reply);
                p += len + 1;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool registered;
        struct vl_buf in = {};
        size_t sent = 0, received = 0;
        int fd, idle = 0, done = 0;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (!registered) {
                fx.verbose = getenv("FUZZ_VARLINK_LOG");
                log_setup(true, fx.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR - 1);
                atexit(at_exit);
                registered = true;
        }
        if (fx.ready && fx.inputs >= INPUTS_PER_FIXTURE)
                fixture_free();
        if (!fx.ready)
                fixture_init();
        fx.inputs++;

        parse_frames(data, size);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                die("socket", errno);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.sock);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                die("connect", errno);

        /* Send everything (the server reads while we write), then the end of input, and
         * run the loop until the server closes the connection. A call that keeps it open
         * (a watch) is ended by hanging up after some idle turns. */
        for (unsigned turn = 0; turn < 100000 && !done; turn++) {
                size_t before = received;
                bool progress = false;

                while (sent < size) {
                        ssize_t n = send(fd, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                        if (n <= 0)
                                break;
                        sent += (size_t) n;
                        progress = true;
                        if (sent == size)
                                (void) shutdown(fd, SHUT_WR);
                }
                if (size == 0 && turn == 0)
                        (void) shutdown(fd, SHUT_WR);
                if (ev_loop_iterate(fx.d.loop, 0) < 0)
                        die("ev_loop_iterate", EIO);
                done = drain(fd, &in, &received);
                progress = progress || received != before;
                idle = progress ? 0 : idle + 1;
                if (idle > 20 && sent == size)
                        break;
        }
        close(fd);
        /* The server notices the hang-up and lets the client go. */
        for (unsigned turn = 0; turn < 1000 && server_n_clients(fx.d.server) > 0; turn++)
                if (ev_loop_iterate(fx.d.loop, turn < 10 ? 0 : 1000) < 0)
                        die("ev_loop_iterate", EIO);
        if (server_n_clients(fx.d.server) > 0) {
                fprintf(stderr, "fuzz-varlink: the server kept a connection the client closed\n");
                abort();
        }
        /* Nothing here may start an action (see fixture_devices): stop at once if one did. */
        if (volumes_unfinished(fx.d.volumes) > 0) {
                fprintf(stderr, "fuzz-varlink: an intent was started\n");
                abort();
        }
        vl_buf_free(&in);
        return 0;
}
