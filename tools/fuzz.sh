#!/bin/sh
# The libFuzzer harnesses (docs/FUZZING.md): builds each tests/fuzz/fuzz-NAME.c with
# clang -fsanitize=fuzzer,address,undefined against the project's sources (objects of
# its own, not the autotools ones) and runs it for a bounded time on a scratch copy of
# its corpus. Exits 1 when a harness crashed (and says where the reproducer is), 2 on
# a bad command line or a failed build.
#
#   tools/fuzz.sh [--builddir DIR] [--out DIR] [--build-only] [NAME...]
#
# NAME is varlink, uevent, config (default: every tests/fuzz/fuzz-*.c). Environment:
# FUZZ_SECONDS (per harness and job, default 60), FUZZ_JOBS (parallel fuzzing
# processes per harness, default 1), FUZZ_ARGS (more libFuzzer options), CLANG,
# FUZZ_CPPFLAGS (the project's preprocessor flags; make fuzz sets them),
# FUZZ_SANITIZERS (default address,undefined; "undefined" alone runs two to three times
# as fast: replay what it found under the default then, see docs/FUZZING.md).
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
builddir=.
out=
build_only=no
while [ $# -gt 0 ]; do
        case $1 in
        --builddir) builddir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --build-only) build_only=yes; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
        esac
done
builddir=$(cd "$builddir" && pwd) || exit 2
out=${out:-$builddir/fuzz}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}

if [ ! -f "$builddir/config.h" ]; then
        echo "fuzz.sh: $builddir/config.h is missing: run configure there first (or pass --builddir)" >&2
        exit 2
fi

# The compiler and its fuzzer runtime (Debian: clang-14 and libclang-rt-14-dev).
cc=${CLANG:-}
if [ -z "$cc" ]; then
        for c in clang clang-14; do
                if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
        done
fi
if [ -z "$cc" ] || ! command -v "$cc" >/dev/null 2>&1; then
        echo "fuzz.sh: clang${cc:+ ($cc)} is missing; install it with: apt-get install clang-14 libclang-rt-14-dev" >&2
        exit 1
fi
mkdir -p "$out/obj" || exit 2
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' > "$out/probe.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined -o "$out/probe" "$out/probe.c" >/dev/null 2>&1; then
        echo "fuzz.sh: $cc cannot link -fsanitize=fuzzer,address,undefined: the runtime is missing;" >&2
        echo "fuzz.sh: install it with: apt-get install libclang-rt-14-dev" >&2
        exit 1
fi

pkgs="json-c libudev blkid liburing sqlite3 libsystemd"
# shellcheck disable=SC2086
deps_cflags=$(pkg-config --cflags $pkgs) || exit 2
# shellcheck disable=SC2086
deps_libs=$(pkg-config --libs $pkgs) || exit 2
# FUZZ_SANITIZERS (default address,undefined) chooses the sanitizers; objects built
# with other ones need an --out of their own.
san="-fsanitize=${FUZZ_SANITIZERS:-address,undefined} -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# make fuzz passes the daemon's preprocessor flags (FUZZ_CPPFLAGS); these are the same
# for a direct run.
cppflags=${FUZZ_CPPFLAGS:-"-include $builddir/config.h -I$top/lib -I$top/daemon -I$top/tools -DBL_DEFAULT_CONFIG=\"/etc/blkledger/blkledgerd.conf\""}
cflags="-g -O1 -std=gnu11 -pthread -I$builddir $cppflags $deps_cflags"

# The project's code once, instrumented for coverage: the shared code and the daemon
# (without its main), and the interface description the daemon serves.
{
        echo '/* Generated from lib/io.blkledger.varlink; do not edit. */'
        echo 'extern const char io_blkledger_varlink[];'
        echo 'const char io_blkledger_varlink[] ='
        sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' "$top/lib/io.blkledger.varlink"
        echo ';'
} > "$out/io-blkledger-varlink.c.tmp" || exit 2
cmp -s "$out/io-blkledger-varlink.c.tmp" "$out/io-blkledger-varlink.c" ||
        mv "$out/io-blkledger-varlink.c.tmp" "$out/io-blkledger-varlink.c" || exit 2
