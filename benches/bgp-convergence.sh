#!/usr/bin/env bash
# BGP convergence: our speaker announcing N /32s to BIRD, beside BIRD -> BIRD in the same run.
# Prints, per round and as medians, the time from session Established until the receiving BIRD
# holds all N routes, and our process's RSS. Needs root, iproute2 and bird2; everything runs in
# network namespaces it creates and removes. Usage: benches/bgp-convergence.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lb-announce-bgp --example converge
exec ./target/release/examples/converge "${1:-100000}" "${2:-3}"
