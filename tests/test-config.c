/* Description: daemon/config-file.c: blkledgerd.conf lines go through the command line's checks; each bad line is refused as FILE:LINE; the command line overrides the file; any bytes are safe. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "config-file.h"
#include "log.h"
#include "options.h"
#include "util.h"

static char *tmpdir, *dir_a, *dir_b, *canon_a, *canon_b, *conf;

static int setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");

        if (asprintf(&tmpdir, "%s/test-config.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(tmpdir))
                return -1;
        if (asprintf(&dir_a, "%s/images-a", tmpdir) < 0 || asprintf(&dir_b, "%s/images-b", tmpdir) < 0 ||
            asprintf(&conf, "%s/blkledgerd.conf", tmpdir) < 0)
                return -1;
        if (mkdir(dir_a, 0755) < 0 || mkdir(dir_b, 0755) < 0)
                return -1;
        canon_a = realpath(dir_a, NULL);
        canon_b = realpath(dir_b, NULL);
        return canon_a && canon_b ? 0 : -1;
}

static int teardown(void **state) {
        unlink(conf);
        rmdir(dir_a);
        rmdir(dir_b);
        rmdir(tmpdir);
        free(tmpdir);
        free(dir_a);
        free(dir_b);
        free(canon_a);
        free(canon_b);
        free(conf);
        return 0;
}

static void write_conf(const char *text) {
        int fd = open(conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

/* Parses text (its strlen) into fresh defaults; returns the result, the message in
 * *ret_error. */
static int parse_text(const char *text, struct options *o, char **ret_error) {
        options_init(o);
        return config_parse_text(text, strlen(text), "test.conf", o, ret_error);
}

/* text must be refused with exactly "test.conf:LINE: ..." containing needle. */
static void expect_refused(const char *text, unsigned line, const char *needle) {
        struct options o;
        char *error = NULL, prefix[64];
        int r = parse_text(text, &o, &error);

        snprintf(prefix, sizeof(prefix), "test.conf:%u: ", line);
        if (r >= 0 || !error || !startswith(error, prefix) || !strstr(error, needle))
                fail_msg("\"%s\": got %d \"%s\", wanted %s...%s", text, r, error ? error : "(null)", prefix, needle);
        free(error);
        options_done(&o);
}

static void test_good_file(void **state) {
        _cleanup_free_ char *text = NULL;
        struct options o;
        char *error = NULL;

        assert_true(asprintf(&text,
                             "# blkledgerd.conf\n"
                             "\n"
                             "   # an indented comment\n"
                             "probe-timeout = 7\n"
                             "log-level=debug\n"
                             "\trescan-interval\t=\t60\t\r\n"
                             "scope = loop:%s\n"
                             "scope = loop:%s\n"
                             "state-dir = /var/lib/a=b#c\n"
                             "foreground = yes\n"
                             "max-clients = 3\n"
                             "backup-keep = 0", /* no newline at the end */
                             dir_a, dir_b) > 0);
        assert_int_equal(parse_text(text, &o, &error), 0);
        assert_null(error);
        assert_int_equal(o.probe_timeout, 7 * USEC_PER_SEC);
        assert_int_equal(o.log_level, LOG_LEVEL_DEBUG);
        assert_int_equal(o.rescan_interval, 60 * USEC_PER_SEC);
        assert_int_equal(o.n_scope_specs, 2);
        assert_true(strstr(o.scope_specs[0], canon_a));
        assert_true(strstr(o.scope_specs[1], canon_b));
        /* Only a leading '#' makes a comment; '=' and '#' are part of a value. */
        assert_string_equal(o.state_dir, "/var/lib/a=b#c");
        assert_true(o.foreground);
        assert_int_equal(o.limits.max_clients, 3);
        assert_int_equal(o.backup_keep, 0);
        options_done(&o);

        /* Empty and comment-only texts are the defaults. */
        assert_int_equal(parse_text("", &o, &error), 0);
        assert_int_equal(o.probe_timeout, 5 * USEC_PER_SEC);
        options_done(&o);
        assert_int_equal(parse_text("\n\n# x = y\n   \n", &o, &error), 0);
        options_done(&o);

        /* A flag set to no stays off. */
        assert_int_equal(parse_text("foreground = no\n", &o, &error), 0);
        assert_false(o.foreground);
        options_done(&o);
}

