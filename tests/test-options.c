/* Description: daemon/options.c: blkledgerd's defaults, every option, and refusals naming the option. */
/* Defaults, every option and its bounds, --scope (loop: prefix, absolute existing
 * directory, canonical, repeatable); every bad command line gives -EINVAL with a message
 * naming the offending option; --help and --version print and return 1. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "log.h"
#include "options.h"
#include "util.h"

/* A private directory with two scope directories and a regular file. */
static char *tmpdir, *dir_a, *dir_b, *file_f;
/* The same, canonical (the temporary directory may sit behind a symlink). */
static char *canon_a, *canon_b;

static int setup(void **state) {
        const char *base = getenv("BLKLEDGER_TEST_TMPDIR");
        int fd;

        if (asprintf(&tmpdir, "%s/test-options.XXXXXX", isempty(base) ? "/tmp" : base) < 0 || !mkdtemp(tmpdir))
                return -1;
        if (asprintf(&dir_a, "%s/images-a", tmpdir) < 0 || asprintf(&dir_b, "%s/images-b", tmpdir) < 0 ||
            asprintf(&file_f, "%s/disk.img", tmpdir) < 0)
                return -1;
        if (mkdir(dir_a, 0755) < 0 || mkdir(dir_b, 0755) < 0)
                return -1;
        fd = open(file_f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -1;
        close(fd);
        canon_a = realpath(dir_a, NULL);
        canon_b = realpath(dir_b, NULL);
        return canon_a && canon_b ? 0 : -1;
}

static int teardown(void **state) {
        unlink(file_f);
        rmdir(dir_a);
        rmdir(dir_b);
        rmdir(tmpdir);
        free(canon_a);
        free(canon_b);
        free(file_f);
        free(dir_a);
        free(dir_b);
        free(tmpdir);
        return 0;
}

#define ARGV(...) ((char *[]) { (char *) "blkledgerd", __VA_ARGS__, NULL })

static int parse(char **argv, struct options *o, char **error) {
        int argc = 0;

        while (argv[argc])
                argc++;
        return options_parse(argc, argv, o, error);
}

/* Parses a command line that must be refused; the message must contain each of the
 * NULL-terminated needles. */
static void expect_refused(char **argv, const char *const *needles) {
        struct options o;
        char *error = NULL;
        int r = parse(argv, &o, &error);
        char msg[512] = "";

        if (r != -EINVAL)
                snprintf(msg, sizeof(msg), "'%s' returned %d, not -EINVAL", argv[1], r);
        else if (!error)
                snprintf(msg, sizeof(msg), "'%s' refused without a message", argv[1]);
        else
                for (const char *const *n = needles; *n; n++)
                        if (!strstr(error, *n)) {
                                snprintf(msg, sizeof(msg), "'%s': message \"%s\" does not name '%s'", argv[1],
                                         error, *n);
                                break;
                        }
        free(error);
        options_done(&o);
        if (msg[0])
                fail_msg("%s", msg);
}

#define REFUSED(argv, ...) expect_refused(argv, (const char *const[]) { __VA_ARGS__, NULL })

static void test_defaults(void **state) {
        struct options o;
        char *error = (char *) "stale";

        assert_int_equal(parse(ARGV(NULL), &o, &error), 0);
        assert_null(error);
        assert_false(o.foreground);
        assert_string_equal(o.state_dir, BL_DEFAULT_STATE_DIR);
        assert_string_equal(o.socket_path, BL_DEFAULT_SOCKET);
        assert_false(scope_is_set(&o.scope));
        assert_int_equal(o.n_scope_specs, 0);
        assert_int_equal(o.log_level, LOG_LEVEL_INFO);
        assert_int_equal(o.event_source, EVENT_SOURCE_AUTO);
        assert_int_equal(o.rcvbuf, 128 * 1024 * 1024);
        assert_int_equal(o.rescan_interval, 300 * USEC_PER_SEC);
        assert_int_equal(o.limits.max_message, server_default_limits.max_message);
        assert_int_equal(o.limits.max_clients, server_default_limits.max_clients);
        assert_int_equal(o.limits.max_clients_user, server_default_limits.max_clients_user);
        assert_int_equal(o.limits.partial_timeout, server_default_limits.partial_timeout);
        assert_int_equal(o.limits.stall_timeout, server_default_limits.stall_timeout);
        assert_int_equal(o.limits.watch_max_lag, server_default_limits.watch_max_lag);
        assert_null(o.observe);

        options_done(&o);
        assert_null(o.state_dir);
        assert_null(o.socket_path);
}

static void test_every_option(void **state) {
        _cleanup_free_ char *scope = NULL, *want_spec = NULL;
        struct options o;
        char *error = NULL;

        assert_true(asprintf(&scope, "loop:%s", dir_a) > 0);
        assert_true(asprintf(&want_spec, "loop:%s", canon_a) > 0);
        assert_int_equal(parse(ARGV("--foreground", "--state-dir", "/srv/ledger", "--socket", "/run/bl.sock",
                                    "--scope", scope, "--event-source", "kernel", "--rescan-interval", "60",
                                    "--receive-buffer", "4194304", "--max-clients", "8", "--watch-max-lag", "500",
                                    "--log-level", "debug", "--observe", "sda"),
                               &o, &error),
                         0);
        assert_null(error);
        assert_true(o.foreground);
        assert_string_equal(o.state_dir, "/srv/ledger");
        assert_string_equal(o.socket_path, "/run/bl.sock");
        assert_true(scope_is_set(&o.scope));
        assert_int_equal(o.scope.n_loop_dirs, 1);
        assert_string_equal(o.scope.loop_dirs[0], canon_a);
        assert_int_equal(o.n_scope_specs, 1);
        assert_string_equal(o.scope_specs[0], want_spec);
        assert_int_equal(o.event_source, EVENT_SOURCE_KERNEL);
        assert_int_equal(o.rescan_interval, 60 * USEC_PER_SEC);
        assert_int_equal(o.rcvbuf, 4194304);
        assert_int_equal(o.limits.max_clients, 8);
        assert_int_equal(o.limits.watch_max_lag, 500);
        /* Limits without an option keep their defaults. */
        assert_int_equal(o.limits.max_message, server_default_limits.max_message);
        assert_int_equal(o.log_level, LOG_LEVEL_DEBUG);
        assert_string_equal(o.observe, "sda");
        options_done(&o);
}

static void test_short_and_equals_forms(void **state) {
        struct options o;
        char *error = NULL;

        assert_int_equal(parse(ARGV("-f", "-s", "/a", "-S", "/b.sock"), &o, &error), 0);
        assert_true(o.foreground);
        assert_string_equal(o.state_dir, "/a");
        assert_string_equal(o.socket_path, "/b.sock");
        options_done(&o);

        assert_int_equal(parse(ARGV("--state-dir=/c", "--socket=/d.sock", "--rescan-interval=0", "-s/e"), &o,
                               &error),
                         0);
        /* The last of a repeated option counts. */
        assert_string_equal(o.state_dir, "/e");
        assert_string_equal(o.socket_path, "/d.sock");
        assert_int_equal(o.rescan_interval, 0);
        options_done(&o);

        /* Unambiguous abbreviations of long options, as getopt_long allows. */
        assert_int_equal(parse(ARGV("--fore", "--log=warning"), &o, &error), 0);
        assert_true(o.foreground);
        assert_int_equal(o.log_level, LOG_LEVEL_WARNING);
        options_done(&o);
        assert_null(error);
}

static void test_event_source(void **state) {
        static const struct {
                const char *arg;
                enum event_source source;
        } good[] = {
                { "auto", EVENT_SOURCE_AUTO },
                { "udev", EVENT_SOURCE_UDEV },
                { "kernel", EVENT_SOURCE_KERNEL },
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                struct options o;
                char *error = NULL;

                assert_int_equal(parse(ARGV("--event-source", (char *) good[i].arg), &o, &error), 0);
                assert_int_equal(o.event_source, good[i].source);
                options_done(&o);
        }
        REFUSED(ARGV("--event-source", "systemd"), "--event-source", "systemd");
        REFUSED(ARGV("--event-source", "Kernel"), "--event-source");
        REFUSED(ARGV("--event-source", ""), "--event-source");
}

static void test_log_level(void **state) {
        static const struct {
                const char *arg;
                int level;
        } good[] = {
                { "error", LOG_LEVEL_ERROR },
                { "warning", LOG_LEVEL_WARNING },
                { "info", LOG_LEVEL_INFO },
                { "debug", LOG_LEVEL_DEBUG },
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                struct options o;
                char *error = NULL;

                assert_int_equal(parse(ARGV("--log-level", (char *) good[i].arg), &o, &error), 0);
                assert_int_equal(o.log_level, good[i].level);
                options_done(&o);
        }
        REFUSED(ARGV("--log-level", "verbose"), "--log-level", "verbose");
        REFUSED(ARGV("--log-level", "7"), "--log-level");
}

static void test_numbers(void **state) {
        static const struct {
                const char *option, *arg;
                bool ok;
        } cases[] = {
                { "--rescan-interval", "0", true },
                { "--rescan-interval", "31536000", true }, /* a year */
                { "--rescan-interval", "31536001", false },
                { "--rescan-interval", "-1", false },
                { "--rescan-interval", "5m", false },
                { "--rescan-interval", "1.5", false },
                { "--rescan-interval", "", false },
                { "--rescan-interval", " 60", false },
                { "--receive-buffer", "0", true },
                { "--receive-buffer", "2147483647", true },
                { "--receive-buffer", "2147483648", false },
                { "--receive-buffer", "-4096", false },
                { "--receive-buffer", "128M", false },
                { "--max-clients", "1", true },
                { "--max-clients", "65536", true },
                { "--max-clients", "0", false },
                { "--max-clients", "65537", false },
                { "--max-clients", "ten", false },
                { "--watch-max-lag", "1", true },
                { "--watch-max-lag", "9223372036854775807", true },
                { "--watch-max-lag", "0", false },
                { "--watch-max-lag", "9223372036854775808", false },
                { "--watch-max-lag", "-5", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (cases[i].ok) {
                        struct options o;
                        char *error = NULL;
                        int r = parse(ARGV((char *) cases[i].option, (char *) cases[i].arg), &o, &error);

                        if (r != 0)
                                fail_msg("%s %s refused: %s", cases[i].option, cases[i].arg, error ? error : "?");
                        options_done(&o);
                } else
                        REFUSED(ARGV((char *) cases[i].option, (char *) cases[i].arg), cases[i].option);
        }
}

static void test_number_values(void **state) {
        struct options o;
        char *error = NULL;

        assert_int_equal(parse(ARGV("--rescan-interval", "31536000", "--receive-buffer", "2147483647",
                                    "--max-clients", "65536", "--watch-max-lag", "9223372036854775807"),
                               &o, &error),
                         0);
        assert_int_equal(o.rescan_interval, 31536000LL * USEC_PER_SEC);
        assert_int_equal(o.rcvbuf, INT32_MAX);
        assert_int_equal(o.limits.max_clients, 65536);
        assert_int_equal(o.limits.watch_max_lag, INT64_MAX);
        options_done(&o);
}

static void test_scope(void **state) {
        _cleanup_free_ char *a = NULL, *b = NULL, *a_dotted = NULL, *want_a = NULL, *want_b = NULL;
        struct options o;
        char *error = NULL;

        assert_true(asprintf(&a, "loop:%s", dir_a) > 0);
        assert_true(asprintf(&b, "loop:%s/", dir_b) > 0);
        assert_true(asprintf(&a_dotted, "loop:%s/../images-a/.", dir_b) > 0);
        assert_true(asprintf(&want_a, "loop:%s", canon_a) > 0);
        assert_true(asprintf(&want_b, "loop:%s", canon_b) > 0);

        /* Repeatable; each directory stored canonical, also in the specs shown by status. */
        assert_int_equal(parse(ARGV("--scope", a, "--scope", b, "--scope", a_dotted), &o, &error), 0);
        assert_null(error);
        assert_int_equal(o.scope.n_loop_dirs, 3);
        assert_string_equal(o.scope.loop_dirs[0], canon_a);
        assert_string_equal(o.scope.loop_dirs[1], canon_b);
        assert_string_equal(o.scope.loop_dirs[2], canon_a);
        assert_int_equal(o.n_scope_specs, 3);
        assert_string_equal(o.scope_specs[0], want_a);
        assert_string_equal(o.scope_specs[1], want_b);
        assert_string_equal(o.scope_specs[2], want_a);
        options_done(&o);
        assert_int_equal(o.n_scope_specs, 0);
        assert_int_equal(o.scope.n_loop_dirs, 0);
}

static void test_scope_refused(void **state) {
        /* On the stack: a failing REFUSED() jumps past cleanup handlers. */
        char missing[PATH_MAX + 32], no_prefix[PATH_MAX + 32], good[PATH_MAX + 32];

        snprintf(missing, sizeof(missing), "loop:%s/does-not-exist", tmpdir);
        snprintf(no_prefix, sizeof(no_prefix), "%s", dir_a);
        snprintf(good, sizeof(good), "loop:%s", dir_a);

        REFUSED(ARGV("--scope", no_prefix), "--scope", "loop:");
        REFUSED(ARGV("--scope", "file:/tmp"), "--scope", "loop:");
        REFUSED(ARGV("--scope", "LOOP:/tmp"), "--scope");
        REFUSED(ARGV("--scope", "loop:tmp/images"), "--scope", "absolute");
        REFUSED(ARGV("--scope", "loop:"), "--scope");
        REFUSED(ARGV("--scope", missing), "--scope", "does not exist");
        /* One bad scope among good ones still fails the whole command line. */
        REFUSED(ARGV("--scope", good, "--scope", missing), "--scope");
}

static void test_scope_must_be_directory(void **state) {
        char file[PATH_MAX + 32];

        /* --scope loop:DIR names a directory; a regular file can hold no backing files,
         * so a daemon started with one would silently observe nothing. */
        snprintf(file, sizeof(file), "loop:%s", file_f);
        REFUSED(ARGV("--scope", file), "--scope");
}

static void test_unknown_options(void **state) {
        REFUSED(ARGV("--bogus"), "--bogus");
        REFUSED(ARGV("--bogus=1"), "--bogus");
        REFUSED(ARGV("-x"), "-x");
        REFUSED(ARGV("-f", "-q"), "-q");
        /* A no-argument option given one. */
        REFUSED(ARGV("--foreground=yes"), "--foreground");
        /* An abbreviation of several options is no option. */
        REFUSED(ARGV("--s", "/x"), "--s");
        REFUSED(ARGV("extra"), "extra");
        REFUSED(ARGV("-f", "--", "--foreground"), "--foreground");
}

static void test_unknown_option_in_cluster(void **state) {
        /* "-xf": the unknown option comes first in a cluster of short options. */
        REFUSED(ARGV("-xf"), "-x");
        REFUSED(ARGV("-fx"), "x");
}

static void test_missing_argument(void **state) {
        REFUSED(ARGV("--state-dir"), "--state-dir");
        REFUSED(ARGV("-s"), "-s");
        REFUSED(ARGV("-f", "-S"), "-S");
        REFUSED(ARGV("--scope"), "--scope");
        REFUSED(ARGV("--rescan-interval"), "--rescan-interval");
        REFUSED(ARGV("--observe"), "--observe");
        /* Empty paths are no paths. */
        REFUSED(ARGV("--state-dir", ""), "--state-dir");
        REFUSED(ARGV("--socket", ""), "--socket");
        REFUSED(ARGV("-S", ""), "--socket");
}

/* Runs options_parse() and options_done() in a child, which must exit cleanly: heap
 * corruption aborts it (or makes AddressSanitizer report) without taking the test
 * program down. Appends what went wrong to problems. */
static void refuse_in_child(char **argv, char *problems, size_t size) {
        size_t l = strlen(problems);
        int status;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct options o;
                char *error = NULL;
                int r = parse(argv, &o, &error);

                free(error);
                options_done(&o);
                _exit(r == -EINVAL ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status))
                snprintf(problems + l, size - l, "[%s %s %s '%s': killed by signal %d] ", argv[1], argv[2],
                         argv[3], argv[4], WTERMSIG(status));
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                snprintf(problems + l, size - l, "[%s %s %s '%s': exit status %d] ", argv[1], argv[2], argv[3],
                         argv[4], WEXITSTATUS(status));
}

static void test_repeated_option_then_empty(void **state) {
        char problems[1024] = "";

        /* A valid value, then an invalid one for the same option: the first must not be
         * freed twice. */
        refuse_in_child(ARGV("--state-dir", "/var/lib/blkledger-test-a", "--state-dir", ""), problems,
                        sizeof(problems));
        refuse_in_child(ARGV("--socket", "/run/blkledger-test-a.sock", "--socket", ""), problems, sizeof(problems));
        refuse_in_child(ARGV("-s", "/var/lib/blkledger-test-b", "-s", ""), problems, sizeof(problems));
        if (problems[0])
                fail_msg("options_done() after a refused repeated option: %s", problems);
}

/* Runs a parse with stdout sent to an anonymous file; returns what was printed. */
static char *parse_capturing_stdout(char **argv, int *ret) {
        struct options o;
        char *error = NULL, *out;
        int fd = memfd_create("stdout", MFD_CLOEXEC), saved;
        off_t size;

        assert_true(fd >= 0);

        fflush(stdout);
        saved = dup(STDOUT_FILENO);
        assert_true(saved >= 0);
        assert_true(dup2(fd, STDOUT_FILENO) >= 0);
        *ret = parse(argv, &o, &error);
        fflush(stdout);
        assert_true(dup2(saved, STDOUT_FILENO) >= 0);
        close(saved);
        free(error);
        options_done(&o);

        size = lseek(fd, 0, SEEK_END);
        assert_true(size >= 0);
        out = calloc(1, (size_t) size + 1);
        assert_non_null(out);
        assert_int_equal(pread(fd, out, (size_t) size, 0), size);
        close(fd);
        return out;
}

static void test_help_and_version(void **state) {
        _cleanup_free_ char *help = NULL, *help_short = NULL, *version = NULL, *version_short = NULL;
        int r;

        help = parse_capturing_stdout(ARGV("--help"), &r);
        assert_int_equal(r, 1);
        assert_true(startswith(help, "Usage: blkledgerd"));
        /* Every option is documented. */
        assert_non_null(strstr(help, "--scope loop:DIR"));
        assert_non_null(strstr(help, "--rescan-interval"));
        assert_non_null(strstr(help, "--watch-max-lag"));
        assert_non_null(strstr(help, BL_DEFAULT_STATE_DIR));

        help_short = parse_capturing_stdout(ARGV("-f", "-h", "--bogus"), &r);
        /* Help stops the parse: the bad option after it does not matter. */
        assert_int_equal(r, 1);
        assert_string_equal(help_short, help);

        version = parse_capturing_stdout(ARGV("--version"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(version, "blkledgerd " PACKAGE_VERSION "\n");
        version_short = parse_capturing_stdout(ARGV("-V"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(version_short, version);
}

static void test_parse_twice(void **state) {
        struct options o;
        char *error = NULL;

        /* getopt's state is reset: a refused parse does not spoil the next one. */
        REFUSED(ARGV("-f", "--bogus", "-s"), "--bogus");
        assert_int_equal(parse(ARGV("-s", "/first"), &o, &error), 0);
        assert_string_equal(o.state_dir, "/first");
        assert_false(o.foreground);
        options_done(&o);
        assert_int_equal(parse(ARGV("-f", "-s", "/second"), &o, &error), 0);
        assert_string_equal(o.state_dir, "/second");
        assert_true(o.foreground);
        options_done(&o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_every_option),
                cmocka_unit_test(test_short_and_equals_forms),
                cmocka_unit_test(test_event_source),
                cmocka_unit_test(test_log_level),
                cmocka_unit_test(test_numbers),
                cmocka_unit_test(test_number_values),
                cmocka_unit_test(test_scope),
                cmocka_unit_test(test_scope_refused),
                cmocka_unit_test(test_scope_must_be_directory),
                cmocka_unit_test(test_unknown_options),
                cmocka_unit_test(test_unknown_option_in_cluster),
                cmocka_unit_test(test_missing_argument),
                cmocka_unit_test(test_repeated_option_then_empty),
                cmocka_unit_test(test_help_and_version),
                cmocka_unit_test(test_parse_twice),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
