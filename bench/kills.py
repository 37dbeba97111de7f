#!/usr/bin/env python3
"""R3 — kill -9 and SIGTERM over non-idempotent commands (Python 3.11 stdlib only).

    python3 bench/chaos.py r3 [--quick] [--no-build]   # -> bench/results/r3.md, r3.json

The design of crates/fleet/tests/chaos.rs, with more faults and figures: a 150-task layered DAG
(15 layers x 10, each task of layer k>0 depends on 2 tasks of layer k-1; the same graph as the
test) whose commands append their line to their own file and then pause 0.4-0.7 s
(`echo <id> >> f_<id>.txt && sleep ...`), so a task applied twice shows as a second line.
`fleet run` (concurrency 8) is hit at random moments 10 ms to 1 s after each start, either by
SIGKILL to fleet alone (its children live on, as after a real crash) or by SIGTERM (fleet must
then exit by itself), and resumed with `fleet run --resume` until the run ends. Figures: faults,
processes, time to done, tasks applied twice or missing, and what was left: stale `git worktree
list` entries, worktree folders, `git fsck` findings, `*.lock` files under `.git`, processes
tagged `FLEET_RUN=<run>`; for SIGTERM, how each stop ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from bench import ENV, FLEET, commit_all, init_repo, log, machine_state, pct

LAYERS, WIDTH, FAN_IN, CONCURRENCY = 15, 10, 2, 8
DAG_SEED = 17                 # the test's: the same graph
FAULT_MS = (10, 1000)
R3_FULL = {"faults": 100, "seeds": [1701, 1702, 1703]}
R3_QUICK = {"faults": 30, "seeds": [1701]}
TERM_PATIENCE_S = 30
FINISH_TIMEOUT_S = 600
M64 = (1 << 64) - 1


class SplitMix:
    """crates/fleet/tests/support/kill.rs's Rng: the same draws, so the same graph."""

    def __init__(self, state: int):
        self.s = state & M64

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def range(self, lo: int, hi: int) -> int:
        return lo + self.next() % (hi - lo + 1)


def design() -> list[dict]:
    rng = SplitMix(DAG_SEED)
    tasks = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            deps: list[str] = []
            while layer > 0 and len(deps) < FAN_IN:
                d = f"l{layer - 1:02d}-t{rng.range(0, WIDTH - 1):02d}"
                if d not in deps:
                    deps.append(d)
            n = len(tasks)
            tasks.append({"id": f"l{layer:02d}-t{i:02d}", "deps": sorted(deps),
                          "pause_ms": 400 + (n % 4) * 100, "checked": n % 3 == 0})
    return tasks


def runbook(name: str, tasks: list[dict]) -> str:
    y = [f"name: {name}", f"concurrency: {CONCURRENCY}", "defaults:", "  timeout: 120s",
         "  retries: 0", "tasks:"]
    for t in tasks:
        tid, f = t["id"], f"f_{t['id']}.txt"
        y.append(f"  - id: {tid}")
        if t["deps"]:
            y.append(f"    depends_on: [{', '.join(t['deps'])}]")
        pause = f"{t['pause_ms'] // 1000}.{t['pause_ms'] % 1000 // 100}"
        y.append(f"    command: 'echo {tid} >> {f} && sleep {pause}'")
        if t["checked"]:
            y.append(f"    checks: ['grep -qx {tid} {f}']")
    return "\n".join(y) + "\n"


# --------------------------------------------------------------------------------------------
# What a run leaves


def tagged(run: str) -> list[str]:
    """Live processes whose environment holds FLEET_RUN=<run>: 'pid [state] cmdline'."""
    needle = f"FLEET_RUN={run}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if needle not in (p / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (p / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        found.append(f"{p.name} [{state}] {cmd}")
    return found


def tagged_after(run: str, grace_s: float = 0.1) -> list[str]:
    end = time.monotonic() + grace_s
    while True:
        left = tagged(run)
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.02)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, text=True, capture_output=True)


def leftovers(repo: Path, run: str) -> dict:
    wl = git(repo, "worktree", "list", "--porcelain")
    stale = ([b.strip().replace("\n", " | ") for b in wl.stdout.split("\n\n")
              if b.strip() and b.strip().splitlines()[0] != f"worktree {repo}"]
             if wl.returncode == 0 else [f"git worktree list failed: {wl.stderr.strip()}"])
    folders_dir = repo / ".fleet" / "worktrees" / run
    folders = sorted(p.name for p in folders_dir.iterdir()) if folders_dir.is_dir() else []
    fsck = git(repo, "fsck", "--no-dangling", "--no-progress")
    fsck_lines = (fsck.stdout + fsck.stderr).strip().splitlines()
    if fsck.returncode != 0 and not fsck_lines:
        fsck_lines = [f"exit {fsck.returncode}"]
    locks = sorted(str(p.relative_to(repo)) for p in (repo / ".git").rglob("*.lock"))
    return {"stale_worktrees": stale, "folders": folders, "fsck": fsck_lines[:20],
            "locks": locks, "left": tagged_after(run)}


