#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the Debian packages from this tree, checks them with lintian, installs them,
# checks where the files landed, runs the installed blkledgerd by hand on a private
# socket and state directory (scope: loop devices under an empty directory, so it
# touches no device), asks it for its status, stops it and purges the packages again.
# For Debian 12, as root; non-interactive; exits non-zero on the first failure.
#
#   tools/deb-test.sh [--install-deps] [--outdir DIR] [--keep] [--fail-on LEVEL]
#
#   --install-deps   apt-get install the packaging tools and the Build-Depends first
#   --outdir DIR     copy the .debs, the .changes, the build log and lintian's report there
#   --keep           keep the work directory (build tree, logs) instead of removing it
#   --fail-on LEVEL  lintian levels that fail the run (lintian --fail-on), default "error"
#
# The build runs in a copy of the tree (tracked and untracked, not ignored, files), so
# the checkout is left as it was. If systemd is running, the packages' maintainer
# scripts would start blkledgerd.service and blkledgerd.socket: while the packages are
# installed, a policy-rc.d that refuses starts is put in place (unless one exists). The
# run refuses to start when blkledger packages are installed already, since it purges
# them at the end.
set -eu

die() { echo "deb-test: FAIL: $*" >&2; exit 1; }
step() { echo "deb-test: == $*"; }

install_deps=no keep=no outdir='' fail_on=error
while [ $# -gt 0 ]; do
        case $1 in
        --install-deps) install_deps=yes ;;
        --keep) keep=yes ;;
        --outdir) [ $# -ge 2 ] || die "--outdir needs a directory"; outdir=$2; shift ;;
        --outdir=*) outdir=${1#--outdir=} ;;
        --fail-on) [ $# -ge 2 ] || die "--fail-on needs a level"; fail_on=$2; shift ;;
        --fail-on=*) fail_on=${1#--fail-on=} ;;
        -h|--help) sed -n '3,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
done

[ "$(id -u)" -eq 0 ] || die "run as root (it installs and purges packages)"
top=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$top/debian/control" ] || die "$top/debian/control not found"
export DEBIAN_FRONTEND=noninteractive
pkgs="blkledger libblkledger0 libblkledger-dev"   # word-split on purpose below

for p in $pkgs; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed$'; then
                die "$p is installed already; this test purges it at the end, so remove it first"
        fi
done

work=$(mktemp -d /tmp/blkledger-deb-test.XXXXXX)
daemon_pid='' installed=no policy_created=no
cleanup() {
        rc=$?
        set +e
        if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
                kill "$daemon_pid"
                wait "$daemon_pid" 2>/dev/null
        fi
        if [ "$installed" = yes ]; then
                step "purging the packages"
                # shellcheck disable=SC2086
                apt-get purge -y -q $pkgs >"$work/purge.log" 2>&1 || { echo "deb-test: purge failed, see $work/purge.log" >&2; rc=1; keep=yes; }
        fi
        [ "$policy_created" = yes ] && rm -f /usr/sbin/policy-rc.d
        if [ "$keep" = yes ]; then
                echo "deb-test: work directory kept: $work"
        else
                rm -rf "$work"
        fi
        if [ "$rc" -eq 0 ]; then echo "deb-test: PASS"; else echo "deb-test: FAILED ($rc)" >&2; fi
        exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ "$install_deps" = yes ]; then
        step "installing the packaging tools and the build dependencies"
        apt-get update -q >"$work/apt.log" 2>&1 || die "apt-get update failed, see $work/apt.log"
        apt-get install -y -q --no-install-recommends build-essential dpkg-dev debhelper \
                fakeroot lintian pkg-config >>"$work/apt.log" 2>&1 || die "apt-get install failed, see $work/apt.log"
        apt-get build-dep -y -q "$top/" >>"$work/apt.log" 2>&1 || die "apt-get build-dep failed, see $work/apt.log"
fi
for c in dpkg-buildpackage dh lintian fakeroot; do
        command -v "$c" >/dev/null 2>&1 || die "$c is missing (try --install-deps)"
done
dpkg-checkbuilddeps "$top/debian/control" || die "build dependencies are missing (try --install-deps)"

step "copying the tree to $work/src"
mkdir "$work/src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # shellcheck disable=SC2016
        (cd "$top" && git ls-files -z --cached --others --exclude-standard |
                xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
                tar -c --null -T - -f -) | tar -x -C "$work/src" -f -
else
        cp -a "$top/." "$work/src/"
fi

