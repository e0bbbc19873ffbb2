#!/bin/sh
# Runs one test program (Automake's LOG_COMPILER) so that it cannot hang the suite, fight
# another test or leave anything behind:
#  - a time limit (timeout -k: TERM, then KILL), BLKLEDGER_TEST_TIMEOUT seconds;
#  - a private directory in BLKLEDGER_TEST_TMPDIR, removed afterwards;
#  - int-* tests (root, real devices, udevd) hold an exclusive lock, so under
#    make -j check they run one at a time;
#  - afterwards, whatever the test's fate: loop devices backed by files in its directory
#    are detached, processes it listed in $BLKLEDGER_TEST_TMPDIR/pids are killed, and
#    processes still naming its directory are killed (daemons also die with the test
#    through PR_SET_PDEATHSIG), and file systems mounted in it are unmounted.
set -u
prog=$1
shift
name=$(basename "$prog")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/blkledger-test.XXXXXX") || exit 99
# Tests check that unprivileged clients can reach sockets in here.
chmod 755 "$tmp"
BLKLEDGER_TEST_TMPDIR=$tmp
export BLKLEDGER_TEST_TMPDIR

limit=${BLKLEDGER_TEST_TIMEOUT:-120}
case $name in
int-*)
        limit=${BLKLEDGER_INT_TEST_TIMEOUT:-300}
        lock=${BLKLEDGER_TEST_LOCK:-${TMPDIR:-/tmp}/blkledger-devtests.lock}
        flock "$lock" timeout -k 10 "$limit" "$prog" "$@"
        rc=$?
        ;;
*)
        timeout -k 10 "$limit" "$prog" "$@"
        rc=$?
        ;;
esac
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "harness: $name did not finish within ${limit}s" >&2
fi

if [ -f "$tmp/pids" ]; then
        while read -r pid; do
                # Zombies are reaped by their parent, not killed.
                case $(ps -o stat= -p "$pid" 2>/dev/null) in
                ""|Z*) continue ;;
                esac
                kill -KILL "$pid" 2>/dev/null && echo "harness: killed leftover process $pid" >&2
        done < "$tmp/pids"
fi
pkill -KILL -f -- "$tmp" 2>/dev/null
for f in /sys/block/loop*/loop/backing_file; do
        [ -r "$f" ] || continue
        case $(cat "$f" 2>/dev/null) in
        "$tmp"/*)
                dev=/dev/$(basename "$(dirname "$(dirname "$f")")")
                echo "harness: detaching leftover $dev" >&2
                losetup -d "$dev" 2>/dev/null
                ;;
        esac
done
# File systems a test mounted in its directory (the hung-device test's FUSE mount):
# lazily, so that one whose server died does not keep the directory.
awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
        echo "harness: unmounting leftover $m" >&2
        umount -l "$m" 2>/dev/null
done
rm -rf "$tmp"
exit "$rc"
