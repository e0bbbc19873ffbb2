/* Description: io.blkledger.varlink is accepted by the reference Varlink parser and declares exactly the methods, device fields, members and errors the daemon uses. */
/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "daemon.h"
#include "device.h"
#include "drift.h"
#include "journal.h"
#include "log.h"
#include "util.h"

#define GENERATOR "varlink-go-interface-generator"
#define PREFIX "io.blkledger."

static char *tmpdir;
static char *idl;          /* the file's text */
static char *idl_nocomment; /* the same with comments blanked */
static bool tool_missing;

static const char *top_srcdir(void) {
        static char buf[4096];
        const char *e = getenv("BLKLEDGER_TOP_SRCDIR");

        if (!isempty(e))
                return e;
        /* __FILE__ is .../tests/test-idl.c */
        snprintf(buf, sizeof(buf), "%s", __FILE__);
        return dirname(dirname(buf));
}

static char *read_text(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;
        FILE *m;
        char chunk[4096];
        size_t n;

        if (!f)
                return NULL;
        m = open_memstream(&buf, &len);
        if (!m) {
                fclose(f);
                return NULL;
        }
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, n, m);
        fclose(m);
        fclose(f);
        return buf;
}

static int write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        if (!f)
                return -errno;
        fputs(text, f);
        return fclose(f) == 0 ? 0 : -errno;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int group_setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");
        _cleanup_free_ char *path = NULL;

        if (asprintf(&tmpdir, "%s/test-idl.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(tmpdir))
                return -1;
        if (asprintf(&path, "%s/lib/io.blkledger.varlink", top_srcdir()) < 0)
                return -1;
        idl = read_text(path);
        if (!idl) {
                fprintf(stderr, "cannot read %s: %m\n", path);
                return -1;
        }
        /* '#' starts a comment to the end of the line; the IDL has no string literals. */
        idl_nocomment = strdup(idl);
        if (!idl_nocomment)
                return -1;
        for (char *p = idl_nocomment; *p; p++)
                if (*p == '#')
                        for (; *p && *p != '\n'; p++)
                                *p = ' ';
        log_setup(true, LOG_LEVEL_WARNING);
        return 0;
}

static int group_teardown(void **state) {
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(tmpdir);
        free(idl);
        free(idl_nocomment);
        return 0;
}

/* ------------------------------------------------------------------------------------- */
/* A small reader of the IDL: enough to list declarations and the members of a type. */

struct names {
        char **v;
        size_t n;
};

static void names_add(struct names *s, const char *name, size_t len) {
        for (size_t i = 0; i < s->n; i++)
                if (strlen(s->v[i]) == len && strncmp(s->v[i], name, len) == 0)
                        return;
        s->v = realloc(s->v, (s->n + 1) * sizeof(char *));
        assert_non_null(s->v);
        s->v[s->n] = strndup(name, len);
        assert_non_null(s->v[s->n]);
        s->n++;
}

static bool names_has(const struct names *s, const char *name) {
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], name))
                        return true;
        return false;
}

static void names_done(struct names *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct names) {};
}

static bool is_name_char(char c) {
        return isalnum((unsigned char) c) || c == '_';
}

/* Names declared as "<keyword> NAME<after>" at the start of a line (after blanks). after
 * is a set of characters that may follow the name. */
static void declarations(const char *keyword, const char *after, struct names *ret) {
        size_t kl = strlen(keyword);

        for (const char *line = idl_nocomment; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                const char *p = line, *name;

                while (*p == ' ' || *p == '\t')
                        p++;
                if (strncmp(p, keyword, kl) != 0 || p[kl] != ' ')
                        continue;
                p += kl;
                while (*p == ' ')
                        p++;
                name = p;
                while (is_name_char(*p))
                        p++;
                if (p > name && *p && strchr(after, *p))
                        names_add(ret, name, (size_t) (p - name));
        }
}

/* Members of "type NAME (...)": identifiers followed by ':' directly inside its
 * parentheses. */
static void type_members(const char *type, struct names *ret) {
        _cleanup_free_ char *head = NULL;
        const char *p;
        int depth = 0;
        bool expect_name = true;

        assert_true(asprintf(&head, "type %s", type) > 0);
        p = strstr(idl_nocomment, head);
        if (!p)
                fail_msg("no \"%s\" in the IDL", head);
        p += strlen(head);
        if (is_name_char(*p))
                fail_msg("\"%s\" is a prefix of another type", head);
        while (isspace((unsigned char) *p))
                p++;
        assert_int_equal(*p, '(');
        for (; *p; p++) {
                if (*p == '(') {
                        depth++;
                        expect_name = depth == 1;
                        continue;
                }
                if (*p == ')') {
                        if (--depth == 0)
                                break;
                        continue;
                }
                if (depth != 1)
                        continue;
                if (*p == ',') {
                        expect_name = true;
                        continue;
                }
                if (expect_name && is_name_char(*p)) {
                        const char *name = p, *q;

                        while (is_name_char(*p))
                                p++;
                        q = p;
                        while (isspace((unsigned char) *q))
                                q++;
                        if (*q == ':')
                                names_add(ret, name, (size_t) (p - name));
                        expect_name = false;
                        p--;
                }
        }
        assert_int_equal(depth, 0);
}

