#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The benchmark: blkledger against the tools people use today, on the same loop devices
# in the same run. Run it as root with `make bench` (BENCH_ARGS="..." passes options);
# docs/BENCHMARK.md explains what it measures and shows the last results.
#
# For each N it makes N loop devices (64 MiB sparse images, 30% of them ext4), then takes
# the median of --runs runs of each job: blkledger's cold start to a fully verified
# ledger, its restart with nothing changed (served, and fully re-verified), a full
# reconcile, `blkledger list --json`, its peak RSS; `blkid -c /dev/null` over the same
# devices, `lsblk -f -J`, `udevadm trigger --settle` of the same devices with
# systemd-udevd running, and udisksd's start until it lists them, with its peak RSS.
# At the N nearest 1000 it also measures a pass with one hung device (a loop device on
# tests/fuse-hang) and the socket latency meanwhile, and the latency from a loop attach
# to the event reaching a Watch client. It prints the table of ratios and writes CSV,
# a Markdown table and a plot (SVG and PNG, gnuplot) to --out. Every device, mount and
# process it started is removed at the end, also when it fails or is interrupted.
set -euo pipefail

sizes="100 1000 4000"
runs=3
out=bench-results
builddir=
probe_timeout=5
events=200
share=30

usage() {
        cat <<EOF
usage: $0 [options]
  --sizes "N..."        device counts (default: "$sizes")
  --runs R              runs of each job, the median is reported (default: $runs)
  --out DIR             where the CSV, table and plot go (default: $out)
  --builddir DIR        the configured, built tree (default: the current directory)
  --probe-timeout SEC   the daemon's probe timeout in the hung-device run (default: $probe_timeout)
  --events COUNT        attaches for the event latency (default: $events; 0 skips)
EOF
}

while [ $# -gt 0 ]; do
        case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --builddir) builddir=$2; shift 2 ;;
        --probe-timeout) probe_timeout=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
        esac
done

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it makes loop devices and starts udevd, dbus and udisksd)"
builddir=$(cd "${builddir:-.}" && pwd)
daemon=$builddir/blkledgerd
cli=$builddir/blkledger
client=$builddir/tests/bench/bench-client
fusehang=$builddir/tests/fuse-hang
for f in "$daemon" "$cli" "$client"; do
        [ -x "$f" ] || die "$f is not built: run it with 'make bench' in the build tree"
done
# In a build tree the CLI is libtool's wrapper script, which costs a shell per call; the
# installed CLI is the binary itself.
if [ -x "$builddir/.libs/blkledger" ]; then
        cli=$builddir/.libs/blkledger
        export LD_LIBRARY_PATH=$builddir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# What the other side of the comparison needs; the benchmark installs it.
want="util-linux e2fsprogs udev systemd udisks2 dbus gnuplot-nox"
missing=
for p in $want; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
        note "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /var/tmp/blkledger-bench.XXXXXX)
img=$work/img
state=$work/state
sock=$work/sock
mkdir -p "$img"
daemon_pid=
udevd_started=
dbus_started=
fuse_pid=
hung_dev=
declare -a devs=()

stop_daemon() {
        if [ -n "$daemon_pid" ]; then
                kill -TERM "$daemon_pid" 2>/dev/null || true
                for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$daemon_pid" 2>/dev/null || true
                daemon_pid=
        fi
}

