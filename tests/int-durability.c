/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Description: the ledger's own truths survive damage. Bytes overwritten in the stopped
 * daemon's database: the next start moves it aside, restores the newest backup (names
 * and expectations come back), rebuilds the device facts with a full pass and says so
 * in status and history; with no backup it refuses to start with the documented
 * message and leaves the file as it was. A journal of an older schema is backed up
 * before its migration. Damage inside a value that no check can see is still served as
 * valid UTF-8. */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "testlib.h"
#include "util.h"

static struct tl_loop *loops[2];

static int setup(void **state) {
        tl_require_devices();
        loops[0] = tl_loop_new(NULL, "a.img", 32 << 20, "mkfs.ext4 -q -F -L alpha %s");
        loops[1] = tl_loop_new(NULL, "b.img", 32 << 20, NULL);
        return loops[0] && loops[1] ? 0 : -1;
}

static int teardown(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(loops); i++)
                tl_loop_free(loops[i]);
        return 0;
}

/* The name of the device at devnode, or NULL. */
static char *name_of(struct tl_daemon *d, const char *devnode) {
        json_object *l = tl_cli_json(d, "list");
        json_object *dev;
        char *name = NULL;

        assert_non_null(l);
        dev = tl_find_device(l, "devnode", devnode);
        if (dev && tl_str(dev, "name"))
                name = strdup(tl_str(dev, "name"));
        json_object_put(l);
        return name;
}

static bool has_expectation(struct tl_daemon *d, const char *name) {
        json_object *l = tl_cli_json(d, "expectations");
        bool found = false;

        assert_non_null(l);
        for (size_t i = 0; i < json_object_array_length(l); i++)
                found |= streq_ptr(tl_str(json_object_array_get_idx(l, i), "name"), name);
        json_object_put(l);
        return found;
}

/* Overwrites 64 bytes at each offset with a pattern no b-tree page starts with. */
static void damage(const char *file, const long *offsets, size_t n) {
        int fd = open(file, O_WRONLY | O_CLOEXEC);
        unsigned char junk[64];

        assert_true(fd >= 0);
        memset(junk, 0xa5, sizeof(junk));
        for (size_t i = 0; i < n; i++)
                assert_int_equal(pwrite(fd, junk, sizeof(junk), offsets[i]), (ssize_t) sizeof(junk));
        assert_int_equal(fsync(fd), 0);
        close(fd);
}

static void corrupt_and_recover(const char *name_, const long *offsets, size_t n_offsets) {
        struct tl_daemon *d = tl_daemon_start(name_, NULL);
        _cleanup_free_ char *db = NULL, *name = NULL, *out = NULL, *corrupt = NULL;
        json_object *st, *rec, *hist;
        bool restored_event = false;

        assert_non_null(d);
        assert_int_equal(tl_cli(d, NULL, "name %s alpha", loops[0]->devnode), 0);
        assert_int_equal(tl_cli(d, NULL, "expect keep --match loop-file=%s --fs-type ext4", loops[0]->file), 0);
        assert_int_equal(tl_cli(d, &out, "check"), 0);
        assert_non_null(strstr(out, "ok ("));
        free(out);
        out = NULL;
        assert_int_equal(tl_cli(d, &out, "backup"), 0);
        /* Changed after the backup: lost with the damaged file, as documented. */
        assert_int_equal(tl_cli(d, NULL, "name %s beta", loops[1]->devnode), 0);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);

        assert_true(asprintf(&db, "%s/ledger.db", d->state_dir) > 0);
        damage(db, offsets, n_offsets);
        assert_int_equal(tl_daemon_restart(d), 0);

        name = name_of(d, loops[0]->devnode);
        assert_string_equal(name, "alpha");
        assert_true(has_expectation(d, "keep"));
        free(name);
        name = name_of(d, loops[1]->devnode);
        assert_null(name);

        st = tl_cli_json(d, "status");
        assert_non_null(st);
        assert_true(json_object_object_get_ex(st, "recovery", &rec));
        assert_non_null(rec);
        assert_non_null(strstr(tl_str(rec, "restored_from"), "/backups/ledger-"));
        assert_non_null(strstr(tl_str(rec, "moved_to"), "/corrupt/ledger-"));
        assert_true(tl_int(st, "devices_present") >= 2);
        assert_int_equal(tl_int(st, "devices_verified"), tl_int(st, "devices"));
        assert_int_equal(tl_sh(NULL, "test -s '%s'", tl_str(rec, "moved_to")), 0);
        json_object_put(st);

        hist = tl_cli_json(d, "history");
        assert_non_null(hist);
        for (size_t i = 0; i < json_object_array_length(hist); i++)
                restored_event |= streq_ptr(tl_str(json_object_array_get_idx(hist, i), "kind"), "ledger_restored");
        json_object_put(hist);
        assert_true(restored_event);

        /* The restored ledger is sound: the daemon and sqlite3 say so while it runs. */
        assert_int_equal(tl_cli(d, NULL, "check"), 0);
        assert_int_equal(tl_sh(&corrupt, "sqlite3 '%s' 'PRAGMA integrity_check'", db), 0);
        assert_string_equal(corrupt, "ok\n");
        tl_daemon_free(d);
}

