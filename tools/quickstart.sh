#!/bin/sh
# Quick start on Debian 12 (as root): installs what is missing, builds blkledger in
# build/, starts blkledgerd in the foreground on the state directory ./state and shows
# the live inventory: the ledger now, then every change as it happens. Ctrl-C stops both.
#
# The daemon observes every block device of this host, read-only. To limit it to loop
# devices backed by files under a directory, pass its options through, e.g.
#   tools/quickstart.sh --scope loop:/srv/images
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

tools/debian-deps.sh build
[ -x configure ] || ./autogen.sh >/dev/null
mkdir -p build
[ -f build/Makefile ] || (cd build && ../configure >/dev/null)
make -C build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

state=$top/state
sock=$state/blkledger.sock
mkdir -p "$state"
./build/blkledgerd --foreground --state-dir "$state" --socket "$sock" "$@" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT INT TERM

# The socket answers once the initial scan is in the journal.
i=0
until ./build/blkledger --socket "$sock" status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $daemon 2>/dev/null; then
                echo "blkledgerd did not come up" >&2
                exit 1
        fi
        sleep 0.1
done
echo
./build/blkledger --socket "$sock" list
echo
echo "Following changes (attach or detach a device to see them; Ctrl-C stops):"
./build/blkledger --socket "$sock" watch || true
