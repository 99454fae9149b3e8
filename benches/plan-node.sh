#!/usr/bin/env bash
# A whole `lb-bin plan --node node1` (issue 16, item 1): read the file, allocate every service,
# plan node1's announcements and print them, at 10,000 and 100,000 services (or the sizes given),
# on the plan bench's generated file (`--example services_yaml`). Two builds of this checkout
# run side by side, one run of each in turn so that both see the same machine:
#
#   mimalloc  the default build (mimalloc, transparent huge pages off)
#   glibc     the same code with `--no-default-features --features l2,bgp` (glibc's malloc)
#
# Prints every run's wall time (bash's clock, to the microsecond) and peak RSS (GNU time), then each build's median per size and
# the ratio of the largest size's median to the smallest's (issue 16 asks 100,000 within 11
# times 10,000, at most 2 s and 250 MB). Usage: benches/plan-node.sh [ROUNDS] [SIZES...]
# (default 15 rounds of 10000 and 100000). Needs GNU time (/usr/bin/time, Debian's `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-15}
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[ -x /usr/bin/time ] || { echo "GNU time is needed (apt-get install time)" >&2; exit 1; }
cargo build --release -q -p lb-bin --target-dir "$WORK/target-glibc" --no-default-features \
    --features l2,bgp
cp "$WORK/target-glibc/release/lb-bin" "$WORK/lb-glibc"
cargo build --release -q -p lb-bin
cp target/release/lb-bin "$WORK/lb-mimalloc"
cargo build --release -q -p lb-benches --example services_yaml
for n in "${SIZES[@]}"; do
    ./target/release/examples/services_yaml "$n" >"$WORK/s$n.yaml"
done

for round in $(seq 1 "$ROUNDS"); do
    for n in "${SIZES[@]}"; do
        for build in mimalloc glibc; do
            start=$EPOCHREALTIME
            /usr/bin/time -f "%M" -o "$WORK/t" \
                "$WORK/lb-$build" plan --config "$WORK/s$n.yaml" --node node1 >/dev/null
            end=$EPOCHREALTIME
            read -r kb <"$WORK/t"
            secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f", b - a }')
            echo "$build $n $secs $kb" | tee -a "$WORK/runs"
        done
    done
    echo "round $round of $ROUNDS done" >&2
done

echo
echo "build services median_s max_rss_MB runs"
for build in mimalloc glibc; do
    for n in "${SIZES[@]}"; do
        awk -v b="$build" -v n="$n" '$1 == b && $2 == n { print $3, $4 }' "$WORK/runs" | sort -n |
            awk -v b="$build" -v n="$n" '
                { t[NR] = $1; if ($2 > m) m = $2 }
                END {
                    med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
                    printf "%s %d %.4f %.0f %d\n", b, n, med, m / 1024, NR
                }'
    done
done | tee "$WORK/medians"
first=${SIZES[0]}
last=${SIZES[${#SIZES[@]}-1]}
for build in mimalloc glibc; do
    awk -v b="$build" -v f="$first" -v l="$last" '
        $1 == b && $2 == f { a = $3 } $1 == b && $2 == l { z = $3 }
        END { if (a > 0) printf "%s: %d services in %.1f times the time of %d\n", b, l, z / a, f }' \
        "$WORK/medians"
done