/* Damage in the b-tree pages (the first bytes of pages 2, 3 and 5). */
static void test_damaged_pages(void **state) {
        static const long offsets[] = { 4096, 8192 + 100, 16384 };
        corrupt_and_recover("pages", offsets, ELEMENTSOF(offsets));
}

/* Damage in the file header and in a page: not even an SQLite file any more. */
static void test_damaged_header(void **state) {
        static const long offsets[] = { 0, 12288 };
        corrupt_and_recover("header", offsets, ELEMENTSOF(offsets));
}

/* Damage at random places, 20 times over (fixed seeds, so a finding repeats): every
 * start either serves a sound ledger (intact, or restored) with the name and the
 * expectation, or refuses with status 3; it never crashes. */
static void test_random_damage(void **state) {
        struct tl_daemon *d = tl_daemon_start("random", NULL);
        _cleanup_free_ char *db = NULL, *pristine = NULL;
        unsigned restored = 0;

        assert_non_null(d);
        assert_int_equal(tl_cli(d, NULL, "name %s alpha", loops[0]->devnode), 0);
        assert_int_equal(tl_cli(d, NULL, "expect keep --match loop-file=%s", loops[0]->file), 0);
        assert_int_equal(tl_cli(d, NULL, "backup"), 0);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        assert_true(asprintf(&db, "%s/ledger.db", d->state_dir) > 0);
        assert_true(asprintf(&pristine, "%s/pristine.db", tl_tmpdir()) > 0);
        assert_int_equal(tl_sh(NULL, "cp '%s' '%s'", db, pristine), 0);

        for (unsigned seed = 1; seed <= 20; seed++) {
                _cleanup_free_ char *name = NULL, *out = NULL;
                struct stat st;
                long offsets[4];
                json_object *status, *rec;
                int r;

                assert_int_equal(tl_sh(NULL, "rm -rf '%s-wal' '%s-shm' '%s/corrupt' && cp '%s' '%s'", db, db,
                                       d->state_dir, pristine, db),
                                 0);
                assert_int_equal(stat(db, &st), 0);
                srandom(seed);
                for (size_t i = 0; i < ELEMENTSOF(offsets); i++)
                        offsets[i] = random() % (st.st_size - 64);
                damage(db, offsets, ELEMENTSOF(offsets));
                r = tl_daemon_restart(d);
                if (r < 0) {
                        assert_true(WIFEXITED(d->exit_status));
                        assert_int_equal(WEXITSTATUS(d->exit_status), 3);
                        continue;
                }
                name = name_of(d, loops[0]->devnode);
                assert_string_equal(name, "alpha");
                assert_true(has_expectation(d, "keep"));
                assert_int_equal(tl_cli(d, &out, "check"), 0);
                status = tl_cli_json(d, "status");
                if (json_object_object_get_ex(status, "recovery", &rec) && rec)
                        restored++;
                json_object_put(status);
                assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        }
        fprintf(stderr, "%u of 20 damaged ledgers were restored from the backup\n", restored);
        tl_daemon_free(d);
}

/* No backup: the daemon refuses with the one line naming the way out, exit status 3,
 * and leaves the file as it was. */
