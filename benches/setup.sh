#!/usr/bin/env bash
# Installs what the load-test benches compare against, idempotently:
#   - wasmtime-cli 48 (`wasmtime serve`, the baseline for the ingress bench), built from
#     crates.io into target/bench-tools (about 10 minutes on 2 cores, once);
#   - wrk (the load generator) and nginx (the two-hop baseline), Debian packages.
# The benches find them at target/bench-tools/bin/wasmtime, and wrk and nginx on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tests/setup.sh"
tools="$root/target/bench-tools"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"
fi
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
