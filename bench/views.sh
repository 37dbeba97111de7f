#!/usr/bin/env bash
# The read models over 10,000 epics (fleet-views: outcomes, task ls, task show, ETA).
# Usage: bash bench/views.sh [N] [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
profile=--release
[ "${2:-}" = "--debug" ] && profile=
cargo run -q $profile -p fleet-views --example views_bench -- "$n"