static void test_no_backup_refuses(void **state) {
        static const long offsets[] = { 4096, 8192 };
        struct tl_daemon *d = tl_daemon_start("nobackup", NULL);
        _cleanup_free_ char *db = NULL, *sum1 = NULL, *sum2 = NULL, *out = NULL, *scope = NULL;
        int r;

        assert_non_null(d);
        assert_int_equal(tl_cli(d, NULL, "name %s alpha", loops[0]->devnode), 0);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        assert_true(asprintf(&db, "%s/ledger.db", d->state_dir) > 0);
        damage(db, offsets, ELEMENTSOF(offsets));
        assert_int_equal(tl_sh(&sum1, "sha256sum < '%s'", db), 0);

        assert_true(asprintf(&scope, "--scope=loop:%s/img", tl_tmpdir()) > 0);
        const char *args[] = { "--foreground", "--state-dir", d->state_dir, "--socket", d->socket, scope, NULL };
        r = tl_daemon_run_expect_exit("nobackup2", args, &out);
        assert_int_equal(r, 3);
        assert_non_null(strstr(out, "refusing to start"));
        assert_non_null(strstr(out, "RECOVERY in blkledgerd(8)"));
        assert_int_equal(tl_sh(&sum2, "sha256sum < '%s'", db), 0);
        assert_string_equal(sum1, sum2);
        assert_int_equal(tl_sh(NULL, "test ! -e '%s/corrupt'", d->state_dir), 0);
        tl_daemon_free(d);
}

/* Damage inside a stored value leaves SQLite's structure sound, so no check finds it
 * (there are no page checksums): a name's byte overwritten with 0xff in the stopped
 * daemon's file. The daemon serves what the file holds, but every reply stays valid
 * UTF-8 (the bad byte reads as U+FFFD), so a strict client still parses the list, the
 * device and the history instead of losing them whole. */
