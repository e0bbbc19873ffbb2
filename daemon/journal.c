/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "journal.h"
#include "log.h"
#include "util.h"

/* migrations[i] takes the schema from version i to i + 1. Never edit a released entry:
 * add a new one. Each runs in its own transaction with the user_version update. */
static const char *const migrations[] = {
        /* 0 -> 1: devices and the append-only history. */
        "CREATE TABLE devices ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  identity TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN ('present', 'gone')),"
        "  first_seen INTEGER NOT NULL,"
        "  last_seen INTEGER NOT NULL,"
        "  kname TEXT, devnode TEXT, dev TEXT, devtype TEXT,"
        "  size_bytes INTEGER, read_only INTEGER, removable INTEGER, rotational INTEGER,"
        "  logical_block_size INTEGER, physical_block_size INTEGER,"
        "  model TEXT, serial TEXT, wwn TEXT, diskseq INTEGER,"
        "  fs_type TEXT, fs_uuid TEXT, fs_label TEXT, fs_version TEXT, fs_usage TEXT,"
        "  pt_type TEXT, pt_uuid TEXT, part_number INTEGER, part_uuid TEXT, parent TEXT,"
        "  holders TEXT NOT NULL DEFAULT '[]',"
        "  loop_backing_file TEXT, id_path TEXT"
        ");"
        "CREATE INDEX devices_identity ON devices(identity);"
        "CREATE TABLE events ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  time INTEGER NOT NULL,"
        "  device_id INTEGER REFERENCES devices(id),"
        "  kind TEXT NOT NULL,"
        "  before TEXT,"
        "  after TEXT"
        ");"
        "CREATE TRIGGER events_append_only BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;",

        /* 1 -> 2: the daemon's own facts, and history by device without a scan. */
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE INDEX events_device ON events(device_id, seq);",

        /* 2 -> 3: the ledger's own truths (names, expectations), drift, freshness, and
         * what tells a recycled loop-file inode from the original. Earlier versions
         * verified a record exactly when they last saw it. */
        "ALTER TABLE devices ADD COLUMN identity_aux TEXT;"
        "ALTER TABLE devices ADD COLUMN name TEXT;"
        "ALTER TABLE devices ADD COLUMN last_verified INTEGER;"
        "UPDATE devices SET last_verified = last_seen;"
        "CREATE UNIQUE INDEX devices_name ON devices(name);"
        "CREATE TABLE expectations ("
        "  name TEXT PRIMARY KEY,"
        "  match_kind TEXT NOT NULL CHECK (match_kind IN ('serial', 'wwn', 'fs_uuid', 'loop_file')),"
        "  match_value TEXT NOT NULL,"
        "  fs_type TEXT, fs_label TEXT, min_size INTEGER,"
        "  created INTEGER NOT NULL"
        ");"
        "CREATE TABLE drift ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  kind TEXT NOT NULL,"
        "  name TEXT,"
        "  device_id INTEGER REFERENCES devices(id),"
        "  since INTEGER NOT NULL,"
        "  closed INTEGER,"
        "  detail TEXT NOT NULL DEFAULT '{}'"
        ");"
        "CREATE INDEX drift_open ON drift(closed);",

        /* 3 -> 4: a present device that does not answer reads, and since when. */
        "ALTER TABLE devices ADD COLUMN unresponsive_since INTEGER;",

        /* 4 -> 5: the daemon's own volumes (desired state: the kernel says which loop
         * device holds a file) and the intent journal of the actions on them. */
        "CREATE TABLE volumes ("
        "  name TEXT PRIMARY KEY,"
        "  state TEXT NOT NULL CHECK (state IN ('creating', 'attached', 'detached', 'resizing', 'deleting', 'failed')),"
        "  size_bytes INTEGER NOT NULL,"
        "  backing_file TEXT NOT NULL UNIQUE,"
        "  fs_type TEXT, fs_label TEXT,"
        "  created INTEGER NOT NULL,"
        "  updated INTEGER NOT NULL"
        ");"
        "CREATE TABLE intents ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  op TEXT NOT NULL,"
        "  target TEXT NOT NULL,"
        "  params TEXT NOT NULL DEFAULT '{}',"
        "  idempotency_key TEXT UNIQUE,"
        "  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'rolled_back')),"
        "  step INTEGER NOT NULL DEFAULT 0,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  last_error TEXT,"
        "  result TEXT,"
        "  created INTEGER NOT NULL,"
        "  updated INTEGER NOT NULL,"
        "  next_attempt INTEGER NOT NULL DEFAULT 0"
        ");"
        "CREATE INDEX intents_target ON intents(target, id);"
        "ALTER TABLE expectations ADD COLUMN on_appear TEXT;",
};

_Static_assert(ELEMENTSOF(migrations) == JOURNAL_SCHEMA_VERSION,
               "one migration per schema version");

