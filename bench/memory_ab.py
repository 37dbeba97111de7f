#!/usr/bin/env python3
"""Memory A/B: a 24-task scripted suite with recurring traps, run with lessons on and off in
one run (the arms interleaved task by task, each in its own fresh instance).

Each task asks a developer to add a module file; each belongs to one of four areas whose
convention (a line the file must hold) only the area's check states, so a first attempt cannot
know it. Each task is its own `fleet run`, so what one task taught is there for the next.

The agents are the real claude CLI (`scripts/install-agent-clis.sh`) against the scripted model
server (`fleet-model-server`), behind a wrapper named `claude` that first does the scripted
work: the developer writes a convention's line only when that line is in its prompt (in a
lesson Fleet injected, or in the failing check's output that the handoff note of a retry
quotes); the retrospector turns the evidence it is handed into a lesson. Then the wrapper hands
the same prompt to claude, which sends it to the model server; the server's scenario counts the
request (`count_prompt`: input tokens = ceil(characters of the request body / 4)), so an
injected lesson costs what its characters cost, and claude reports that usage and its cost to
Fleet.

Per task and arm, read from the arm's store (`.fleet/fleet.db`, table `attempts`) after the
task's run: attempts, tokens (input, output) and cost in USD as Fleet recorded them from what
claude reported, the developer's and the retrospector's apart.

    cargo build -p fleet -p fleet-testkit      # fleet and fleet-model-server
    python3 bench/memory_ab.py                 # uses target/debug/
    python3 bench/memory_ab.py --bin target/release --json out.json
"""

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

AREAS = {
    "billing": "// SPDX-License-Identifier: MIT",
    "api": "# owner: team-platform",
    "storage": "# reviewed-by: dba",
    "ui": "/* i18n: strings go through t() */",
}
TASKS = 24
MODEL = "claude-sonnet-4-5"
DUMMY_KEY = "sk-ant-bench-dummy"

CHECK = """line='{line}'
grep -qxF "$line" "$1" || {{ echo "$1: {area} files must contain the line: $line"; exit 1; }}
"""

DEV = r"""set -e
f="$FLEET_TASK.txt"
echo "module $FLEET_TASK" > "$f"
while IFS= read -r line; do
  if grep -qF -- "$line" "$FLEET_PROMPT_FILE"; then echo "$line" >> "$f"; fi
done < "$DIR/conventions.txt"
"""

# The lesson is drawn from the evidence: the check's message names the area and the line.
RETRO = r"""set -e
mkdir -p .fleet-out
msg=$(grep -o '[a-z]* files must contain the line: .*' "$FLEET_PROMPT_FILE" | head -n1 || true)
if [ -n "$msg" ]; then
  area=${msg%% files must*}
  line=${msg#*the line: }
  python3 - "$area" "$line" > .fleet-out/lessons.json <<'PY'
import json, sys
area, line = sys.argv[1], sys.argv[2]
print(json.dumps({"lessons": [{"scope": "project", "applies_when": {"words": [area]},
    "lesson": f"Every {area} module file must contain the line: {line}"}]}))
PY
else
  echo '{"lessons": []}' > .fleet-out/lessons.json
fi
"""

# `claude` as Fleet launches it (the prompt on stdin): the scripted work first, then the same
# prompt to the real CLI, which sends it to the model server and reports the usage it is given.
WRAPPER = r"""#!/bin/sh
case " $* " in *" -p "*) ;; *) exec "$REAL_CLAUDE" "$@" ;; esac
mkdir -p "$HOME"
cat > "$HOME/prompt.txt"
FLEET_PROMPT_FILE="$HOME/prompt.txt" sh "$DIR/$ROLE_SCRIPT" || exit 1
exec "$REAL_CLAUDE" "$@" < "$HOME/prompt.txt"
"""


def sh(args, cwd, **kw):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    r = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"git {args}: {r.stderr}")


def agent_bin_dir():
    if os.environ.get("FLEET_AGENT_BIN"):
        return os.environ["FLEET_AGENT_BIN"]
    r = sh(["bash", "scripts/install-agent-clis.sh"], ".")
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        sys.exit(f"scripts/install-agent-clis.sh failed:\n{r.stderr[-2000:]}")
    return lines[-1]


