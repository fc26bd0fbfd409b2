#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, idempotently:
# the wasm32-wasip2 target (the wasm examples are pods' images), and a Python virtual
# environment with the official Kubernetes client and kubectl, and Debian's prometheus
# package (promtool and a Prometheus server, for the /metrics tests), and cargo-fuzz (the
# fuzz targets in fuzz/, which CI runs briefly).
# Used by .ci/run and by the README's test command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
venv="$root/target/test-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements"
if ! cmp -s "$root/tests/python/requirements.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/python/requirements.txt"
  cp "$root/tests/python/requirements.txt" "$stamp"
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # No recommends: the package's own service and node exporter are not wanted.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
fi