enum {
        STMT_INSERT_DEVICE,
        STMT_UPDATE_DEVICE,
        STMT_TOUCH_DEVICE,
        STMT_INSERT_EVENT,
        STMT_LIST_EVENTS,
        STMT_LIST_EVENTS_DEVICE,
        STMT_META_SET,
        STMT_META_GET,
        STMT_PUT_EXPECTATION,
        STMT_DELETE_EXPECTATION,
        STMT_INSERT_DRIFT,
        STMT_CLOSE_DRIFT,
        STMT_UPDATE_DRIFT,
        STMT_TOUCH_GONE,
        _STMT_MAX,
};

struct journal {
        sqlite3 *db;
        char *path;
        int version;
        int64_t last_seq;
        sqlite3_stmt *stmt[_STMT_MAX];
        /* The storage refused a write (full, read-only, failing): the errno, since when
         * (realtime usec); cleared by the next commit that succeeds. */
        int degraded;
        int64_t degraded_since;
        int degraded_seen; /* the last such errno, kept until journal_degraded_ack() */
};

static int sqlite_to_errno(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        default:
                return -EIO;
        }
}

/* Whether a failed statement says the storage refused a write, and why: a full or
 * read-only file system, a quota, an I/O error. Anything else (a constraint, a bug) is
 * not the storage's fault. */
static int storage_errno(struct journal *j, int rc) {
        int sys = sqlite3_system_errno(j->db);

        switch (rc & 0xff) {
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_IOERR:
                return sys == ENOSPC || sys == EROFS || sys == EDQUOT || sys == EIO ? -sys : -EIO;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG; /* damaged while running: a restart restores a backup */
        default:
                return 0;
        }
}

static void note_failure(struct journal *j, int rc) {
        int r = storage_errno(j, rc);

        if (r == 0)
                return;
        if (!j->degraded)
                j->degraded_since = now_realtime_usec();
        j->degraded = r;
        j->degraded_seen = r;
}

static int exec(struct journal *j, const char *sql) {
        char *err = NULL;
        int rc = sqlite3_exec(j->db, sql, NULL, NULL, &err);

        if (rc != SQLITE_OK) {
                note_failure(j, rc);
                log_error("journal %s: %s", j->path, err ? err : sqlite3_errstr(rc));
                sqlite3_free(err);
                return sqlite_to_errno(rc);
        }
        return 0;
}

static int query_int(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(s, 0);
        else if (rc == SQLITE_DONE)
                *ret = 0;
        sqlite3_finalize(s);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_to_errno(rc);
}

/* Reads the schema version without writing anything: a journal we cannot understand
 * must stay as it is, with no -wal or -shm files appearing next to it. The version is in
 * the file header (offset 60, big-endian); only when a write-ahead log exists, which may
 * hold a newer header than the file, is SQLite asked, read-only. */
static int peek_version(const char *path, int64_t *ret, char **ret_error) {
        static const char magic[16] = "SQLite format 3";
        _cleanup_free_ char *wal = NULL;
        _cleanup_close_ int fd = -1;
        unsigned char h[100];
        struct stat st;
        sqlite3 *db = NULL;
        ssize_t n;
        int rc, r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = -errno;
                if (ret_error)
                        (void) asprintf_or_null(ret_error, "cannot read journal %s: %s", path, strerror(errno));
                return r;
        }
        n = pread(fd, h, sizeof(h), 0);
        if (n != (ssize_t) sizeof(h) || memcmp(h, magic, sizeof(magic)) != 0) {
                if (ret_error)
                        (void) asprintf_or_null(ret_error, "journal %s is not an SQLite database; refusing to touch it", path);
                return -EBADMSG;
        }
        *ret = (int64_t) ((uint32_t) h[60] << 24 | (uint32_t) h[61] << 16 | (uint32_t) h[62] << 8 | h[63]);
        if (*ret > JOURNAL_SCHEMA_VERSION)
                return 0;
        if (asprintf(&wal, "%s-wal", path) < 0)
                return -ENOMEM;
        if (stat(wal, &st) < 0 || st.st_size == 0)
                return 0;

        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
        if (rc != SQLITE_OK) {
                r = sqlite_to_errno(rc);
                goto out;
        }
        r = query_int(db, "PRAGMA user_version", ret);
out:
        if (r < 0 && ret_error)
                (void) asprintf_or_null(ret_error, "cannot read journal %s: %s", path,
                                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return r;
}

static int migrate(struct journal *j, int64_t from, char **ret_error) {
        for (int64_t v = from; v < JOURNAL_SCHEMA_VERSION; v++) {
                char sql[64];
                int r;

                log_info("migrating journal %s from schema %lld to %lld", j->path,
                         (long long) v, (long long) v + 1);
                r = exec(j, "BEGIN IMMEDIATE");
                if (r < 0)
                        goto fail;
                r = exec(j, migrations[v]);
                if (r < 0) {
                        exec(j, "ROLLBACK");
                        goto fail;
                }
                snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long) v + 1);
                r = exec(j, sql);
                if (r == 0)
                        r = exec(j, "COMMIT");
                if (r < 0) {
                        exec(j, "ROLLBACK");
                        goto fail;
                }
                continue;
        fail:
                if (ret_error)
                        (void) asprintf_or_null(ret_error, "migration of journal %s to schema %lld failed: %s",
                                        j->path, (long long) v + 1, sqlite3_errmsg(j->db));
                return r;
        }
        return 0;
}