/* ------------------------------------------------------------------------------------- */

static bool in_path(const char *prog) {
        const char *path = getenv("PATH");
        _cleanup_free_ char *copy = strdup(isempty(path) ? "/usr/bin:/bin" : path);
        char *save = NULL;

        assert_non_null(copy);
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *f = NULL;
                assert_true(asprintf(&f, "%s/%s", d, prog) > 0);
                if (access(f, X_OK) == 0)
                        return true;
        }
        return false;
}

/* Runs the generator on file (in its own directory, where it writes its output);
 * returns its exit status, its output in *ret_output. */
static int run_generator(const char *dir, const char *file, char **ret_output) {
        _cleanup_free_ char *log = NULL;
        int status, fd;
        pid_t pid;

        assert_true(asprintf(&log, "%s/generator.log", dir) > 0);
        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0 || chdir(dir) < 0)
                        _exit(126);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                execlp(GENERATOR, GENERATOR, file, (char *) NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        *ret_output = read_text(log);
        if (!WIFEXITED(status))
                fail_msg(GENERATOR " died of signal %d", WTERMSIG(status));
        return WEXITSTATUS(status);
}

static void test_reference_parser(void **state) {
        _cleanup_free_ char *dir = NULL, *good = NULL, *bad_dir = NULL, *bad = NULL, *broken = NULL,
                            *out = NULL;
        char *p;
        int rc;

        if (!in_path(GENERATOR)) {
                print_message(GENERATOR " is not installed (Debian package varlink-go): cannot check "
                              "the IDL with the reference parser; the test is skipped\n");
                tool_missing = true;
                skip();
        }

        /* A copy in a directory of its own: the generator writes its Go file beside it. */
        assert_true(asprintf(&dir, "%s/good", tmpdir) > 0);
        assert_int_equal(mkdir(dir, 0755), 0);
        assert_true(asprintf(&good, "%s/io.blkledger.varlink", dir) > 0);
        assert_int_equal(write_text(good, idl), 0);
        rc = run_generator(dir, "io.blkledger.varlink", &out);
        if (rc != 0)
                fail_msg(GENERATOR " rejects lib/io.blkledger.varlink (exit %d): %s", rc, out ?: "");
        free(out);
        out = NULL;

        /* The check can fail: the same file with one parenthesis missing is rejected. */
        broken = strdup(idl);
        assert_non_null(broken);
        p = strstr(broken, "method GetStatus()");
        assert_non_null(p);
        p[strlen("method GetStatus(")] = ' ';
        assert_true(asprintf(&bad_dir, "%s/bad", tmpdir) > 0);
        assert_int_equal(mkdir(bad_dir, 0755), 0);
        assert_true(asprintf(&bad, "%s/io.blkledger.varlink", bad_dir) > 0);
        assert_int_equal(write_text(bad, broken), 0);
        rc = run_generator(bad_dir, "io.blkledger.varlink", &out);
        assert_int_not_equal(rc, 0);
        assert_int_not_equal(rc, 127);
}

/* The file declares the interface the daemon's methods are named after. */
static void test_interface_name(void **state) {
        const char *p = idl_nocomment;
        unsigned found = 0;

        for (const char *line = p; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                const char *rest = startswith(line, "interface ");
                size_t n;

                if (!rest)
                        continue;
                found++;
                n = strcspn(rest, " \t\n");
                assert_int_equal(n, strlen(PREFIX) - 1);
                assert_memory_equal(rest, PREFIX, n);
        }
        assert_int_equal(found, 1);
}

static void test_methods_match(void **state) {
        struct names declared = {}, served = {};
        bool ok = true;

        declarations("method", "(", &declared);
        assert_true(declared.n > 0);
        for (const struct method *m = daemon_methods; m->name; m++) {
                const char *member = startswith(m->name, PREFIX);
                if (!member || strchr(member, '.')) {
                        print_error("daemon method %s is not in interface io.blkledger\n", m->name);
                        ok = false;
                        continue;
                }
                names_add(&served, member, strlen(member));
                if (!names_has(&declared, member)) {
                        print_error("daemon method %s is not declared as \"method %s(\"\n", m->name, member);
                        ok = false;
                }
        }
        for (size_t i = 0; i < declared.n; i++)
                if (!names_has(&served, declared.v[i])) {
                        print_error("declared method %s is not in daemon_methods[]\n", declared.v[i]);
                        ok = false;
                }
        names_done(&declared);
        names_done(&served);
        assert_true(ok);
}