class ModelServer:
    def __init__(self, binary, root):
        scenarios = os.path.join(root, "scenarios.json")
        with open(scenarios, "w") as f:
            json.dump({"ab": {"steps": [], "count_prompt": True,
                              "usage": {"input_tokens": 0, "output_tokens": 20}}}, f)
        self.proc = subprocess.Popen([binary, "--scenarios", scenarios, "--no-auto"], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            sys.exit("fleet-model-server did not print its URL")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Arm:
    def __init__(self, root, name, memory_on, server_url, cli_bin):
        self.name = name
        self.dir = os.path.join(root, name)
        self.repo = os.path.join(self.dir, "shop")
        wrap = os.path.join(self.dir, "bin")
        os.makedirs(wrap)
        os.makedirs(os.path.join(self.repo, "checks"))
        for area, line in AREAS.items():
            with open(os.path.join(self.repo, "checks", f"{area}.sh"), "w") as f:
                f.write(CHECK.format(line=line, area=area))
        with open(os.path.join(self.dir, "conventions.txt"), "w") as f:
            f.write("".join(line + "\n" for line in AREAS.values()))
        for fname, text in (("dev.sh", DEV), ("retro.sh", RETRO)):
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write(text)
        with open(os.path.join(wrap, "claude"), "w") as f:
            f.write(WRAPPER)
        os.chmod(os.path.join(wrap, "claude"), 0o755)
        git(self.repo, "init", "-q", "-b", "main")
        d = self.dir
        path = f"{wrap}:{cli_bin}:/usr/local/bin:/usr/bin:/bin"
        real = os.path.join(cli_bin, "claude")

        def profile(name, role, script):
            return (f"  {name}:\n    cli: claude\n    model: {MODEL}\n"
                    f"    base_url: \"{server_url}/s/ab\"\n    stall_timeout: 60s\n"
                    f"    roles: [{role}]\n"
                    f"    env: {{ PATH: \"{path}\", DIR: \"{d}\", ROLE_SCRIPT: {script}, "
                    f"REAL_CLAUDE: \"{real}\" }}\n")
        with open(os.path.join(self.repo, "fleet.yaml"), "w") as f:
            f.write("agents:\n" + profile("dev", "developer", "dev.sh")
                    + profile("retro", "retrospector", "retro.sh")
                    + f"memory:\n  enabled: {'true' if memory_on else 'false'}\n")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "init")

    def spend(self):
        """Per profile: attempts, input, output tokens and cost, as Fleet's store holds them."""
        db = os.path.join(self.repo, ".fleet", "fleet.db")
        if not os.path.exists(db):
            return {}
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT profile, count(*), sum(input_tokens + cache_read_tokens + cache_write_tokens),"
                " sum(output_tokens), sum(cost_usd) FROM attempts GROUP BY profile").fetchall()
        finally:
            con.close()
        return {p: (n, i or 0, o or 0, c or 0.0) for p, n, i, o, c in rows}

    def run_task(self, fleet, i):
        area = list(AREAS)[i % len(AREAS)]
        task = f"t{i:02d}"
        name = f"task{i:02d}"
        with open(os.path.join(self.repo, f"{name}.yaml"), "w") as f:
            f.write(f"name: {name}\ntasks:\n  - id: {task}\n    role: developer\n"
                    f"    prompt: Add the {area} module {task} in {task}.txt.\n"
                    f"    checks: [\"sh checks/{area}.sh {task}.txt\"]\n    max_attempts: 4\n")
        before = self.spend()
        env = dict(os.environ, ANTHROPIC_API_KEY=DUMMY_KEY)
        t = time.monotonic()
        r = sh([fleet, "run", f"{name}.yaml", "--quiet"], self.repo, env=env)
        wall = time.monotonic() - t
        if r.returncode != 0:
            sys.exit(f"{self.name} {name} failed:\n{r.stdout}\n{r.stderr}")
        after = self.spend()
        delta = {}
        for prof in ("dev", "retro"):
            a, b = after.get(prof, (0, 0, 0, 0.0)), before.get(prof, (0, 0, 0, 0.0))
            delta[prof] = [x - y for x, y in zip(a, b)]
        injected = 0
        for run in os.listdir(os.path.join(self.repo, ".fleet", "runs")):
            if run.startswith(f"{name}-2"):
                with open(os.path.join(self.repo, ".fleet", "runs", run, "events.jsonl")) as f:
                    injected += sum(len(e["data"]["lessons"]) for e in map(json.loads, f)
                                    if e["kind"] == "attempt.lessons")
        dev, retro = delta["dev"], delta["retro"]
        return {"task": task, "area": area, "attempts": dev[0], "lessons_injected": injected,
                "input_tokens": dev[1] + retro[1], "output_tokens": dev[2] + retro[2],
                "cost_usd": dev[3] + retro[3], "retro_attempts": retro[0],
                "retro_tokens": retro[1] + retro[2], "retro_cost_usd": retro[3],
                "wall_s": round(wall, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/debug", help="where fleet and fleet-model-server are")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    fleet = os.path.abspath(os.path.join(args.bin, "fleet"))
    server_bin = os.path.abspath(os.path.join(args.bin, "fleet-model-server"))
    for b in (fleet, server_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not built (cargo build -p fleet -p fleet-testkit)")
    cli_bin = agent_bin_dir()
    commit = sh(["git", "rev-parse", "--short", "HEAD"], ".").stdout.strip()
    load_before = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory(prefix="memory-ab-") as root:
        server = ModelServer(server_bin, root)
        try:
            arms = {"on": Arm(root, "on", True, server.url, cli_bin),
                    "off": Arm(root, "off", False, server.url, cli_bin)}
            rows = {"on": [], "off": []}
            for i in range(TASKS):
                for key in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    rows[key].append(arms[key].run_task(fleet, i))
        finally:
            server.stop()
    load_after = open("/proc/loadavg").read().split()[:3]
    report = {"commit": commit, "tasks": TASKS, "model": MODEL, "arms": {},
              "loadavg_before": load_before, "loadavg_after": load_after}
    for key, rs in rows.items():
        total = lambda k: sum(r[k] for r in rs)  # noqa: E731
        report["arms"][key] = {
            "attempts": total("attempts"),
            "attempts_per_task": total("attempts") / TASKS,
            "first_attempt_passes": sum(1 for r in rs if r["attempts"] == 1),
            "input_tokens_per_task": total("input_tokens") / TASKS,
            "output_tokens_per_task": total("output_tokens") / TASKS,
            "cost_usd_per_task": total("cost_usd") / TASKS,
            "retro_attempts": total("retro_attempts"),
            "retro_tokens_per_task": total("retro_tokens") / TASKS,
            "retro_cost_usd_per_task": total("retro_cost_usd") / TASKS,
            "lessons_injected": total("lessons_injected"),
            "wall_s": round(total("wall_s"), 2),
            "rows": rs,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(f"memory A/B at {commit}: {TASKS} tasks, 4 recurring traps, lessons on vs off; "
          f"load {' '.join(load_before)} -> {' '.join(load_after)}\n")
    print("| arm | attempts/task | first-attempt passes | lessons injected | input tokens/task | "
          "output tokens/task | cost/task | of which retrospectives (tokens, cost) | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in ("on", "off"):
        a = report["arms"][key]
        print(f"| lessons {key} | {a['attempts_per_task']:.2f} | {a['first_attempt_passes']}/{TASKS} | "
              f"{a['lessons_injected']} | {a['input_tokens_per_task']:.0f} | "
              f"{a['output_tokens_per_task']:.0f} | ${a['cost_usd_per_task']:.4f} | "
              f"{a['retro_tokens_per_task']:.0f}, ${a['retro_cost_usd_per_task']:.4f} | {a['wall_s']} s |")
    print("\nper task (on | off): attempts, lessons injected, input tokens, cost")
    for on, off in zip(rows["on"], rows["off"]):
        print(f"  {on['task']} {on['area']:8} {on['attempts']} {on['lessons_injected']} "
              f"{on['input_tokens']:7} ${on['cost_usd']:.4f} | {off['attempts']} "
              f"{off['lessons_injected']} {off['input_tokens']:7} ${off['cost_usd']:.4f}")


if __name__ == "__main__":
    main()
