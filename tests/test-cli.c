/* Description: blkledger's command line parsing, terminal escaping, tables and event summaries. */
/* tools/cli-args.c: commands, argument counts and option checks with messages that name
 * the problem, per-command help, --match and sizes. tools/output.c: terminal-safe escaping of device-supplied strings, column
 * widths, exact table layout, and one-line summaries of appeared, changed and disappeared
 * events. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/mman.h>

#include "cli.h"
#include "util.h"

#define ARGV(...) ((char *[]) { (char *) "blkledger", __VA_ARGS__, NULL })

static int parse(char **argv, struct cli_args *a, char **error) {
        int argc = 0;

        while (argv[argc])
                argc++;
        return cli_parse(argc, argv, a, error);
}

/* A command line that must be refused with a message containing needle. */
static void expect_refused(char **argv, const char *needle) {
        struct cli_args a;
        char *error = NULL;
        int r = parse(argv, &a, &error);
        char msg[512] = "";

        if (r != -EINVAL)
                snprintf(msg, sizeof(msg), "'%s %s' returned %d, not -EINVAL", argv[1], argv[2] ? argv[2] : "",
                         r);
        else if (!error || !strstr(error, needle))
                snprintf(msg, sizeof(msg), "'%s %s': message \"%s\" does not contain \"%s\"", argv[1],
                         argv[2] ? argv[2] : "", error ? error : "(none)", needle);
        free(error);
        cli_args_done(&a);
        if (msg[0])
                fail_msg("%s", msg);
}

/* ---- cli_parse --------------------------------------------------------------------- */

static void test_parse_commands(void **state) {
        static const struct {
                const char *name;
                enum cli_command cmd;
        } commands[] = {
                { "list", CMD_LIST },         { "show", CMD_SHOW },
                { "history", CMD_HISTORY },   { "watch", CMD_WATCH },
                { "status", CMD_STATUS },     { "reconcile", CMD_RECONCILE },
                { "expectations", CMD_EXPECTATIONS }, { "drift", CMD_DRIFT },
        };

        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                struct cli_args a;
                char *error = (char *) "stale";
                int r = commands[i].cmd == CMD_SHOW ? parse(ARGV("show", "sda"), &a, &error) :
                                                      parse(ARGV((char *) commands[i].name), &a, &error);

                assert_int_equal(r, 0);
                assert_null(error);
                assert_int_equal(a.command, commands[i].cmd);
                /* Defaults. */
                assert_null(a.socket);
                assert_false(a.json);
                assert_false(a.no_legend);
                assert_null(a.state);
                assert_int_equal(a.since, -1);
                assert_int_equal(a.limit, 0);
                assert_null(a.name);
                assert_false(a.remove);
                assert_null(a.match_kind);
                assert_null(a.match_value);
                assert_null(a.fs_type);
                assert_null(a.fs_label);
                assert_int_equal(a.min_size, -1);
                if (commands[i].cmd == CMD_SHOW)
                        assert_string_equal(a.device, "sda");
                else
                        assert_null(a.device);
                cli_args_done(&a);
                assert_null(a.device);
        }
}

static void test_parse_arguments(void **state) {
        struct cli_args a;
        char *error = NULL;

        /* history takes an optional device. */
        assert_int_equal(parse(ARGV("history"), &a, &error), 0);
        assert_null(a.device);
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("history", "/dev/sda"), &a, &error), 0);
        assert_string_equal(a.device, "/dev/sda");
        cli_args_done(&a);
        /* show takes ids and MAJ:MIN as they are. */
        assert_int_equal(parse(ARGV("show", "8:16"), &a, &error), 0);
        assert_string_equal(a.device, "8:16");
        cli_args_done(&a);
        /* After "--" even something that looks like an option is an argument. */
        assert_int_equal(parse(ARGV("show", "--", "-weird-name"), &a, &error), 0);
        assert_int_equal(a.command, CMD_SHOW);
        assert_string_equal(a.device, "-weird-name");
        cli_args_done(&a);
        assert_null(error);

        expect_refused(ARGV("show"), "'show' needs an argument");
        expect_refused(ARGV("show", "sda", "sdb"), "too many arguments for 'show'");
        expect_refused(ARGV("history", "sda", "sdb"), "too many arguments for 'history'");
        expect_refused(ARGV("list", "sda"), "too many arguments for 'list'");
        expect_refused(ARGV("status", "now"), "too many arguments for 'status'");
        expect_refused(ARGV("reconcile", "all"), "too many arguments for 'reconcile'");
        expect_refused(ARGV("drift", "sda"), "too many arguments for 'drift'");
        expect_refused(ARGV("expectations", "x"), "too many arguments for 'expectations'");
        expect_refused(ARGV("unexpect"), "'unexpect' needs an argument");
        expect_refused(ARGV("unexpect", "a", "b"), "too many arguments for 'unexpect'");
        expect_refused(ARGV("watch", "sda"), "too many arguments for 'watch'");
        expect_refused(ARGV("list", "a", "b", "c", "d"), "too many arguments");
        expect_refused(ARGV("list", "a", "b", "--", "c", "d"), "too many arguments");
}