/* Every field of DEVICE_FIELDS must be a column: catches a field added without its
 * migration the first time any test opens a journal. */
static int check_columns(struct journal *j, char **ret_error) {
        for (size_t i = 0; i < device_fields_count; i++) {
                int rc = sqlite3_table_column_metadata(j->db, NULL, "devices", device_fields[i].name,
                                                       NULL, NULL, NULL, NULL, NULL);
                if (rc != SQLITE_OK) {
                        if (ret_error)
                                (void) asprintf_or_null(ret_error, "journal %s lacks column devices.%s",
                                                j->path, device_fields[i].name);
                        return -EBADMSG;
                }
        }
        return 0;
}

static int prepare(struct journal *j, int id, const char *sql) {
        int rc = sqlite3_prepare_v3(j->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &j->stmt[id], NULL);

        if (rc != SQLITE_OK) {
                log_error("journal: cannot prepare statement: %s", sqlite3_errmsg(j->db));
                return sqlite_to_errno(rc);
        }
        return 0;
}

static int prepare_device_statements(struct journal *j) {
        _cleanup_free_ char *ins = NULL, *upd = NULL;
        char *cols = NULL, *qs = NULL, *sets = NULL;
        size_t cl = 0, ql = 0, sl = 0;
        FILE *fc = open_memstream(&cols, &cl), *fq = open_memstream(&qs, &ql),
             *fs = open_memstream(&sets, &sl);
        int r;

        if (!fc || !fq || !fs) {
                if (fc)
                        fclose(fc);
                if (fq)
                        fclose(fq);
                if (fs)
                        fclose(fs);
                free(cols);
                free(qs);
                free(sets);
                return -ENOMEM;
        }
        for (size_t i = 0; i < device_fields_count; i++) {
                fprintf(fc, ", %s", device_fields[i].name);
                fputs(", ?", fq);
                fprintf(fs, ", %s = ?", device_fields[i].name);
        }
        fclose(fc);
        fclose(fq);
        fclose(fs);
        r = asprintf(&ins,
                     "INSERT INTO devices (identity, identity_aux, name, state, first_seen, last_seen, last_verified, "
                     "unresponsive_since%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?%s)",
                     cols, qs);
        if (r >= 0)
                r = asprintf(&upd,
                             "UPDATE devices SET identity = ?, identity_aux = ?, name = ?, state = ?, first_seen = ?, "
                             "last_seen = ?, last_verified = ?, unresponsive_since = ?%s WHERE id = ?",
                             sets);
        free(cols);
        free(qs);
        free(sets);
        if (r < 0)
                return -ENOMEM;
        r = prepare(j, STMT_INSERT_DEVICE, ins);
        if (r < 0)
                return r;
        return prepare(j, STMT_UPDATE_DEVICE, upd);
}

