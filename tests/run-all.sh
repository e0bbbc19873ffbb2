#!/bin/sh
# The whole test suite, as CI runs it, on a fresh Debian 12 machine (as root):
# installs what is missing, then builds and tests the tree three ways:
#   1. make check          (warnings are errors)
#   2. make check          under AddressSanitizer and UndefinedBehaviorSanitizer
#   3. make distcheck      (the release tarball builds and passes its tests)
# Test builds have the daemon's crash points (--enable-fault-injection) for the
# recovery tests; distribution builds do not.
# Build trees go to build-test/ build-asan/ (override with BLKLEDGER_BUILD_ROOT).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
root=${BLKLEDGER_BUILD_ROOT:-$top}
jobs=$(nproc 2>/dev/null || echo 2)

tools/debian-deps.sh test
./autogen.sh >/dev/null

show_logs() {
        echo "=== failed; logs of the failing tests in $1 ===" >&2
        for f in "$1"/tests/*.log; do
                [ -f "$f" ] || continue
                t=${f%.log}.trs
                if [ -f "$t" ] && grep -q ':test-result: \(FAIL\|ERROR\)' "$t"; then
                        echo "--- $f" >&2
                        tail -n 60 "$f" >&2
                fi
        done
}

step() {
        dir=$1
        shift
        rm -rf "$dir"
        mkdir -p "$dir"
        (cd "$dir" && "$top/configure" "$@" >configure.out) || { cat "$dir/config.log" >&2; exit 1; }
        make -C "$dir" -j"$jobs" >/dev/null
        if ! make -C "$dir" -j"$jobs" check; then
                show_logs "$dir"
                exit 1
        fi
}

echo "=== 1/3 make check"
step "$root/build-test" --enable-werror --enable-fault-injection
echo "=== 2/3 make check under ASan and UBSan"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS
step "$root/build-asan" --enable-sanitizers --enable-fault-injection
unset ASAN_OPTIONS UBSAN_OPTIONS
echo "=== 3/3 make distcheck"
if ! make -C "$root/build-test" -j"$jobs" distcheck; then
        echo "distcheck failed" >&2
        exit 1
fi
echo "=== all tests passed"
