/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: every crash point of every volume action (blkledgerd --list-crash-points,
 * built with --enable-fault-injection), three times each: the daemon kills itself there
 * (SIGKILL, as a power cut would), is started again, and afterwards the ledger, the
 * volume directory and the kernel's loop devices agree: no orphan file, no orphan or
 * duplicate loop device, no row without its file, and the action complete as its intent
 * says. Round one restarts plainly; round two with the same point still armed, so
 * recovery itself dies there when it passes it again; round three dies at
 * recovery.begin first. Then the command is repeated and must succeed with the same
 * result (idempotent). */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

#define ROUNDS 3

static struct tl_daemon *daemon_;
static char *voldir;
static char **points;
static size_t n_points;

static int setup(void **state) {
        _cleanup_free_ char *out = NULL;
        const char *extra[3] = {};
        int r;

        tl_require_devices();
        if (access("/usr/sbin/mkfs.ext4", X_OK) < 0 && access("/sbin/mkfs.ext4", X_OK) < 0)
                tl_skip("mkfs.ext4 (e2fsprogs) is not installed");
        r = tl_sh(&out, "'%s/blkledgerd' --list-crash-points 2>&1", tl_builddir());
        if (r != 0)
                tl_skip("blkledgerd was built without crash points (./configure --enable-fault-injection)");
        for (char *save = NULL, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                points = realloc(points, (n_points + 1) * sizeof(char *));
                assert_non_null(points);
                points[n_points++] = strdup(line);
        }
        assert_true(n_points >= 20);
        assert_true(asprintf(&voldir, "%s/vol", tl_tmpdir()) > 0);
        assert_true(asprintf((char **) &extra[0], "--volume-dir=%s", voldir) > 0);
        daemon_ = tl_daemon_start("crash", extra);
        free((char *) extra[0]);
        return daemon_ ? 0 : -1;
}

static int teardown(void **state) {
        tl_daemon_free(daemon_);
        tl_detach_loops_under(voldir);
        for (size_t i = 0; i < n_points; i++)
                free(points[i]);
        free(points);
        free(voldir);
        return 0;
}

/* The CLI against the daemon under test. */
#define cli(out, ...) tl_cli(daemon_, out, __VA_ARGS__)

static void must(const char *fmt, ...) _printf_(1, 2);
static void must(const char *fmt, ...) {
        _cleanup_free_ char *args = NULL, *out = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&args, fmt, ap);
        va_end(ap);
        assert_true(r > 0);
        r = cli(&out, "%s", args);
        if (r != 0)
                fprintf(stderr, "blkledger %s -> %d: %s", args, r, out ? out : "");
        assert_int_equal(r, 0);
}

/* "volume.create.mkfs.done" -> "create" */
static char *op_of(const char *point) {
        const char *s = startswith(point, "volume.");
        char *op;

        if (!s)
                return NULL;
        op = strndup(s, strcspn(s, "."));
        assert_non_null(op);
        return op;
}

/* The volume the action works on exists in the state the action starts from. */
static void prepare(const char *op, const char *name) {
        if (streq(op, "create"))
                return;
        if (streq(op, "adopt")) {
                /* A file nobody claims, as a restore from backup would leave it. */
                assert_int_equal(tl_sh(NULL, "truncate -s 8M '%s/%s.img'", voldir, name), 0);
                return;
        }
        if (streq(op, "resize"))
                must("volume create %s --size 16M --fs ext4", name);
        else
                must("volume create %s --size 8M", name);
        if (streq(op, "attach") || streq(op, "forget"))
                must("volume detach %s", name);
}

/* The undo points are reached by a create that cannot succeed: mkfs.xfs refuses 16 MiB
 * (and where it is not installed, that is a failure too). */
static bool undo_point(const char *point) {
        return strstr(point, ".undo.") != NULL;
}

static char *command(const char *point, const char *op, const char *name) {
        char *c = NULL;

        if (undo_point(point))
                assert_true(asprintf(&c, "volume create %s --size 16M --fs xfs", name) > 0);
        else if (streq(op, "create"))
                assert_true(asprintf(&c, "volume create %s --size 16M --fs ext4", name) > 0);
        else if (streq(op, "resize"))
                assert_true(asprintf(&c, "volume resize %s --size 32M", name) > 0);
        else if (streq(op, "adopt"))
                assert_true(asprintf(&c, "volume adopt %s/%s.img", voldir, name) > 0);
        else
                assert_true(asprintf(&c, "volume %s %s", op, name) > 0);
        return c;
}

static int64_t status_int(const char *key) {
        json_object *s = tl_cli_json(daemon_, "status");
        int64_t v = s ? tl_int(s, key) : -1;
        json_object_put(s);
        return v;
}