static int prepare_statements(struct journal *j) {
        int r = prepare_device_statements(j);

        if (r == 0)
                r = prepare(j, STMT_TOUCH_DEVICE, "UPDATE devices SET last_seen = ?, last_verified = ? WHERE id = ?");
        if (r == 0)
                r = prepare(j, STMT_INSERT_EVENT,
                            "INSERT INTO events (time, device_id, kind, before, after) VALUES (?, ?, ?, ?, ?)");
        if (r == 0)
                r = prepare(j, STMT_LIST_EVENTS,
                            "SELECT seq, time, device_id, kind, before, after FROM events "
                            "WHERE seq > ? ORDER BY seq LIMIT ?");
        if (r == 0)
                r = prepare(j, STMT_LIST_EVENTS_DEVICE,
                            "SELECT seq, time, device_id, kind, before, after FROM events "
                            "WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?");
        if (r == 0)
                r = prepare(j, STMT_META_SET, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
        if (r == 0)
                r = prepare(j, STMT_META_GET, "SELECT value FROM meta WHERE key = ?");
        if (r == 0)
                r = prepare(j, STMT_PUT_EXPECTATION,
                            "INSERT OR REPLACE INTO expectations (name, match_kind, match_value, fs_type, fs_label, "
                            "min_size, created, on_appear) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        if (r == 0)
                r = prepare(j, STMT_DELETE_EXPECTATION, "DELETE FROM expectations WHERE name = ?");
        if (r == 0)
                r = prepare(j, STMT_INSERT_DRIFT,
                            "INSERT INTO drift (kind, name, device_id, since, detail) VALUES (?, ?, ?, ?, ?)");
        if (r == 0)
                r = prepare(j, STMT_CLOSE_DRIFT, "UPDATE drift SET closed = ? WHERE id = ?");
        if (r == 0)
                r = prepare(j, STMT_UPDATE_DRIFT, "UPDATE drift SET name = ?, detail = ? WHERE id = ?");
        if (r == 0)
                r = prepare(j, STMT_TOUCH_GONE, "UPDATE devices SET last_verified = ? WHERE state = 'gone'");
        return r;
}

int journal_open(const char *path, struct journal **ret, char **ret_error) {
        return journal_open_with(path, NULL, ret, ret_error);
}

int journal_open_with(const char *path, const struct journal_options *opts, struct journal **ret, char **ret_error) {
        struct journal *j;
        struct stat st;
        int64_t version = 0;
        int rc, r;

        if (ret_error)
                *ret_error = NULL;
        if (stat(path, &st) == 0 && st.st_size > 0) {
                r = peek_version(path, &version, ret_error);
                if (r < 0)
                        return r;
                if (version > JOURNAL_SCHEMA_VERSION) {
                        if (ret_error)
                                (void) asprintf_or_null(ret_error,
                                                "journal %s has schema version %lld, newer than the %d this "
                                                "blkledgerd understands; refusing to touch it (use a newer blkledgerd)",
                                                path, (long long) version, JOURNAL_SCHEMA_VERSION);
                        return -EPROTONOSUPPORT;
                }
        }

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->path = strdup(path);
        if (!j->path) {
                free(j);
                return -ENOMEM;
        }
        rc = sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = sqlite_to_errno(rc);
                if (ret_error)
                        (void) asprintf_or_null(ret_error, "cannot open journal %s: %s", path,
                                        j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc));
                goto fail;
        }
        sqlite3_extended_result_codes(j->db, 1);
        sqlite3_busy_timeout(j->db, 5000);

        /* WAL keeps readers (backups, sqlite3 in a shell) from blocking the daemon;
         * synchronous=FULL makes every commit durable before it is acknowledged. */
        {
                sqlite3_stmt *s;
                rc = sqlite3_prepare_v2(j->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
                if (rc == SQLITE_OK) {
                        rc = sqlite3_step(s);
                        if (rc == SQLITE_ROW && !streq((const char *) sqlite3_column_text(s, 0), "wal"))
                                rc = SQLITE_CANTOPEN;
                        sqlite3_finalize(s);
                }
                if (rc != SQLITE_ROW) {
                        r = sqlite_to_errno(rc ? rc : SQLITE_ERROR);
                        if (r == 0)
                                r = -EIO;
                        if (ret_error)
                                (void) asprintf_or_null(ret_error, "cannot put journal %s in WAL mode: %s", path,
                                                sqlite3_errmsg(j->db));
                        goto fail;
                }
        }
        r = exec(j, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
        if (r < 0)
                goto fail;

        r = query_int(j->db, "PRAGMA user_version", &version);
        if (r < 0)
                goto fail;
        if (version > JOURNAL_SCHEMA_VERSION) {
                /* Raced with a newer daemon between peek and open: still do not touch it. */
                r = -EPROTONOSUPPORT;
                if (ret_error)
                        (void) asprintf_or_null(ret_error, "journal %s has schema version %lld, newer than %d",
                                        path, (long long) version, JOURNAL_SCHEMA_VERSION);
                goto fail;
        }
        /* A copy of what there was before any migration changes it: a migration that
         * goes wrong in a way its transaction cannot undo (a bug in it, found later)
         * still leaves the old ledger to go back to. */
        if (version > 0 && version < JOURNAL_SCHEMA_VERSION && opts && opts->before_migration) {
                r = opts->before_migration(j, (int) version, opts->userdata);
                if (r < 0) {
                        if (ret_error)
                                (void) asprintf_or_null(ret_error,
                                                "refusing to migrate journal %s from schema %lld without a backup: %s",
                                                path, (long long) version, strerror(-r));
                        goto fail;
                }
        }
        /* A new journal gives the pages retention frees back to the file system (it runs
         * incremental_vacuum after each batch); this must precede the first table. */
        if (version == 0) {
                r = exec(j, "PRAGMA auto_vacuum = INCREMENTAL");
                if (r < 0)
                        goto fail;
        }
        r = migrate(j, version, ret_error);
        if (r < 0)
                goto fail;
        j->version = JOURNAL_SCHEMA_VERSION;

        r = check_columns(j, ret_error);
        if (r < 0)
                goto fail;
        r = prepare_statements(j);
        if (r < 0)
                goto fail;
        r = query_int(j->db, "SELECT COALESCE(MAX(seq), 0) FROM events", &j->last_seq);
        if (r < 0)
                goto fail;

        *ret = j;
        return 0;
fail:
        if (ret_error && !*ret_error)
                (void) asprintf_or_null(ret_error, "cannot open journal %s: %s", path, strerror(-r));
        journal_close(j);
        return r;
}

struct journal *journal_close(struct journal *j) {
        if (!j)
                return NULL;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(j->stmt[i]);
        sqlite3_close(j->db);
        free(j->path);
        free(j);
        return NULL;
}

int journal_schema_version(struct journal *j) {
        return j->version;
}

sqlite3 *journal_db(struct journal *j) {
        return j->db;
}

int journal_errno(int sqlite_rc) {
        return sqlite_to_errno(sqlite_rc);
}

const char *journal_path(struct journal *j) {
        return j->path;
}

int journal_begin(struct journal *j) {
        return exec(j, "BEGIN IMMEDIATE");
}

int journal_commit(struct journal *j) {
        int r = exec(j, "COMMIT");
        if (r < 0)
                journal_rollback(j);
        else
                j->degraded = 0;
        return r;
}

int journal_degraded(struct journal *j, int64_t *ret_since) {
        if (ret_since)
                *ret_since = j->degraded ? j->degraded_since : 0;
        return j->degraded;
}

int journal_integrity_check(struct journal *j, unsigned max_problems, json_object *problems) {
        sqlite3_stmt *s;
        char sql[64];
        int rc, n = 0;

        snprintf(sql, sizeof(sql), "PRAGMA integrity_check(%u)", MAX(max_problems, 1u));
        rc = sqlite3_prepare_v2(j->db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc) ?: -EIO;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *row = (const char *) sqlite3_column_text(s, 0);
                if (row && streq(row, "ok"))
                        continue;
                json_object_array_add(problems, json_object_new_string(row ? row : "?"));
                n++;
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
                rc &= 0xff;
                if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) {
                        json_object_array_add(problems, json_object_new_string(sqlite3_errmsg(j->db)));
                        return n + 1;
                }
                return sqlite_to_errno(rc) ?: -EIO;
        }
        return n;
}

