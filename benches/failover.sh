#!/usr/bin/env bash
# L2 failover: three `lb-bin standalone` nodes beside three keepalived (VRRP) nodes, in the same
# run, on the same kind of topology: a client pings the virtual address every 10 ms while its
# owner crashes (SIGKILL and link down, as TESTBED.md measures keepalived) or stops (SIGTERM).
# The outage is the largest gap between consecutive echo replies. Prints every run and the
# median and max per system and failure.
#
#   ns <tag>br  bridge br0
#   ns <tag>cl  client 192.0.2.100/24
#   ns <tag>n1..n3  192.0.2.11-13/24, VIP 192.0.2.200
#
# lb-bin-loss5 is lb-bin with 5 % of the membership datagrams each node receives dropped at
# random (nftables numgen), the false-positive load its failure detector must ride out.
#
# Needs root, iproute2, iputils-ping, nftables and keepalived. Every process it starts is stopped
# by PID and every namespace removed on exit. Usage: benches/failover.sh [RUNS] (default 5);
# ONLY="lb-bin keepalived-0.1s" limits the systems measured; LOGS=DIR keeps the nodes' logs there
# (one file per node and run).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
VIP=192.0.2.200
TAG=lbf$$
WORK=$(mktemp -d)
PIDS=()
LOGN=0

command -v keepalived >/dev/null || { echo "keepalived is needed (apt-get install keepalived)" >&2; exit 1; }
command -v nft >/dev/null || { echo "nftables is needed (apt-get install nftables)" >&2; exit 1; }
cargo build --release -q -p lb-bin
LB=./target/release/lb-bin

cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$WORK"/*.log* "$LOGS"/ 2>/dev/null || true; fi
    for ns in n1 n2 n3 cl br; do ip netns del "$TAG$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "${TAG}br"