static bool settled(void *userdata) {
        return status_int("intents_unfinished") == 0;
}

/* Starts the daemon with point armed (NULL: none). Returns true when it is up and has
 * finished every intent, false when it died on the way (a crash point was reached). */
static bool start_armed(const char *point) {
        int64_t deadline = now_monotonic_usec() + 30 * USEC_PER_SEC;
        int r, status;

        if (point)
                setenv("BLKLEDGER_CRASH_AT", point, 1);
        r = tl_daemon_spawn(daemon_);
        unsetenv("BLKLEDGER_CRASH_AT");
        if (r == -ECHILD) {
                assert_true(WIFSIGNALED(daemon_->exit_status) && WTERMSIG(daemon_->exit_status) == SIGKILL);
                return false;
        }
        assert_int_equal(r, 0);
        while (now_monotonic_usec() < deadline) {
                if (waitpid(daemon_->pid, &status, WNOHANG) == daemon_->pid) {
                        daemon_->pid = 0;
                        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                        return false;
                }
                if (settled(NULL) && status_int("initial_pass_done") == 1)
                        return true;
                usleep(20000);
        }
        fail_msg("the daemon did not finish its intents in time");
        return false;
}

static json_object *find_by(json_object *arr, const char *key, const char *value) {
        for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
                json_object *o = json_object_array_get_idx(arr, i);
                if (streq_ptr(tl_str(o, key), value))
                        return o;
        }
        return NULL;
}