static void test_parse_unknown_command(void **state) {
        expect_refused(ARGV(NULL), "no command given");
        expect_refused(ARGV("--json"), "no command given");
        expect_refused(ARGV("frobnicate"), "unknown command 'frobnicate'");
        expect_refused(ARGV("List"), "unknown command 'List'");
        expect_refused(ARGV("ls"), "unknown command 'ls'");
        /* rescan became reconcile. */
        expect_refused(ARGV("rescan"), "unknown command 'rescan'");
        /* The command is the first word, not any word. */
        expect_refused(ARGV("sda", "show"), "unknown command 'sda'");
}

static void test_parse_json_anywhere(void **state) {
        char **lines[] = {
                ARGV("--json", "list"),
                ARGV("list", "--json"),
                ARGV("-j", "list"),
                ARGV("list", "-j"),
        };

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                struct cli_args a;
                char *error = NULL;

                assert_int_equal(parse(lines[i], &a, &error), 0);
                assert_int_equal(a.command, CMD_LIST);
                assert_true(a.json);
                cli_args_done(&a);
        }

        {
                struct cli_args a;
                char *error = NULL;

                assert_int_equal(parse(ARGV("show", "--json", "sda", "-n"), &a, &error), 0);
                assert_int_equal(a.command, CMD_SHOW);
                assert_string_equal(a.device, "sda");
                assert_true(a.json);
                assert_true(a.no_legend);
                cli_args_done(&a);
                assert_int_equal(parse(ARGV("-jn", "history", "sdb"), &a, &error), 0);
                assert_true(a.json);
                assert_true(a.no_legend);
                assert_string_equal(a.device, "sdb");
                cli_args_done(&a);
        }
}

static void test_parse_socket(void **state) {
        struct cli_args a;
        char *error = NULL;

        assert_int_equal(parse(ARGV("-s", "/run/x.sock", "status"), &a, &error), 0);
        assert_string_equal(a.socket, "/run/x.sock");
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("status", "--socket", "/tmp/y.sock"), &a, &error), 0);
        assert_string_equal(a.socket, "/tmp/y.sock");
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("--socket=/a.sock", "status", "-s", "/b.sock"), &a, &error), 0);
        assert_string_equal(a.socket, "/b.sock");
        cli_args_done(&a);
        assert_null(error);

        expect_refused(ARGV("status", "-s"), "'-s' needs an argument");
        expect_refused(ARGV("status", "--socket"), "'--socket' needs an argument");
        expect_refused(ARGV("-s", "", "status"), "--socket needs a path");
        expect_refused(ARGV("-s", "/a.sock", "--socket=", "status"), "--socket needs a path");
}

static void test_parse_since_limit(void **state) {
        struct cli_args a;
        char *error = NULL;

        assert_int_equal(parse(ARGV("history", "--since", "0"), &a, &error), 0);
        assert_int_equal(a.since, 0);
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("history", "sda", "--since", "9223372036854775807", "--limit", "50"), &a,
                               &error),
                         0);
        assert_int_equal(a.since, INT64_MAX);
        assert_int_equal(a.limit, 50);
        assert_string_equal(a.device, "sda");
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("--since=17", "watch"), &a, &error), 0);
        assert_int_equal(a.command, CMD_WATCH);
        assert_int_equal(a.since, 17);
        cli_args_done(&a);
        assert_null(error);

        expect_refused(ARGV("history", "--since", "-1"), "--since needs a sequence number, not '-1'");
        expect_refused(ARGV("history", "--since", "abc"), "not 'abc'");
        expect_refused(ARGV("history", "--since", "12x"), "not '12x'");
        expect_refused(ARGV("history", "--since", ""), "--since needs a sequence number");
        expect_refused(ARGV("history", "--since", "9223372036854775808"), "--since");
        expect_refused(ARGV("history", "--since"), "'--since' needs an argument");
        expect_refused(ARGV("history", "--limit", "0"), "--limit needs a positive number, not '0'");
        expect_refused(ARGV("history", "--limit", "-3"), "not '-3'");
        expect_refused(ARGV("history", "--limit", "ten"), "not 'ten'");
        /* Each applies to its commands only. */
        expect_refused(ARGV("list", "--since", "5"), "--since does not apply to 'list' (see blkledger list --help)");
        expect_refused(ARGV("status", "--since", "0"), "--since does not apply to 'status'");
        expect_refused(ARGV("watch", "--limit", "5"), "--limit does not apply to 'watch'");
        expect_refused(ARGV("list", "--limit", "5"), "--limit does not apply to 'list'");
}

