/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Export and import of the ledger's own truths: what the devices cannot hold and a
 * rescan cannot find again. Names (by device identity), expectations, volume records,
 * and, for the record only, unfinished intents. The format is docs/EXPORT.md:
 *
 *   { "format": "blkledger-export", "version": 1, "exported_at": RFC 3339,
 *     "names": [...], "expectations": [...], "volumes": [...], "intents": [...] }
 *
 * An import is planned first (every item: add, same, replace or conflict), and applied
 * only when asked, in one transaction, and only without conflicts unless forced. A
 * name whose device the ledger has never seen becomes a record of a gone device with
 * that identity: when the device appears, the ledger binds it there and it has its name.
 * Intents are not imported: replaying an action recorded elsewhere is not an import's
 * business; they are in the export for whoever reads it. */
#include "config.h"

#include <sqlite3.h>

#include "daemon.h"
#include "drift.h"
#include "identity.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "server.h"
#include "transfer.h"
#include "util.h"
#include "varlink.h"
#include "volumes.h"

#define EXPORT_FORMAT "blkledger-export"
#define EXPORT_VERSION 1
#define TEXT_MAX 4096

/* The volumes table's CHECK list (journal.c), so that an import plan refuses a bad file
 * before anything is applied; test-journal fails when the two differ. */
const char *const transfer_volume_states[] = { "creating", "attached", "detached", "resizing", "deleting", "failed",
                                               NULL };

/* ---- export ---- */

static json_object *column_json(sqlite3_stmt *s, int i) {
        switch (sqlite3_column_type(s, i)) {
        case SQLITE_INTEGER:
                return json_object_new_int64(sqlite3_column_int64(s, i));
        case SQLITE_NULL:
                return NULL;
        default:
                return json_object_new_string((const char *) sqlite3_column_text(s, i));
        }
}

/* Each row of sql as an object named by its columns. */
static int rows_json(struct journal *j, const char *sql, json_object *array) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(journal_db(j), sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return journal_errno(rc) ?: -EIO;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                json_object *o = json_object_new_object();
                if (!o) {
                        sqlite3_finalize(s);
                        return -ENOMEM;
                }
                for (int i = 0; i < sqlite3_column_count(s); i++)
                        json_object_object_add(o, sqlite3_column_name(s, i), column_json(s, i));
                json_object_array_add(array, o);
        }
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? 0 : journal_errno(rc) ?: -EIO;
}

static int add_intent(struct intent *it, void *userdata) {
        json_object_array_add(userdata, intent_to_json(it));
        intent_free(it);
        return 0;
}

int transfer_export(struct daemon *d, json_object **ret) {
        json_object *o = json_object_new_object(), *names = json_object_new_array(),
                    *exps = json_object_new_array(), *vols = json_object_new_array(),
                    *intents = json_object_new_array();
        char ts[RFC3339_MAX];
        int r;

        if (!o || !names || !exps || !vols || !intents) {
                r = -ENOMEM;
                goto fail;
        }
        json_object_object_add(o, "format", json_object_new_string(EXPORT_FORMAT));
        json_object_object_add(o, "version", json_object_new_int(EXPORT_VERSION));
        json_object_object_add(o, "exported_at", json_object_new_string(format_rfc3339(now_realtime_usec(), ts)));
        json_object_object_add(o, "schema_version", json_object_new_int(journal_schema_version(d->journal)));
        /* Read in one transaction: the four lists are of one moment. */
        r = journal_begin(d->journal);
        if (r < 0)
                goto fail;
        r = rows_json(d->journal,
                      "SELECT name, identity, identity_aux FROM devices WHERE name IS NOT NULL ORDER BY name", names);
        if (r == 0)
                r = rows_json(d->journal,
                              "SELECT name, match_kind, match_value, fs_type, fs_label, min_size, on_appear, created "
                              "FROM expectations ORDER BY name",
                              exps);
        if (r == 0)
                r = rows_json(d->journal,
                              "SELECT name, state, size_bytes, backing_file, fs_type, fs_label, created, updated "
                              "FROM volumes ORDER BY name",
                              vols);
        if (r == 0)
                r = vstore_load_intents(d->journal, true, 0, add_intent, intents);
        journal_rollback(d->journal); /* nothing was written */
        if (r < 0)
                goto fail;
        json_object_object_add(o, "names", names);
        json_object_object_add(o, "expectations", exps);
        json_object_object_add(o, "volumes", vols);
        json_object_object_add(o, "intents", intents);
        *ret = o;
        return 0;
fail:
        json_object_put(o);
        json_object_put(names);
        json_object_put(exps);
        json_object_put(vols);
        json_object_put(intents);
        return r;
}

