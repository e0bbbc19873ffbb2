#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Continuous churn against a running blkledgerd, with and without event retention:
# how the ledger file and the latency of `blkledger list --json` and
# `blkledger history --since X` develop as events pile up. Root; not part of make check
# (`make bench-churn`, BENCH_CHURN_ARGS="..." passes options). docs/BENCHMARK.md,
# "History under churn", has the results.
#
# For each configuration (retention: --event-max-count MAX; none: 0 and 0) on a fresh
# state directory:
#  1. real churn for --real-seconds: --devices loop devices on sparse images are
#     detached and attached again (losetup), one round after another; the daemon sees
#     the uevents and records disappeared/reappeared events. Measured every
#     --real-every events, and the rate.
#  2. synthetic churn up to --events events in all: SetName calls, one after another,
#     over the daemon's socket (the real code path: Varlink, ledger, a transaction per
#     event, synchronous=FULL), alternating two names on one device. Measured every
#     --every events, with the calls' own latency (p50/p99/max), which shows what the
#     pruning batches cost the loop.
# A measurement: ledger.db and ledger.db-wal sizes, rows in events, and the median of
# --runs runs of `list --json`, `history --since LAST-1000` (the newest page) and
# `history --since 0 --limit 1000` (the oldest page left).
# Every loop device and process it made is removed at the end, also on failure or
# interrupt; loop devices are recognised by their backing file under its own directory.
set -euo pipefail

events=100000
every=10000
real_seconds=300
real_every=2000
devices=8
max_count=20000
runs=5
out=bench-churn-results
builddir=
lock=

usage() {
        cat <<EOF
usage: $0 [options]
  --events N          events in all per configuration (default: $events)
  --every N           measure every N synthetic events (default: $every)
  --real-seconds S    seconds of real loop attach/detach churn (default: $real_seconds; 0 skips)
  --real-every N      measure every N real events (default: $real_every)
  --devices N         loop devices churned (default: $devices)
  --max-count N       --event-max-count of the retention configuration (default: $max_count)
  --runs R            runs of each latency measurement, the median is reported (default: $runs)
  --out DIR           where churn.csv and churn.md go (default: $out)
  --builddir DIR      the configured, built tree (default: the current directory)
  --lock              wait for and hold the device lock of the test suite (tests/harness.sh),
                      so no int-* test runs meanwhile
EOF
}

while [ $# -gt 0 ]; do
        case $1 in
        --events) events=$2; shift 2 ;;
        --every) every=$2; shift 2 ;;
        --real-seconds) real_seconds=$2; shift 2 ;;
        --real-every) real_every=$2; shift 2 ;;
        --devices) devices=$2; shift 2 ;;
        --max-count) max_count=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --builddir) builddir=$2; shift 2 ;;
        --lock) lock=${BLKLEDGER_TEST_LOCK:-${TMPDIR:-/tmp}/blkledger-devtests.lock}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-churn: unknown option $1" >&2; usage >&2; exit 2 ;;
        esac
done

die() { echo "bench-churn: $*" >&2; exit 1; }
note() { echo "bench-churn: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it makes loop devices)"
command -v python3 >/dev/null || die "needs python3 (the socket client of the synthetic churn)"
builddir=$(cd "${builddir:-.}" && pwd)
daemon=$builddir/blkledgerd
cli=$builddir/blkledger
client=$builddir/tests/bench/bench-client
for f in "$daemon" "$cli" "$client"; do
        [ -x "$f" ] || die "$f is not built: run it with 'make bench-churn' in the build tree"
done
if [ -x "$builddir/.libs/blkledger" ]; then
        cli=$builddir/.libs/blkledger
        export LD_LIBRARY_PATH=$builddir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

if [ -n "$lock" ]; then
        exec 9>"$lock"
        note "waiting for $lock"
        flock 9
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /var/tmp/blkledger-churn.XXXXXX)
img=$work/img
sock=$work/sock
mkdir -p "$img"
daemon_pid=
declare -a nodes=() # every loop device node it used, for removal