static void test_parse_state(void **state) {
        struct cli_args a;
        char *error = NULL;

        assert_int_equal(parse(ARGV("list", "--state", "present"), &a, &error), 0);
        assert_string_equal(a.state, "present");
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("--state=gone", "list"), &a, &error), 0);
        assert_string_equal(a.state, "gone");
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("list", "--state", "gone", "--state", "present"), &a, &error), 0);
        assert_string_equal(a.state, "present");
        cli_args_done(&a);
        assert_null(error);

        expect_refused(ARGV("list", "--state", "all"), "--state must be 'present' or 'gone'");
        expect_refused(ARGV("list", "--state", "Present"), "--state must be");
        expect_refused(ARGV("list", "--state"), "'--state' needs an argument");
        expect_refused(ARGV("show", "sda", "--state", "gone"), "--state does not apply to 'show'");
        expect_refused(ARGV("history", "--state", "present"), "--state does not apply to 'history'");
        expect_refused(ARGV("watch", "--state", "present"), "--state does not apply to 'watch'");
}

static void test_parse_unknown_option(void **state) {
        expect_refused(ARGV("list", "--bogus"), "unknown option '--bogus'");
        expect_refused(ARGV("--bogus", "list"), "unknown option '--bogus'");
        expect_refused(ARGV("list", "-x"), "unknown option '-x'");
        expect_refused(ARGV("list", "--json=yes"), "--json");
        /* An abbreviation of several options (--socket, --state, --since). */
        expect_refused(ARGV("list", "--s", "x"), "unknown option '--s'");
        /* A unique abbreviation is that option. */
        expect_refused(ARGV("list", "--lim", "5"), "--limit does not apply to 'list'");
}

static void test_parse_unknown_option_in_cluster(void **state) {
        /* The unknown letter comes first in a cluster of short options. */
        expect_refused(ARGV("list", "-xj"), "-x");
}

/* Runs a parse with stdout in an anonymous file; returns what was printed. */
static char *parse_capturing_stdout(char **argv, int *ret) {
        struct cli_args a;
        char *error = NULL, *out;
        int fd = memfd_create("stdout", MFD_CLOEXEC), saved;
        off_t size;

        assert_true(fd >= 0);

        fflush(stdout);
        saved = dup(STDOUT_FILENO);
        assert_true(saved >= 0);
        assert_true(dup2(fd, STDOUT_FILENO) >= 0);
        *ret = parse(argv, &a, &error);
        fflush(stdout);
        assert_true(dup2(saved, STDOUT_FILENO) >= 0);
        close(saved);
        free(error);
        cli_args_done(&a);

        size = lseek(fd, 0, SEEK_END);
        assert_true(size >= 0);
        out = calloc(1, (size_t) size + 1);
        assert_non_null(out);
        assert_int_equal(pread(fd, out, (size_t) size, 0), size);
        close(fd);
        return out;
}