step "dpkg-buildpackage -us -uc -b (log: build.log)"
(cd "$work/src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
        { tail -n 40 "$work/build.log" >&2; die "dpkg-buildpackage failed"; }
changes=$(ls "$work"/blkledger_*.changes)
version=$(sed -n 's/^Version: //p' "$changes")
upstream_version=${version%-*}
echo "deb-test: built $version"

step "lintian --pedantic -I (fails on: $fail_on)"
lintian_rc=0
lintian --pedantic -I --fail-on "$fail_on" "$changes" >"$work/lintian.log" 2>&1 || lintian_rc=$?
grep -v 'running with root privileges' "$work/lintian.log" || true
echo "deb-test: lintian: $(grep -c '^E:' "$work/lintian.log" || true) errors, $(grep -c '^W:' "$work/lintian.log" || true) warnings"
if [ -n "$outdir" ]; then
        mkdir -p "$outdir"
        cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work/build.log" "$work/lintian.log" "$outdir/"
fi
[ "$lintian_rc" -eq 0 ] || die "lintian reported tags at level '$fail_on' or above (or failed: $lintian_rc)"

deb() { echo "$work/${1}_${version}_$(dpkg --print-architecture).deb"; }
for p in $pkgs; do [ -f "$(deb "$p")" ] || die "$(deb "$p") was not built"; done

step "contents"
contains() { # PACKAGE PATTERN (an extended regex on the paths of dpkg -c)
        dpkg -c "$(deb "$1")" | awk '{print $6}' | grep -Eq "^\.$2\$" || die "$1 does not ship $2"
        echo "deb-test:   $1: $(dpkg -c "$(deb "$1")" | awk '{print $6}' | grep -E "^\.$2\$" | sed 's/^\.//' | tr '\n' ' ')"
}
contains blkledger '/usr/sbin/blkledgerd'
contains blkledger '/usr/bin/blkledger'
contains blkledger '(/usr)?/lib/udev/blkledger-udev'
contains blkledger '(/usr)?/lib/udev/rules\.d/60-blkledger\.rules'
contains blkledger '(/usr)?/lib/systemd/system/blkledgerd\.service'
contains blkledger '(/usr)?/lib/systemd/system/blkledgerd\.socket'
contains blkledger '/usr/share/man/man8/blkledgerd\.8\.gz'
contains blkledger '/usr/share/man/man1/blkledger\.1\.gz'
contains blkledger '/usr/share/man/man8/blkledger-udev\.8\.gz'
contains blkledger '/usr/share/man/man5/blkledgerd\.conf\.5\.gz'
contains blkledger '/etc/blkledger/blkledgerd\.conf'
# Under /etc, debhelper makes it a conffile: an admin's edits survive upgrades.
dpkg-deb -f "$(deb blkledger)" >/dev/null && dpkg-deb --ctrl-tarfile "$(deb blkledger)" | tar -xO ./conffiles 2>/dev/null |
        grep -qx /etc/blkledger/blkledgerd.conf || die "blkledger: /etc/blkledger/blkledgerd.conf is not a conffile"
contains blkledger '/usr/share/varlink/io\.blkledger\.varlink'
contains libblkledger0 '/usr/lib/[^/]+/libblkledger\.so\.0'
contains libblkledger0 '/usr/lib/[^/]+/libblkledger\.so\.0\.[0-9.]+'
contains libblkledger-dev '/usr/include/libblkledger\.h'
contains libblkledger-dev '/usr/lib/[^/]+/libblkledger\.so'
contains libblkledger-dev '/usr/lib/[^/]+/pkgconfig/libblkledger\.pc'
for p in $pkgs; do
        if dpkg -c "$(deb "$p")" | grep -q '\.la$'; then die "$p ships a .la file"; fi
done

if [ -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        step "systemd is running: refusing service starts while the packages are installed"
        printf '#!/bin/sh\n# deb-test.sh (blkledger): no service starts during the test\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=yes
fi

step "installing the packages"
installed=yes
apt-get install -y -q "$(deb blkledger)" "$(deb libblkledger0)" "$(deb libblkledger-dev)" \
        >"$work/install.log" 2>&1 || { keep=yes; cat "$work/install.log" >&2; die "installing failed"; }

step "checking the installed files"
out=$(/usr/sbin/blkledgerd --version) || die "blkledgerd --version failed"
echo "deb-test:   blkledgerd --version: $out"
[ "$out" = "blkledgerd $upstream_version" ] || die "blkledgerd --version says '$out', not 'blkledgerd $upstream_version'"
blkledger --help >/dev/null || die "blkledger --help failed"
udevhelper=$(dpkg -L blkledger | grep '/udev/blkledger-udev$')
"$udevhelper" --version >/dev/null || die "$udevhelper --version failed"
[ "$(pkg-config --modversion libblkledger)" = "$upstream_version" ] || die "pkg-config --modversion libblkledger is not $upstream_version"
echo "deb-test:   pkg-config: libblkledger $(pkg-config --modversion libblkledger), $(pkg-config --libs libblkledger)"
if command -v man >/dev/null 2>&1; then
        for m in blkledgerd blkledger blkledger-udev; do
                man -w "$m" >/dev/null 2>&1 || die "man -w $m finds nothing"
        done
        echo "deb-test:   man pages: $(man -w blkledgerd blkledger blkledger-udev | tr '\n' ' ')"
fi
for f in $(dpkg -L blkledger | grep -E '/(rules\.d/60-blkledger\.rules|blkledgerd\.service|blkledgerd\.socket)$'); do
        [ -f "$f" ] || die "$f is missing"
done
[ "$(dpkg -L blkledger | grep -cE '/(rules\.d/60-blkledger\.rules|blkledgerd\.service|blkledgerd\.socket)$')" -eq 3 ] ||
        die "the udev rules or the units are not installed"
# Enabled: the postinst made the [Install] symlinks (WantedBy=multi-user.target and
# sockets.target) below /etc/systemd/system.
for u in blkledgerd.service blkledgerd.socket; do
        [ -n "$(find /etc/systemd/system -name "$u" -type l)" ] || die "$u was not enabled by the postinst"
done
echo "deb-test:   units enabled: blkledgerd.service blkledgerd.socket"
if command -v cc >/dev/null 2>&1; then
        cat >"$work/client.c" <<'EOF'
#include <stdio.h>
#include <libblkledger.h>
int main(void) {
        puts(blkledger_default_socket());
        return 0;
}
EOF
        # shellcheck disable=SC2046
        cc -o "$work/client" "$work/client.c" $(pkg-config --cflags --libs libblkledger) ||
                die "a program does not build against libblkledger-dev"
        echo "deb-test:   a client built with pkg-config runs: default socket $("$work/client")"
fi

step "running the installed daemon on a private socket"
mkdir -p "$work/run/img"
sock=$work/run/blkledger.sock
/usr/sbin/blkledgerd --foreground --state-dir "$work/run/state" --socket "$sock" \
        --scope "loop:$work/run/img" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
i=0
until [ -S "$sock" ]; do
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; die "blkledgerd exited"; }
        i=$((i + 1))
        [ "$i" -le 100 ] || { cat "$work/daemon.log" >&2; die "no socket after 10 s"; }
        sleep 0.1
done
status=$(blkledger --socket "$sock" status) || { cat "$work/daemon.log" >&2; die "blkledger status failed"; }
echo "$status" | sed 's/^/deb-test:   /'
echo "$status" | grep -Eq "^version +$upstream_version\$" || die "status does not report version $upstream_version"
echo "$status" | grep -Eq "^pid +$daemon_pid\$" || die "status does not come from the daemon started here ($daemon_pid)"
blkledger --socket "$sock" list >/dev/null || die "blkledger list failed"
"$udevhelper" --socket "$sock" loop0 7:0 >/dev/null || die "blkledger-udev failed"
kill "$daemon_pid"
drc=0
wait "$daemon_pid" || drc=$?
daemon_pid=
# SIGTERM is a clean stop: blkledgerd exits 0 (or 143 if a shell reports the signal).
[ "$drc" -eq 0 ] || [ "$drc" -eq 143 ] || { cat "$work/daemon.log" >&2; die "blkledgerd exited with $drc after SIGTERM"; }
grep -q 'received SIGTERM, stopping' "$work/daemon.log" || die "blkledgerd did not log its stop"
echo "deb-test:   stopped (exit $drc)"

step "purging the packages"
# shellcheck disable=SC2086
apt-get purge -y -q $pkgs >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; die "purge failed"; }
installed=no
for p in $pkgs; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed$'; then die "$p is still installed"; fi
done
for f in /usr/sbin/blkledgerd /etc/systemd/system/multi-user.target.wants/blkledgerd.service \
        /etc/systemd/system/sockets.target.wants/blkledgerd.socket; do
        if [ -e "$f" ] || [ -L "$f" ]; then die "$f is left after the purge"; fi
done