/* ---- import: checking the file ---- */

struct plan {
        json_object *changes; /* array of {kind, key, action, detail} */
        unsigned add, same, replace, conflict;
        char *error;          /* the file itself is bad */
};

static int bad(struct plan *p, const char *list, size_t index, const char *what) {
        if (!p->error)
                (void) asprintf_or_null(&p->error, "%s[%zu]: %s", list, index, what);
        return -EINVAL;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* A string member: required or not, at most TEXT_MAX bytes of valid UTF-8. */
static int text(json_object *o, const char *key, bool required, const char **ret) {
        json_object *v;
        const char *s;
        size_t n;

        *ret = NULL;
        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return required ? -EINVAL : 0;
        if (!json_object_is_type(v, json_type_string))
                return -EINVAL;
        s = json_object_get_string(v);
        n = strlen(s);
        if (n > TEXT_MAX || !utf8_is_valid(s, n) || (required && n == 0))
                return -EINVAL;
        *ret = s;
        return 0;
}

static int integer(json_object *o, const char *key, bool required, bool *ret_set, int64_t *ret) {
        json_object *v;

        *ret_set = false;
        *ret = 0;
        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return required ? -EINVAL : 0;
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return -EINVAL;
        *ret_set = true;
        *ret = json_object_get_int64(v);
        return 0;
}

static void note(struct plan *p, const char *kind, const char *key, const char *action, const char *detail) {
        json_object *c = json_object_new_object();

        if (streq(action, "add"))
                p->add++;
        else if (streq(action, "same"))
                p->same++;
        else if (streq(action, "replace"))
                p->replace++;
        else
                p->conflict++;
        if (!c)
                return;
        json_object_object_add(c, "kind", json_object_new_string(kind));
        json_object_object_add(c, "key", json_object_new_string(key));
        json_object_object_add(c, "action", json_object_new_string(action));
        json_object_object_add(c, "detail", detail ? json_object_new_string(detail) : NULL);
        json_object_array_add(p->changes, c);
}

/* An item that is not here yet (add), or differs from what is here (replace with force,
 * conflict without). Returns whether it is to be written. */
static bool note_change(struct plan *p, const char *kind, const char *key, bool exists, const char *detail,
                        bool force) {
        note(p, kind, key, !exists ? "add" : force ? "replace" : "conflict", detail);
        return !exists || force;
}

static json_object *list_of(json_object *root, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
                return NULL;
        return v;
}

/* ---- import: names ---- */

static struct device_record *record_of_identity(struct daemon *d, const char *identity, const char *aux) {
        struct device_record *best = NULL;

        for (size_t i = 0; i < d->ledger.n_recs; i++) {
                struct device_record *r = d->ledger.recs[i];
                if (!streq(r->identity, identity) || !identity_aux_compatible(r->identity_aux, aux))
                        continue;
                if (!best || (r->state == DEVICE_PRESENT && best->state != DEVICE_PRESENT) ||
                    (r->state == best->state && r->last_seen > best->last_seen))
                        best = r;
        }
        return best;
}

static int exec_bind(struct journal *j, const char *sql, const char *const *text_args, size_t n, const int64_t *ints,
                     size_t n_ints) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(journal_db(j), sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return journal_errno(rc) ?: -EIO;
        for (size_t i = 0; i < n; i++)
                sqlite3_bind_text(s, (int) i + 1, text_args[i], -1, SQLITE_STATIC);
        for (size_t i = 0; i < n_ints; i++)
                sqlite3_bind_int64(s, (int) (n + i) + 1, ints[i]);
        rc = sqlite3_step(s);
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? 0 : journal_errno(rc) ?: -EIO;
}

static int import_names(struct daemon *d, json_object *list, struct plan *p, bool apply, bool force, int64_t now) {
        for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                json_object *o = json_object_array_get_idx(list, i);
                const char *name, *identity, *aux;
                struct device_record *rec, *holder;
                int r;

                if (!json_object_is_type(o, json_type_object) || text(o, "name", true, &name) < 0 ||
                    !ledger_name_valid(name) || text(o, "identity", true, &identity) < 0 ||
                    text(o, "identity_aux", false, &aux) < 0)
                        return bad(p, "names", i, "needs a valid name and an identity");
                rec = record_of_identity(d, identity, aux);
                holder = ledger_find_by_name(&d->ledger, name);
                if (holder && !streq_ptr(holder->name, name))
                        holder = NULL; /* found by kernel name, not by ledger name */
                if (rec && streq_ptr(rec->name, name)) {
                        note(p, "name", name, "same", NULL);
                        continue;
                }
                {
                        _cleanup_free_ char *why = NULL;
                        bool exists = (rec && rec->name) || (holder && holder != rec);

                        if (rec && rec->name)
                                (void) asprintf_or_null(&why, "the device is named %s here", rec->name);
                        else if (exists)
                                (void) asprintf_or_null(&why, "the name belongs to device %lld here",
                                                        (long long) holder->id);
                        if (!note_change(p, "name", name, exists,
                                         exists ? why : rec ? NULL : "a device not seen here yet", force) ||
                            !apply)
                                continue;
                }
                if (holder && holder != rec) {
                        const int64_t id[] = { holder->id };
                        r = exec_bind(d->journal, "UPDATE devices SET name = NULL WHERE id = ?", NULL, 0, id, 1);
                        if (r < 0)
                                return r;
                }
                if (rec) {
                        const char *args[] = { name };
                        const int64_t id[] = { rec->id };
                        r = exec_bind(d->journal, "UPDATE devices SET name = ? WHERE id = ?", args, 1, id, 1);
                } else {
                        const char *args[] = { identity, aux, name };
                        const int64_t t[] = { now, now, now };
                        r = exec_bind(d->journal,
                                      "INSERT INTO devices (identity, identity_aux, name, state, first_seen, last_seen, "
                                      "last_verified) VALUES (?, ?, ?, 'gone', ?, ?, ?)",
                                      args, 3, t, 3);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- import: expectations and volumes, rows compared column by column ---- */

/* Whether the row of sql (one text parameter) equals o in every column; 0 = no row. */
static int row_compare(struct journal *j, const char *sql, const char *key, json_object *o, bool *ret_equal) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(journal_db(j), sql, -1, &s, NULL), found = 0;

        *ret_equal = true;
        if (rc != SQLITE_OK)
                return journal_errno(rc) ?: -EIO;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                found = 1;
                for (int i = 0; i < sqlite3_column_count(s); i++) {
                        json_object *want = NULL, *have = column_json(s, i);
                        (void) json_object_object_get_ex(o, sqlite3_column_name(s, i), &want);
                        if (!json_object_equal(want, have))
                                *ret_equal = false;
                        json_object_put(have);
                }
        } else if (rc != SQLITE_DONE)
                found = journal_errno(rc) ?: -EIO;
        sqlite3_finalize(s);
        return found;
}

static int import_expectations(struct daemon *d, json_object *list, struct plan *p, bool apply, bool force) {
        for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                json_object *o = json_object_array_get_idx(list, i);
                const char *name, *kind, *value, *fs_type, *fs_label, *on_appear;
                int64_t min_size, created;
                bool has_min, has_created, equal;
                int r;

                if (!json_object_is_type(o, json_type_object) || text(o, "name", true, &name) < 0 ||
                    !ledger_name_valid(name) || text(o, "match_kind", true, &kind) < 0 ||
                    !expectation_match_kind_valid(kind) || text(o, "match_value", true, &value) < 0 ||
                    text(o, "fs_type", false, &fs_type) < 0 || text(o, "fs_label", false, &fs_label) < 0 ||
                    text(o, "on_appear", false, &on_appear) < 0 ||
                    integer(o, "min_size", false, &has_min, &min_size) < 0 ||
                    integer(o, "created", true, &has_created, &created) < 0)
                        return bad(p, "expectations", i, "needs name, match_kind, match_value and created");
                if (on_appear) {
                        _cleanup_free_ char *why = NULL;
                        if (volumes_check_action(on_appear, &why) < 0)
                                return bad(p, "expectations", i, why ? why : "bad on_appear");
                }
                r = row_compare(d->journal,
                                "SELECT name, match_kind, match_value, fs_type, fs_label, min_size, on_appear, created "
                                "FROM expectations WHERE name = ?",
                                name, o, &equal);
                if (r < 0)
                        return r;
                if (r > 0 && equal) {
                        note(p, "expectation", name, "same", NULL);
                        continue;
                }
                if (!note_change(p, "expectation", name, r > 0, r > 0 ? "differs from the one here" : NULL, force) ||
                    !apply)
                        continue;
                {
                        const char *args[] = { name, kind, value, fs_type, fs_label, on_appear };
                        sqlite3_stmt *s;
                        int rc = sqlite3_prepare_v2(journal_db(d->journal),
                                                    "INSERT OR REPLACE INTO expectations (name, match_kind, "
                                                    "match_value, fs_type, fs_label, on_appear, min_size, created) "
                                                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                                    -1, &s, NULL);
                        if (rc != SQLITE_OK)
                                return journal_errno(rc) ?: -EIO;
                        for (int k = 0; k < 6; k++)
                                sqlite3_bind_text(s, k + 1, args[k], -1, SQLITE_STATIC);
                        if (has_min)
                                sqlite3_bind_int64(s, 7, min_size);
                        sqlite3_bind_int64(s, 8, created);
                        rc = sqlite3_step(s);
                        sqlite3_finalize(s);
                        if (rc != SQLITE_DONE)
                                return journal_errno(rc) ?: -EIO;
                }
        }
        return 0;
}