rm -f "$out/io-blkledger-varlink.c.tmp"
objs=
for src in "$top"/lib/util.c "$top"/lib/varlink.c "$top"/daemon/*.c "$out/io-blkledger-varlink.c"; do
        case $src in */daemon/main.c) continue ;; esac
        obj=$out/obj/$(basename "$src" .c).o
        # Again when the source, config.h or any header changed since.
        if [ ! -f "$obj" ] || [ -n "$( { find "$src" "$builddir/config.h" -newer "$obj"
                                        find "$top/lib" "$top/daemon" -name '*.h' -newer "$obj"; } 2>/dev/null | head -n 1)" ]; then
                echo "  CC       $(basename "$src")"
                # shellcheck disable=SC2086
                "$cc" $cflags $san -fsanitize=fuzzer-no-link -c -o "$obj" "$src" || exit 2
        fi
        objs="$objs $obj"
done

if [ $# -eq 0 ]; then
        for f in "$top"/tests/fuzz/fuzz-*.c; do
                [ -f "$f" ] || continue
                n=$(basename "$f" .c)
                set -- "$@" "${n#fuzz-}"
        done
fi

status=0
for name in "$@"; do
        src=$top/tests/fuzz/fuzz-$name.c
        bin=$out/fuzz-$name
        if [ ! -f "$src" ]; then
                echo "fuzz.sh: no harness $src" >&2
                exit 2
        fi
        echo "  CCLD     fuzz-$name"
        # shellcheck disable=SC2086
        "$cc" $cflags $san -fsanitize=fuzzer -o "$bin" "$src" $objs $deps_libs -lpthread || exit 2
        [ "$build_only" = yes ] && continue

        # A scratch copy: what the run finds stays out of the tree (minimize it into
        # tests/fuzz/corpus/ by hand when it is worth keeping).
        run=$out/run-$name
        rm -rf "$run"
        mkdir -p "$run/corpus" "$run/artifacts" || exit 2
        if [ -d "$top/tests/fuzz/corpus/$name" ]; then
                cp "$top/tests/fuzz/corpus/$name"/* "$run/corpus/" 2>/dev/null
        fi
        echo "fuzz-$name: $seconds s x $jobs job(s), corpus $run/corpus, log $run/"
        par=
        [ "$jobs" -gt 1 ] && par="-jobs=$jobs -workers=$jobs"
        # shellcheck disable=SC2086
        (cd "$run" && "$bin" -max_total_time="$seconds" $par -timeout=10 \
                -print_final_stats=1 -artifact_prefix="$run/artifacts/" ${FUZZ_ARGS:-} corpus \
                > fuzz.log 2>&1)
        rc=$?
        # With -jobs the workers log to fuzz-N.log; the parent's status says little.
        logs=$run/fuzz.log
        [ "$jobs" -gt 1 ] && logs=$(ls "$run"/fuzz-[0-9]*.log 2>/dev/null)
        # shellcheck disable=SC2086
        cat $logs | awk -v name="fuzz-$name" '
                /^stat::number_of_executed_units:/ { n += $2; jobs++ }
                /^stat::peak_rss_mb:/ { if ($2 > rss) rss = $2 }
                END { printf "%s: %d executions in %d run(s), peak RSS %d MB\n", name, n, jobs, rss }'
        found=$(find "$run/artifacts" -type f 2>/dev/null)
        if [ -n "$found" ] || { [ "$rc" -ne 0 ] && [ "$jobs" -le 1 ]; }; then
                echo "fuzz-$name: FAILED (exit $rc); reproducer(s):" >&2
                for f in $found; do echo "  $f" >&2; done
                echo "  replay with: $bin FILE (log: $run/fuzz*.log)" >&2
                status=1
        else
                echo "fuzz-$name: no crash"
        fi
done
exit $status
