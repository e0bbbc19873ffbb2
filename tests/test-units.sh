#!/bin/sh
# Description: the systemd units as built: `systemd-analyze verify` accepts them (against
# a private root with the daemon and its man page where the unit says), and the service's
# exposure in `systemd-analyze security --offline=true` is 5.0 or lower (docs/ARCHITECTURE.md
# has the number). Skipped (77) without systemd-analyze.
set -u
b=${BLKLEDGER_TOP_BUILDDIR:-.}
s=${BLKLEDGER_TOP_SRCDIR:-.}
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze is not installed (package systemd)"; exit 77; }
[ -f "$b/units/blkledgerd.service" ] || { echo "units not built: make units/blkledgerd.service"; exit 99; }
tmp=${BLKLEDGER_TEST_TMPDIR:-$(mktemp -d)}
root=$tmp/root
exe=$(sed -n 's/^ExecStart=//p' "$b/units/blkledgerd.service" | cut -d' ' -f1)
mkdir -p "$root$(dirname "$exe")" "$root/etc/systemd/system" "$root/usr/share/man/man8"
cp "$b/blkledgerd" "$root$exe"
cp "$s/docs/man/blkledgerd.8" "$root/usr/share/man/man8/"
# systemd's own units, for the dependencies (sockets.target, ...); Debian 12 has /lib in
# /usr/lib.
mkdir -p "$root/usr/lib"
cp -a /usr/lib/systemd "$root/usr/lib/"
[ -e "$root/lib" ] || ln -s usr/lib "$root/lib"
cp "$b/units/blkledgerd.service" "$b/units/blkledgerd.socket" "$root/etc/systemd/system/"
out=$(MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" \
        "$root/etc/systemd/system/blkledgerd.service" "$root/etc/systemd/system/blkledgerd.socket" 2>&1)
rc=$?
echo "systemd-analyze verify: $rc $out"
[ "$rc" -eq 0 ] && [ -z "$out" ] || { echo "FAIL: verify"; exit 1; }
line=$(systemd-analyze security --offline=true "$b/units/blkledgerd.service" 2>&1 | grep 'Overall exposure level')
echo "$line"
score=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
[ -n "$score" ] || { echo "FAIL: no score"; exit 1; }
awk -v s="$score" 'BEGIN { exit !(s <= 5.0) }' || { echo "FAIL: exposure $score is above 5.0"; exit 1; }
echo "exposure $score <= 5.0"