static void test_not_nul_terminated(void **state) {
        static const char text[] = "log-level = debugging";
        struct options o;
        char *error = NULL;

        /* The length ends the text: "debug", not "debugging". */
        options_init(&o);
        assert_int_equal(config_parse_text(text, strlen("log-level = debug"), "t", &o, &error), 0);
        assert_int_equal(o.log_level, LOG_LEVEL_DEBUG);
        options_done(&o);
}

static void test_repeated_keys(void **state) {
        _cleanup_free_ char *text = NULL;
        struct options o;
        char *error = NULL;

        /* A scalar: the last wins, as on the command line. A list: each adds. */
        assert_true(asprintf(&text, "probe-timeout = 3\nscope = loop:%s\nprobe-timeout = 4\nscope = loop:%s\n", dir_a,
                             dir_b) > 0);
        assert_int_equal(parse_text(text, &o, &error), 0);
        assert_int_equal(o.probe_timeout, 4 * USEC_PER_SEC);
        assert_int_equal(o.n_scope_specs, 2);
        options_done(&o);
}

static void test_errors_name_the_line(void **state) {
        expect_refused("bogus = 1\n", 1, "unknown key 'bogus'");
        expect_refused("# comment\n\nprobe-timeout = 5\nprobe-timeot = 5\n", 4, "unknown key 'probe-timeot'");
        /* No abbreviations of long options either. */
        expect_refused("probe-time = 5\n", 1, "unknown key");
        /* Values are checked as on the command line, with its message. */
        expect_refused("\nprobe-timeout = 0\n", 2, "--probe-timeout");
        expect_refused("probe-timeout = 5s\n", 1, "--probe-timeout");
        expect_refused("log-level = loud\n", 1, "--log-level");
        expect_refused("event-source = netlink\n", 1, "--event-source");
        expect_refused("state-dir =\n", 1, "--state-dir");
        expect_refused("volume-dir = relative\n", 1, "--volume-dir");
        expect_refused("scope = /no/such/prefix\n", 1, "--scope");
        expect_refused("max-clients = 0\n", 1, "--max-clients");
        expect_refused("foreground = maybe\n", 1, "yes or no");
        /* Shape. */
        expect_refused("# ok\nprobe-timeout 5\n", 2, "missing '='");
        expect_refused("= 5\n", 1, "missing key");
        expect_refused("Probe-Timeout = 5\n", 1, "invalid key");
        expect_refused("probe timeout = 5\n", 1, "invalid key");
        expect_refused("--probe-timeout = 5\n", 1, "unknown key");
        /* One-shot options and the file's own option are no settings. */
        expect_refused("help = yes\n", 1, "command-line option");
        expect_refused("version = yes\n", 1, "command-line option");
        expect_refused("observe = sda\n", 1, "command-line option");
        expect_refused("list-crash-points = yes\n", 1, "command-line option");
        expect_refused("config = /etc/other.conf\n", 1, "command-line option");
        /* The first bad line stops the parse; later lines are not looked at. */
        expect_refused("a = 1\nb = 2\n", 1, "'a'");
}

static void test_overlong_and_nul(void **state) {
        size_t n = CONFIG_LINE_MAX + 10;
        _cleanup_free_ char *text = malloc(n + 64);
        struct options o;
        char *error = NULL;

        assert_non_null(text);
        /* A line of exactly the limit is fine (a comment); one byte more is not. */
        strcpy(text, "probe-timeout = 5\n#");
        memset(text + strlen(text), 'x', CONFIG_LINE_MAX - 1);
        strcpy(text + strlen("probe-timeout = 5\n") + CONFIG_LINE_MAX, "\n");
        assert_int_equal(parse_text(text, &o, &error), 0);
        options_done(&o);
        strcpy(text + strlen("probe-timeout = 5\n") + CONFIG_LINE_MAX, "x\n");
        assert_int_equal(parse_text(text, &o, &error), -EINVAL);
        assert_non_null(error);
        assert_true(startswith(error, "test.conf:2: line longer than"));
        free(error);
        options_done(&o);

        {
                static const char nul[] = "log-level = info\nlog-level = de\0bug\n";
                options_init(&o);
                assert_int_equal(config_parse_text(nul, sizeof(nul) - 1, "n.conf", &o, &error), -EINVAL);
                assert_string_equal(error, "n.conf:2: NUL byte in the line");
                free(error);
                options_done(&o);
        }
}