static void test_device_fields_declared(void **state) {
        struct names members = {};
        bool ok = true;

        type_members("Device", &members);
        assert_true(members.n > 0);
        for (size_t i = 0; i < device_fields_count; i++)
                if (!names_has(&members, device_fields[i].name)) {
                        print_error("device field %s is not a member of type Device\n", device_fields[i].name);
                        ok = false;
                }
        names_done(&members);
        assert_true(ok);
}

/* What the daemon sends as a Device has exactly the members the IDL declares. */
static void test_device_json_matches_type(void **state) {
        struct device_record rec = { .id = 1, .identity = (char *) "kname:loop0", .state = DEVICE_PRESENT };
        struct names members = {}, sent = {};
        json_object *o;
        bool ok = true;

        device_facts_init(&rec.facts);
        o = device_record_to_json(&rec, NULL);
        assert_non_null(o);
        json_object_object_foreach(o, key, val) {
                (void) val;
                names_add(&sent, key, strlen(key));
        }
        json_object_put(o);
        type_members("Device", &members);
        for (size_t i = 0; i < sent.n; i++)
                if (!names_has(&members, sent.v[i])) {
                        print_error("JSON member %s of a device is not declared in type Device\n", sent.v[i]);
                        ok = false;
                }
        for (size_t i = 0; i < members.n; i++)
                if (!names_has(&sent, members.v[i])) {
                        print_error("type Device declares %s, which the daemon never sends\n", members.v[i]);
                        ok = false;
                }
        names_done(&members);
        names_done(&sent);
        assert_true(ok);
}

/* The members of a JSON object the daemon sends are exactly those of an IDL type. */
static bool json_matches_type(json_object *o, const char *type) {
        struct names members = {}, sent = {};
        bool ok = true;

        json_object_object_foreach(o, key, val) {
                (void) val;
                names_add(&sent, key, strlen(key));
        }
        type_members(type, &members);
        assert_true(members.n > 0);
        for (size_t i = 0; i < sent.n; i++)
                if (!names_has(&members, sent.v[i])) {
                        print_error("JSON member %s is not declared in type %s\n", sent.v[i], type);
                        ok = false;
                }
        for (size_t i = 0; i < members.n; i++)
                if (!names_has(&sent, members.v[i])) {
                        print_error("type %s declares %s, which the daemon never sends\n", type, members.v[i]);
                        ok = false;
                }
        names_done(&members);
        names_done(&sent);
        return ok;
}

/* Expectations and drift items as ListExpectations and ListDrift send them. */
static void test_expectation_and_drift_json_match_types(void **state) {
        struct expectation e = {
                .name = (char *) "backup",
                .match_kind = (char *) "serial",
                .match_value = (char *) "S1",
                .fs_type = (char *) "ext4",
                .fs_label = NULL,
                .min_size = FIELD_NULL,
                .created = 1,
        };
        struct drift_item d = {
                .id = 3, .kind = (char *) "missing", .name = (char *) "backup", .device_id = 0, .since = 1,
        };
        json_object *o;

        o = expectation_to_json(&e);
        assert_non_null(o);
        assert_true(json_matches_type(o, "Expectation"));
        json_object_put(o);

        d.detail = json_object_new_object();
        assert_non_null(d.detail);
        o = drift_item_to_json(&d);
        assert_non_null(o);
        assert_true(json_matches_type(o, "Drift"));
        json_object_put(o);
        json_object_put(d.detail);

        /* The check itself can fail: a type that lacks a member the JSON has. */
        print_message("a mismatch on purpose (the next lines are expected):\n");
        o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string("x"));
        json_object_object_add(o, "undeclared", NULL);
        assert_false(json_matches_type(o, "Expectation"));
        json_object_put(o);
}

/* Rescan became Reconcile: the old name is gone from the interface. */
static void test_reconcile_replaces_rescan(void **state) {
        struct names methods = {}, errors = {};
        static const char *const want_methods[] = { "Reconcile", "SetName", "Expect", "Unexpect", "ListExpectations",
                                                    "ListDrift" };
        static const char *const want_errors[] = { "NameTaken", "NoSuchExpectation" };

        declarations("method", "(", &methods);
        declarations("error", " (\n", &errors);
        assert_false(names_has(&methods, "Rescan"));
        for (size_t i = 0; i < ELEMENTSOF(want_methods); i++)
                if (!names_has(&methods, want_methods[i]))
                        fail_msg("method %s is not declared", want_methods[i]);
        for (size_t i = 0; i < ELEMENTSOF(want_errors); i++)
                if (!names_has(&errors, want_errors[i]))
                        fail_msg("error %s is not declared", want_errors[i]);
        names_done(&methods);
        names_done(&errors);
}