ip -n "${TAG}br" link add br0 type bridge
ip -n "${TAG}br" link set br0 up
for pair in n1:192.0.2.11 n2:192.0.2.12 n3:192.0.2.13 cl:192.0.2.100; do
    short=${pair%%:*}; addr=${pair#*:}; ns=$TAG$short
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$short" netns "${TAG}br"
    ip -n "${TAG}br" link set "$short" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
done

mac_of_node() { ip -n "$TAG$1" -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }

# Which node answers for the VIP now, as the client's kernel resolves it.
owner() {
    ip netns exec "${TAG}cl" ping -c 1 -W 1 "$VIP" >/dev/null 2>&1 || true
    local mac
    mac=$(ip -n "${TAG}cl" neigh show "$VIP" | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
    for n in n1 n2 n3; do
        [ "$(mac_of_node "$n")" = "$mac" ] && { echo "$n"; return; }
    done
    echo none
}

wait_owner() {
    for _ in $(seq 100); do
        o=$(owner); [ "$o" != none ] && { echo "$o"; return; }
        sleep 0.1
    done
    echo none
}

# The largest gap, in seconds, between consecutive replies in `ping -D` output, counting the
# time from the last reply to END (when ping stopped): replies that never resume are an outage.
gap() {
    awk -F'[][]' -v end="$2" '/bytes from/ { t=$2; if (p != "" && t-p > m) m=t-p; p=t }
        END { if (p == "" || end-p > m) m=end-p; printf "%.3f", m }' "$1"
}

# measure NAME MODE START STOP: starts the three nodes, waits for an owner, pings, fails it.
measure() {
    local name=$1 mode=$2 start=$3 stop=$4 o out
    declare -gA NODEPID=()
    for n in n1 n2 n3; do "$start" "$n"; done
    o=$(wait_owner)
    [ "$o" = none ] && { echo "$name: nobody owns $VIP" >&2; exit 1; }
    sleep 1
    out=$WORK/ping.$name.$mode
    ip netns exec "${TAG}cl" ping -D -n -i 0.01 -W 1 -w 8 "$VIP" > "$out" 2>/dev/null &
    local ping=$!; PIDS+=("$ping")
    sleep 1
    echo "$name $mode: $o stopped at $(date -u +%T.%N), node logs up to .$LOGN" >> "$WORK/events.log"
    "$stop" "$o" "$mode"
    wait "$ping" || true
    local end lost
    end=$(date +%s.%N)
    lost=$(awk '/packets transmitted/ { print $1 - $4 }' "$out")
    echo "$name $mode $(gap "$out" "$end") ${lost:-?}" | tee -a "$WORK/results"
    echo "   (owner was $o)" >&2
    for n in n1 n2 n3; do "$stop" "$n" kill-all; ip -n "$TAG$n" link set eth0 up; done
    rm -f "$WORK"/ka.*.pid
    ip -n "${TAG}cl" neigh flush all
    sleep 0.5
}

cat > "$WORK/lb.yaml" <<EOF
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: vip}
spec: {addresses: [$VIP/32]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: vip}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
EOF

head -c 96 /dev/urandom | base64 > "$WORK/key"

lb_start() {
    local i=${1#n}
    LOGN=$((LOGN + 1))
    ip netns exec "$TAG$1" "$LB" standalone --config "$WORK/lb.yaml" --node-name "node$i" \
        --bind "192.0.2.1$i:7946" --join 192.0.2.11:7946 --join 192.0.2.12:7946 \
        --secret-key-file "$WORK/key" 2>"$WORK/lb.$1.log.$LOGN" &
    NODEPID[$1]=$!; PIDS+=("$!"); disown "$!"
}

# lb-bin with 5 % of the membership datagrams it receives dropped.
lb_start_loss() {
    echo 'table inet lbloss { chain in { type filter hook input priority 0; udp dport 7946 numgen random mod 100 < 5 drop; }; }' |
        ip netns exec "$TAG$1" nft -f -
    lb_start "$1"
}

ka_start() {
    local i=${1#n} prio=$(( 200 - ${1#n} * 50 ))
    cat > "$WORK/ka.$1.conf" <<EOF
global_defs { router_id node$i
  $KA_GLOBAL }
vrrp_instance VI {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority $prio
  advert_int $KA_ADVERT
  virtual_ipaddress { $VIP/32 dev eth0 }
}
EOF
    ip netns exec "$TAG$1" keepalived -n -l -f "$WORK/ka.$1.conf" -p "$WORK/ka.$1.pid" \
        -r "$WORK/ka.$1.vrrp.pid" >/dev/null 2>&1 &
    NODEPID[$1]=$!; PIDS+=("$!"); disown "$!"
}

# stop NODE MODE: crash (SIGKILL of every process started there, and link down), term
# (SIGTERM to the main process), kill-all (clean-up between runs).
node_stop() {
    local n=$1 mode=$2 pids
    pids=$(ip netns pids "$TAG$n" 2>/dev/null || true)
    case $mode in
        crash) [ -n "$pids" ] && kill -9 $pids; ip -n "$TAG$n" link set eth0 down ;;
        term) kill -TERM "${NODEPID[$n]}" || echo "$n: no process to stop" >&2 ;;
        # A killed keepalived leaves the VIP on eth0, and lb-bin its dummy interface: remove
        # both, or the next measurement has a second kernel answering for the VIP.
        kill-all) [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
                  ip -n "$TAG$n" addr del "$VIP/32" dev eth0 2>/dev/null || true
                  ip -n "$TAG$n" link del lb0 2>/dev/null || true
                  ip netns exec "$TAG$n" nft delete table inet lbloss 2>/dev/null || true ;;
    esac
}

: > "$WORK/results"
ONLY=${ONLY:-lb-bin lb-bin-loss5 keepalived-1s keepalived-0.1s}
want() { [[ " $ONLY " == *" $1 "* ]]; }
for r in $(seq "$RUNS"); do
    echo "-- run $r of $RUNS" >&2
    if want lb-bin; then
        measure lb-bin crash lb_start node_stop
        measure lb-bin term lb_start node_stop
    fi
    if want lb-bin-loss5; then
        measure lb-bin-loss5 crash lb_start_loss node_stop
    fi
    if want keepalived-1s; then
        KA_GLOBAL="" KA_ADVERT=1 measure keepalived-1s crash ka_start node_stop
        KA_GLOBAL="" KA_ADVERT=1 measure keepalived-1s term ka_start node_stop
    fi
    if want keepalived-0.1s; then
        KA_GLOBAL="vrrp_version 3" KA_ADVERT=0.1 measure keepalived-0.1s crash ka_start node_stop
        KA_GLOBAL="vrrp_version 3" KA_ADVERT=0.1 measure keepalived-0.1s term ka_start node_stop
    fi
done

echo
echo "outage = largest gap between echo replies (pings every 10 ms); lost = pings unanswered"
echo "$RUNS runs; median and max of each"
printf '%-18s %-6s %9s %9s %11s %9s\n' system fail "gap med" "gap max" "lost med" "lost max"
stats() { sort -k1,1 -k2,2 -k"$1","$1"n "$WORK/results" | awk -v c="$1" '
    { k=$1" "$2; v[k]=v[k]" "$c; n[k]++ }
    END { for (k in v) { split(substr(v[k],2), a, " "); print k, a[int((n[k]+1)/2)], a[n[k]] } }' | sort; }
join -j1 <(stats 3 | awk '{print $1"/"$2, $3, $4}') <(stats 4 | awk '{print $1"/"$2, $3, $4}') |
    awk '{ split($1, k, "/"); printf "%-18s %-6s %8.3fs %8.3fs %11s %9s\n", k[1], k[2], $2, $3, $4, $5 }'