def files(repo: Path, run: str, tasks: list[dict]) -> dict:
    # The run's integration branch as the store names it (it carries the instance id).
    runs = fleet_json(repo, "runs", "--json") or []
    branch = next((r["integration_branch"] for r in runs if r.get("id") == run),
                  f"fleet/runs/{run}")
    doubled, missing, other = [], [], []
    for t in tasks:
        p = git(repo, "show", f"{branch}:f_{t['id']}.txt")
        if p.returncode != 0:
            missing.append(t["id"])
        elif p.stdout != t["id"] + "\n":
            lines = p.stdout.splitlines()
            (doubled if all(x == t["id"] for x in lines) else other).append(f"{t['id']} x{len(lines)}")
    return {"doubled": doubled, "missing": missing, "other": other}


# --------------------------------------------------------------------------------------------
# One run under faults


def fleet_json(repo: Path, *args: str):
    p = subprocess.run([str(FLEET), *args], cwd=repo, env=ENV, text=True, capture_output=True)
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None


def run_state(repo: Path, run: str | None) -> str | None:
    if run is None:
        return None
    for r in fleet_json(repo, "runs", "--json") or []:
        if r["id"] == run:
            return r["state"]
    return None


def learn_run(repo: Path, run: str | None) -> str | None:
    if run is not None or not (repo / ".fleet" / "fleet.db").exists():
        return run
    runs = fleet_json(repo, "runs", "--json") or []
    return runs[0]["id"] if runs else None


def spawn(repo: Path, run: str | None, out: Path) -> subprocess.Popen:
    args = ["run", "--kill-grace", "1"] + (["--resume", run] if run else ["runbook.yaml"])
    with open(out, "w") as f:
        return subprocess.Popen([str(FLEET), *args], cwd=repo, env=ENV, stdout=f, stderr=f,
                                stdin=subprocess.DEVNULL)


def term_stop(p: subprocess.Popen, repo: Path, run: str | None, out: Path) -> dict:
    """SIGTERM, then how fleet ended: exit, seconds to exit, hint, state, processes left."""
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        code = p.wait(timeout=TERM_PATIENCE_S)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return {"ended": "hung", "secs": TERM_PATIENCE_S}
    secs = time.monotonic() - t0
    run = learn_run(repo, run)
    ended = f"exit {code}" if code >= 0 else f"signal {-code}"
    text = out.read_text(errors="replace")
    return {"ended": ended, "secs": secs, "state": run_state(repo, run),
            "hint": bool(run) and f"fleet run --resume {run}" in text,
            "left": tagged_after(run) if run else []}


def merged(repo: Path, run: str | None) -> int:
    status = fleet_json(repo, "status", run, "--json") if run else None
    return sum(1 for t in (status or {}).get("task_list", []) if t.get("state") == "merged")