cleanup() {
        set +e
        stop_daemon
        pkill -TERM -f /usr/libexec/udisks2/udisksd 2>/dev/null
        [ -n "$fuse_pid" ] && kill -USR2 "$fuse_pid" 2>/dev/null
        local -a mine=()
        for f in /sys/block/loop*/loop/backing_file; do
                [ -r "$f" ] || continue
                case $(cat "$f" 2>/dev/null) in
                "$work"/*)
                        mine+=("/dev/$(basename "$(dirname "$(dirname "$f")")")")
                        losetup -d "${mine[-1]}" 2>/dev/null
                        ;;
                esac
        done
        # Detached nodes stay; thousands of them would slow every later enumeration.
        mine+=("${devs[@]}")
        [ -n "${hung_dev:-}" ] && mine+=("$hung_dev")
        if [ ${#mine[@]} -gt 0 ]; then
                echo "bench: removing the ${#mine[@]} loop devices it made (the kernel takes a while)" >&2
                sleep 0.5
                "$client" remove-loops "${mine[@]}" 2>/dev/null
        fi
        if [ -n "$fuse_pid" ]; then
                sleep 0.5
                kill -TERM "$fuse_pid" 2>/dev/null
                sleep 0.5
                umount -l "$img/fuse" 2>/dev/null
        fi
        [ -n "$udevd_started" ] && stop_udevd
        [ -n "$dbus_started" ] && kill "$(cat /run/dbus/pid 2>/dev/null)" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Runs a command once to warm the caches (the backing files' page cache above all), then
# runs times; prints the median wall time in ms.
time_ms() {
        local i t0 t1
        "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; return 1; }
        for i in $(seq "$runs"); do
                t0=$(now_ms)
                "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; return 1; }
                t1=$(now_ms)
                echo $((t1 - t0))
        done | median
}
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

csv=$out/bench.csv
echo "n,job,tool,median_ms,runs" >"$csv"
record() { echo "$1,$2,$3,$4,$runs" >>"$csv"; printf '  %-34s %-10s %10s\n' "$2" "$3" "$4" >&2; }

# Loop devices: images made once, attached as N grows (the first 100 of 1000 are the 100).
attached=0
grow_to() {
        local n=$1 i f
        for ((i = attached; i < n; i++)); do
                f=$img/d$i.img
                truncate -s 64M "$f"
                if [ $((i % 100)) -lt "$share" ]; then
                        mkfs.ext4 -q -F "$f" >/dev/null 2>&1 || die "mkfs.ext4 $f failed"
                fi
                devs+=("$(losetup -f --show "$f")")
        done
        attached=$n
        sync # no writeback of the new images during the runs
}
sysfs_of() { local d; for d in "$@"; do echo "/sys/class/block/${d#/dev/}"; done; }

# Starts the daemon (extra arguments are passed on); sets daemon_pid, and served and
# verified to the ms until it answered and until its first pass was complete.
start_daemon() {
        local r
        r=$("$client" start "$sock" "$work/daemon.log" "$daemon" --foreground --state-dir "$state" --socket "$sock" \
                --scope "loop:$img" --log-level warning "$@") || { cat "$work/daemon.log" >&2; die "the daemon did not start"; }
        read -r served verified daemon_pid <<<"$r"
}

# A udevd that answers, not a process of that name (an exited one may linger unreaped).
udevd_alive() { udevadm control --ping --timeout=2 >/dev/null 2>&1; }
ensure_udevd() {
        if ! udevd_alive; then
                /lib/systemd/systemd-udevd --daemon >/dev/null 2>&1 || die "cannot start systemd-udevd"
                udevd_started=1
                udevadm settle
        fi
}
stop_udevd() {
        if [ -n "$udevd_started" ]; then
                udevadm control --exit
                for _ in $(seq 50); do udevd_alive || break; sleep 0.1; done
                udevd_started=
        fi
}
ensure_dbus() {
        if ! busctl --system status >/dev/null 2>&1; then
                mkdir -p /run/dbus
                rm -f /run/dbus/pid
                dbus-daemon --system --fork >/dev/null || die "cannot start the system bus"
                dbus_started=1
        fi
}
# udisksd from start until it lists n loop devices; prints "ms rss_kb".
udisks_run() {
        local n=$1 t0 pid count t1 rss
        t0=$(now_ms)
        /usr/libexec/udisks2/udisksd >"$work/udisksd.log" 2>&1 &
        pid=$!
        while :; do
                count=$(busctl --system --auto-start=no call org.freedesktop.UDisks2 /org/freedesktop/UDisks2/Manager \
                        org.freedesktop.UDisks2.Manager GetBlockDevices 'a{sv}' 0 2>/dev/null |
                        grep -o '/block_devices/loop[0-9]*' | sort -u | grep -c . || true)
                [ "$count" -ge "$n" ] && break
                kill -0 "$pid" 2>/dev/null || die "udisksd exited: $(tail -3 "$work/udisksd.log")"
                [ $(($(now_ms) - t0)) -lt 900000 ] || die "udisksd did not list $n devices in 15 minutes"
                sleep 0.02
        done
        t1=$(now_ms)
        rss=$(hwm_kb "$pid")
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
        echo "$((t1 - t0)) $rss"
}

declare -A res
hang_n=
for n in $sizes; do
        [ -z "$hang_n" ] || [ $((n > 1000 ? n - 1000 : 1000 - n)) -lt $((hang_n > 1000 ? hang_n - 1000 : 1000 - hang_n)) ] && hang_n=$n
done

for n in $sizes; do
        note "N=$n: making devices"
        grow_to "$n"
        mine=("${devs[@]:0:$n}")
        note "N=$n: measuring ($runs runs each)"

        v=$(time_ms blkid -c /dev/null "${mine[@]}"); res[$n,blkid]=$v; record "$n" probe_all blkid "$v"
        v=$(time_ms lsblk -f -J); res[$n,lsblk]=$v; record "$n" list_all lsblk "$v"

        # blkledger: cold starts (each with an empty state directory), then the last
        # daemon serves the other jobs.
        cold=() served_all=() verified_all=()
        for i in $(seq 0 "$runs"); do # run 0 warms the caches
                stop_daemon
                rm -rf "$state"
                start_daemon
                [ "$i" -eq 0 ] || cold+=("$verified")
        done
        v=$(printf '%s\n' "${cold[@]}" | median); res[$n,cold]=$v; record "$n" cold_start_verified blkledger "$v"
        v=$(time_ms "$cli" --socket "$sock" reconcile); res[$n,reconcile]=$v; record "$n" reconcile blkledger "$v"
        v=$(time_ms "$cli" --socket "$sock" list --json); res[$n,list]=$v; record "$n" list_all blkledger "$v"
        for i in $(seq "$runs"); do
                stop_daemon
                start_daemon
                served_all+=("$served")
                verified_all+=("$verified")
        done
        v=$(printf '%s\n' "${served_all[@]}" | median); res[$n,restart_served]=$v; record "$n" restart_served blkledger "$v"
        v=$(printf '%s\n' "${verified_all[@]}" | median); res[$n,restart_verified]=$v; record "$n" restart_verified blkledger "$v"
        "$cli" --socket "$sock" reconcile >/dev/null
        v=$(hwm_kb "$daemon_pid"); res[$n,rss]=$v; record "$n" peak_rss_kb blkledger "$v"
        stop_daemon

        ensure_udevd
        mapfile -t syspaths < <(sysfs_of "${mine[@]}")
        v=$(time_ms udevadm trigger --settle --action=change "${syspaths[@]}"); res[$n,udevadm]=$v
        record "$n" probe_all udevadm "$v"

        ensure_dbus
        ms=() rss=()
        udisks_run "$n" >/dev/null # warms the caches
        for i in $(seq "$runs"); do
                r=$(udisks_run "$n")
                ms+=("${r% *}")
                rss+=("${r#* }")
        done
        v=$(printf '%s\n' "${ms[@]}" | median); res[$n,udisks]=$v; record "$n" start_listed udisksd "$v"
        v=$(printf '%s\n' "${rss[@]}" | median); res[$n,udisks_rss]=$v; record "$n" peak_rss_kb udisksd "$v"
        stop_udevd

        [ "$n" = "$hang_n" ] || continue

        # One hung device among the others: a loop device on tests/fuse-hang.
        if [ -x "$fusehang" ] && [ -e /dev/fuse ]; then
                note "N=$n: one hung device (probe timeout ${probe_timeout} s)"
                mkdir -p "$work/store" "$img/fuse"
                truncate -s 64M "$work/store/disk.img"
                mkfs.ext4 -q -F "$work/store/disk.img" >/dev/null 2>&1
                "$fusehang" "$img/fuse" "$work/store/disk.img" 120 >"$work/fuse.log" 2>&1 &
                fuse_pid=$!
                for _ in $(seq 100); do [ -s "$img/fuse/disk.img" ] && break; sleep 0.05; done
                hung_dev=$(losetup -f --show "$img/fuse/disk.img")
                rm -rf "$state"
                start_daemon --probe-timeout "$probe_timeout"
                idle=$("$client" latency "$sock" 5000)
                v=$(time_ms "$cli" --socket "$sock" reconcile); res[$n,pass_nohang]=$v
                record "$n" reconcile_no_hang blkledger "$v"
                hang_ms=() hang_p99=()
                for i in $(seq "$runs"); do
                        kill -USR1 "$fuse_pid"
                        "$client" latency "$sock" $((probe_timeout * 1000 + ${res[$n,pass_nohang]%.*} + 1000)) \
                                >"$work/lat" &
                        lat_pid=$!
                        t0=$(now_ms)
                        "$cli" --socket "$sock" reconcile >/dev/null
                        hang_ms+=($(($(now_ms) - t0)))
                        wait "$lat_pid"
                        hang_p99+=("$(awk '{ print $3 }' "$work/lat")")
                        kill -USR2 "$fuse_pid"
                        # Until it answers again and is probed.
                        for _ in $(seq 300); do
                                "$cli" --socket "$sock" show "$hung_dev" --json 2>/dev/null |
                                        grep -q '"state": "present"' && break
                                sleep 0.1
                        done
                done
                v=$(printf '%s\n' "${hang_ms[@]}" | median); res[$n,pass_hang]=$v
                record "$n" reconcile_one_hung blkledger "$v"
                res[$n,p99_idle]=$(echo "$idle" | awk '{ print $3 }')
                record "$n" socket_p99_idle_ms blkledger "${res[$n,p99_idle]}"
                v=$(printf '%s\n' "${hang_p99[@]}" | median); res[$n,p99_hang]=$v
                record "$n" socket_p99_hung_ms blkledger "$v"
                stop_daemon
                kill -USR2 "$fuse_pid"
                losetup -d "$hung_dev"
                sleep 0.5
                "$client" remove-loops "$hung_dev" || true
                hung_dev=
                kill -TERM "$fuse_pid"
                wait "$fuse_pid" 2>/dev/null || true
                fuse_pid=
                umount -l "$img/fuse" 2>/dev/null || true
                rm -rf "$img/fuse" "$work/store"
        else
                note "tests/fuse-hang is not built (no fuse3 at configure time): no hung-device run"
        fi

        if [ "$events" -gt 0 ]; then
                note "N=$n: event latency over $events attaches"
                mkdir -p "$img/events"
                rm -rf "$state"
                start_daemon
                r=$("$client" events "$sock" "$img/events" "$events")
                res[$n,ev_p50]=$(echo "$r" | awk '{ print $2 }')
                res[$n,ev_p99]=$(echo "$r" | awk '{ print $3 }')
                record "$n" event_latency_p50_ms blkledger "${res[$n,ev_p50]}"
                record "$n" event_latency_p99_ms blkledger "${res[$n,ev_p99]}"
                stop_daemon
        fi
done

# The targets of issue 4, as ratios measured in this run.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "" && b != "") printf "%.3f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v l="$2" 'BEGIN { if (r == "n/a") print "n/a"; else print (r <= l ? "met" : "NOT met") }'; }
table=$out/table.md
{
        echo "| target | measured | limit | |"
        echo "|---|---|---|---|"
        t=$hang_n
        line() { echo "| $1 | $2 | $3 | $(verdict "$2" "$3") |"; }
        line "cold start to verified ledger / blkid -c /dev/null (N=$t)" "$(ratio "${res[$t,cold]}" "${res[$t,blkid]}")" 0.25
        line "restart, serving / udisksd start to listed (N=$t)" "$(ratio "${res[$t,restart_served]}" "${res[$t,udisks]}")" 0.5
        line "restart, re-verified / blkid -c /dev/null (N=$t)" "$(ratio "${res[$t,restart_verified]}" "${res[$t,blkid]}")" 0.25
        line "list --json / lsblk -f -J (N=$t)" "$(ratio "${res[$t,list]}" "${res[$t,lsblk]}")" 0.2
        line "peak RSS / udisksd's (N=$t)" "$(ratio "${res[$t,rss]}" "${res[$t,udisks_rss]}")" 0.5
        first=${sizes%% *} last=${sizes##* }
        if [ "$first" != "$last" ]; then
                a=$(awk -v x="${res[$last,cold]}" -v n="$last" 'BEGIN { print x / n }')
                b=$(awk -v x="${res[$first,cold]}" -v n="$first" 'BEGIN { print x / n }')
                line "cold start per device, N=$last / N=$first" "$(ratio "$a" "$b")" 1.3
                a=$(awk -v x="${res[$last,reconcile]}" -v n="$last" 'BEGIN { print x / n }')
                b=$(awk -v x="${res[$first,reconcile]}" -v n="$first" 'BEGIN { print x / n }')
                line "reconcile per device, N=$last / N=$first" "$(ratio "$a" "$b")" 1.3
        fi
        if [ -n "${res[$t,pass_hang]:-}" ]; then
                bound=$(awk -v p="${res[$t,pass_nohang]}" -v to="$probe_timeout" 'BEGIN { print 1.1 * p + to * 1000 }')
                line "pass with one hung device / (1.1 x no-hang pass + timeout) (N=$t)" "$(ratio "${res[$t,pass_hang]}" "$bound")" 1
                line "socket p99 during it / idle p99 (N=$t)" "$(ratio "${res[$t,p99_hang]}" "${res[$t,p99_idle]}")" 2
        fi
        echo
        echo "| N | job | blkledger | blkid -c /dev/null | lsblk -f -J | udevadm trigger --settle | udisksd |"
        echo "|---|---|---|---|---|---|---|"
        for n in $sizes; do
                echo "| $n | probe every device, cold (ms) | ${res[$n,cold]} | ${res[$n,blkid]} | | ${res[$n,udevadm]} | ${res[$n,udisks]} |"
                echo "| $n | restart: serving / verified (ms) | ${res[$n,restart_served]} / ${res[$n,restart_verified]} | | | | |"
                echo "| $n | full reconcile (ms) | ${res[$n,reconcile]} | | | | |"
                echo "| $n | list as JSON (ms) | ${res[$n,list]} | | ${res[$n,lsblk]} | | |"
                echo "| $n | peak RSS (MiB) | $(awk -v k="${res[$n,rss]}" 'BEGIN { printf "%.1f", k / 1024 }') | | | | $(awk -v k="${res[$n,udisks_rss]}" 'BEGIN { printf "%.1f", k / 1024 }') |"
        done
        if [ -n "${res[$hang_n,ev_p50]:-}" ]; then
                echo
                echo "Event latency, loop attach to the event at a Watch client ($events attaches, N=$hang_n):" \
                        "p50 ${res[$hang_n,ev_p50]} ms, p99 ${res[$hang_n,ev_p99]} ms."
        fi
        if [ -n "${res[$hang_n,pass_hang]:-}" ]; then
                echo
                echo "One hung device among $hang_n (probe timeout $probe_timeout s): pass ${res[$hang_n,pass_hang]} ms" \
                        "(without: ${res[$hang_n,pass_nohang]} ms); socket p99 ${res[$hang_n,p99_hang]} ms (idle: ${res[$hang_n,p99_idle]} ms)."
        fi
} >"$table"

# Time against N, log-log.
plotdata=$work/plot.dat
for n in $sizes; do
        echo "$n ${res[$n,cold]} ${res[$n,restart_verified]} ${res[$n,reconcile]} ${res[$n,list]} ${res[$n,blkid]} ${res[$n,lsblk]} ${res[$n,udevadm]} ${res[$n,udisks]}"
done >"$plotdata"
plot() {
        gnuplot <<EOF
set terminal $1 size 900,560
set output "$2"
set title "blkledger and the usual tools on N loop devices ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
set xlabel "devices (N)"
set ylabel "wall time (ms), median of $runs"
set logscale xy
set key top left
set grid
plot "$plotdata" u 1:2 w lp lw 2 t "blkledger cold start to verified", \
     "" u 1:3 w lp lw 2 t "blkledger restart to re-verified", \
     "" u 1:4 w lp lw 2 t "blkledger reconcile", \
     "" u 1:5 w lp lw 2 t "blkledger list --json", \
     "" u 1:6 w lp t "blkid -c /dev/null", \
     "" u 1:7 w lp t "lsblk -f -J", \
     "" u 1:8 w lp t "udevadm trigger --settle", \
     "" u 1:9 w lp t "udisksd start to listed"
EOF
}
plot svg "$out/bench.svg"
plot "png" "$out/bench.png" 2>/dev/null || note "gnuplot has no png terminal; SVG only"

echo
cat "$table"
echo
echo "CSV: $csv; table: $table; plot: $out/bench.svg"
