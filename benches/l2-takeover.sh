#!/usr/bin/env bash
# L2 takeover of many addresses at once (issue 16): a node decides to answer for N addresses
# (its peer died) and the bench times, from that decision, the first and the last gratuitous
# frame a capture on the link sees (gratuitous ARP for the IPv4 ones, unsolicited NA for the
# IPv6 ones; every address's first frame). Then one address more or less among the N, as a
# change (`L2Announcer::update`) and as a whole set (`set`), side by side: the median time of
# each call. Prints every run, then the median and max.
#
#   ns <tag>node  eth0 (the announcer: lb-announce-l2's `takeover` example)
#   ns <tag>obs   eth0, tcpdump
#
# Addresses: documentation prefixes only (762 IPv4, the rest in 2001:db8:1::/64).
# Needs root, iproute2 and tcpdump. Usage: benches/l2-takeover.sh [RUNS] [ADDRESSES]
# (default 5 runs of 10000). Every process it starts is stopped by PID, every namespace removed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
N=${2:-10000}
TAG=lbt$$
WORK=$(mktemp -d)
PIDS=()

command -v tcpdump >/dev/null || { echo "tcpdump is needed (apt-get install tcpdump)" >&2; exit 1; }
cargo build --release -q -p lb-announce-l2 --example takeover
BIN=./target/release/examples/takeover

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in node obs; do ip netns del "$TAG$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for ns in node obs; do
    ip netns add "$TAG$ns"
    ip -n "$TAG$ns" link set lo up
done
ip -n "${TAG}node" link add eth0 type veth peer name eth0 netns "${TAG}obs"
ip -n "${TAG}node" link set eth0 up
ip -n "${TAG}obs" link set eth0 up

results=()
for run in $(seq 1 "$RUNS"); do
    cap="$WORK/cap$run.pcap"
    ip netns exec "${TAG}obs" tcpdump -i eth0 -n -B 65536 --immediate-mode -U -w "$cap" \
        'arp or icmp6' 2>"$WORK/tcpdump$run.log" &
    PIDS+=($!)
    tpid=$!
    for _ in $(seq 1 50); do
        grep -q "listening" "$WORK/tcpdump$run.log" 2>/dev/null && break
        sleep 0.1
    done
    ip netns exec "${TAG}node" "$BIN" eth0 "$N" >"$WORK/out$run.txt"
    sleep 0.5
    kill "$tpid" && wait "$tpid" 2>/dev/null || true
    decided=$(awk '/^decision/ {print $2}' "$WORK/out$run.txt")
    sent=$(awk '/^first-round-sent/ {print $2}' "$WORK/out$run.txt")
    cut=$(awk '/^changes-start/ {print $2}' "$WORK/out$run.txt")
    line=$(tcpdump -r "$cap" -n -tt 2>/dev/null | awk -v c="$cut" '$1 < c / 1e9' | awk -v d="$decided" -v s="$sent" -v n="$N" '
        # Gratuitous ARP: "T ARP, Request who-has A tell A" (and the Reply form "A is-at M");
        # unsolicited NA: "T IP6 A > ff02::1: ICMP6, neighbor advertisement, tgt is A".
        / ARP, Request who-has / { a = $5; b = $7; sub(/,$/, "", b); if (a == b && !(a in seen)) seen[a] = $1 }
        / ARP, Reply / { if (!($4 in seen)) seen[$4] = $1 }
        /neighbor advertisement, tgt is / {
            for (i = 2; i <= NF; i++) if ($(i - 1) == "is") { a = $i; sub(/,$/, "", a) }
            if (!(a in seen)) seen[a] = $1
        }
        END {
            first = -1; last = -1; count = 0
            for (a in seen) { t = seen[a]; count++
                if (first < 0 || t < first) first = t; if (t > last) last = t }
            dd = d / 1e9
            printf "%d %.1f %.1f %.1f\n", count, (first - dd) * 1000, (last - dd) * 1000, (s / 1e9 - dd) * 1000
        }')
    dropped=$(awk '/dropped by kernel/ {print $1}' "$WORK/tcpdump$run.log")
    read -r count first last sentms <<<"$line"
    change=$(awk '/^change-one-us/ {print $2}' "$WORK/out$run.txt")
    whole=$(awk '/^whole-one-us/ {print $2}' "$WORK/out$run.txt")
    echo "run $run: $count of $N addresses seen (capture dropped ${dropped:-?}); first frame ${first} ms, last ${last} ms after the decision (set returned at ${sentms} ms); one address more or less among them: ${change} us as a change, ${whole} us as a whole set"
    results+=("$first $last")
done
firsts=$(printf '%s\n' "${results[@]}" | awk '{print $1}' | sort -n)
lasts=$(printf '%s\n' "${results[@]}" | awk '{print $2}' | sort -n)
median() { awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
echo "median: first $(median <<<"$firsts") ms, last $(median <<<"$lasts") ms; max: first $(tail -1 <<<"$firsts") ms, last $(tail -1 <<<"$lasts") ms ($RUNS runs of $N addresses)"
