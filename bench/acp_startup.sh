#!/usr/bin/env bash
# Start-up overhead of the two transports per CLI (headless vs ACP): median of RUNS (default
# 10) trivial attempts each, through Fleet's agent runner against the scripted model server.
#   bash bench/acp_startup.sh [cli...]     e.g. RUNS=20 bash bench/acp_startup.sh gemini
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET_AGENT_BIN=${FLEET_AGENT_BIN:-$(bash scripts/install-agent-clis.sh | tail -n1)}
export FLEET_AGENT_BIN
# Debug build: the runner's own cost is microseconds against CLI start-ups of seconds, and a
# release build of the workspace takes many minutes on this machine.
exec cargo run -q -p fleet-engine --example acp_startup -- "$@"
