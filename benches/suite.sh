#!/usr/bin/env bash
# Runs every bench of the project and prints one table: each figure, its baseline
# measured in the same run, the ratio, and every target met or not.
#
#   benches/suite.sh            # the full suite (about 25 minutes on 2 cores once built)
#   benches/suite.sh --quick    # every bench in its quick mode (about 5 minutes)
#
# Each bench's own output is kept in target/bench-suite/NAME.txt; the merged table is
# printed at the end and written to target/bench-suite/table.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/benches/setup.sh"
out="$root/target/bench-suite"
mkdir -p "$out"
# Not soak (`--bench soak`): it runs 10 minutes on its own.
benches=(api scheduler pods workloads ingress exec)
args=()
[ "${1:-}" = "--quick" ] && args=(--quick)

cargo bench -p flotilla --no-run --benches
for bench in "${benches[@]}"; do
  echo "== $bench"
  cargo bench -p flotilla --bench "$bench" -- "${args[@]}" | tee "$out/$bench.txt"
done

{
  echo "Bench suite, $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -m)$([ ${#args[@]} -gt 0 ] && echo ', quick mode')"
  echo
  echo "| bench | figure | baseline (same run) | ratio |"
  echo "|---|---|---|---|"
  for bench in "${benches[@]}"; do
    # Every row of the bench's table but its header and rule, named after the bench.
    grep '^| ' "$out/$bench.txt" | grep -v '^| bench |' | grep -v '^| case |' | sed "s/^| /| $bench: /" || true
  done
  echo
  for bench in "${benches[@]}"; do
    grep -E '^- .*\*\*(met|not met)\*\*' "$out/$bench.txt" | sed "s/^- /- $bench: /" || true
  done
} > "$out/table.md"
echo
cat "$out/table.md"