const char *journal_degraded_reason(int err) {
        switch (err) {
        case -ENOSPC:
                return "no space left on the ledger's file system";
        case -EDQUOT:
                return "the ledger's disk quota is exhausted";
        case -EROFS:
                return "the ledger's file system is read-only";
        case -EBADMSG:
                return "the ledger is damaged (blkledger check); a restart restores the newest backup";
        case -EIO:
                return "I/O error writing the ledger";
        default:
                return strerror(-err);
        }
}

int journal_degraded_seen(struct journal *j) {
        return j->degraded_seen;
}

void journal_degraded_ack(struct journal *j) {
        j->degraded_seen = 0;
}

void journal_rollback(struct journal *j) {
        if (!sqlite3_get_autocommit(j->db))
                sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        /* The cached head may include rows of the rolled back transaction. */
        query_int(j->db, "SELECT COALESCE(MAX(seq), 0) FROM events", &j->last_seq);
}

static int step_done(struct journal *j, sqlite3_stmt *s) {
        int rc = sqlite3_step(s);

        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE) {
                note_failure(j, rc);
                log_error("journal %s: %s", j->path, sqlite3_errmsg(j->db));
                return sqlite_to_errno(rc) ?: -EIO;
        }
        return 0;
}

static char *strv_to_json_text(char *const *v) {
        json_object *a = json_object_new_array();
        char *s;

        if (!a)
                return NULL;
        for (size_t i = 0; v && v[i]; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        s = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(a);
        return s;
}

static char **strv_from_json_text(const char *s) {
        json_object *a = s ? json_tokener_parse(s) : NULL;
        size_t n;
        char **v;

        if (!a || !json_object_is_type(a, json_type_array)) {
                json_object_put(a);
                return calloc(1, sizeof(char *));
        }
        n = json_object_array_length(a);
        v = calloc(n + 1, sizeof(char *));
        for (size_t i = 0, k = 0; v && i < n; i++) {
                json_object *e = json_object_array_get_idx(a, i);
                if (json_object_is_type(e, json_type_string) && !(v[k++] = strdup(json_object_get_string(e)))) {
                        strv_free(v);
                        v = NULL;
                }
        }
        json_object_put(a);
        return v;
}

static void bind_text_or_null(sqlite3_stmt *s, int p, const char *v) {
        if (v)
                sqlite3_bind_text(s, p, v, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(s, p);
}

static void bind_int_or_null(sqlite3_stmt *s, int p, int64_t v) {
        if (v == FIELD_NULL)
                sqlite3_bind_null(s, p);
        else
                sqlite3_bind_int64(s, p, v);
}

static char *column_strdup(sqlite3_stmt *s, int c, bool *oom) {
        const char *t;
        char *r;

        if (sqlite3_column_type(s, c) == SQLITE_NULL)
                return NULL;
        t = (const char *) sqlite3_column_text(s, c);
        r = strdup(t ? t : "");
        if (!r)
                *oom = true;
        return r;
}

/* Binds the record's columns starting at parameter 1 in the order of the statements. */
static int bind_device(sqlite3_stmt *s, const struct device_record *rec) {
        int p = 1;

        sqlite3_bind_text(s, p++, rec->identity, -1, SQLITE_STATIC);
        bind_text_or_null(s, p++, rec->identity_aux);
        bind_text_or_null(s, p++, rec->name);
        sqlite3_bind_text(s, p++, device_state_to_string(rec->state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, p++, rec->first_seen);
        sqlite3_bind_int64(s, p++, rec->last_seen);
        if (rec->last_verified)
                sqlite3_bind_int64(s, p++, rec->last_verified);
        else
                sqlite3_bind_null(s, p++);
        if (rec->unresponsive_since)
                sqlite3_bind_int64(s, p++, rec->unresponsive_since);
        else
                sqlite3_bind_null(s, p++);
        for (size_t i = 0; i < device_fields_count; i++, p++) {
                const struct field_desc *d = &device_fields[i];
                const void *v = device_field_cptr(&rec->facts, d);

                switch (d->type) {
                case FIELD_STR:
                        if (*(char *const *) v)
                                sqlite3_bind_text(s, p, *(char *const *) v, -1, SQLITE_STATIC);
                        else
                                sqlite3_bind_null(s, p);
                        break;
                case FIELD_INT:
                case FIELD_BOOL:
                        if (*(const int64_t *) v == FIELD_NULL)
                                sqlite3_bind_null(s, p);
                        else
                                sqlite3_bind_int64(s, p, *(const int64_t *) v);
                        break;
                case FIELD_STRV: {
                        char *t = strv_to_json_text(*(char **const *) v);
                        if (!t)
                                return -ENOMEM;
                        sqlite3_bind_text(s, p, t, -1, free);
                        break;
                }
                }
        }
        return p;
}

int journal_insert_device(struct journal *j, struct device_record *rec) {
        sqlite3_stmt *s = j->stmt[STMT_INSERT_DEVICE];
        int r = bind_device(s, rec);

        if (r < 0) {
                sqlite3_reset(s);
                sqlite3_clear_bindings(s);
                return r;
        }
        r = step_done(j, s);
        if (r < 0)
                return r;
        rec->id = sqlite3_last_insert_rowid(j->db);
        return 0;
}

int journal_update_device(struct journal *j, const struct device_record *rec) {
        sqlite3_stmt *s = j->stmt[STMT_UPDATE_DEVICE];
        int p = bind_device(s, rec);

        if (p < 0) {
                sqlite3_reset(s);
                sqlite3_clear_bindings(s);
                return p;
        }
        sqlite3_bind_int64(s, p, rec->id);
        return step_done(j, s);
}

int journal_touch_device(struct journal *j, int64_t id, int64_t now) {
        sqlite3_stmt *s = j->stmt[STMT_TOUCH_DEVICE];

        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_int64(s, 2, now);
        sqlite3_bind_int64(s, 3, id);
        return step_done(j, s);
}

int journal_load_devices(struct journal *j, int (*fn)(struct device_record *rec, void *userdata),
                         void *userdata) {
        _cleanup_free_ char *sql = NULL;
        char *cols = NULL;
        size_t cl = 0;
        sqlite3_stmt *s;
        FILE *f;
        int rc, r = 0;

        f = open_memstream(&cols, &cl);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < device_fields_count; i++)
                fprintf(f, ", %s", device_fields[i].name);
        fclose(f);
        r = asprintf(&sql,
                     "SELECT id, identity, identity_aux, name, state, first_seen, last_seen, last_verified, "
                     "unresponsive_since%s "
                     "FROM devices ORDER BY id",
                     cols);
        free(cols);
        if (r < 0)
                return -ENOMEM;
        rc = sqlite3_prepare_v2(j->db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc);

        r = 0;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct device_record *rec = calloc(1, sizeof(*rec));
                int c = 0, st;

                if (!rec) {
                        r = -ENOMEM;
                        break;
                }
                device_facts_init(&rec->facts);
                bool oom = false;
                rec->id = sqlite3_column_int64(s, c++);
                rec->identity = strdup((const char *) sqlite3_column_text(s, c++) ?: "");
                rec->identity_aux = column_strdup(s, c++, &oom);
                rec->name = column_strdup(s, c++, &oom);
                st = device_state_from_string((const char *) sqlite3_column_text(s, c++) ?: "");
                rec->state = st < 0 ? DEVICE_GONE : (enum device_state) st;
                rec->first_seen = sqlite3_column_int64(s, c++);
                rec->last_seen = sqlite3_column_int64(s, c++);
                rec->last_verified = sqlite3_column_int64(s, c++); /* NULL reads as 0: never */
                rec->unresponsive_since = sqlite3_column_int64(s, c++); /* NULL: answers */
                if (oom)
                        r = -ENOMEM;
                for (size_t i = 0; i < device_fields_count; i++, c++) {
                        const struct field_desc *d = &device_fields[i];
                        void *v = device_field_ptr(&rec->facts, d);
                        bool null = sqlite3_column_type(s, c) == SQLITE_NULL;

                        switch (d->type) {
                        case FIELD_STR:
                                if (!null && !(*(char **) v = strdup((const char *) sqlite3_column_text(s, c))))
                                        r = -ENOMEM;
                                break;
                        case FIELD_INT:
                        case FIELD_BOOL:
                                *(int64_t *) v = null ? FIELD_NULL : sqlite3_column_int64(s, c);
                                break;
                        case FIELD_STRV:
                                if (!(*(char ***) v = strv_from_json_text((const char *) sqlite3_column_text(s, c))))
                                        r = -ENOMEM;
                                break;
                        }
                }
                if (!rec->identity)
                        r = -ENOMEM;
                if (r < 0) {
                        device_record_free(rec);
                        break;
                }
                r = fn(rec, userdata);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_to_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

int journal_append_event(struct journal *j, int64_t time, int64_t device_id, const char *kind,
                         json_object *before, json_object *after, int64_t *ret_seq) {
        sqlite3_stmt *s = j->stmt[STMT_INSERT_EVENT];
        const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
        int r;

        sqlite3_bind_int64(s, 1, time);
        if (device_id > 0)
                sqlite3_bind_int64(s, 2, device_id);
        else
                sqlite3_bind_null(s, 2);
        sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
        if (before)
                sqlite3_bind_text(s, 4, json_object_to_json_string_ext(before, flags), -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(s, 4);
        if (after)
                sqlite3_bind_text(s, 5, json_object_to_json_string_ext(after, flags), -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(s, 5);
        r = step_done(j, s);
        if (r < 0)
                return r;
        j->last_seq = sqlite3_last_insert_rowid(j->db);
        if (ret_seq)
                *ret_seq = j->last_seq;
        return 0;
}

int64_t journal_last_seq(struct journal *j) {
        return j->last_seq;
}

int journal_last_daemon_event(struct journal *j, char **ret_kind) {
        sqlite3_stmt *s;
        int rc;

        *ret_kind = NULL;
        rc = sqlite3_prepare_v2(j->db,
                                "SELECT kind FROM events WHERE device_id IS NULL AND kind IN ('daemon_started', "
                                "'daemon_stopped') ORDER BY seq DESC LIMIT 1",
                                -1, &s, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && !(*ret_kind = strdup((const char *) sqlite3_column_text(s, 0)))) {
                sqlite3_finalize(s);
                return -ENOMEM;
        }
        sqlite3_finalize(s);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_to_errno(rc);
}

static json_object *json_column(sqlite3_stmt *s, int c) {
        const char *t;

        if (sqlite3_column_type(s, c) == SQLITE_NULL)
                return NULL;
        t = (const char *) sqlite3_column_text(s, c);
        return t ? json_tokener_parse(t) : NULL;
}

int journal_list_events(struct journal *j, int64_t since, int64_t limit, int64_t device_id,
                        json_object *array) {
        sqlite3_stmt *s;
        int n = 0, p = 1, rc;

        s = j->stmt[device_id > 0 ? STMT_LIST_EVENTS_DEVICE : STMT_LIST_EVENTS];
        if (device_id > 0)
                sqlite3_bind_int64(s, p++, device_id);
        sqlite3_bind_int64(s, p++, since);
        sqlite3_bind_int64(s, p++, limit);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                json_object *e = json_object_new_object();
                char ts[RFC3339_MAX];

                if (!e)
                        break;
                json_object_object_add(e, "seq", json_object_new_int64(sqlite3_column_int64(s, 0)));
                json_object_object_add(e, "time",
                                       json_object_new_string(format_rfc3339(sqlite3_column_int64(s, 1), ts)));
                json_object_object_add(e, "device_id",
                                       sqlite3_column_type(s, 2) == SQLITE_NULL
                                               ? NULL
                                               : json_object_new_int64(sqlite3_column_int64(s, 2)));
                json_object_object_add(e, "kind", json_object_new_string((const char *) sqlite3_column_text(s, 3)));
                json_object_object_add(e, "before", json_column(s, 4));
                json_object_object_add(e, "after", json_column(s, 5));
                json_object_array_add(array, e);
                n++;
        }
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return sqlite_to_errno(rc) ?: -EIO;
        return n;
}

int journal_meta_set(struct journal *j, const char *key, const char *value) {
        sqlite3_stmt *s = j->stmt[STMT_META_SET];

        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
        return step_done(j, s);
}

int journal_meta_get(struct journal *j, const char *key, char **ret) {
        sqlite3_stmt *s = j->stmt[STMT_META_GET];
        int rc, r = 0;

        *ret = NULL;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                *ret = strdup((const char *) sqlite3_column_text(s, 0));
                if (!*ret)
                        r = -ENOMEM;
        } else if (rc != SQLITE_DONE)
                r = sqlite_to_errno(rc) ?: -EIO;
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        return r;
}

int journal_load_expectations(struct journal *j, int (*fn)(struct expectation *e, void *userdata),
                              void *userdata) {
        sqlite3_stmt *s;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(j->db,
                                "SELECT name, match_kind, match_value, fs_type, fs_label, min_size, created, on_appear "
                                "FROM expectations ORDER BY name",
                                -1, &s, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct expectation *e = calloc(1, sizeof(*e));
                bool oom = !e;

                if (e) {
                        e->name = column_strdup(s, 0, &oom);
                        e->match_kind = column_strdup(s, 1, &oom);
                        e->match_value = column_strdup(s, 2, &oom);
                        e->fs_type = column_strdup(s, 3, &oom);
                        e->fs_label = column_strdup(s, 4, &oom);
                        e->min_size = sqlite3_column_type(s, 5) == SQLITE_NULL ? FIELD_NULL : sqlite3_column_int64(s, 5);
                        e->created = sqlite3_column_int64(s, 6);
                        e->on_appear = column_strdup(s, 7, &oom);
                }
                if (oom || !e->name || !e->match_kind || !e->match_value) {
                        expectation_free(e);
                        r = -ENOMEM;
                        break;
                }
                r = fn(e, userdata);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_to_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

int journal_put_expectation(struct journal *j, const struct expectation *e) {
        sqlite3_stmt *s = j->stmt[STMT_PUT_EXPECTATION];

        sqlite3_bind_text(s, 1, e->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, e->match_kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, e->match_value, -1, SQLITE_STATIC);
        bind_text_or_null(s, 4, e->fs_type);
        bind_text_or_null(s, 5, e->fs_label);
        bind_int_or_null(s, 6, e->min_size);
        sqlite3_bind_int64(s, 7, e->created);
        bind_text_or_null(s, 8, e->on_appear);
        return step_done(j, s);
}

int journal_delete_expectation(struct journal *j, const char *name) {
        sqlite3_stmt *s = j->stmt[STMT_DELETE_EXPECTATION];
        int r;

        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        r = step_done(j, s);
        if (r == 0 && sqlite3_changes(j->db) == 0)
                return -ENOENT;
        return r;
}

int journal_load_open_drift(struct journal *j, int (*fn)(struct drift_item *d, void *userdata), void *userdata) {
        sqlite3_stmt *s;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(j->db,
                                "SELECT id, kind, name, device_id, since, detail FROM drift WHERE closed IS NULL ORDER BY id",
                                -1, &s, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(rc);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct drift_item *d = calloc(1, sizeof(*d));
                bool oom = !d;

                if (d) {
                        d->id = sqlite3_column_int64(s, 0);
                        d->kind = column_strdup(s, 1, &oom);
                        d->name = column_strdup(s, 2, &oom);
                        d->device_id = sqlite3_column_int64(s, 3);
                        d->since = sqlite3_column_int64(s, 4);
                        d->detail = json_column(s, 5);
                        if (!d->detail)
                                d->detail = json_object_new_object();
                }
                if (oom || !d->kind || !d->detail) {
                        drift_item_free(d);
                        r = -ENOMEM;
                        break;
                }
                r = fn(d, userdata);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sqlite_to_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return r;
}

int journal_insert_drift(struct journal *j, struct drift_item *d) {
        sqlite3_stmt *s = j->stmt[STMT_INSERT_DRIFT];
        int r;

        sqlite3_bind_text(s, 1, d->kind, -1, SQLITE_STATIC);
        bind_text_or_null(s, 2, d->name);
        if (d->device_id > 0)
                sqlite3_bind_int64(s, 3, d->device_id);
        else
                sqlite3_bind_null(s, 3);
        sqlite3_bind_int64(s, 4, d->since);
        sqlite3_bind_text(s, 5, json_object_to_json_string_ext(d->detail, JSON_C_TO_STRING_PLAIN), -1,
                          SQLITE_TRANSIENT);
        r = step_done(j, s);
        if (r == 0)
                d->id = sqlite3_last_insert_rowid(j->db);
        return r;
}

int journal_close_drift(struct journal *j, int64_t id, int64_t closed) {
        sqlite3_stmt *s = j->stmt[STMT_CLOSE_DRIFT];

        sqlite3_bind_int64(s, 1, closed);
        sqlite3_bind_int64(s, 2, id);
        return step_done(j, s);
}

int journal_update_drift(struct journal *j, int64_t id, const char *name, json_object *detail) {
        sqlite3_stmt *s = j->stmt[STMT_UPDATE_DRIFT];

        bind_text_or_null(s, 1, name);
        sqlite3_bind_text(s, 2, json_object_to_json_string_ext(detail, JSON_C_TO_STRING_PLAIN), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, id);
        return step_done(j, s);
}

int journal_touch_gone_devices(struct journal *j, int64_t now) {
        sqlite3_stmt *s = j->stmt[STMT_TOUCH_GONE];

        sqlite3_bind_int64(s, 1, now);
        return step_done(j, s);
}
