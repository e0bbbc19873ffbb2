/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A corrupt ledger at start: checked without writing to it (PRAGMA quick_check, no
 * checkpoint on close), moved aside with its -wal and -shm files into STATE/corrupt/,
 * and replaced by the newest backup that passes the same check. The device facts of the
 * backup are old; the first pass, which every start runs, brings them up to date. When
 * no backup passes, the file stays where it is and the daemon refuses to start: moving
 * it aside would let the next start begin with an empty ledger and lose the names for
 * good without anyone deciding so. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "backup.h"
#include "journal.h"
#include "log.h"
#include "recovery.h"
#include "util.h"

#define REASON_MAX 200

char *recovery_clean_text(const char *s) {
        size_t n = MIN(strlen(s), (size_t) REASON_MAX);
        char *t = strndup(s, n);

        /* SQLite quotes what it read from the damaged file: bytes of anything. */
        for (size_t i = 0; t && i < n; i++)
                if ((unsigned char) t[i] < 0x20 || (unsigned char) t[i] > 0x7e)
                        t[i] = '?';
        return t;
}

static int set_reason(char **ret_reason, const char *what) {
        if (ret_reason) {
                free(*ret_reason);
                *ret_reason = recovery_clean_text(what);
        }
        return -EBADMSG;
}

static bool corrupt_rc(int rc) {
        rc &= 0xff;
        return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB || rc == SQLITE_FORMAT;
}