static void test_damaged_value(void **state) {
        struct tl_daemon *d = tl_daemon_start("value", NULL);
        _cleanup_free_ char *db = NULL, *wal = NULL, *name = NULL, *data = NULL;
        static const char word[] = "brokenvalue";
        json_object *hist;
        struct stat st;
        unsigned found = 0;
        int fd;

        assert_non_null(d);
        assert_int_equal(tl_cli(d, NULL, "name %s %s", loops[0]->devnode, word), 0);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        assert_true(asprintf(&db, "%s/ledger.db", d->state_dir) > 0);
        assert_true(asprintf(&wal, "%s-wal", db) > 0);
        /* A clean stop checkpoints the log into the file. */
        assert_true(stat(wal, &st) < 0 || st.st_size == 0);

        fd = open(db, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        data = malloc((size_t) st.st_size);
        assert_non_null(data);
        assert_int_equal(pread(fd, data, (size_t) st.st_size, 0), st.st_size);
        /* Every copy (the device row, the name_set event), so that no index disagrees. */
        for (char *p = data; (p = memmem(p, (size_t) (data + st.st_size - p), word, strlen(word))); p++) {
                assert_int_equal(pwrite(fd, "\xff", 1, (p - data) + 6), 1);
                found++;
        }
        assert_int_equal(fsync(fd), 0);
        close(fd);
        assert_true(found >= 1);

        assert_int_equal(tl_daemon_restart(d), 0);
        name = name_of(d, loops[0]->devnode);
        assert_string_equal(name, "broken\xef\xbf\xbd" "alue");
        hist = tl_cli_json(d, "history");
        assert_non_null(hist);
        assert_true(json_object_array_length(hist) > 0);
        json_object_put(hist);
        tl_daemon_free(d);
}

/* A journal of schema 4 (before volumes and intents) is copied to a backup before its
 * migration; the backup still has schema 4. */
static void test_backup_before_migration(void **state) {
        struct tl_daemon *d = tl_daemon_start("migrate", NULL);
        _cleanup_free_ char *out = NULL;

        assert_non_null(d);
        assert_int_equal(tl_cli(d, NULL, "name %s alpha", loops[0]->devnode), 0);
        assert_int_equal(tl_daemon_stop(d, SIGTERM), 0);
        assert_int_equal(tl_sh(NULL,
                               "sqlite3 '%s/ledger.db' 'DROP TABLE volumes; DROP TABLE intents; "
                               "ALTER TABLE expectations DROP COLUMN on_appear; PRAGMA user_version = 4;'",
                               d->state_dir),
                         0);
        assert_int_equal(tl_daemon_restart(d), 0);
        assert_int_equal(tl_sh(&out, "sqlite3 \"$(ls -d '%s'/backups/ledger-*.db | tail -n 1)\" "
                                     "'PRAGMA user_version; SELECT name FROM devices WHERE name IS NOT NULL;'",
                               d->state_dir),
                         0);
        assert_string_equal(out, "4\nalpha\n");
        free(out);
        out = name_of(d, loops[0]->devnode);
        assert_string_equal(out, "alpha");
        tl_daemon_free(d);
}

/* The parts of an export that must come back exactly: names, expectations, volumes. */
static char *truths(const char *file) {
        char *out = NULL;
        /* sqlite3's JSON functions: no other tool is needed than the tests already have. */
        assert_int_equal(tl_sh(&out, "sqlite3 :memory: \"SELECT json_extract(readfile('%s'), '$.names'), "
                                     "json_extract(readfile('%s'), '$.expectations'), "
                                     "json_extract(readfile('%s'), '$.volumes')\"",
                               file, file, file),
                         0);
        return out;
}

/* Export from one state directory, import into an empty one: names, expectations and
 * volumes come back exactly; the plan is shown first, applied only with --yes; a
 * conflict refuses the import unless --force. */
static void test_export_import(void **state) {
        _cleanup_free_ char *voldir = NULL, *vol_arg = NULL, *exp1 = NULL, *exp2 = NULL, *t1 = NULL, *t2 = NULL,
                           *out = NULL, *name = NULL;
        struct tl_daemon *a, *b;

        assert_true(asprintf(&voldir, "%s/img/volumes", tl_tmpdir()) > 0);
        assert_true(asprintf(&vol_arg, "--volume-dir=%s", voldir) > 0);
        assert_int_equal(tl_sh(NULL, "mkdir -p '%s'", voldir), 0);
        const char *extra[] = { vol_arg, NULL };
        a = tl_daemon_start("export", extra);
        assert_non_null(a);
        assert_int_equal(tl_cli(a, NULL, "name %s alpha", loops[0]->devnode), 0);
        assert_int_equal(tl_cli(a, NULL, "name %s bravo", loops[1]->devnode), 0);
        assert_int_equal(tl_cli(a, NULL, "expect keep --match loop-file=%s --fs-type ext4 --min-size 16M",
                                loops[0]->file),
                         0);
        assert_int_equal(tl_cli(a, NULL, "expect elsewhere --match serial=NOT-HERE-1"), 0);
        assert_int_equal(tl_cli(a, NULL, "volume create vol1 --size 16M"), 0);
        assert_true(asprintf(&exp1, "%s/export1.json", tl_tmpdir()) > 0);
        assert_int_equal(tl_cli(a, NULL, "export --json > '%s'", exp1), 0);
        t1 = truths(exp1);
        assert_non_null(strstr(t1, "\"alpha\""));
        assert_non_null(strstr(t1, "\"vol1\""));
        assert_non_null(strstr(t1, "\"elsewhere\""));
        assert_int_equal(tl_daemon_stop(a, SIGTERM), 0);

        /* A new state directory; the volume's file and loop device are still there. */
        b = tl_daemon_start("import", extra);
        assert_non_null(b);
        assert_int_equal(tl_cli(b, &out, "import '%s' < /dev/null", exp1), 0);
        assert_non_null(strstr(out, "not applied"));
        assert_non_null(strstr(out, "add      name         alpha"));
        free(out);
        out = NULL;
        name = name_of(b, loops[0]->devnode);
        assert_null(name);
        assert_int_equal(tl_cli(b, &out, "import '%s' --yes", exp1), 0);
        /* Two names, two expectations, one volume, and the name its device has. */
        assert_non_null(strstr(out, "imported: 6 added"));
        assert_true(asprintf(&exp2, "%s/export2.json", tl_tmpdir()) > 0);
        assert_int_equal(tl_cli(b, NULL, "export > '%s'", exp2), 0);
        t2 = truths(exp2);
        assert_string_equal(t1, t2);
        name = name_of(b, loops[0]->devnode);
        assert_string_equal(name, "alpha");
        free(name);

        /* Again: all the same, nothing to do. A different name here is a conflict. */
        free(out);
        out = NULL;
        assert_int_equal(tl_cli(b, &out, "import '%s' --yes", exp1), 0);
        assert_non_null(strstr(out, "nothing to import"));
        assert_int_equal(tl_cli(b, NULL, "name %s charlie", loops[1]->devnode), 0);
        free(out);
        out = NULL;
        assert_int_equal(tl_cli(b, &out, "import '%s' --yes 2>&1", exp1), 1);
        assert_non_null(strstr(out, "conflict"));
        name = name_of(b, loops[1]->devnode);
        assert_string_equal(name, "charlie");
        free(name);
        assert_int_equal(tl_cli(b, NULL, "import '%s' --yes --force", exp1), 0);
        name = name_of(b, loops[1]->devnode);
        assert_string_equal(name, "bravo");

        /* Not an export at all: refused, nothing changed. */
        free(out);
        out = NULL;
        assert_int_equal(tl_cli(b, &out, "import /etc/hostname --yes 2>&1"), 1);
        assert_non_null(strstr(out, "not valid JSON"));
        free(out);
        out = NULL;
        assert_int_equal(tl_cli(b, &out, "import '%s' --yes 2>&1", exp2), 0);
        assert_non_null(strstr(out, "nothing to import"));

        /* A name for a device this ledger has never seen: kept for its identity, as a
         * gone record, until the device appears. */
        {
                _cleanup_free_ char *file = NULL;
                json_object *gone;
                assert_true(asprintf(&file, "%s/unseen.json", tl_tmpdir()) > 0);
                assert_int_equal(tl_sh(NULL,
                                       "printf '%%s' '{\"format\":\"blkledger-export\",\"version\":1,\"names\":"
                                       "[{\"name\":\"far-away\",\"identity\":\"disk:NOT-HERE-2\"}]}' > '%s'",
                                       file),
                                 0);
                assert_int_equal(tl_cli(b, NULL, "import '%s' --yes", file), 0);
                gone = tl_cli_json(b, "list --state gone");
                assert_non_null(tl_find_device(gone, "name", "far-away"));
                json_object_put(gone);
        }

        assert_int_equal(tl_cli(b, NULL, "volume delete vol1"), 0);
        tl_daemon_free(b);
        tl_daemon_free(a);
        tl_detach_loops_under(voldir);
}

static char *degraded_reason; /* what status said when is_degraded() saw it */

static bool is_degraded(void *userdata) {
        struct tl_daemon *d = userdata;
        json_object *st = tl_cli_json(d, "status");
        bool yes = st && tl_str(st, "degraded");

        if (yes) {
                free(degraded_reason);
                degraded_reason = strdup(tl_str(st, "degraded"));
        }
        json_object_put(st);
        return yes;
}

/* The recovery is in the history (written at the daemon's next tick). */
static bool recovery_recorded(void *userdata) {
        struct tl_daemon *d = userdata;
        json_object *h = tl_cli_json(d, "history");
        bool yes = false;

        for (size_t i = 0; h && i < json_object_array_length(h); i++)
                yes |= streq_ptr(tl_str(json_object_array_get_idx(h, i), "kind"), "storage_recovered");
        json_object_put(h);
        return yes;
}

static bool not_degraded(void *userdata) {
        struct tl_daemon *d = userdata;
        json_object *st = tl_cli_json(d, "status");
        bool no = st && !tl_str(st, "degraded");
        json_object_put(st);
        return no;
}

/* The state directory on a small file system filled to the brim: the daemon says it
 * is degraded, still answers list and history, refuses changes it cannot record, and
 * once there is room again records what happened meanwhile by itself; every event it
 * had acknowledged is still in the history, in order. */
static void test_disk_full(void **state) {
        _cleanup_free_ char *mnt = NULL, *state_arg = NULL, *before = NULL, *after = NULL, *out = NULL;
        struct tl_loop *extra_dev = NULL;
        struct tl_daemon *d;
        json_object *h, *st;
        int64_t last_before;
        bool full = false, named;

        assert_true(asprintf(&mnt, "%s/small", tl_tmpdir()) > 0);
        if (tl_sh(NULL, "mkdir -p '%s' && mount -t tmpfs -o size=3m tmpfs '%s'", mnt, mnt) != 0)
                skip();
        assert_true(asprintf(&state_arg, "--state-dir=%s/state", mnt) > 0);
        const char *extra[] = { state_arg, NULL };
        d = tl_daemon_start("full", extra);
        if (!d)
                goto out;
        assert_int_equal(tl_cli(d, NULL, "name %s alpha", loops[0]->devnode), 0);
        st = tl_cli_json(d, "status");
        assert_null(tl_str(st, "degraded"));
        last_before = tl_int(st, "last_seq");
        json_object_put(st);
        assert_int_equal(tl_sh(&before, "sqlite3 '%s/state/ledger.db' 'SELECT seq, kind FROM events ORDER BY seq'", mnt),
                         0);

        /* Fill it, then make changes until a commit needs room. The write-ahead log is
         * emptied first: SQLite writes it again from its start after a checkpoint, so
         * room it already has would take commits for a while on a full disk. */
        assert_int_equal(tl_sh(NULL, "sqlite3 '%s/state/ledger.db' 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null", mnt),
                         0);
        (void) tl_sh(NULL, "dd if=/dev/zero of='%s/filler' bs=4k 2>/dev/null", mnt);
        for (int i = 0; i < 20 && !full; i++) {
                /* Attached and detached apart, so each is a change to record (one that
                 * comes and goes within a batch is none). */
                struct tl_loop *l = tl_loop_new(NULL, "churn.img", 8 << 20, NULL);
                assert_non_null(l);
                full = tl_wait_for(1000, is_degraded, d);
                tl_loop_detach(l);
                tl_loop_free(l);
                if (!full)
                        full = tl_wait_for(1000, is_degraded, d);
        }
        if (!full)
                tl_daemon_print_log(d);
        assert_true(full);
        assert_non_null(strstr(degraded_reason, "no space left"));
        /* Reads go on. A change the journal refuses is refused to the client; one that
         * still fits in the room the write-ahead log has (a small one may) is kept. */
        h = tl_cli_json(d, "list");
        assert_non_null(h);
        json_object_put(h);
        h = tl_cli_json(d, "history");
        assert_non_null(h);
        json_object_put(h);
        named = tl_cli(d, &out, "name %s zulu 2>&1", loops[1]->devnode) == 0;
        /* A device appears while it cannot be recorded. */
        extra_dev = tl_loop_new(NULL, "late.img", 8 << 20, "mkfs.ext4 -q -F -L late %s");
        assert_non_null(extra_dev);

        /* Room again: it recovers by itself, and the device is recorded. */
        assert_int_equal(tl_sh(NULL, "rm -f '%s/filler'", mnt), 0);
        assert_true(tl_wait_for(90000, not_degraded, d));
        assert_true(tl_wait_for(5000, recovery_recorded, d));
        assert_int_equal(tl_cli(d, NULL, "reconcile"), 0);
        h = tl_cli_json(d, "list");
        assert_non_null(tl_find_device(h, "devnode", extra_dev->devnode));
        json_object_put(h);
        free(out);
        out = name_of(d, loops[1]->devnode);
        if (named)
                assert_string_equal(out, "zulu");
        else
                assert_null(out);
        /* What was acknowledged before is all there, unchanged, and the history goes on
         * from it without a gap. */
        assert_int_equal(tl_sh(&after, "sqlite3 '%s/state/ledger.db' 'SELECT seq, kind FROM events WHERE seq <= %lld "
                                       "ORDER BY seq'",
                               mnt, (long long) last_before),
                         0);
        assert_string_equal(before, after);
        free(after);
        after = NULL;
        assert_int_equal(tl_sh(&after, "sqlite3 '%s/state/ledger.db' 'SELECT COUNT(*) = MAX(seq) - MIN(seq) + 1 FROM events; "
                                       "SELECT COUNT(*) FROM events WHERE kind = \"storage_recovered\"'",
                               mnt),
                         0);
        assert_string_equal(after, "1\n1\n");
out:
        tl_daemon_free(d);
        if (extra_dev)
                tl_loop_free(extra_dev);
        (void) tl_sh(NULL, "umount -l '%s'", mnt);
        free(degraded_reason);
        degraded_reason = NULL;
        assert_non_null(d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_damaged_pages),
                cmocka_unit_test(test_damaged_header),
                cmocka_unit_test(test_random_damage),
                cmocka_unit_test(test_no_backup_refuses),
                cmocka_unit_test(test_damaged_value),
                cmocka_unit_test(test_backup_before_migration),
                cmocka_unit_test(test_export_import),
                cmocka_unit_test(test_disk_full),
        };
        tl_require_devices();
        return cmocka_run_group_tests(tests, setup, teardown);
}