static void test_parse_help_version(void **state) {
        _cleanup_free_ char *help = NULL, *help_cmd = NULL, *help_short = NULL, *version = NULL,
                            *help_first = NULL, *help_word = NULL, *help_unknown = NULL;
        int r;

        help = parse_capturing_stdout(ARGV("--help"), &r);
        assert_int_equal(r, 1);
        assert_true(startswith(help, "Usage: blkledger "));
        assert_non_null(strstr(help, BL_DEFAULT_SOCKET));
        /* Every command is listed, rescan is not. */
        {
                static const char *const names[] = { "list", "show", "history", "watch", "status", "reconcile",
                                                     "name", "expect", "unexpect", "expectations", "drift" };
                for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                        _cleanup_free_ char *line = NULL;
                        assert_true(asprintf(&line, "\n  %s ", names[i]) > 0);
                        if (!strstr(help, line))
                                fail_msg("--help does not list '%s'", names[i]);
                }
                assert_null(strstr(help, "rescan"));
        }

        help_cmd = parse_capturing_stdout(ARGV("help"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(help_cmd, help);

        /* A command's own help: its usage line and what it does; the same three ways. */
        help_short = parse_capturing_stdout(ARGV("list", "-h"), &r);
        assert_int_equal(r, 1);
        assert_true(startswith(help_short, "Usage: blkledger [OPTION]... list [--state present|gone]\n"));
        assert_string_not_equal(help_short, help);
        help_first = parse_capturing_stdout(ARGV("--help", "list"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(help_first, help_short);
        help_word = parse_capturing_stdout(ARGV("help", "list"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(help_word, help_short);
        /* "help" with an unknown command: the general help. */
        help_unknown = parse_capturing_stdout(ARGV("help", "frobnicate"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(help_unknown, help);

        version = parse_capturing_stdout(ARGV("-V"), &r);
        assert_int_equal(r, 1);
        assert_string_equal(version, "blkledger " PACKAGE_VERSION "\n");
}

/* Every command answers --help with its own usage, returns 1, and checks nothing else. */
static void test_parse_command_help(void **state) {
        static const struct {
                const char *name, *usage;
        } commands[] = {
                { "list", "list [--state present|gone]" },
                { "show", "show DEVICE|ID" },
                { "history", "history [DEVICE|ID] [--since SEQ] [--limit N]" },
                { "watch", "watch [--since SEQ]" },
                { "status", "status " },
                { "reconcile", "reconcile " },
                { "name", "name DEVICE|ID NAME | DEVICE|ID --remove" },
                { "expect", "expect NAME --match serial=S|wwn=W|fs-uuid=U|loop-file=PATH" },
                { "unexpect", "unexpect NAME" },
                { "expectations", "expectations " },
                { "drift", "drift " },
        };

        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                _cleanup_free_ char *out = NULL, *want = NULL;
                int r = 0;

                /* Missing arguments do not stand in the way of help. */
                out = parse_capturing_stdout(ARGV((char *) commands[i].name, "--help"), &r);
                if (r != 1)
                        fail_msg("'%s --help' returned %d, not 1", commands[i].name, r);
                assert_true(asprintf(&want, "Usage: blkledger [OPTION]... %s", commands[i].usage) > 0);
                if (!startswith(out, want))
                        fail_msg("'%s --help' printed \"%s\", not \"%s...\"", commands[i].name, out, want);
                /* The usage line, a blank line, then what it does. */
                assert_non_null(strstr(out, "\n\n"));
                assert_true(strlen(strstr(out, "\n\n")) > 3);
        }
}

static void test_parse_name(void **state) {
        struct cli_args a;
        char *error = NULL;

        assert_int_equal(parse(ARGV("name", "loop3", "backup"), &a, &error), 0);
        assert_int_equal(a.command, CMD_NAME);
        assert_string_equal(a.device, "loop3");
        assert_string_equal(a.name, "backup");
        assert_false(a.remove);
        cli_args_done(&a);

        assert_int_equal(parse(ARGV("name", "--remove", "17"), &a, &error), 0);
        assert_int_equal(a.command, CMD_NAME);
        assert_string_equal(a.device, "17");
        assert_null(a.name);
        assert_true(a.remove);
        cli_args_done(&a);
        assert_null(error);

        expect_refused(ARGV("name"), "'name' needs an argument");
        expect_refused(ARGV("name", "loop3"), "'name' takes DEVICE and NAME, or DEVICE and --remove");
        expect_refused(ARGV("name", "loop3", "backup", "--remove"), "'name' takes DEVICE and NAME");
        expect_refused(ARGV("name", "loop3", "backup", "extra"), "too many arguments for 'name'");
        expect_refused(ARGV("list", "--remove"), "--remove does not apply to 'list'");
        expect_refused(ARGV("unexpect", "x", "--remove"), "--remove does not apply to 'unexpect'");
}

static void test_parse_expect(void **state) {
        struct cli_args a;
        char *error = NULL;

        assert_int_equal(parse(ARGV("expect", "backup", "--match", "serial=WD-WX11A12B3456", "--fs-type", "ext4",
                                    "--fs-label", "backup", "--min-size", "1.5G"),
                               &a, &error),
                         0);
        assert_int_equal(a.command, CMD_EXPECT);
        assert_string_equal(a.name, "backup");
        assert_null(a.device);
        assert_string_equal(a.match_kind, "serial");
        assert_string_equal(a.match_value, "WD-WX11A12B3456");
        assert_string_equal(a.fs_type, "ext4");
        assert_string_equal(a.fs_label, "backup");
        assert_int_equal(a.min_size, 1610612736);
        cli_args_done(&a);

        /* Only --match is required; the wishes stay unset. An empty label is a wish
         * (no label). A later --match replaces an earlier one. */
        assert_int_equal(parse(ARGV("--match=wwn=naa.5000C500A1B2C3D4", "expect", "d", "--fs-label="), &a, &error), 0);
        assert_string_equal(a.match_kind, "wwn");
        assert_string_equal(a.match_value, "naa.5000C500A1B2C3D4");
        assert_null(a.fs_type);
        assert_string_equal(a.fs_label, "");
        assert_int_equal(a.min_size, -1);
        cli_args_done(&a);
        assert_int_equal(parse(ARGV("expect", "d", "--match", "serial=A", "--match", "fs-uuid=3F1C-2A7E"), &a, &error), 0);
        assert_string_equal(a.match_kind, "fs_uuid");
        assert_string_equal(a.match_value, "3F1C-2A7E");
        cli_args_done(&a);
        /* A value may contain '=' (only the first one separates). */
        assert_int_equal(parse(ARGV("expect", "d", "--match", "serial=a=b"), &a, &error), 0);
        assert_string_equal(a.match_kind, "serial");
        assert_string_equal(a.match_value, "a=b");
        cli_args_done(&a);
        assert_null(error);

        assert_int_equal(parse(ARGV("unexpect", "backup"), &a, &error), 0);
        assert_int_equal(a.command, CMD_UNEXPECT);
        assert_string_equal(a.name, "backup");
        assert_null(a.device);
        cli_args_done(&a);

        expect_refused(ARGV("expect", "backup"), "'expect' needs --match");
        expect_refused(ARGV("expect", "--match", "serial=S"), "'expect' needs an argument");
        expect_refused(ARGV("expect", "a", "b", "--match", "serial=S"), "too many arguments for 'expect'");
        expect_refused(ARGV("expect", "a", "--match", "serial"), "--match needs serial=S, wwn=W, fs-uuid=U or loop-file=PATH, not 'serial'");
        expect_refused(ARGV("expect", "a", "--match", "serial="), "not 'serial='");
        expect_refused(ARGV("expect", "a", "--match", "=S"), "not '=S'");
        expect_refused(ARGV("expect", "a", "--match", "fs_uuid=U"), "not 'fs_uuid=U'");
        expect_refused(ARGV("expect", "a", "--match", "uuid=U"), "not 'uuid=U'");
        expect_refused(ARGV("expect", "a", "--match", "Serial=S"), "not 'Serial=S'");
        expect_refused(ARGV("expect", "a", "--match", "serialx=S"), "not 'serialx=S'");
        expect_refused(ARGV("expect", "a", "--match", "seria=S"), "not 'seria=S'");
        expect_refused(ARGV("expect", "a", "--match"), "'--match' needs an argument");
        expect_refused(ARGV("expect", "a", "--match", "serial=S", "--fs-type", ""), "--fs-type needs a filesystem type");
        expect_refused(ARGV("expect", "a", "--match", "serial=S", "--min-size", "lots"),
                       "--min-size needs a size such as 1073741824 or 1G, not 'lots'");
        expect_refused(ARGV("expect", "a", "--match", "serial=S", "--min-size", "-1"), "not '-1'");
}

/* A relative loop file is made absolute against the current directory; an absolute one
 * is kept as it is. */
static void test_parse_match_loop_file(void **state) {
        _cleanup_free_ char *want = NULL;
        char cwd[4096];
        struct cli_args a;
        char *error = NULL;

        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(parse(ARGV("expect", "img", "--match", "loop-file=images/a b.img"), &a, &error), 0);
        assert_string_equal(a.match_kind, "loop_file");
        assert_true(asprintf(&want, "%s/images/a b.img", cwd) > 0);
        assert_string_equal(a.match_value, want);
        assert_true(a.match_value[0] == '/');
        cli_args_done(&a);

        assert_int_equal(parse(ARGV("expect", "img", "--match", "loop-file=/var/tmp/x.img"), &a, &error), 0);
        assert_string_equal(a.match_kind, "loop_file");
        assert_string_equal(a.match_value, "/var/tmp/x.img");
        cli_args_done(&a);

        /* Other kinds are never paths. */
        assert_int_equal(parse(ARGV("expect", "img", "--match", "serial=rel/ative"), &a, &error), 0);
        assert_string_equal(a.match_value, "rel/ative");
        cli_args_done(&a);
        assert_null(error);
}

static void test_parse_size(void **state) {
        static const struct {
                const char *in;
                int64_t out;
        } good[] = {
                { "512", 512 },
                { "0", 0 },
                { "4096B", 4096 },
                { "4096b", 4096 },
                { "64K", 65536 },
                { "64k", 65536 },
                { "64M", 64LL << 20 },
                { "64MiB", 64LL << 20 },
                { "1.5G", 1610612736 },
                { "1.5GB", 1610612736 },
                { "2GiB", 2147483648LL },
                { "2T", 2LL << 40 },
                { "0.5K", 512 },
        };
        static const char *const bad[] = {
                "", "junk", "G", "-1", "+5", " 5", "5 ", "5X", "5KB5", "1.5.5G", "5Bi", "5iB", "64KK", "1,5G",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                int64_t v = -42;
                int r = cli_parse_size(good[i].in, &v);

                if (r != 0 || v != good[i].out)
                        fail_msg("cli_parse_size(\"%s\") = %d, %lld; expected 0, %lld", good[i].in, r, (long long) v,
                                 (long long) good[i].out);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int64_t v = -42;
                int r = cli_parse_size(bad[i], &v);

                if (r >= 0)
                        fail_msg("cli_parse_size(\"%s\") accepted it as %lld", bad[i], (long long) v);
                assert_int_equal(v, -42);
        }
        /* Too big for int64_t. */
        {
                int64_t v = -42;
                assert_int_equal(cli_parse_size("16E", &v), -ERANGE);
                assert_int_equal(cli_parse_size("99999999999999999999", &v), -ERANGE);
                assert_int_equal(v, -42);
        }
}

/* Sizes are decimal numbers with an optional binary unit, nothing else: strtod() also
 * reads hexadecimal and exponents, which would make "0x1B" 27 bytes, not 1 B. */
static void test_parse_size_strict(void **state) {
        static const char *const bad[] = { "0x10", "0x1B", "0x1p4", "1e3", "1E3", "2e1K" };
        char found[256] = "";

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int64_t v = -42;

                if (cli_parse_size(bad[i], &v) >= 0) {
                        size_t l = strlen(found);
                        snprintf(found + l, sizeof(found) - l, "\"%s\" -> %lld; ", bad[i], (long long) v);
                }
        }
        if (found[0])
                fail_msg("cli_parse_size accepts what is not a size: %s", found);
}

/* Options that belong to other commands are refused, naming option and command. */
static void test_parse_options_not_applying(void **state) {
        static const struct {
                const char *const argv[8];
                const char *needle;
        } cases[] = {
                { { "list", "--match", "serial=S" }, "--match does not apply to 'list'" },
                { { "drift", "--match", "serial=S" }, "--match does not apply to 'drift'" },
                { { "name", "sda", "x", "--match", "serial=S" }, "--match does not apply to 'name'" },
                { { "list", "--fs-type", "ext4" }, "--fs-type does not apply to 'list'" },
                { { "show", "sda", "--min-size", "1G" }, "does not apply to 'show'" },
                { { "unexpect", "x", "--fs-label", "y" }, "does not apply to 'unexpect'" },
                { { "reconcile", "--since", "3" }, "--since does not apply to 'reconcile'" },
                { { "expectations", "--state", "gone" }, "--state does not apply to 'expectations'" },
                { { "expect", "x", "--match", "serial=S", "--limit", "3" }, "--limit does not apply to 'expect'" },
                { { "drift", "--remove" }, "--remove does not apply to 'drift'" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *argv[10] = { (char *) "blkledger" };
                struct cli_args a;
                char *error = NULL;
                int argc = 1, r;

                for (size_t k = 0; cases[i].argv[k]; k++)
                        argv[argc++] = (char *) cases[i].argv[k];
                r = cli_parse(argc, argv, &a, &error);
                if (r != -EINVAL || !error || !strstr(error, cases[i].needle))
                        fail_msg("case %zu: returned %d, message \"%s\", expected \"%s\"", i, r, error ?: "(none)",
                                 cases[i].needle);
                /* One line, no trailing newline. */
                assert_null(strchr(error, '\n'));
                free(error);
                cli_args_done(&a);
        }
        /* The global options apply everywhere. */
        {
                struct cli_args a;
                char *error = NULL;

                assert_int_equal(parse(ARGV("drift", "--json", "-n", "-s", "/x.sock"), &a, &error), 0);
                assert_int_equal(a.command, CMD_DRIFT);
                assert_true(a.json);
                cli_args_done(&a);
                assert_int_equal(parse(ARGV("reconcile", "--json"), &a, &error), 0);
                assert_int_equal(a.command, CMD_RECONCILE);
                cli_args_done(&a);
        }
}

/* ---- cli_escape, cli_width --------------------------------------------------------- */

static void test_escape(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "" },
                { "sda1", "sda1" },
                { "my disk/backup \"x\" \\", "my disk/backup \"x\" \\" },
                /* Terminal escape sequences lose their ESC. */
                { "\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07" },
                { "a\tb\nc\rd", "a\\x09b\\x0ac\\x0dd" },
                { "\x01\x7f", "\\x01\\x7f" },
                /* Valid UTF-8 is kept. */
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e" },
                { "\xef\xbf\xbd", "\xef\xbf\xbd" },
                /* Invalid bytes are escaped one by one. */
                { "\xff", "\\xff" },
                { "a\x80z", "a\\x80z" },
                { "\xc0\xaf", "\\xc0\\xaf" },
                { "\xed\xa0\x80", "\\xed\\xa0\\x80" },
                { "\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80" },
                { "\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80" },
                { "x\xc3", "x\\xc3" },
                { "\xe2\x82", "\\xe2\\x82" },
                { "\xe2\x82(", "\\xe2\\x82(" },
                { "\xc3\xc3\xa9", "\\xc3\xc3\xa9" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *e = cli_escape(cases[i].in);

                assert_non_null(e);
                if (!streq(e, cases[i].out))
                        fail_msg("case %zu: escaped to \"%s\"", i, e);
        }
}

static void test_escape_c1_controls(void **state) {
        /* U+0080..U+009F are control characters too; U+009B is CSI, which terminals
         * honouring C1 controls treat like "ESC [". */
        static const char *const inputs[] = { "\xc2\x9b" "2J", "a\xc2\x9d" "0;x\xc2\x9c", "\xc2\x85" };
        char found[256] = "";

        for (size_t i = 0; i < ELEMENTSOF(inputs); i++) {
                _cleanup_free_ char *e = cli_escape(inputs[i]);

                assert_non_null(e);
                assert_true(utf8_is_valid(e, strlen(e)));
                for (const unsigned char *p = (const unsigned char *) e; *p; p++)
                        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
                                size_t l = strlen(found);
                                snprintf(found + l, sizeof(found) - l, "U+%04X ", p[1]);
                        }
        }
        if (found[0])
                fail_msg("C1 control characters reach the terminal: %s", found);
}

static void test_escape_output_is_safe(void **state) {
        char all[256];
        _cleanup_free_ char *e = NULL;

        /* Every byte value once (except NUL): nothing below 0x20 or DEL comes out, and
         * what comes out is valid UTF-8. */
        for (int i = 1; i < 256; i++)
                all[i - 1] = (char) i;
        all[255] = 0;
        e = cli_escape(all);
        assert_non_null(e);
        for (const unsigned char *p = (const unsigned char *) e; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        fail_msg("byte 0x%02x passed through", *p);
        assert_true(utf8_is_valid(e, strlen(e)));
}

static void test_width(void **state) {
        static const struct {
                const char *s;
                size_t width;
        } cases[] = {
                { "", 0 },
                { "sda", 3 },
                { "caf\xc3\xa9", 4 },
                { "\xe2\x82\xac\xf0\x9d\x84\x9e", 2 },
                { "\\x1b[2J", 7 }, /* an escaped ESC takes four columns */
                { "64M", 3 },
        };
        _cleanup_free_ char *e = cli_escape("a\x1b" "b");

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (cli_width(cases[i].s) != cases[i].width)
                        fail_msg("case %zu: width %zu, not %zu", i, cli_width(cases[i].s), cases[i].width);
        assert_int_equal(cli_width(e), 6);
}

/* ---- table_print ------------------------------------------------------------------- */

static char *print_table(struct table *t, bool legend) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        table_print(t, f, legend);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static struct table *device_table(void) {
        static const char *const headers[] = { "ID", "NAME", "SIZE", "LABEL" };
        struct table *t = table_new(headers, ELEMENTSOF(headers));

        assert_non_null(t);
        table_set_right_aligned(t, 0);
        table_set_right_aligned(t, 2);
        /* Out of range: ignored. */
        table_set_right_aligned(t, 4);
        assert_int_equal(table_add_row(t, (const char *const[]) { "1", "sda", "465.8G", "-" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "12", "nvme0n1p2", "64M", "caf\xc3\xa9" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "3", "loop0", NULL, "a\x1b" "b" }), 0);
        return t;
}

static void test_table_print(void **state) {
        struct table *t = device_table();
        _cleanup_free_ char *out = print_table(t, true);

        /* Right-aligned ID and SIZE; one space between columns; the last column is not
         * padded; NULL prints as "-"; widths count characters, escapes as printed. */
        assert_string_equal(out, "ID NAME        SIZE LABEL\n"
                                 " 1 sda       465.8G -\n"
                                 "12 nvme0n1p2    64M caf\xc3\xa9\n"
                                 " 3 loop0          - a\\x1bb\n");
        table_free(t);
}

static void test_table_print_no_legend(void **state) {
        static const char *const headers[] = { "IDENTIFIER", "N" };
        struct table *t = table_new(headers, ELEMENTSOF(headers));
        _cleanup_free_ char *out = NULL, *with = NULL;

        assert_non_null(t);
        table_set_right_aligned(t, 1);
        assert_int_equal(table_add_row(t, (const char *const[]) { "a", "1" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "bb", "22" }), 0);

        /* Without the header line, the columns are as wide as the data only. */
        out = print_table(t, false);
        assert_string_equal(out, "a   1\n"
                                 "bb 22\n");
        with = print_table(t, true);
        assert_string_equal(with, "IDENTIFIER  N\n"
                                  "a           1\n"
                                  "bb         22\n");
        table_free(t);
}

static void test_table_empty(void **state) {
        static const char *const headers[] = { "ID", "NAME" };
        struct table *t = table_new(headers, ELEMENTSOF(headers));
        _cleanup_free_ char *legend = NULL, *bare = NULL;

        assert_non_null(t);
        legend = print_table(t, true);
        assert_string_equal(legend, "ID NAME\n");
        bare = print_table(t, false);
        assert_string_equal(bare, "");
        table_free(t);
        table_free(NULL);
}

/* ---- cli_event_details ------------------------------------------------------------- */

static char *details_of(const char *json) {
        json_object *e = json_tokener_parse(json);
        char *s;

        assert_non_null(e);
        s = cli_event_details(e);
        json_object_put(e);
        assert_non_null(s);
        return s;
}

static void test_event_appeared(void **state) {
        _cleanup_free_ char *s = details_of(
                "{\"seq\":1,\"kind\":\"appeared\",\"device_id\":3,\"before\":null,"
                "\"after\":{\"identity\":\"loop:259:2:1835017\",\"state\":\"present\",\"kname\":\"loop0\","
                "\"devnode\":\"/dev/loop0\",\"size_bytes\":67108864,\"fs_type\":\"ext4\",\"fs_label\":null,"
                "\"model\":null,\"holders\":[]}}");
        _cleanup_free_ char *hostile = details_of(
                "{\"kind\":\"appeared\",\"after\":{\"devnode\":\"/dev/sdb\",\"size_bytes\":1610612736,"
                "\"fs_label\":\"\\u001b[31mred\",\"identity\":\"serial:Flash Disk:8A5E3C2F\"}}");

        /* A summary in a fixed order; null fields are left out; sizes in binary units. */
        assert_string_equal(s, "devnode=/dev/loop0 size_bytes=64M fs_type=ext4 identity=loop:259:2:1835017");
        assert_string_equal(hostile, "devnode=/dev/sdb size_bytes=1.5G fs_label=\\x1b[31mred "
                                     "identity=serial:Flash Disk:8A5E3C2F");
}

static void test_event_changed(void **state) {
        _cleanup_free_ char *s = details_of(
                "{\"kind\":\"changed\",\"before\":{\"size_bytes\":67108864,\"fs_label\":\"old\"},"
                "\"after\":{\"size_bytes\":134217728,\"fs_label\":\"new\"}}");
        _cleanup_free_ char *nulls = details_of(
                "{\"kind\":\"changed\",\"before\":{\"fs_type\":null,\"rotational\":true,\"holders\":[]},"
                "\"after\":{\"fs_type\":\"swap\",\"rotational\":null,\"holders\":[\"dm-0\"]}}");
        _cleanup_free_ char *escaped = details_of(
                "{\"kind\":\"changed\",\"before\":{\"fs_label\":\"a\\tb\"},\"after\":{\"fs_label\":\"\\u001b]0;x\\u0007\"}}");
        _cleanup_free_ char *reappeared = details_of(
                "{\"kind\":\"reappeared\",\"before\":{\"state\":\"gone\",\"kname\":\"sdb\"},"
                "\"after\":{\"state\":\"present\",\"kname\":\"sdc\"}}");

        /* In the order of "after"; size in binary units; null as "-". */
        assert_string_equal(s, "size_bytes 64M -> 128M, fs_label old -> new");
        assert_string_equal(nulls, "fs_type - -> swap, rotational true -> -, holders [] -> [\"dm-0\"]");
        assert_string_equal(escaped, "fs_label a\\x09b -> \\x1b]0;x\\x07");
        assert_string_equal(reappeared, "state gone -> present, kname sdb -> sdc");
}

static void test_event_disappeared(void **state) {
        _cleanup_free_ char *s = details_of(
                "{\"kind\":\"disappeared\",\"before\":{\"state\":\"present\"},\"after\":{\"state\":\"gone\"}}");
        _cleanup_free_ char *stopped = details_of("{\"kind\":\"daemon_stopped\",\"before\":null,\"after\":null}");
        _cleanup_free_ char *started = details_of(
                "{\"kind\":\"daemon_started\",\"after\":{\"version\":\"0.1.0\",\"pid\":4242}}");
        _cleanup_free_ char *no_kind = details_of("{\"after\":{\"x\":1}}");

        assert_string_equal(s, "state present -> gone");
        /* Nothing to say is an empty line, not a missing one. */
        assert_string_equal(stopped, "");
        assert_string_equal(started, "version=0.1.0 pid=4242");
        assert_string_equal(no_kind, "x - -> 1");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_commands),
                cmocka_unit_test(test_parse_arguments),
                cmocka_unit_test(test_parse_unknown_command),
                cmocka_unit_test(test_parse_json_anywhere),
                cmocka_unit_test(test_parse_socket),
                cmocka_unit_test(test_parse_since_limit),
                cmocka_unit_test(test_parse_state),
                cmocka_unit_test(test_parse_unknown_option),
                cmocka_unit_test(test_parse_unknown_option_in_cluster),
                cmocka_unit_test(test_parse_help_version),
                cmocka_unit_test(test_parse_command_help),
                cmocka_unit_test(test_parse_name),
                cmocka_unit_test(test_parse_expect),
                cmocka_unit_test(test_parse_match_loop_file),
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_parse_size_strict),
                cmocka_unit_test(test_parse_options_not_applying),
                cmocka_unit_test(test_escape),
                cmocka_unit_test(test_escape_c1_controls),
                cmocka_unit_test(test_escape_output_is_safe),
                cmocka_unit_test(test_width),
                cmocka_unit_test(test_table_print),
                cmocka_unit_test(test_table_print_no_legend),
                cmocka_unit_test(test_table_empty),
                cmocka_unit_test(test_event_appeared),
                cmocka_unit_test(test_event_changed),
                cmocka_unit_test(test_event_disappeared),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