/* Ledger, volume directory and kernel agree; the action on name is complete. */
static void verify(const char *point, const char *op, const char *name) {
        _cleanup_free_ char *ls = NULL, *loops = NULL, *file = NULL;
        json_object *vols = tl_cli_json(daemon_, "volume list"), *intents = tl_cli_json(daemon_, "intents"),
                    *present, *v, *last = NULL;
        size_t n_files = 0;

        assert_non_null(vols);
        assert_non_null(intents);
        for (size_t i = 0; i < json_object_array_length(intents); i++) {
                json_object *it = json_object_array_get_idx(intents, i);
                assert_true(streq(tl_str(it, "state"), "succeeded") || streq(tl_str(it, "state"), "rolled_back") ||
                            streq(tl_str(it, "state"), "failed"));
                if (streq(tl_str(it, "target"), name))
                        last = it;
        }
        /* Roll forward: every interrupted action here can be finished, so it is; a
         * create that cannot is undone. */
        assert_non_null(last);
        assert_string_equal(tl_str(last, "op") + strlen("volume."), op);
        if (undo_point(point)) {
                if (!streq(tl_str(last, "state"), "rolled_back"))
                        fail_msg("%s: intent %s %s ended %s, not rolled_back", point, tl_str(last, "op"), name,
                                 tl_str(last, "state"));
        } else if (!streq(tl_str(last, "state"), "succeeded"))
                fail_msg("%s: intent %s %s ended %s: %s", point, tl_str(last, "op"), name, tl_str(last, "state"),
                         tl_str(last, "last_error") ?: "");

        assert_true(asprintf(&file, "%s/%s.img", voldir, name) > 0);
        v = find_by(vols, "name", name);
        if (streq(op, "delete") || undo_point(point)) {
                assert_null(v);
                assert_int_equal(access(file, F_OK), -1);
        } else if (streq(op, "forget")) {
                /* The row is gone, the file stays (an orphan now, by request). */
                assert_null(v);
                assert_int_equal(access(file, F_OK), 0);
        } else {
                assert_non_null(v);
                assert_int_equal(access(file, F_OK), 0);
                if (streq(op, "detach") || streq(op, "adopt")) {
                        assert_string_equal(tl_str(v, "state"), "detached");
                        assert_null(tl_str(v, "devnode"));
                } else {
                        assert_string_equal(tl_str(v, "state"), "attached");
                        assert_non_null(tl_str(v, "devnode"));
                }
                if (streq(op, "resize"))
                        assert_int_equal(tl_int(v, "size_bytes"), 32 << 20);
                if (streq(op, "create")) {
                        _cleanup_free_ char *type = tl_blkid(tl_str(v, "devnode"), "TYPE");
                        assert_string_equal(type ? type : "(none)", "ext4");
                }
        }

        /* The directory holds exactly the listed volumes' files (and a forgotten one's,
         * which the test removes itself after checking the drift it raises). */
        assert_int_equal(tl_sh(&ls, "ls -A '%s'", voldir), 0);
        for (char *save = NULL, *f = strtok_r(ls, "\n", &save); f; f = strtok_r(NULL, "\n", &save)) {
                _cleanup_free_ char *vname = strndup(f, strlen(f) > 4 ? strlen(f) - 4 : 0);
                if (streq(op, "forget") && streq(vname, name))
                        continue;
                if (!find_by(vols, "name", vname))
                        fail_msg("%s: orphan file %s in the volume directory", point, f);
                n_files++;
        }
        assert_int_equal(n_files, json_object_array_length(vols));
        if (streq(op, "forget")) {
                json_object *drift = tl_cli_json(daemon_, "drift");
                char base[64];
                snprintf(base, sizeof(base), "%s.img", name);
                assert_non_null(find_by(drift, "name", base));
                assert_string_equal(tl_str(find_by(drift, "name", base), "kind"), "orphan_file");
                json_object_put(drift);
        }

        /* One loop device per attached volume, none for the others, none without a
         * volume; the ledger shows each attached one as a present device. */
        must("reconcile");
        present = tl_cli_json(daemon_, "list --state present");
        assert_non_null(present);
        assert_int_equal(tl_sh(&loops, "losetup -n -O BACK-FILE -l | grep '^%s/' || true", voldir), 0);
        for (size_t i = 0; i < json_object_array_length(vols); i++) {
                json_object *x = json_object_array_get_idx(vols, i);
                const char *bf = tl_str(x, "backing_file");
                size_t count = 0, in_ledger = 0;

                for (char *p = loops; (p = strstr(p, bf)); p += strlen(bf))
                        if (p[strlen(bf)] == '\n' || p[strlen(bf)] == ' ' || !p[strlen(bf)])
                                count++;
                for (size_t k = 0; k < json_object_array_length(present); k++)
                        in_ledger += streq_ptr(tl_str(json_object_array_get_idx(present, k), "loop_backing_file"), bf);
                if (streq(tl_str(x, "state"), "attached")) {
                        if (count != 1 || in_ledger != 1)
                                fail_msg("%s: volume %s has %zu loop devices, %zu in the ledger", point,
                                         tl_str(x, "name"), count, in_ledger);
                } else if (count != 0)
                        fail_msg("%s: detached volume %s has %zu loop devices", point, tl_str(x, "name"), count);
        }
        for (char *save = NULL, *l = strtok_r(loops, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (!find_by(vols, "backing_file", l))
                        fail_msg("%s: orphan loop device of %s", point, l);
        json_object_put(present);
        json_object_put(vols);
        json_object_put(intents);
}

static void crash_round(size_t idx, int round) {
        const char *point = points[idx];
        _cleanup_free_ char *op = op_of(point), *cmd = NULL, *out = NULL;
        char name[32];
        int r;

        snprintf(name, sizeof(name), "p%zu-r%d", idx, round);
        prepare(op, name);
        cmd = command(point, op, name);

        /* Armed: the command dies with the daemon. */
        assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_true(start_armed(point));
        r = cli(&out, "%s", cmd);
        assert_int_not_equal(r, 0);
        r = tl_daemon_stop(daemon_, 0);
        if (r != -SIGKILL)
                fail_msg("%s: the daemon did not die at the crash point (status %d, command: %s)", point, r,
                         out ? out : "");

        if (round == 1)
                (void) start_armed(point); /* recovery may die at the same point */
        else if (round == 2)
                (void) start_armed("recovery.begin");
        if (daemon_->pid > 0)
                assert_int_equal(tl_daemon_stop(daemon_, SIGTERM), 0);
        assert_true(start_armed(NULL));
        verify(point, op, name);

        /* The same command again: the same result (for a create that cannot succeed,
         * the same failure, undone again). */
        free(out);
        out = NULL;
        r = cli(&out, "%s", cmd);
        if ((r != 0) != undo_point(point))
                fail_msg("%s: repeating '%s' gave %d: %s", point, cmd, r, out ? out : "");
        verify(point, op, name);
        if (undo_point(point))
                return;
        if (streq(op, "forget"))
                assert_int_equal(tl_sh(NULL, "rm -f '%s/%s.img'", voldir, name), 0);
        else if (!streq(op, "delete"))
                must("volume delete %s --force", name);
}

static void test_crash_points(void **state) {
        size_t ran = 0;

        for (size_t i = 0; i < n_points; i++) {
                _cleanup_free_ char *op = op_of(points[i]);
                if (!op)
                        continue; /* recovery.begin: armed in round three; device.*: see below */
                for (int round = 0; round < ROUNDS; round++) {
                        fprintf(stderr, "crash point %s, round %d\n", points[i], round + 1);
                        crash_round(i, round);
                        ran++;
                }
        }
        fprintf(stderr, "%zu crash rounds over the volume actions' points (%zu points in all; the\n"
                        "device.* points of on_appear actions are not exercised here)\n",
                ran, n_points);
        assert_true(ran >= 3 * 20);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_crash_points),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