static bool volume_state_valid(const char *s) {
        for (size_t i = 0; transfer_volume_states[i]; i++)
                if (streq(s, transfer_volume_states[i]))
                        return true;
        return false;
}

static int import_volumes(struct daemon *d, json_object *list, struct plan *p, bool apply, bool force) {
        for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                json_object *o = json_object_array_get_idx(list, i);
                const char *name, *state, *file, *fs_type, *fs_label;
                int64_t size, created, updated;
                bool set, equal;
                int r;

                if (!json_object_is_type(o, json_type_object) || text(o, "name", true, &name) < 0 ||
                    !ledger_name_valid(name) || text(o, "state", true, &state) < 0 || !volume_state_valid(state) ||
                    text(o, "backing_file", true, &file) < 0 || file[0] != '/' ||
                    text(o, "fs_type", false, &fs_type) < 0 || text(o, "fs_label", false, &fs_label) < 0 ||
                    integer(o, "size_bytes", true, &set, &size) < 0 || integer(o, "created", true, &set, &created) < 0 ||
                    integer(o, "updated", true, &set, &updated) < 0)
                        return bad(p, "volumes", i,
                                   "needs name, state, size_bytes, an absolute backing_file, created and updated");
                r = row_compare(d->journal,
                                "SELECT name, state, size_bytes, backing_file, fs_type, fs_label, created, updated "
                                "FROM volumes WHERE name = ?",
                                name, o, &equal);
                if (r < 0)
                        return r;
                if (r > 0 && equal) {
                        note(p, "volume", name, "same", NULL);
                        continue;
                }
                {
                        /* Another volume's file is never taken over, forced or not. */
                        const char *other = volumes_name_of_file(d->volumes, file);
                        if (other && !streq(other, name)) {
                                _cleanup_free_ char *why = NULL;
                                (void) asprintf_or_null(&why, "its file belongs to volume %s here", other);
                                note(p, "volume", name, "conflict", why);
                                continue;
                        }
                }
                if (!note_change(p, "volume", name, r > 0, r > 0 ? "differs from the one here" : NULL, force) ||
                    !apply)
                        continue;
                {
                        const char *args[] = { name, state, file, fs_type, fs_label };
                        const int64_t ints[] = { size, created, updated };
                        r = exec_bind(d->journal,
                                      "INSERT OR REPLACE INTO volumes (name, state, backing_file, fs_type, fs_label, "
                                      "size_bytes, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                      args, 5, ints, 3);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* ---- import: the whole ---- */

static int plan_run(struct daemon *d, json_object *root, struct plan *p, bool apply, bool force) {
        const char *format = json_object_is_type(root, json_type_object) ? get_str(root, "format") : NULL;
        json_object *v, *names, *exps, *vols;
        int64_t now = now_realtime_usec();
        int r;

        if (!streq_ptr(format, EXPORT_FORMAT)) {
                p->error = strdup("not a blkledger export (\"format\" is not \"" EXPORT_FORMAT "\")");
                return -EINVAL;
        }
        if (!json_object_object_get_ex(root, "version", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) != EXPORT_VERSION) {
                (void) asprintf_or_null(&p->error, "export format version %s is not the %d this blkledgerd reads",
                                        v ? json_object_to_json_string(v) : "(none)", EXPORT_VERSION);
                return -EINVAL;
        }
        names = list_of(root, "names");
        exps = list_of(root, "expectations");
        vols = list_of(root, "volumes");
        if ((names && !json_object_is_type(names, json_type_array)) ||
            (exps && !json_object_is_type(exps, json_type_array)) ||
            (vols && !json_object_is_type(vols, json_type_array))) {
                p->error = strdup("names, expectations and volumes must be arrays");
                return -EINVAL;
        }
        r = import_names(d, names, p, apply, force, now);
        if (r == 0)
                r = import_expectations(d, exps, p, apply, force);
        if (r == 0)
                r = import_volumes(d, vols, p, apply, force);
        return r;
}

int method_export(struct client *c, json_object *params, unsigned flags, void *userdata) {
        struct daemon *d = userdata;
        json_object *o, *reply;
        int r;

        if (server_check_params(c, params, NULL) < 0)
                return 0;
        r = transfer_export(d, &o);
        if (r < 0)
                return r;
        reply = json_object_new_object();
        if (!reply) {
                json_object_put(o);
                return -ENOMEM;
        }
        json_object_object_add(reply, "export", o);
        r = server_reply(c, reply);
        json_object_put(reply);
        return r;
}

int method_import(struct client *c, json_object *params, unsigned flags, void *userdata) {
        static const struct param_spec spec[] = {
                { "data", PARAM_STRING }, { "apply", PARAM_BOOL }, { "force", PARAM_BOOL }, {}
        };
        struct daemon *d = userdata;
        json_object *root, *v, *reply;
        struct plan p = {};
        bool apply = false, force = false;
        int r;

        if (server_check_params(c, params, spec) < 0)
                return 0;
        if (json_object_object_get_ex(params, "apply", &v))
                apply = json_object_get_boolean(v);
        if (json_object_object_get_ex(params, "force", &v))
                force = json_object_get_boolean(v);
        if (!param_get(params, "data"))
                return server_reply_invalid_parameter(c, "data");
        {
                const char *data = json_object_get_string(param_get(params, "data"));
                if (vl_json_parse(data, strlen(data), 64, &root) < 0)
                        return server_reply_error_string(c, "io.blkledger.Refused", "reason",
                                                         "the export is not valid JSON");
        }
        p.changes = json_object_new_array();
        if (!p.changes) {
                json_object_put(root);
                return -ENOMEM;
        }
        /* First the plan, on what is there now; then, if asked and allowed, the same
         * again for real, in one transaction. */
        r = plan_run(d, root, &p, false, force);
        if (r == 0 && apply && p.conflict > 0 && !force) {
                _cleanup_free_ char *why = NULL;
                (void) asprintf_or_null(&why, "%u conflicts with what is here; nothing was imported (force replaces)",
                                        p.conflict);
                r = server_reply_error_string(c, "io.blkledger.Refused", "reason", why ? why : "conflicts");
                goto out;
        }
        if (r == 0 && apply && (p.add > 0 || p.replace > 0)) {
                if (d->volumes && volumes_unfinished(d->volumes) > 0) {
                        r = server_reply_error_string(c, "io.blkledger.Refused", "reason",
                                                      "intents are unfinished; import when they are done");
                        goto out;
                }
                struct plan again = { .changes = json_object_new_array() };
                r = journal_begin(d->journal);
                if (r == 0) {
                        r = plan_run(d, root, &again, true, force);
                        if (r == 0) {
                                json_object *after = json_object_new_object();
                                json_object_object_add(after, "added", json_object_new_int(again.add));
                                json_object_object_add(after, "replaced", json_object_new_int(again.replace));
                                r = journal_append_event(d->journal, now_realtime_usec(), 0, "ledger_imported", NULL,
                                                         after, NULL);
                                json_object_put(after);
                        }
                        if (r == 0)
                                r = journal_commit(d->journal);
                        else
                                journal_rollback(d->journal);
                }
                json_object_put(again.changes);
                free(again.error);
                if (r < 0) {
                        log_error_errno(r, "cannot import");
                        goto out;
                }
                /* The caches follow the tables. */
                r = ledger_load(&d->ledger, d->journal);
                if (r == 0)
                        r = drift_load(&d->drift, d->journal);
                if (r == 0 && d->volumes)
                        r = volumes_reload(d->volumes);
                if (r < 0) {
                        log_error_errno(r, "cannot reload the ledger after an import");
                        goto out;
                }
                log_info("imported by uid %d: %u added, %u replaced", (int) client_uid(c), p.add, p.replace);
                reconcile_evaluate_drift(d);
                reconcile_names_changed(d);
                server_notify_events(d->server);
        } else if (r == -EINVAL) {
                r = server_reply_error_string(c, "io.blkledger.Refused", "reason",
                                              p.error ? p.error : "the export is malformed");
                goto out;
        }
        if (r < 0)
                goto out;
        reply = json_object_new_object();
        if (!reply) {
                r = -ENOMEM;
                goto out;
        }
        json_object_object_add(reply, "changes", json_object_get(p.changes));
        json_object_object_add(reply, "add", json_object_new_int(p.add));
        json_object_object_add(reply, "same", json_object_new_int(p.same));
        json_object_object_add(reply, "replace", json_object_new_int(p.replace));
        json_object_object_add(reply, "conflict", json_object_new_int(p.conflict));
        json_object_object_add(reply, "applied", json_object_new_boolean(apply && (p.add > 0 || p.replace > 0)));
        r = server_reply(c, reply);
        json_object_put(reply);
out:
        json_object_put(p.changes);
        free(p.error);
        json_object_put(root);
        return r;
}
