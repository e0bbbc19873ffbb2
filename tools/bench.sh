#!/bin/sh
# The benchmark from a fresh clone on Debian 12 (as root): installs what is missing,
# builds blkledger in build/ (with the FUSE helper for the hung-device run) and runs
# `make bench`, which installs the tools it compares against (udisks2, dbus, gnuplot).
# Options go to tests/bench/bench.sh, e.g. tools/bench.sh --sizes "100 1000" --runs 3.
# Results: build/bench-results/ (table.md, bench.csv, bench.svg, bench.png).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

tools/debian-deps.sh test
[ -x configure ] || ./autogen.sh >/dev/null
mkdir -p build
[ -f build/Makefile ] || (cd build && ../configure >/dev/null)
make -C build -j"$(nproc 2>/dev/null || echo 2)" all >/dev/null
make -C build -j"$(nproc 2>/dev/null || echo 2)" check TESTS= >/dev/null # the helpers, no tests
exec tests/bench/bench.sh --builddir "$top/build" --out "$top/build/bench-results" "$@"