def r3_one(work: Path, kind: str, seed: int, faults: int, tasks: list[dict]) -> dict:
    d = work / f"r3-{kind}-{seed}"
    repo, outs = d / "repo", d / "outputs"
    outs.mkdir(parents=True)
    init_repo(repo)
    commit_all(repo, "init")
    (repo / "runbook.yaml").write_text(runbook(f"r3-{kind}-{seed}", tasks))
    rng = SplitMix(seed)
    run, n, landed, stops, errors, final = None, 0, 0, [], [], None
    merged_at_faults_end = None
    t0 = time.monotonic()
    while landed < faults:
        p = spawn(repo, run, outs / f"{n}.log")
        delay = rng.range(*FAULT_MS) / 1000
        try:
            final = p.wait(timeout=delay)
            run = learn_run(repo, run)
            if final not in (0, 1):
                errors.append(f"#{n} ended {final} on its own")
            n += 1
            break
        except subprocess.TimeoutExpired:
            pass
        landed += 1
        if kind == "kill9":
            p.kill()
            p.wait()
            run = learn_run(repo, run)
        else:
            stops.append(term_stop(p, repo, run, outs / f"{n}.log"))
            run = learn_run(repo, run)
        n += 1
        if run_state(repo, run) in ("passed", "failed"):
            break
    t_faults = time.monotonic()
    merged_at_faults_end = merged(repo, run)
    finishers = 0
    while run_state(repo, run) not in ("passed", "failed") and finishers < 3:
        p = spawn(repo, run, outs / f"{n}.log")
        finishers += 1
        try:
            final = p.wait(timeout=FINISH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            errors.append(f"#{n} (undisturbed) hung")
        run = learn_run(repo, run)
        if final not in (0, 1, None):
            errors.append(f"#{n} (undisturbed) ended {final}")
        n += 1
    t_end = time.monotonic()
    r = {"kind": kind, "seed": seed, "faults": landed, "processes": n, "run": run,
         "merged_at_faults_end": merged_at_faults_end,
         "state": run_state(repo, run), "final_exit": final, "errors": errors, "stops": stops,
         "secs_total": t_end - t0, "secs_after_faults": t_end - t_faults}
    if run:
        r.update(files(repo, run, tasks))
        r.update(leftovers(repo, run))
        status = fleet_json(repo, "status", run, "--json") or {}
        r["attempts"] = sum(len(t.get("attempt_list", [])) for t in status.get("task_list", []))
        r["merged"] = merged(repo, run)
        # Why tasks failed (their dependents are skipped): reason -> tasks.
        reasons: dict[str, list[str]] = {}
        for t in status.get("task_list", []):
            if t.get("state") == "failed":
                reasons.setdefault(str(t.get("reason")), []).append(t["id"])
        r["failed"] = [f"{len(v)}x {k[:300]} ({', '.join(v[:4])})" for k, v in reasons.items()]
    return r


def r3(work: Path, quick: bool) -> dict:
    cfg = R3_QUICK if quick else R3_FULL
    tasks = design()
    runs = []
    for kind in ("kill9", "term"):
        for seed in cfg["seeds"]:
            log(f"R3: {kind}, seed {seed}, {cfg['faults']} faults over {len(tasks)} tasks")
            before = machine_state()
            r = r3_one(work, kind, seed, cfg["faults"], tasks)
            r["machine_before"], r["machine_after"] = before, machine_state()
            log(f"R3: {kind} seed {seed}: {r['state']} after {r['faults']} faults, "
                f"{len(r.get('doubled', []))} doubled, {r['secs_total']:.0f} s")
            runs.append(r)
    return {"quick": quick, "tasks": len(tasks), "faults_per_run": cfg["faults"], "runs": runs}


# --------------------------------------------------------------------------------------------
# Report


def r3_report(r: dict) -> list[str]:
    out = [
        "## R3 — kill -9 and SIGTERM over non-idempotent commands",
        "",
        f"{r['tasks']} command tasks ({LAYERS} layers x {WIDTH}, fan-in {FAN_IN}, concurrency "
        f"{CONCURRENCY}) that each append their line to their own file, then pause 0.4-0.7 s; "
        f"{r['faults_per_run']} faults per run at {FAULT_MS[0]} ms - {FAULT_MS[1]} ms after each "
        "start, then `fleet run --resume` undisturbed until the run ends.",
        "",
        "| fault | seed | faults | processes | merged when the faults ended | end | time to done "
        "(after the faults) | attempts | doubled | missing | stale worktrees | folders | fsck "
        "| locks | processes left |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["runs"]:
        out.append(
            f"| {x['kind']} | {x['seed']} | {x['faults']} | {x['processes']} | "
            f"{x['merged_at_faults_end']} | {x['state']} (exit {x['final_exit']}) | {x['secs_total']:.0f} s "
            f"({x['secs_after_faults']:.0f} s) | {x.get('attempts', '-')} | "
            f"{len(x.get('doubled', []))} | {len(x.get('missing', []))} | "
            f"{len(x.get('stale_worktrees', []))} | {len(x.get('folders', []))} | "
            f"{len(x.get('fsck', []))} | {len(x.get('locks', []))} | {len(x.get('left', []))} |")
    for x in r["runs"]:
        if x["kind"] != "term" or not x["stops"]:
            continue
        ends: dict[str, int] = {}
        for s in x["stops"]:
            ends[s["ended"]] = ends.get(s["ended"], 0) + 1
        secs = [s["secs"] for s in x["stops"]]
        bad_state = sum(1 for s in x["stops"] if s.get("state") not in ("interrupted", "passed", "failed", None))
        out += ["", f"SIGTERM, seed {x['seed']}: {len(x['stops'])} stops ended "
                + ", ".join(f"{k} x{v}" for k, v in sorted(ends.items()))
                + f"; exit took {pct(secs, 50):.2f} s median, {max(secs):.2f} s max; "
                f"{sum(1 for s in x['stops'] if s.get('left'))} left a process of the run alive, "
                f"{sum(1 for s in x['stops'] if s.get('state') and not s.get('hint'))} printed no resume hint, "
                f"{bad_state} left the run neither interrupted nor ended."]
    for x in r["runs"]:
        detail = [f"{k}: {', '.join(x[k][:8])}" for k in
                  ("failed", "doubled", "missing", "other", "stale_worktrees", "folders", "fsck", "locks",
                   "left", "errors") if x.get(k)]
        if detail:
            out += ["", f"{x['kind']} seed {x['seed']} (run `{x['run']}`): " + "; ".join(detail)]
    out.append("")
    return out