int ledger_file_check(const char *path, bool read_only, char **ret_reason) {
        static const char magic[16] = "SQLite format 3";
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *uri = NULL;
        unsigned char h[100];
        sqlite3_stmt *s = NULL;
        sqlite3 *db = NULL;
        struct stat st;
        ssize_t n;
        int rc, r = 0;

        if (ret_reason)
                *ret_reason = NULL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? -ENOENT : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size == 0)
                return 0; /* a new ledger: nothing to check yet */
        n = pread(fd, h, sizeof(h), 0);
        if (n < 0)
                return -errno;
        if (n != (ssize_t) sizeof(h) || memcmp(h, magic, sizeof(magic)) != 0)
                return set_reason(ret_reason, "the file header is not an SQLite header");

        /* A backup has no write-ahead log and is never written: immutable. The ledger may
         * have a log with committed transactions (after a crash) that must be checked
         * with it; no checkpoint on close keeps the file itself untouched. */
        if (asprintf(&uri, "file:%s%s", path, read_only ? "?immutable=1" : "") < 0)
                return -ENOMEM;
        rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_URI | (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE),
                             NULL);
        if (rc == SQLITE_OK) {
                (void) sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
                sqlite3_busy_timeout(db, 5000);
                rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &s, NULL);
        }
        if (rc == SQLITE_OK)
                rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                const char *row = (const char *) sqlite3_column_text(s, 0);
                if (!row || !streq(row, "ok"))
                        r = set_reason(ret_reason, row ? row : "quick_check failed");
        } else if (corrupt_rc(rc))
                r = set_reason(ret_reason, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        else {
                r = journal_errno(rc) ?: -EIO;
                log_warning("cannot check %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        }
        sqlite3_finalize(s);
        sqlite3_close(db);
        return r;
}

static int cmp_desc(const void *a, const void *b) {
        return -strcmp(*(char *const *) a, *(char *const *) b);
}

/* The backups of dir, newest first. */
static int list_backups(const char *dir, char ***ret, size_t *ret_n) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        int r = 0;

        *ret = NULL;
        *ret_n = 0;
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char **x;

                if (!startswith(de->d_name, "ledger-") || len < 10 || !streq(de->d_name + len - 3, ".db"))
                        continue;
                x = realloc(names, (n + 1) * sizeof(*x));
                if (!x) {
                        r = -ENOMEM;
                        break;
                }
                names = x;
                if (asprintf(&names[n], "%s/%s", dir, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(*names), cmp_desc);
        *ret = names;
        *ret_n = n;
        return r;
}

static int copy_file(const char *from, const char *to) {
        _cleanup_close_ int in = -1, out = -1;
        char buf[65536];
        ssize_t n;

        in = open(from, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (in < 0)
                return -errno;
        out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
        if (out < 0)
                return -errno;
        while ((n = read(in, buf, sizeof(buf))) != 0) {
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (ssize_t done = 0; done < n;) {
                        ssize_t w = write(out, buf + done, (size_t) (n - done));
                        if (w < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        done += w;
                }
        }
        return fsync(out) < 0 ? -errno : 0;
}

/* Moves path and its -wal and -shm files into dir, under a name with the time. */
static int move_aside(const char *path, const char *dir, int64_t now, char **ret_moved) {
        static const char *const suffixes[] = { "-wal", "-shm", "" }; /* the database last */
        _cleanup_free_ char *base = NULL;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        if (backup_unique_path(dir, now, &base) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_free_ char *from = NULL, *to = NULL;
                if (asprintf(&from, "%s%s", path, suffixes[i]) < 0 || asprintf(&to, "%s%s", base, suffixes[i]) < 0)
                        return -ENOMEM;
                if (rename(from, to) < 0 && errno != ENOENT)
                        return -errno;
        }
        (void) fsync_path(dir, O_RDONLY | O_DIRECTORY);
        *ret_moved = TAKE_PTR(base);
        return 0;
}

void recovery_done(struct recovery *rec) {
        free(rec->reason);
        free(rec->moved_to);
        free(rec->restored_from);
        *rec = (struct recovery) {};
}

int recovery_restore(const char *state_dir, const char *path, const char *reason, int64_t now,
                     struct recovery *ret, char **ret_error) {
        _cleanup_free_ char *backups = NULL, *corrupt = NULL, *tmp = NULL;
        char **names = NULL;
        const char *good = NULL;
        size_t n = 0;
        int r;

        *ret = (struct recovery) { .time = now };
        if (asprintf(&backups, "%s/backups", state_dir) < 0 || asprintf(&corrupt, "%s/corrupt", state_dir) < 0 ||
            asprintf(&tmp, "%s.restore", path) < 0)
                return -ENOMEM;
        r = list_backups(backups, &names, &n);
        if (r < 0)
                log_warning("cannot list the backups in %s: %s", backups, strerror(-r));
        for (size_t i = 0; i < n && !good; i++) {
                _cleanup_free_ char *why = NULL;
                int k = ledger_file_check(names[i], true, &why);
                if (k == 0)
                        good = names[i];
                else
                        log_warning("backup %s is not usable: %s", names[i], why ? why : strerror(-k));
        }
        if (!good) {
                (void) asprintf_or_null(ret_error,
                                "refusing to start: ledger %s is corrupt (%s) and %s holds no sound backup; "
                                "left untouched. To recover by hand see RECOVERY in blkledgerd(8): salvage it "
                                "with `sqlite3 %s .recover`, or move it aside, start empty and `blkledger import` "
                                "a saved export",
                                path, reason, backups, path);
                r = -EBADMSG;
                goto out;
        }
        /* The copy first: if it fails, the corrupt file is still where the admin expects
         * it, and nothing has been decided. */
        r = copy_file(good, tmp);
        if (r < 0) {
                (void) asprintf_or_null(ret_error, "cannot copy backup %s to %s: %s", good, tmp, strerror(-r));
                goto out;
        }
        r = move_aside(path, corrupt, now, &ret->moved_to);
        if (r < 0) {
                (void) asprintf_or_null(ret_error, "cannot move corrupt ledger %s into %s: %s", path, corrupt,
                                        strerror(-r));
                goto out;
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                (void) asprintf_or_null(ret_error, "cannot put backup %s in place of %s: %s", good, path,
                                        strerror(errno));
                goto out;
        }
        (void) fsync_path(state_dir, O_RDONLY | O_DIRECTORY);
        ret->reason = strdup(reason);
        ret->restored_from = strdup(good);
        if (!ret->reason || !ret->restored_from)
                r = -ENOMEM;
        else
                log_warning("ledger %s was corrupt (%s): moved to %s, restored from backup %s", path, reason,
                            ret->moved_to, good);
out:
        if (r < 0)
                (void) unlink(tmp);
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

json_object *recovery_to_json(const struct recovery *rec) {
        char ts[RFC3339_MAX];
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        if (json_object_object_add(o, "time", json_object_new_string(format_rfc3339(rec->time, ts))) < 0 ||
            json_object_object_add(o, "reason", json_object_new_string(rec->reason ? rec->reason : "")) < 0 ||
            json_object_object_add(o, "moved_to", rec->moved_to ? json_object_new_string(rec->moved_to) : NULL) < 0 ||
            json_object_object_add(o, "restored_from",
                                   rec->restored_from ? json_object_new_string(rec->restored_from) : NULL) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}