static void test_garbage(void **state) {
        const size_t size = 8 << 20;
        _cleanup_free_ char *buf = malloc(size);
        uint64_t x = 0x9E3779B97F4A7C15ULL;
        struct options o;
        char *error = NULL;

        assert_non_null(buf);
        /* One huge line, then a huge number of short lines. */
        memset(buf, 'a', size);
        options_init(&o);
        assert_int_equal(config_parse_text(buf, size, "big", &o, &error), -EINVAL);
        assert_string_equal(error, "big:1: line longer than 4096 bytes");
        free(error);
        options_done(&o);
        for (size_t i = 0; i < size; i += 2)
                memcpy(buf + i, "#\n", 2);
        options_init(&o);
        assert_int_equal(config_parse_text(buf, size, "big", &o, &error), 0);
        options_done(&o);

        /* Random bytes, and random lines made of the format's own characters: any result,
         * never a crash, a message exactly when refused, and options_done() after it. */
        for (unsigned round = 0; round < 3000; round++) {
                static const char alphabet[] = "=#\n \t\r\0-aelopvst0159:/";
                size_t len = (round * 7919) % 600;
                int r;

                for (size_t i = 0; i < len; i++) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        buf[i] = round % 2 ? (char) x : alphabet[x % (sizeof(alphabet) - 1)];
                }
                options_init(&o);
                r = config_parse_text(buf, len, "fuzz", &o, &error);
                assert_true(r == 0 || r == -EINVAL);
                assert_true((r == 0) == (error == NULL));
                if (error)
                        assert_true(startswith(error, "fuzz:"));
                free(error);
                error = NULL;
                options_done(&o);
        }
}

static void test_load_file(void **state) {
        _cleanup_free_ char *missing = NULL;
        struct options o;
        char *error = NULL;

        assert_true(asprintf(&missing, "%s/none.conf", tmpdir) > 0);
        options_init(&o);
        assert_int_equal(config_load_file(missing, false, &o, &error), 0);
        assert_null(error);
        assert_int_equal(config_load_file(missing, true, &o, &error), -ENOENT);
        assert_true(startswith(error, missing));
        free(error);
        assert_int_equal(config_load_file(tmpdir, true, &o, &error), -EINVAL);
        assert_non_null(strstr(error, "not a regular file"));
        free(error);
        options_done(&o);

        write_conf("hook-timeout = 9\n");
        options_init(&o);
        assert_int_equal(config_load_file(conf, true, &o, &error), 1);
        assert_int_equal(o.hook_timeout, 9 * USEC_PER_SEC);
        options_done(&o);

        write_conf("hook-timeout = 9\n\n\nhook-timeout = never\n");
        options_init(&o);
        assert_int_equal(config_load_file(conf, false, &o, &error), -EINVAL);
        assert_true(startswith(error, conf));
        assert_true(startswith(error + strlen(conf), ":4: invalid --hook-timeout 'never'"));
        free(error);
        options_done(&o);

        /* Writable by others than root, or owned by another user: refused, as it picks the
         * devices the daemon acts on. Root's group may write. Giving the file away needs
         * root; as another user only the mode is tried. */
        {
                static const struct { mode_t mode; uid_t uid; gid_t gid; int r; } cases[] = {
                        { 0644, 0, 0, 1 },       { 0664, 0, 0, 1 },         { 0600, 0, 0, 1 },
                        { 0646, 0, 0, -EPERM },  { 0664, 0, 4242, -EPERM }, { 0644, 4242, 0, -EPERM },
                };
                bool root = geteuid() == 0;

                write_conf("hook-timeout = 9\n");
                for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                        if (!root && (cases[i].uid != 0 || cases[i].gid != 0 || (cases[i].mode & S_IWGRP)))
                                continue;
                        if (root)
                                assert_int_equal(chown(conf, cases[i].uid, cases[i].gid), 0);
                        assert_int_equal(chmod(conf, cases[i].mode), 0);
                        options_init(&o);
                        error = NULL;
                        assert_int_equal(config_load_file(conf, true, &o, &error), cases[i].r);
                        if (cases[i].r < 0)
                                assert_non_null(strstr(error, "refused: others than root can change it"));
                        else
                                assert_null(error);
                        free(error);
                        options_done(&o);
                }
                assert_int_equal(chmod(conf, 0644), 0);
                if (root)
                        assert_int_equal(chown(conf, 0, 0), 0);
        }

        {
                /* Larger than a configuration file can be. */
                int fd = open(conf, O_WRONLY | O_TRUNC | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(ftruncate(fd, CONFIG_FILE_MAX + 1), 0);
                close(fd);
                options_init(&o);
                assert_int_equal(config_load_file(conf, true, &o, &error), -EFBIG);
                free(error);
                options_done(&o);
        }
}