/* What the journal lists as an event has exactly the members of type Event. */
static void test_event_json_matches_type(void **state) {
        _cleanup_free_ char *path = NULL;
        struct names members = {}, sent = {};
        struct journal *j = NULL;
        json_object *a, *after;
        char *err = NULL;
        bool ok = true;

        assert_true(asprintf(&path, "%s/journal.db", tmpdir) > 0);
        assert_int_equal(journal_open(path, &j, &err), 0);
        after = json_object_new_object();
        assert_int_equal(journal_append_event(j, 1, 0, "daemon_started", NULL, after, NULL), 0);
        json_object_put(after);
        a = json_object_new_array();
        assert_int_equal(journal_list_events(j, 0, 10, 0, a), 1);
        json_object_object_foreach(json_object_array_get_idx(a, 0), key, val) {
                (void) val;
                names_add(&sent, key, strlen(key));
        }
        json_object_put(a);
        journal_close(j);

        type_members("Event", &members);
        for (size_t i = 0; i < sent.n; i++)
                if (!names_has(&members, sent.v[i])) {
                        print_error("JSON member %s of an event is not declared in type Event\n", sent.v[i]);
                        ok = false;
                }
        for (size_t i = 0; i < members.n; i++)
                if (!names_has(&sent, members.v[i])) {
                        print_error("type Event declares %s, which the daemon never sends\n", members.v[i]);
                        ok = false;
                }
        names_done(&members);
        names_done(&sent);
        assert_true(ok);
}

/* String literals "io.blkledger.Name" in the daemon's sources. */
static void literals_in_sources(struct names *ret) {
        _cleanup_free_ char *dir = NULL;
        struct dirent *de;
        DIR *d;

        assert_true(asprintf(&dir, "%s/daemon", top_srcdir()) > 0);
        d = opendir(dir);
        if (!d)
                fail_msg("cannot open %s: %s", dir, strerror(errno));
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL, *text = NULL;
                size_t l = strlen(de->d_name);

                if (l < 3 || !streq(de->d_name + l - 2, ".c"))
                        continue;
                assert_true(asprintf(&path, "%s/%s", dir, de->d_name) > 0);
                text = read_text(path);
                assert_non_null(text);
                for (const char *p = text; (p = strstr(p, "\"" PREFIX));) {
                        const char *name = p + strlen("\"" PREFIX), *q = name;

                        while (isalnum((unsigned char) *q))
                                q++;
                        if (*q == '"' && q > name)
                                names_add(ret, name, (size_t) (q - name));
                        p = q;
                }
        }
        closedir(d);
}

static void test_errors_declared(void **state) {
        struct names literals = {}, errors = {}, methods = {};
        unsigned checked = 0;
        bool ok = true;

        literals_in_sources(&literals);
        declarations("error", " (\n", &errors);
        declarations("method", "(", &methods);
        for (const struct method *m = daemon_methods; m->name; m++)
                if (startswith(m->name, PREFIX))
                        names_add(&methods, m->name + strlen(PREFIX), strlen(m->name + strlen(PREFIX)));

        for (size_t i = 0; i < literals.n; i++) {
                if (names_has(&methods, literals.v[i]))
                        continue;
                checked++;
                if (!names_has(&errors, literals.v[i])) {
                        print_error("the daemon sends " PREFIX "%s, which is not declared as \"error %s\"\n",
                                    literals.v[i], literals.v[i]);
                        ok = false;
                }
        }
        /* Not vacuous: the server's own errors at least were found. */
        assert_true(checked >= 3);
        assert_true(names_has(&literals, "ProtocolError"));
        names_done(&literals);
        names_done(&errors);
        names_done(&methods);
        assert_true(ok);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reference_parser),
                cmocka_unit_test(test_interface_name),
                cmocka_unit_test(test_methods_match),
                cmocka_unit_test(test_device_fields_declared),
                cmocka_unit_test(test_device_json_matches_type),
                cmocka_unit_test(test_event_json_matches_type),
                cmocka_unit_test(test_expectation_and_drift_json_match_types),
                cmocka_unit_test(test_reconcile_replaces_rescan),
                cmocka_unit_test(test_errors_declared),
        };
        int r;

        r = cmocka_run_group_tests(tests, group_setup, group_teardown);
        /* Without the reference parser the file was not fully checked: not a pass. */
        if (r == 0 && tool_missing) {
                printf(GENERATOR " missing: exiting 77 (skipped)\n");
                return 77;
        }
        return r;
}
