#!/usr/bin/env bash
# BGP failover: how long a router keeps the route of a node that died, measured at BIRD. The
# node (`lb-bin standalone` with one BGP service, or FRR bgpd + bfdd announcing the same /32 as
# the anchor, in the same run) peers with BIRD; then every packet of the node is dropped with
# nftables, as a crashed host would go silent (no link change, no FIN, no RST), and the bench
# measures from the cut to the route's withdrawal at BIRD.
#
#   ns <tag>node  eth0 192.0.2.10/24  lb-bin or FRR, AS 64512, announces 203.0.113.40/32
#   ns <tag>rtr   eth0 192.0.2.1/24   BIRD, AS 64500, passive, `bfd on`
#
# Systems: ours and FRR with BFD 50 ms x 3 and 300 ms x 3 (the same profile on both sides),
# RUNS times each, interleaved; ours without BFD (hold time 9 s) once, for contrast. Prints
# every run, then the median and max per system.
#
# Needs root, iproute2, nftables, bird2 and frr. Every process it starts is stopped by PID and
# every namespace removed on exit. Usage: benches/bgp-failover.sh [RUNS] (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
TAG=lbg$$
WORK=$(mktemp -d)
PREFIX=203.0.113.40/32
PIDS=()

for tool in bird birdc nft /usr/lib/frr/bgpd /usr/lib/frr/bfdd; do
    command -v "$tool" >/dev/null || [ -x "$tool" ] || { echo "$tool is needed" >&2; exit 1; }
done
cargo build --release -q -p lb-bin
LB=$PWD/target/release/lb-bin

cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for f in "$WORK"/*.pid /var/run/frr/"$TAG"/*.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    rm -rf "/var/run/frr/$TAG"
    for ns in node rtr; do ip netns del "$TAG$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

NODE=${TAG}node
RTR=${TAG}rtr
ip netns add "$NODE"
ip netns add "$RTR"
ip -n "$NODE" link add eth0 type veth peer name eth0 netns "$RTR"
ip -n "$NODE" addr add 192.0.2.10/24 dev eth0
ip -n "$RTR" addr add 192.0.2.1/24 dev eth0
for ns in "$NODE" "$RTR"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done
chmod 755 "$WORK"
mkdir -p "/var/run/frr/$TAG"
chown frr:frr "/var/run/frr/$TAG"

# BIRD with BFD at INTERVAL ms x 3 on the router; restarted for each run so that each starts
# from the same state.
start_bird() {
    local interval=$1
    cat >"$WORK/bird.conf" <<EOF
router id 192.0.2.1;
protocol device {}
protocol bfd {
  interface "eth0" { min rx interval $interval ms; min tx interval $interval ms; idle tx interval 1000 ms; multiplier 3; };
}
protocol bgp node {
  local 192.0.2.1 as 64500;
  neighbor 192.0.2.10 as 64512;
  passive on;
  bfd on;
  hold time 9;
  error wait time 1, 2;
  ipv4 { import all; export none; };
}
EOF
    ip netns exec "$RTR" bird -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid"
}

stop_bird() {
    [ -f "$WORK/bird.pid" ] && kill "$(cat "$WORK/bird.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -S "$WORK/bird.ctl" ] || break; sleep 0.05; done
    rm -f "$WORK/bird.pid" "$WORK/bird.ctl"
}

has_route() { birdc -s "$WORK/bird.ctl" show route "$PREFIX" 2>/dev/null | grep -q "$PREFIX"; }

# Ours: a standalone node with one BGP service; BFD INTERVAL ms x 3, or none when 0.
start_ours() {
    local interval=$1 bfd_peer="" bfd_profile=""
    if [ "$interval" != 0 ]; then
        bfd_profile="---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: bench, namespace: metallb-system}
spec: {receiveInterval: $interval, transmitInterval: $interval, detectMultiplier: 3}"
        bfd_peer=", bfdProfile: bench"
    fi
    cat >"$WORK/lb.yaml" <<EOF
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bench, namespace: metallb-system}
spec: {addresses: [$PREFIX]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bench, namespace: metallb-system}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1, holdTime: 9s$bfd_peer}
$bfd_profile
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
EOF
    ip netns exec "$NODE" "$LB" standalone --config "$WORK/lb.yaml" --node-name node1 \
        --local-delivery false --bind 127.0.0.1:7946 >"$WORK/lb.log" 2>&1 &
    PIDS+=($!)
    echo $! >"$WORK/node.pid"
}

# The anchor: FRR bgpd + bfdd with the same profile, announcing the same prefix.
start_frr() {
    local interval=$1
    cat >"$WORK/frr.conf" <<EOF
frr defaults traditional
hostname node
bfd
 profile bench
  transmit-interval $interval
  receive-interval $interval
  detect-multiplier 3
 !
!
router bgp 64512
 bgp router-id 192.0.2.10
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 192.0.2.1 remote-as 64500
 neighbor 192.0.2.1 timers 3 9
 neighbor 192.0.2.1 timers connect 1
 neighbor 192.0.2.1 bfd profile bench
 address-family ipv4 unicast
  network $PREFIX
 exit-address-family
EOF
    chmod 644 "$WORK/frr.conf"
    for d in zebra bfdd bgpd; do
        ip netns exec "$NODE" "/usr/lib/frr/$d" -d -N "$TAG" -f "$WORK/frr.conf" 2>>"$WORK/frr.log"
    done
}

stop_node() {
    [ -f "$WORK/node.pid" ] && kill -9 "$(cat "$WORK/node.pid")" 2>/dev/null || true
    rm -f "$WORK/node.pid"
    for f in /var/run/frr/"$TAG"/*.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

cut() {
    ip netns exec "$NODE" nft -f - <<EOF
table inet cut {
  chain in { type filter hook input priority 0; policy drop; }
  chain out { type filter hook output priority 0; policy drop; }
}
EOF
}

uncut() { ip netns exec "$NODE" nft delete table inet cut 2>/dev/null || true; }

now() { date +%s.%N; }

# One run of SYSTEM (ours|frr) with BFD INTERVAL (0: none): the seconds from the cut to the
# withdrawal at BIRD, or "-" when the route never came or never went.
run() {
    local system=$1 interval=$2 bird_interval=$2
    [ "$bird_interval" = 0 ] && bird_interval=300
    start_bird "$bird_interval"
    if [ "$system" = ours ]; then start_ours "$interval"; else start_frr "$interval"; fi
    local ok=
    for _ in $(seq 300); do has_route && { ok=1; break; }; sleep 0.05; done
    # BFD up at BIRD (when asked) before the cut.
    if [ -n "$ok" ] && [ "$interval" != 0 ]; then
        ok=
        for _ in $(seq 200); do
            birdc -s "$WORK/bird.ctl" show bfd sessions 2>/dev/null | grep -q " Up " && { ok=1; break; }
            sleep 0.05
        done
        sleep 1
    fi
    local took=-
    if [ -n "$ok" ]; then
        cut
        local t0 t1
        t0=$(now)
        for _ in $(seq 3000); do
            has_route || break
            sleep 0.005
        done
        t1=$(now)
        has_route || took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    fi
    stop_node
    uncut
    stop_bird
    echo "$took"
}

declare -A RESULTS
for i in $(seq "$RUNS"); do
    for system in ours frr; do
        for interval in 50 300; do
            t=$(run "$system" "$interval")
            echo "run $i $system-bfd-${interval}ms: $t s"
            RESULTS[$system-bfd-${interval}ms]+="$t "
        done
    done
done
t=$(run ours 0)
echo "run 1 ours-hold-9s: $t s"
RESULTS[ours-hold-9s]="$t "

echo
printf '%-20s %8s %8s %5s\n' system median max runs
for k in ours-bfd-50ms frr-bfd-50ms ours-bfd-300ms frr-bfd-300ms ours-hold-9s; do
    # shellcheck disable=SC2086
    echo ${RESULTS[$k]} | tr ' ' '\n' | grep -v '^-*$' | sort -n | awk -v k="$k" '
        { v[NR]=$1 } END {
            if (NR == 0) { printf "%-20s %8s %8s %5d\n", k, "-", "-", 0; exit }
            m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
            printf "%-20s %8.3f %8.3f %5d\n", k, m, v[NR], NR }'
done