#define ARGV(...) ((char *[]) { (char *) "blkledgerd", __VA_ARGS__, NULL })

static int parse_argv(char **argv, struct options *o, char **error) {
        int argc = 0;

        while (argv[argc])
                argc++;
        return options_parse(argc, argv, o, error);
}

static void test_command_line_overrides(void **state) {
        _cleanup_free_ char *text = NULL, *scope_b = NULL;
        struct options o;
        char *error = NULL;

        assert_true(asprintf(&text, "probe-timeout = 7\nhook-timeout = 8\nscope = loop:%s\n", dir_a) > 0);
        write_conf(text);
        assert_true(asprintf(&scope_b, "loop:%s", dir_b) > 0);

        /* The file alone. */
        assert_int_equal(parse_argv(ARGV("--config", conf), &o, &error), 0);
        assert_true(o.config_loaded);
        assert_string_equal(o.config_path, conf);
        assert_int_equal(o.probe_timeout, 7 * USEC_PER_SEC);
        assert_int_equal(o.n_scope_specs, 1);
        options_done(&o);

        /* Options given override it, before or after --config; a list given replaces the
         * file's list; the rest of the file stays. */
        assert_int_equal(parse_argv(ARGV("--probe-timeout", "2", "--config", conf, "--scope", scope_b), &o, &error), 0);
        assert_int_equal(o.probe_timeout, 2 * USEC_PER_SEC);
        assert_int_equal(o.hook_timeout, 8 * USEC_PER_SEC);
        assert_int_equal(o.n_scope_specs, 1);
        assert_true(strstr(o.scope_specs[0], canon_b));
        options_done(&o);

        /* A bad file is refused even when the command line sets the same key. */
        write_conf("probe-timeout = forever\n");
        assert_int_equal(parse_argv(ARGV("--config", conf, "--probe-timeout", "2"), &o, &error), -EINVAL);
        assert_true(startswith(error, conf));
        assert_true(startswith(error + strlen(conf), ":1: "));
        free(error);
        options_done(&o);

        /* A --config that does not exist is an error; so is an empty one. */
        assert_int_equal(parse_argv(ARGV("--config", "/nonexistent/blkledgerd.conf"), &o, &error), -ENOENT);
        assert_non_null(strstr(error, "/nonexistent/blkledgerd.conf"));
        free(error);
        options_done(&o);
        assert_int_equal(parse_argv(ARGV("--config", ""), &o, &error), -EINVAL);
        free(error);
        options_done(&o);

        /* --observe does not run the daemon: no file is read. */
        assert_int_equal(parse_argv(ARGV("--config", conf, "--observe", "sda"), &o, &error), 0);
        assert_false(o.config_loaded);
        options_done(&o);
}

static void test_reload(void **state) {
        struct options o, n;
        char *error = NULL;

        write_conf("probe-timeout = 7\nlog-level = warning\n");
        assert_int_equal(parse_argv(ARGV("--config", conf, "--log-level", "debug"), &o, &error), 0);
        assert_int_equal(o.log_level, LOG_LEVEL_DEBUG);

        /* The same file and command line again: the file's new values, the command line
         * still over them. */
        write_conf("probe-timeout = 9\nlog-level = error\nbackup-keep = 2\n");
        assert_int_equal(options_reload(&o, &n, &error), 0);
        assert_int_equal(n.probe_timeout, 9 * USEC_PER_SEC);
        assert_int_equal(n.log_level, LOG_LEVEL_DEBUG);
        assert_int_equal(n.backup_keep, 2);
        assert_string_equal(n.config_path, conf);
        options_done(&n);

        write_conf("probe-timeout = 9\nbackup-keep = lots\n");
        assert_int_equal(options_reload(&o, &n, &error), -EINVAL);
        assert_true(startswith(error + strlen(conf), ":2: "));
        free(error);
        options_done(&n);
        /* The first parse is untouched. */
        assert_int_equal(o.probe_timeout, 7 * USEC_PER_SEC);
        options_done(&o);
}

