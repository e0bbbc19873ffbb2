/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Online backups of the journal through SQLite's backup API: a consistent copy while
 * the daemon runs, written to a temporary name, synced and renamed into
 * STATE/backups/ledger-YYYYMMDDTHHMMSSZ.db, then the oldest beyond --backup-keep are
 * removed. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>

#include "backup.h"
#include "daemon.h"
#include "log.h"
#include "util.h"

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Keeps the newest keep backups (their names sort by time). */
static void rotate(const char *dir, unsigned keep) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;

        if (!d)
                return;
        while ((de = readdir(d))) {
                char **x;
                if (!startswith(de->d_name, "ledger-") || strlen(de->d_name) < 10 ||
                    !streq(de->d_name + strlen(de->d_name) - 3, ".db"))
                        continue;
                x = realloc(names, (n + 1) * sizeof(*x));
                if (!x)
                        break;
                names = x;
                if (!(names[n] = strdup(de->d_name)))
                        break;
                n++;
        }
        closedir(d);
        qsort(names, n, sizeof(*names), cmp_names);
        for (size_t i = 0; i < n; i++) {
                if (i + keep < n) {
                        char path[PATH_MAX];
                        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                        if (unlink(path) == 0)
                                log_info("removed old backup %s", path);
                }
                free(names[i]);
        }
        free(names);
}

int backup_unique_path(const char *dir, int64_t now, char **ret) {
        time_t t = (time_t) (now / USEC_PER_SEC);
        char stamp[32];
        struct tm tm;
        char *path = NULL;

        gmtime_r(&t, &tm);
        strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
        /* Two in one second get a suffix instead of replacing each other. */
        for (int i = 0; i < 100; i++) {
                free(path);
                if ((i == 0 ? asprintf(&path, "%s/ledger-%s.db", dir, stamp)
                            : asprintf(&path, "%s/ledger-%s-%02d.db", dir, stamp, i)) < 0)
                        return -ENOMEM;
                if (access(path, F_OK) < 0)
                        break;
        }
        *ret = path;
        return 0;
}

int backup_journal(struct journal *j, const char *state_dir, unsigned keep, int64_t now, char **ret_path) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *tmp = NULL;
        sqlite3 *dest = NULL;
        sqlite3_backup *b;
        int rc, r;

        if (asprintf(&dir, "%s/backups", state_dir) < 0)
                return -ENOMEM;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "cannot create %s", dir);
        if (backup_unique_path(dir, now, &path) < 0)
                return -ENOMEM;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        (void) unlink(tmp);
        rc = sqlite3_open_v2(tmp, &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
        if (rc != SQLITE_OK) {
                r = journal_errno(rc);
                goto fail;
        }
        b = sqlite3_backup_init(dest, "main", journal_db(j), "main");
        if (!b) {
                rc = sqlite3_errcode(dest);
                r = journal_errno(rc) ?: -EIO;
                goto fail;
        }
        rc = sqlite3_backup_step(b, -1); /* all pages at once: the ledger is small */
        sqlite3_backup_finish(b);
        if (rc != SQLITE_DONE) {
                r = journal_errno(rc) ?: -EIO;
                goto fail;
        }
        rc = sqlite3_close(dest);
        dest = NULL;
        if (rc != SQLITE_OK) {
                r = journal_errno(rc) ?: -EIO;
                goto fail;
        }
        /* Durable before it has its name: a backup that exists is complete. */
        r = fsync_path(tmp, O_RDONLY);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r == 0)
                r = fsync_path(dir, O_RDONLY | O_DIRECTORY);
        if (r < 0)
                goto fail;
        chmod(path, 0600);
        log_info("backup of the ledger written to %s", path);
        if (keep > 0)
                rotate(dir, keep);
        if (ret_path)
                *ret_path = TAKE_PTR(path);
        return 0;
fail:
        if (dest)
                sqlite3_close(dest);
        (void) unlink(tmp);
        return log_error_errno(r, "cannot write a backup of the ledger to %s", path ? path : dir);
}

int daemon_backup(struct daemon *d, char **ret_path) {
        int64_t now = now_realtime_usec();
        char ts[RFC3339_MAX];
        int r;

        r = backup_journal(d->journal, d->opts.state_dir, d->opts.backup_keep, now, ret_path);
        if (r < 0)
                return r;
        d->last_backup = now;
        if (journal_meta_set(d->journal, "last_backup", format_rfc3339(now, ts)) < 0)
                log_warning("cannot record the time of the backup");
        return 0;
}
