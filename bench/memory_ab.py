#!/usr/bin/env python3
"""Memory A/B: a 24-task scripted suite with recurring traps, run with lessons on and off in
one run (the arms interleaved task by task, each in its own fresh instance).

Each task asks a developer to add a module file; each belongs to one of four areas whose
convention (a line the file must hold) only the area's check states, so a first attempt cannot
know it. The scripted developer (`cli: command`) writes a convention's line only when that
line is in its prompt: in a lesson Fleet injected, or in the failing check's output that the
handoff note of a retry quotes. The scripted retrospector turns the evidence it is handed into
a lesson. Each task is its own `fleet run`, so what one task taught is there for the next.

Per task and arm: attempts (`attempt.started` events), prompt tokens (every prompt Fleet
handed an agent, retrospectives included, estimated at 4 characters a token as Fleet's own
token cap does), and their cost at an input price per million tokens (default $3, Claude
Sonnet's). Scripted agents report no usage of their own: these are the prompts' sizes.

    python3 bench/memory_ab.py                 # uses target/debug/fleet (cargo build -p fleet)
    python3 bench/memory_ab.py --fleet target/release/fleet --json out.json
"""

import argparse
import glob
import json
import os
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

CHECK = """line='{line}'
grep -qxF "$line" "$1" || {{ echo "$1: {area} files must contain the line: $line"; exit 1; }}
"""

DEV = r"""set -e
n=$(ls "$DIR"/prompts 2>/dev/null | wc -l)
cp "$FLEET_PROMPT_FILE" "$DIR/prompts/dev-$FLEET_TASK-$n.txt"
f="$FLEET_TASK.txt"
echo "module $FLEET_TASK" > "$f"
while IFS= read -r line; do
  if grep -qF -- "$line" "$FLEET_PROMPT_FILE"; then echo "$line" >> "$f"; fi
done < "$DIR/conventions.txt"
"""