/* Runs "blkledgerd --help" into memory. */
static char *help_text(void) {
        struct options o;
        char *error = NULL, *out;
        int fd = memfd_create("stdout", MFD_CLOEXEC), saved;
        off_t size;

        assert_true(fd >= 0);
        fflush(stdout);
        saved = dup(STDOUT_FILENO);
        assert_true(dup2(fd, STDOUT_FILENO) >= 0);
        assert_int_equal(parse_argv(ARGV("--help"), &o, &error), 1);
        fflush(stdout);
        assert_true(dup2(saved, STDOUT_FILENO) >= 0);
        close(saved);
        options_done(&o);
        size = lseek(fd, 0, SEEK_END);
        out = calloc(1, (size_t) size + 1);
        assert_non_null(out);
        assert_int_equal(pread(fd, out, (size_t) size, 0), size);
        close(fd);
        return out;
}

/* Every long option in --help is a key of the file, but the one-shot ones: options added
 * later need nothing more to be configurable. */
static void test_every_option_is_a_key(void **state) {
        _cleanup_free_ char *help = help_text();
        unsigned n = 0;

        for (const char *p = strstr(help, "--"); p; p = strstr(p, "--")) {
                char name[64];
                size_t l = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz-");
                struct options o;
                char *error = NULL;
                int r;

                /* Only the option column ("  -f, --foreground", "      --scope"), not
                 * mentions in the descriptions. */
                bool column = p - help >= 2 && p[-1] == ' ' && (p[-2] == ' ' || p[-2] == ',');
                p += 2;
                if (!column || l == 0 || l >= sizeof(name))
                        continue;
                memcpy(name, p, l);
                name[l] = 0;
                options_init(&o);
                /* "\x01" is no valid value of anything: the key must be known and the value
                 * refused (or, for a free-form one, taken). */
                r = options_set(&o, name, "\x01", &error);
                if (streq(name, "help") || streq(name, "version") || streq(name, "observe") ||
                    streq(name, "list-crash-points") || streq(name, "config"))
                        assert_int_equal(r, -ENOENT);
                else if (r == -ENOENT)
                        fail_msg("--%s is not accepted in the configuration file: %s", name, error);
                else
                        n++;
                free(error);
                options_done(&o);
        }
        assert_true(n >= 20);
}

/* docs/blkledgerd.conf, as installed, sets nothing; with its settings uncommented (but
 * the example scope, whose directory need not exist) it is still valid and has the
 * defaults. */
static void test_shipped_file(void **state) {
        const char *srcdir = getenv("BLKLEDGER_TOP_SRCDIR");
        _cleanup_free_ char *path = NULL, *text = NULL, *uncommented = NULL;
        struct options o, defaults;
        char *error = NULL;
        size_t size = 0, k = 0;
        FILE *f;

        assert_true(asprintf(&path, "%s/docs/blkledgerd.conf", isempty(srcdir) ? "." : srcdir) > 0);
        f = fopen(path, "re");
        if (!f)
                skip();
        assert_true(getdelim(&text, &size, 0, f) > 0);
        fclose(f);
        options_init(&o);
        assert_int_equal(config_load_file(path, true, &o, &error), 1);
        assert_int_equal(o.n_settings, 0);
        options_done(&o);

        uncommented = calloc(1, strlen(text) + 1);
        assert_non_null(uncommented);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
                const char *l = line;
                if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && strstr(line, " = ") &&
                    !startswith(line, "#scope"))
                        l = line + 1;
                k += (size_t) sprintf(uncommented + k, "%s\n", l);
        }
        options_init(&o);
        options_init(&defaults);
        assert_int_equal(config_parse_text(uncommented, k, path, &o, &error), 0);
        assert_true(o.n_settings >= 19);
        assert_int_equal(o.probe_timeout, defaults.probe_timeout);
        assert_int_equal(o.rescan_interval, defaults.rescan_interval);
        assert_int_equal(o.event_max_age, defaults.event_max_age);
        assert_int_equal(o.limits.max_clients, defaults.limits.max_clients);
        assert_int_equal(o.limits.watch_max_lag, defaults.limits.watch_max_lag);
        assert_int_equal(o.rcvbuf, defaults.rcvbuf);
        options_done(&o);
        options_done(&defaults);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_file),
                cmocka_unit_test(test_not_nul_terminated),
                cmocka_unit_test(test_repeated_keys),
                cmocka_unit_test(test_errors_name_the_line),
                cmocka_unit_test(test_overlong_and_nul),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_load_file),
                cmocka_unit_test(test_command_line_overrides),
                cmocka_unit_test(test_reload),
                cmocka_unit_test(test_every_option_is_a_key),
                cmocka_unit_test(test_shipped_file),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
