#!/usr/bin/env bash
# Install the pinned real coding-agent CLIs (claude, codex, gemini, qwen, opencode) from npm into a
# cache directory keyed by the version list, and print the bin directory as the LAST line of stdout.
#
#   bin=$(scripts/install-agent-clis.sh | tail -n1)
#   export FLEET_AGENT_BIN="$bin"
#
# Cache: ${FLEET_AGENT_CACHE:-$HOME/.cache/fleet/agent-clis}/<hash of the version list + platform>.
# A directory is complete when its marker file exists (written last); then the script does nothing
# else, so repeat runs take a few milliseconds. Concurrent runs are serialised with flock.
# Needs only node (>= 18) and npm. Every package comes from the npm registry; nothing else is fetched.
#
# Versions are the ones verified against the scripted model server (shared/agents/REAL-RUNS.md).
set -euo pipefail

PACKAGES=(
  "@anthropic-ai/claude-code@2.1.197"
  "@openai/codex@0.169.0"
  "@google/gemini-cli@0.61.0"
  "@qwen-code/qwen-code@0.15.10"
  "opencode-ai@1.18.33"
  # ACP adapters of claude and codex (Zed's; codex-acp ships a linux-x64 binary inside).
  "@zed-industries/claude-code-acp@0.16.2"
  "@zed-industries/codex-acp@0.16.0"
)
BINS=(claude codex gemini qwen opencode claude-code-acp codex-acp)
# Bump when the install procedure changes in a way that must invalidate existing caches.
LAYOUT=1

log() { printf 'install-agent-clis: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not on PATH (need Node >= 18)"
command -v npm >/dev/null 2>&1 || die "npm is not on PATH"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node $(node --version) is too old (need >= 18)"

CACHE=${FLEET_AGENT_CACHE:-$HOME/.cache/fleet/agent-clis}
key_input="layout=$LAYOUT $(uname -s)-$(uname -m) ${PACKAGES[*]}"
if command -v sha256sum >/dev/null 2>&1; then
  hash=$(printf '%s' "$key_input" | sha256sum | cut -c1-16)
else
  hash=$(printf '%s' "$key_input" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(require("crypto").createHash("sha256").update(s).digest("hex").slice(0,16)))')
fi
DIR="$CACHE/$hash"
BIN="$DIR/node_modules/.bin"
MARKER="$DIR/.fleet-install-complete"

complete() {
  [ -f "$MARKER" ] || return 1
  local b
  for b in "${BINS[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

# Fast path: no lock, no npm, no node.
if complete; then
  printf '%s\n' "$BIN"
  exit 0
fi

mkdir -p "$DIR"
exec 9>"$CACHE/.$hash.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
# Another run may have finished while we waited for the lock.
if complete; then
  printf '%s\n' "$BIN"
  exit 0
fi

log "installing into $DIR: ${PACKAGES[*]}"
start=$(date +%s)
rm -f "$MARKER"
# A private package.json so npm never walks up to an enclosing project.
if [ ! -f "$DIR/package.json" ]; then
  printf '{"name":"fleet-agent-clis","private":true,"description":"pinned agent CLIs for Fleet tests"}\n' >"$DIR/package.json"
fi
# --ignore-scripts=false: claude-code's postinstall links its native binary into place, node-pty
# builds, opencode selects its platform binary. npm 11 warns that these install scripts are "not yet
# covered by allowScripts"; that warning is harmless, we verify the result below instead.
npm install --prefix "$DIR" --save-exact --no-audit --no-fund --no-update-notifier \
  --ignore-scripts=false --loglevel=error "${PACKAGES[@]}" >&2 \
  || die "npm install failed"

# Verify every CLI starts. If claude's postinstall did not run (a future npm may block install
# scripts), run it ourselves.
claude_pkg="$DIR/node_modules/@anthropic-ai/claude-code"
if ! "$BIN/claude" --version >/dev/null 2>&1; then
  log "claude does not start; running its postinstall by hand"
  post=$(node -p "(require('$claude_pkg/package.json').scripts||{}).postinstall||''")
  [ -n "$post" ] || die "claude-code has no postinstall script and does not start"
  (cd "$claude_pkg" && sh -c "$post") >&2 || die "claude-code postinstall failed"
fi
for b in "${BINS[@]}"; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing after install"
done
for b in claude codex opencode; do
  v=$("$BIN/$b" --version 2>/dev/null | head -n1) || die "$b --version failed"
  log "$b: $v"
done

printf '%s\n' "${PACKAGES[@]}" >"$DIR/versions.txt"
date -u +%Y-%m-%dT%H:%M:%SZ >"$MARKER"
log "installed in $(( $(date +%s) - start )) s"
printf '%s\n' "$BIN"