# The lesson is drawn from the evidence: the check's message names the area and the line.
RETRO = r"""set -e
mkdir -p .fleet-out
n=$(ls "$DIR"/prompts 2>/dev/null | wc -l)
cp "$FLEET_PROMPT_FILE" "$DIR/prompts/retro-$n.txt"
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


def sh(args, cwd, **kw):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    r = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"git {args}: {r.stderr}")


class Arm:
    def __init__(self, root, name, memory_on):
        self.name = name
        self.dir = os.path.join(root, name)
        self.repo = os.path.join(self.dir, "shop")
        os.makedirs(os.path.join(self.dir, "prompts"))
        os.makedirs(os.path.join(self.repo, "checks"))
        for area, line in AREAS.items():
            with open(os.path.join(self.repo, "checks", f"{area}.sh"), "w") as f:
                f.write(CHECK.format(line=line, area=area))
        with open(os.path.join(self.dir, "conventions.txt"), "w") as f:
            f.write("".join(line + "\n" for line in AREAS.values()))
        for fname, text in (("dev.sh", DEV), ("retro.sh", RETRO)):
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write(text)
        git(self.repo, "init", "-q", "-b", "main")
        d = self.dir
        with open(os.path.join(self.repo, "fleet.yaml"), "w") as f:
            f.write(
                f"agents:\n  dev:\n    cli: command\n    command: \"sh {d}/dev.sh\"\n"
                f"    roles: [developer]\n    env: {{ DIR: \"{d}\" }}\n"
                f"  retro:\n    cli: command\n    command: \"sh {d}/retro.sh\"\n"
                f"    roles: [retrospector]\n    env: {{ DIR: \"{d}\" }}\n"
                f"memory:\n  enabled: {'true' if memory_on else 'false'}\n")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "init")

    def prompt_chars(self):
        return {p: os.path.getsize(p) for p in glob.glob(os.path.join(self.dir, "prompts", "*"))}

    def run_task(self, fleet, i):
        area = list(AREAS)[i % len(AREAS)]
        task = f"t{i:02d}"
        name = f"task{i:02d}"
        with open(os.path.join(self.repo, f"{name}.yaml"), "w") as f:
            f.write(f"name: {name}\ntasks:\n  - id: {task}\n    role: developer\n"
                    f"    prompt: Add the {area} module {task} in {task}.txt.\n"
                    f"    checks: [\"sh checks/{area}.sh {task}.txt\"]\n    max_attempts: 4\n")
        before = self.prompt_chars()
        t = time.monotonic()
        r = sh([fleet, "run", f"{name}.yaml", "--quiet"], self.repo)
        wall = time.monotonic() - t
        if r.returncode != 0:
            sys.exit(f"{self.name} {name} failed:\n{r.stdout}\n{r.stderr}")
        runs = glob.glob(os.path.join(self.repo, ".fleet", "runs", f"{name}-2*"))
        if len(runs) != 1:
            sys.exit(f"{self.name}: expected one run named {name}, found {runs}")
        with open(os.path.join(runs[0], "events.jsonl")) as f:
            events = [json.loads(l) for l in f]
        attempts = sum(1 for e in events if e["kind"] == "attempt.started")
        injected = sum(len(e["data"]["lessons"]) for e in events if e["kind"] == "attempt.lessons")
        after = self.prompt_chars()
        new = {p: c for p, c in after.items() if p not in before}
        dev_chars = sum(c for p, c in new.items() if "/dev-" in p)
        retro_chars = sum(c for p, c in new.items() if "/retro-" in p)
        return {"task": task, "area": area, "attempts": attempts, "lessons_injected": injected,
                "dev_prompt_tokens": -(-dev_chars // 4), "retro_prompt_tokens": -(-retro_chars // 4),
                "wall_s": round(wall, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", default="target/debug/fleet")
    ap.add_argument("--price", type=float, default=3.0, help="USD per million input tokens")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    fleet = os.path.abspath(args.fleet)
    if not os.access(fleet, os.X_OK):
        sys.exit(f"{fleet}: not built (cargo build -p fleet)")
    commit = sh(["git", "rev-parse", "--short", "HEAD"], ".").stdout.strip()
    with tempfile.TemporaryDirectory(prefix="memory-ab-") as root:
        arms = {"on": Arm(root, "on", True), "off": Arm(root, "off", False)}
        rows = {"on": [], "off": []}
        for i in range(TASKS):
            for key in (("on", "off") if i % 2 == 0 else ("off", "on")):
                rows[key].append(arms[key].run_task(fleet, i))
    report = {"commit": commit, "tasks": TASKS, "price_per_mtok": args.price, "arms": {}}
    for key, rs in rows.items():
        tok = sum(r["dev_prompt_tokens"] + r["retro_prompt_tokens"] for r in rs)
        report["arms"][key] = {
            "attempts": sum(r["attempts"] for r in rs),
            "attempts_per_task": sum(r["attempts"] for r in rs) / TASKS,
            "first_attempt_passes": sum(1 for r in rs if r["attempts"] == 1),
            "tokens": tok,
            "tokens_per_task": tok / TASKS,
            "retro_tokens": sum(r["retro_prompt_tokens"] for r in rs),
            "cost_usd_per_task": tok / TASKS * args.price / 1e6,
            "wall_s": round(sum(r["wall_s"] for r in rs), 2),
            "rows": rs,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(f"memory A/B at {commit}: {TASKS} tasks, 4 recurring traps, lessons on vs off\n")
    print("| arm | attempts/task | first-attempt passes | prompt tokens/task | of which retrospectives | cost/task | wall |")
    print("|---|---|---|---|---|---|---|")
    for key in ("on", "off"):
        a = report["arms"][key]
        print(f"| lessons {key} | {a['attempts_per_task']:.2f} | {a['first_attempt_passes']}/{TASKS} | "
              f"{a['tokens_per_task']:.0f} | {a['retro_tokens'] / TASKS:.0f} | "
              f"${a['cost_usd_per_task']:.6f} | {a['wall_s']} s |")
    print("\nper task (on | off): attempts, prompt tokens")
    for on, off in zip(rows["on"], rows["off"]):
        print(f"  {on['task']} {on['area']:8} {on['attempts']} {on['dev_prompt_tokens'] + on['retro_prompt_tokens']:6} | "
              f"{off['attempts']} {off['dev_prompt_tokens'] + off['retro_prompt_tokens']:6}")


if __name__ == "__main__":
    main()