stop_daemon() {
        if [ -n "$daemon_pid" ]; then
                kill -TERM "$daemon_pid" 2>/dev/null || true
                for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$daemon_pid" 2>/dev/null || true
                daemon_pid=
        fi
}

# Loop devices whose backing file is under our directory: ours, and only those.
our_loops() {
        local f
        for f in /sys/block/loop*/loop/backing_file; do
                [ -r "$f" ] || continue
                case $(cat "$f" 2>/dev/null) in
                "$work"/*) echo "/dev/$(basename "$(dirname "$(dirname "$f")")")" ;;
                esac
        done
}

cleanup() {
        set +e
        stop_daemon
        local d
        for d in $(our_loops); do
                losetup -d "$d" 2>/dev/null
                nodes+=("$d")
        done
        if [ ${#nodes[@]} -gt 0 ]; then
                # losetup -d leaves the node; remove the ones we used (now detached).
                mapfile -t nodes < <(printf '%s\n' "${nodes[@]}" | sort -u)
                sleep 0.5
                "$client" remove-loops "${nodes[@]}" 2>/dev/null
        fi
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
time_ms() {
        local i t0 t1
        for i in $(seq "$runs"); do
                t0=$(date +%s%N)
                "$@" >/dev/null 2>&1 || { echo "bench-churn: failed: $*" >&2; return 1; }
                t1=$(date +%s%N)
                awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }'
        done | median
}
status_field() { "$cli" --socket "$sock" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }

csv=$out/churn.csv
echo "config,phase,events,rows,db_bytes,wal_bytes,list_ms,history_new_ms,history_old_ms,calls_p50_ms,calls_p99_ms,calls_max_ms,pruned" >"$csv"

# One measurement; $1 config, $2 phase, $3 call latencies ("p50 p99 max" or "- - -").
measure() {
        local last pruned rows db wal l hn ho
        last=$(status_field last_seq)
        pruned=$(status_field events_pruned)
        rows=$(sqlite3 -readonly "file:$state/ledger.db?mode=ro" "SELECT COUNT(*) FROM events" 2>/dev/null || echo "?")
        db=$(size_of "$state/ledger.db")
        wal=$(size_of "$state/ledger.db-wal")
        l=$(time_ms "$cli" --socket "$sock" list --json)
        hn=$(time_ms "$cli" --socket "$sock" history --json --since $((last > 1000 ? last - 1000 : 0)))
        ho=$(time_ms "$cli" --socket "$sock" history --json --since 0 --limit 1000)
        read -r p50 p99 max <<<"$3"
        echo "$1,$2,$last,$rows,$db,$wal,$l,$hn,$ho,$p50,$p99,$max,$pruned" >>"$csv"
        printf 'bench-churn: %-9s %-9s events %7s rows %7s db %6s KiB wal %6s KiB list %6s ms history new %6s ms old %6s ms calls %s\n' \
                "$1" "$2" "$last" "$rows" $((db / 1024)) $((wal / 1024)) "$l" "$hn" "$ho" "$3" >&2
}

# The synthetic client: COUNT SetName calls on DEVICE, one after another, the name
# alternating with the parity of FIRST + i so that every call changes it (one event each).
setname_churn() {
        python3 - "$sock" "$1" "$2" "$3" <<'EOF'
import json, socket, sys, time
path, dev, count, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
buf = b""
lat = []
for i in range(count):
    msg = {"method": "io.blkledger.SetName", "parameters": {"device": dev, "name": "churn-%d" % ((first + i) % 2)}}
    t = time.monotonic()
    s.sendall(json.dumps(msg).encode() + b"\0")
    while b"\0" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("bench-churn: the daemon closed the connection")
        buf += d
    reply, buf = buf.split(b"\0", 1)
    lat.append((time.monotonic() - t) * 1000)
    if b'"error"' in reply:
        sys.exit("bench-churn: SetName failed: " + reply.decode())
lat.sort()
print("%.2f %.2f %.2f" % (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]))
EOF
}

for ((i = 0; i < devices; i++)); do
        truncate -s 16M "$img/d$i.img"
done
sync

run_config() {
        local config=$1; shift
        local -a loops=()
        local i d t_end last next n0 t0 rate
        state=$work/state-$config
        rm -rf "$state"
        for ((i = 0; i < devices; i++)); do
                d=$(losetup -f --show "$img/d$i.img") || die "losetup failed"
                loops+=("$d")
                nodes+=("$d")
        done
        r=$("$client" start "$sock" "$work/daemon-$config.log" "$daemon" --foreground --state-dir "$state" --socket "$sock" \
                --scope "loop:$img" --log-level warning "$@") || { cat "$work/daemon-$config.log" >&2; die "the daemon did not start"; }
        read -r _ _ daemon_pid <<<"$r"
        note "$config: daemon $daemon_pid with $*"

        if [ "$real_seconds" -gt 0 ]; then
                n0=$(status_field last_seq)
                t0=$(now_ms)
                t_end=$((t0 + real_seconds * 1000))
                next=$((n0 + real_every))
                while [ "$(now_ms)" -lt "$t_end" ]; do
                        for d in "${loops[@]}"; do losetup -d "$d"; done
                        loops=()
                        for ((i = 0; i < devices; i++)); do
                                d=$(losetup -f --show "$img/d$i.img") || die "losetup failed"
                                loops+=("$d")
                                nodes+=("$d")
                        done
                        last=$(status_field last_seq)
                        if [ "$last" -ge "$next" ]; then
                                measure "$config" real "- - -"
                                next=$((last + real_every))
                        fi
                done
                sleep 2 # the last uevents
                last=$(status_field last_seq)
                rate=$(awk -v n=$((last - n0)) -v ms=$(($(now_ms) - t0)) 'BEGIN { printf "%.1f", n * 1000 / ms }')
                note "$config: real churn: $((last - n0)) events in $real_seconds s ($rate events/s, $devices devices)"
                echo "# $config real churn: $((last - n0)) events in $real_seconds s, $rate events/s" >>"$out/churn-rates.txt"
                measure "$config" real "- - -"
        fi

        # One device stays attached for the synthetic churn.
        d=${loops[0]}
        last=$(status_field last_seq)
        while [ "$last" -lt "$events" ]; do
                # Up to the next multiple of --every, so both configurations are measured at
                # the same counts.
                n=$(((last / every + 1) * every - last))
                lat=$(setname_churn "$d" "$n" "$last") || die "synthetic churn failed"
                last=$(status_field last_seq)
                measure "$config" synthetic "$lat"
        done
        stop_daemon
        for d in "${loops[@]}"; do losetup -d "$d" 2>/dev/null || true; done
        note "$config: after stop: ledger.db $(($(size_of "$state/ledger.db") / 1024)) KiB"
}

: >"$out/churn-rates.txt"
run_config retention --event-max-count "$max_count"
run_config none --event-max-count 0 --event-max-age 0

# The Markdown table: every other synthetic point of each configuration, side by side.
{
        echo "| events appended | rows (retention / none) | ledger.db KiB | WAL KiB | list --json ms | history --since LAST-1000 ms | history --since 0 --limit 1000 ms | SetName p50 / p99 / max ms |"
        echo "|---|---|---|---|---|---|---|---|"
        join -t, -j1 <(awk -F, '$1 == "retention" && $2 == "synthetic" { print $3 "," $0 }' "$csv" | sort -t, -k1,1) \
                <(awk -F, '$1 == "none" && $2 == "synthetic" { print $3 "," $0 }' "$csv" | sort -t, -k1,1) |
                sort -t, -k1,1n |
                awk -F, '{ printf "| %s | %s / %s | %d / %d | %d / %d | %s / %s | %s / %s | %s / %s | %s/%s/%s ; %s/%s/%s |\n",
                        $1, $5, $18, $6 / 1024, $19 / 1024, $7 / 1024, $20 / 1024, $8, $21, $9, $22, $10, $23,
                        $11, $12, $13, $24, $25, $26 }'
} >"$out/churn.md"
cat "$out/churn-rates.txt" "$out/churn.md"
