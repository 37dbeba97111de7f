#!/usr/bin/env python3
"""R2 — the chaos benchmark (Python 3.11 stdlib only).

    python3 bench/chaos.py [--quick] [--no-build]   # R2 alone -> bench/results/r2.md
    python3 bench/bench.py r2 [--quick]              # or through the harness (-> latest.md)
    python3 bench/chaos.py r3 [--quick] [--no-build] # R3: kill -9 / SIGTERM (bench/kills.py)

A layered DAG of agent tasks (`role: developer`) runs over a pool of four profiles on three
accounts whose `claude` is `fleet-fake-agent` (crates/fleet-testkit): every attempt draws its
fate from a seeded PRNG — 30% wrong result, 10% rate limited (5 s account-wide reset), 5%
hang, 5% crash, otherwise success — and appends what it reported (tokens, cost) to a ledger,
the ground truth. The harness then checks the issue's four targets from Fleet's own records
(`.fleet/fleet.db`: attempts and events) against the ledger:

- every task passes and is merged (`fleet run` exits 0, every file on the integration branch);
- total attempts <= 1.7x the ideal (one attempt per task), by outcome;
- no task waits more than stall timeout + 10 s for its next attempt once a usable agent exists;
- recorded spend (cost and tokens per attempt) equals the ledger exactly.

bench/bench.py imports this module for `r2` (and `all`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import bench
from bench import ENV, FLEET, ROOT, commit_all, init_repo, log, machine_state, pct, sh

FAKE_AGENT = ROOT / "target" / "release" / "fleet-fake-agent"

R2_SEED = 20240602          # FAKE_AGENT_SEED (every profile: fates depend on task + attempt only)
R2_DAG_SEED = 20240603      # which tasks of the previous layer each task depends on
R2_FULL = (10, 10)          # layers x tasks per layer
R2_QUICK = (5, 6)
R2_FANIN = 2
R2_CONCURRENCY = 6
R2_MAX_ATTEMPTS = 20
R2_STALL_S = 5
R2_RESET_MS = 5000
R2_STEP_MS = 100            # pause between the fake agent's output lines (an attempt ~0.4 s)
R2_FAULTS = {"FAKE_P_WRONG": 0.3, "FAKE_P_RATE": 0.1, "FAKE_P_HANG": 0.05, "FAKE_P_CRASH": 0.05}
# name, account, priority (higher is tried first)
R2_PROFILES = [("dev-a1", "acct-a", 40), ("dev-a2", "acct-a", 30),
               ("dev-b", "acct-b", 20), ("dev-c", "acct-c", 10)]
R2_ACCOUNTS = {"acct-a": "CHAOS_KEY_A", "acct-b": "CHAOS_KEY_B", "acct-c": "CHAOS_KEY_C"}
R2_TIMEOUT_S = 900


def yq(s: str) -> str:
    return json.dumps(s)


# --------------------------------------------------------------------------------------------
# The fake agent's PRNG, re-implemented (crates/fleet-testkit/src/bin/fleet-fake-agent.rs), to
# know each attempt's scripted fate in advance and check it against the ledger.

M64 = (1 << 64) - 1


class SplitMix:
    def __init__(self, state: int):
        self.s = state & M64

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def unit(self) -> float:
        return (self.next() >> 11) / float(1 << 53)

    def range(self, lo: int, hi: int) -> int:
        return lo + self.next() % (hi - lo + 1)


def fnv(parts: list[str]) -> int:
    h = 0xCBF29CE484222325
    for p in parts:
        for b in list(p.encode()) + [0xFF]:
            h ^= b
            h = (h * 0x100000001B3) & M64
    return h


def scripted(seed: str, task_line: str, task: str, attempt: int) -> dict:
    """What the fake agent draws for `attempt` of `task`: fate and usage (same draw order)."""
    s = seed.strip()
    sv = int(s) if s.isdigit() and int(s) <= M64 else fnv([seed])
    mix = SplitMix(sv ^ fnv([task_line, str(attempt), task]))
    rng = SplitMix(mix.next())
    u = rng.unit()
    p = R2_FAULTS
    fate, edge = "success", 0.0
    for name, f in [("FAKE_P_WRONG", "wrong"), ("FAKE_P_RATE", "rate_limited"),
                    ("FAKE_P_HANG", "hang"), ("FAKE_P_CRASH", "crash")]:
        edge += p[name]
        if u < edge:
            fate = f
            break
    inp = rng.range(1000, 5000)
    out = rng.range(50, 500)
    rng.range(inp // 4, inp * 3 // 4)
    rng.range(out // 4, out * 3 // 4)
    limited = rng.range(20, 200)
    return {"fate": fate, "input": inp, "output": out, "limited_input": limited}


def micros(inp: int, out: int) -> int:
    return inp * 3 + out * 15


# --------------------------------------------------------------------------------------------
# Set-up


def r2_dag(layers: int, width: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(R2_DAG_SEED)
    tasks = []
    for k in range(layers):
        for i in range(width):
            deps = []
            if k > 0:
                deps = [f"l{k - 1:02d}-t{j:02d}" for j in sorted(rng.sample(range(width), R2_FANIN))]
            tasks.append((f"l{k:02d}-t{i:02d}", deps))
    return tasks


def content_of(tid: str) -> str:
    return f"chaos {tid} done"


def task_line(tid: str) -> str:
    return f"FAKE-TASK: out/{tid}.txt={content_of(tid)}"


def write_setup(d: Path, tasks: list[tuple[str, list[str]]]) -> dict:
    home, repo, bindir, rl = d / "instance", d / "repo", d / "bin", d / "ratelimit"
    for p in (home, bindir, rl):
        p.mkdir(parents=True)
    (bindir / "claude").symlink_to(FAKE_AGENT)
    ledger = d / "ledger.jsonl"
    path = f"{bindir}:/usr/local/bin:/usr/bin:/bin"
    y = ["agents:"]
    for name, acct, prio in R2_PROFILES:
        env = {"PATH": path, "FAKE_AGENT_MODE": "task", "FAKE_AGENT_SEED": str(R2_SEED),
               "FAKE_ACCOUNT": acct, "FAKE_RATE_LIMIT_FILE": str(rl / acct),
               "FAKE_RATE_RESET_MS": str(R2_RESET_MS), "FAKE_LEDGER": str(ledger),
               "FAKE_STEP_MS": str(R2_STEP_MS)}
        env.update({k: str(v) for k, v in R2_FAULTS.items()})
        y += [f"  {name}:", "    cli: claude", "    model: claude-sonnet-4-5",
              "    roles: [developer]", f"    priority: {prio}", f"    account: {acct}",
              f"    stall_timeout: {R2_STALL_S}s", "    timeout: 5m", "    env:"]
        y += [f"      {k}: {yq(v)}" for k, v in env.items()]
    y.append("accounts:")
    for acct, secret in R2_ACCOUNTS.items():
        y += [f"  {acct}:", f"    secrets: [{secret}]"]
    (home / "fleet.yaml").write_text("\n".join(y) + "\n")

    init_repo(repo)
    (repo / ".gitignore").write_text("chaos.yaml\n")
    commit_all(repo, "init")
    rb = ["name: chaos", f"concurrency: {R2_CONCURRENCY}", "defaults:",
          # escalate_after = max_attempts: with one tier, escalation has nowhere to go and the
          # loop would give up after `escalate_after` consecutive agent failures.
          f"  max_attempts: {R2_MAX_ATTEMPTS}", f"  escalate_after: {R2_MAX_ATTEMPTS}", "tasks:"]
    for tid, deps in tasks:
        rb.append(f"  - id: {tid}")
        if deps:
            rb.append(f"    depends_on: [{', '.join(deps)}]")
        rb += ["    role: developer",
               f"    prompt: {yq(f'Write the file below with exactly this content.' + chr(10) + task_line(tid))}",
               f"    checks: [{yq(f'grep -qx {bench.shq(content_of(tid))} out/{tid}.txt')}]"]
    (repo / "chaos.yaml").write_text("\n".join(rb) + "\n")
    return {"home": home, "repo": repo, "ledger": ledger}


def run_fleet(home: Path, repo: Path) -> tuple[float, float, int, str, str]:
    env = dict(ENV, FLEET_HOME=str(home))
    for acct, secret in R2_ACCOUNTS.items():
        env[secret] = f"chaos-dummy-secret-{acct}-0123456789"
    c0 = bench.children_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen([str(FLEET), "run", "-q", "chaos.yaml"], cwd=repo, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=R2_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM: fleet stops and kills its agents' process groups (hung fakes sleep forever).
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        err += f"\n[bench] fleet run timed out after {R2_TIMEOUT_S} s"
    wall = time.perf_counter() - t0
    return wall, bench.children_cpu() - c0, p.returncode, out, err


# --------------------------------------------------------------------------------------------
# Analysis


def ms_of(rfc: str) -> int:
    return int(round(datetime.fromisoformat(rfc.replace("Z", "+00:00")).timestamp() * 1000))


def union(iv: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(x for x in iv if x[1] > x[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def covered(iv: list[tuple[int, int]], a: int, b: int) -> int:
    return sum(max(0, min(b, y) - max(a, x)) for x, y in iv)


def analyse(d: Path, tasks: list[tuple[str, list[str]]], wall: float, cpu: float, code: int,
            out: str, err: str, t_launch: int) -> dict:
    home, repo, ledger_path = d / "instance", d / "repo", d / "ledger.jsonl"
    if not (home / ".fleet" / "fleet.db").exists():
        raise RuntimeError(f"R2: fleet run left no database (exit {code}):\n{out}\n{err}")
    db = sqlite3.connect(f"file:{home / '.fleet' / 'fleet.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    run = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
    run_id = run["id"]
    trows = {r["id"]: dict(r) for r in db.execute("SELECT * FROM tasks WHERE run_id=?", (run_id,))}
    atts = [dict(r) for r in db.execute(
        "SELECT * FROM attempts WHERE run_id=? ORDER BY started_at, task_id, n", (run_id,))]
    events = [dict(r) for r in db.execute(
        "SELECT seq, at, task, attempt, kind, data FROM events WHERE run_id=? ORDER BY seq",
        (run_id,))]
    for e in events:
        e["data"] = json.loads(e["data"]) if e["data"] else {}
    db.close()
    jsonl = d / "instance" / ".fleet" / "runs" / run_id / "events.jsonl"
    jsonl_lines = len(jsonl.read_text().splitlines()) if jsonl.exists() else -1

    # --- 1. every task passed and merged, every file on the integration branch
    ids = [t for t, _ in tasks]
    states: dict[str, int] = {}
    for t in ids:
        s = trows.get(t, {}).get("state", "missing")
        states[s] = states.get(s, 0) + 1
    branch = run["integration_branch"]
    bad_files = []
    for t in ids:
        p = subprocess.run(["git", "show", f"{branch}:out/{t}.txt"], cwd=repo, env=ENV,
                           text=True, capture_output=True)
        if p.returncode != 0 or p.stdout.rstrip("\n") != content_of(t):
            bad_files.append(t)
    merged = states.get("merged", 0)

    # --- 2. attempts, by outcome; scripted fates and the floor any orchestrator must pay
    by_outcome: dict[str, int] = {}
    by_profile: dict[str, int] = {}
    for a in atts:
        by_outcome[a["outcome"]] = by_outcome.get(a["outcome"], 0) + 1
        by_profile[a["profile"] or "?"] = by_profile.get(a["profile"] or "?", 0) + 1
    seed = str(R2_SEED)
    floor = {}
    for t in ids:
        n = 1
        while scripted(seed, task_line(t), t, n)["fate"] != "success" and n < 1000:
            n += 1
        floor[t] = n
    per_task = {t: sum(1 for a in atts if a["task_id"] == t) for t in ids}

    # --- 4 (first, needs the ledger for 2's split of rate limits). Spend vs ledger.
    ledger = [json.loads(x) for x in ledger_path.read_text().splitlines()] if ledger_path.exists() else []
    lkey: dict[tuple[str, int], dict] = {}
    dup_ledger = []
    for x in ledger:
        k = (x["task"], int(x["attempt"]))
        if k in lkey:
            dup_ledger.append(k)
        lkey[k] = x
    akey = {(a["task_id"], a["n"]): a for a in atts}
    mismatches = []
    for k, a in sorted(akey.items()):
        x = lkey.get(k)
        want = (x["cost_usd"], x["input_tokens"], x["output_tokens"]) if x else (0.0, 0, 0)
        got = (a["cost_usd"], a["input_tokens"], a["output_tokens"])
        if abs(got[0] - want[0]) > 1e-9 or got[1:] != want[1:] or a["cache_read_tokens"] or a["cache_write_tokens"]:
            mismatches.append({"task": k[0], "attempt": k[1], "outcome": a["outcome"],
                               "db": {"cost_usd": got[0], "input": got[1], "output": got[2],
                                      "cache_read": a["cache_read_tokens"],
                                      "cache_write": a["cache_write_tokens"]},
                               "ledger": None if x is None else {"fate": x["fate"], "cost_usd": want[0],
                                                                 "input": want[1], "output": want[2]}})
    orphan_ledger = sorted(k for k in lkey if k not in akey)
    spend = {
        "db_cost": sum(a["cost_usd"] for a in atts),
        "ledger_cost": sum(x["cost_usd"] for x in ledger),
        "ledger_micros": sum(micros(x["input_tokens"], x["output_tokens"]) for x in ledger),
        "db_input": sum(a["input_tokens"] for a in atts),
        "ledger_input": sum(x["input_tokens"] for x in ledger),
        "db_output": sum(a["output_tokens"] for a in atts),
        "ledger_output": sum(x["output_tokens"] for x in ledger),
        "db_cache": sum(a["cache_read_tokens"] + a["cache_write_tokens"] for a in atts),
        "ledger_lines": len(ledger), "mismatches": mismatches,
        "orphan_ledger": [list(k) for k in orphan_ledger], "dup_ledger": [list(k) for k in dup_ledger],
    }
    spend["by_account"] = {}
    for acct in R2_ACCOUNTS:
        spend["by_account"][acct] = {
            "db": sum(a["cost_usd"] for a in atts if a["account"] == acct),
            "ledger": sum(x["cost_usd"] for x in ledger if x["account"] == acct)}

    # Scripted fate of each attempt vs the ledger and the recorded outcome.
    expect_outcome = {"success": "passed", "wrong": "checks_failed", "rate_limited": "rate_limited",
                      "rate_limited_account": "rate_limited", "hang": "stalled", "crash": "crashed"}
    fate_rows: dict[tuple[str, str], int] = {}
    script_mismatch = []
    for k, a in sorted(akey.items()):
        s = scripted(seed, task_line(k[0]), k[0], k[1])
        x = lkey.get(k)
        fate = x["fate"] if x else s["fate"]
        if x:
            if x["fate"] == "rate_limited_account":
                ok = x["input_tokens"] == s["limited_input"]
            elif x["fate"] == "rate_limited":
                ok = s["fate"] == "rate_limited" and x["input_tokens"] == s["limited_input"]
            else:
                ok = (x["fate"] == s["fate"] and x["input_tokens"] == s["input"]
                      and x["output_tokens"] == s["output"])
        else:
            ok = s["fate"] in ("hang", "crash")
        if not ok:
            script_mismatch.append({"task": k[0], "attempt": k[1], "predicted": s, "ledger": x,
                                    "outcome": a["outcome"]})
        fate_rows[(fate, a["outcome"])] = fate_rows.get((fate, a["outcome"]), 0) + 1

    # --- 3. waits
    def kind(k):
        return [e for e in events if e["kind"] == k]

    cooling: dict[str, list[tuple[int, int]]] = {acct: [] for acct in R2_ACCOUNTS}
    for e in kind("account.cooldown"):
        cooling[e["data"]["account"]].append((e["at"], ms_of(e["data"]["until"])))
    cooling = {k: union(v) for k, v in cooling.items()}
    blocked = None
    for iv in cooling.values():
        blocked = iv if blocked is None else intersect(blocked, iv)
    blocked = blocked or []
    # Concurrency slots: a task occupies one from task.started to leaving running/checking.
    ends = {"task.retrying", "task.passed", "task.failed"}
    delta = []
    for e in events:
        if e["kind"] == "task.started":
            delta.append((e["at"], 1))
        elif e["kind"] in ends:
            delta.append((e["at"], -1))
    delta.sort(key=lambda x: (x[0], x[1]))  # ends before starts at the same ms
    full, level, since = [], 0, None
    for at, dv in delta:
        level += dv
        if level >= R2_CONCURRENCY and since is None:
            since = at
        elif level < R2_CONCURRENCY and since is not None:
            full.append((since, at))
            since = None
    max_level = 0
    lv = 0
    for _, dv in delta:
        lv += dv
        max_level = max(max_level, lv)
    both = union(blocked + full)
    waits = []
    opened: dict[str, tuple[int, str, int]] = {}
    for e in events:
        t = e["task"]
        if e["kind"] == "task.ready":
            opened[t] = (e["at"], "ready", e["at"])
        elif e["kind"] == "task.retrying":
            nb = e["data"].get("not_before")
            opened[t] = (e["at"], "retry", ms_of(nb) if nb else e["at"])
        elif e["kind"] == "attempt.started" and t in opened:
            at0, why, nb = opened.pop(t)
            g = e["at"] - at0
            waits.append({"task": t, "attempt": e["attempt"], "after": why, "from": at0,
                          "to": e["at"], "gap": g, "backoff": max(0, nb - at0),
                          "no_usable": covered(blocked, at0, e["at"]),
                          "slots_full": covered(full, at0, e["at"]),
                          "blocked_or_full": covered(both, at0, e["at"])})
    for w in waits:
        w["usable_wait"] = w["gap"] - w["no_usable"]
        w["usable_free_wait"] = w["gap"] - w["blocked_or_full"]
    waiting_ev = kind("task.waiting")
    wait_spans = [ms_of(e["data"]["until"]) - e["at"] for e in waiting_ev if "until" in e["data"]]

    # Attempts launched on an account already limited (the fake's rate_limited_account): before
    # Fleet knew of the limit (no way to know), or during a cooldown Fleet had recorded.
    # "signalled": an attempt on the same account had already printed its rate-limit line (the
    # stream's `attempt.rate_limited`, with `detail`) but had not ended, so no cooldown yet.
    signals: dict[str, list[tuple[int, int]]] = {acct: [] for acct in R2_ACCOUNTS}
    for e in kind("attempt.rate_limited"):
        a = akey.get((e["task"], e["attempt"]))
        if a and "detail" in e["data"] and e["data"].get("resets_at"):
            signals[a["account"]].append((e["at"], ms_of(e["data"]["resets_at"])))
    acct_limited = []
    for k, a in akey.items():
        x = lkey.get(k)
        if x and x["fate"] == "rate_limited_account":
            t = a["started_at"]
            if any(s <= t < u for s, u in cooling.get(a["account"], [])):
                when = "known"
            elif any(s <= t < u for s, u in signals.get(a["account"], [])):
                when = "signalled"
            else:
                when = "unannounced"
            acct_limited.append({"task": k[0], "attempt": k[1], "account": a["account"],
                                 "started_at": t, "when": when})
    # Lateness of the wake-up: each `task.waiting` announces `until`; the task's next attempt
    # should start right then.
    lateness = []
    pending_wait: dict[str, int] = {}
    for e in events:
        if e["kind"] == "task.waiting" and "until" in e["data"]:
            pending_wait[e["task"]] = ms_of(e["data"]["until"])
        elif e["kind"] == "attempt.started" and e["task"] in pending_wait:
            u = pending_wait.pop(e["task"])
            lateness.append([e["at"] - u, covered(full, u, e["at"]) if e["at"] > u else 0])

    stalled_ms = [a["finished_at"] - a["started_at"] for a in atts
                  if a["outcome"] == "stalled" and a["finished_at"]]
    t_first = min((a["started_at"] for a in atts), default=t_launch)
    t_last = max((a["finished_at"] or a["started_at"] for a in atts), default=t_launch)
    return {
        "run_id": run_id, "exit_code": code, "wall": wall, "cpu": cpu,
        "stdout_tail": out[-2000:], "stderr_tail": err[-4000:],
        "tasks": len(ids), "states": states, "merged": merged, "bad_files": bad_files,
        "attempts": len(atts), "by_outcome": by_outcome, "by_profile": by_profile,
        "per_task_max": max(per_task.values(), default=0),
        "floor": sum(floor.values()), "floor_max": max(floor.values(), default=0),
        "fate_rows": [[f, o, n] for (f, o), n in sorted(fate_rows.items())],
        "script_mismatch": script_mismatch,
        "ledger_fates": {f: sum(1 for x in ledger if x["fate"] == f) for f in
                         sorted({x["fate"] for x in ledger})},
        "acct_limited": acct_limited,
        "spend": spend,
        "waits": waits, "blocked": blocked, "full": full, "max_level": max_level,
        "cooling": cooling, "cooldowns": len(kind("account.cooldown")),
        "waiting_events": len(waiting_ev), "waiting_span_ms": wait_spans, "lateness_ms": lateness,
        "swaps": len(kind("attempt.swapped")), "events": len(events), "jsonl_lines": jsonl_lines,
        "stalled_ms": stalled_ms, "agent_phase_s": (t_last - t_first) / 1000,
    }


def r2(work: Path, quick: bool) -> dict:
    layers, width = R2_QUICK if quick else R2_FULL
    d = work / "r2"
    tasks = r2_dag(layers, width)
    write_setup(d, tasks)
    state_before = machine_state()
    log(f"R2: {len(tasks)} agent tasks ({layers} layers x {width}), concurrency {R2_CONCURRENCY}, "
        f"{len(R2_PROFILES)} profiles on {len(R2_ACCOUNTS)} accounts")
    t_launch = int(time.time() * 1000)
    wall, cpu, code, out, err = run_fleet(d / "instance", d / "repo")
    log(f"R2: fleet run exited {code} after {wall:.1f} s")
    r = analyse(d, tasks, wall, cpu, code, out, err, t_launch)
    r.update({"quick": quick, "layers": layers, "width": width,
              "edges": sum(len(x) for _, x in tasks),
              "state_before": state_before, "state_after": machine_state()})
    log(f"R2: {r['merged']}/{r['tasks']} merged, {r['attempts']} attempts "
        f"({r['attempts'] / r['tasks']:.2f}x ideal), {len(r['spend']['mismatches'])} spend mismatches")
    return r


# --------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"MISSED ({miss})"


def r2_report(r: dict) -> list[str]:
    n, att, sp = r["tasks"], r["attempts"], r["spend"]
    ratio = att / n
    W = r["waits"]
    target_wait = (R2_STALL_S + 10) * 1000
    gap = [w["gap"] for w in W]
    uw = [w["usable_wait"] for w in W]
    ufw = [w["usable_free_wait"] for w in W]
    worst = max(W, key=lambda w: w["usable_wait"]) if W else None
    all_ok = r["exit_code"] == 0 and r["merged"] == n and not r["bad_files"]
    spend_ok = (not sp["mismatches"] and not sp["orphan_ledger"] and not sp["dup_ledger"]
                and abs(sp["db_cost"] - sp["ledger_cost"]) <= 1e-9
                and sp["db_input"] == sp["ledger_input"] and sp["db_output"] == sp["ledger_output"]
                and sp["db_cache"] == 0)
    states = ", ".join(f"{v} {k}" for k, v in sorted(r["states"].items()))
    max_uw = max(uw, default=0)
    max_ufw = max(ufw, default=0)
    out = [
        "## R2 — chaos: agent tasks over a faulty pool",
        "",
        f"{n} agent tasks (`role: developer`) in a DAG of {r['layers']} layers x {r['width']} "
        f"(each task of layer k>0 depends on {R2_FANIN} pseudo-random tasks of layer k-1, seed "
        f"{R2_DAG_SEED}; {r['edges']} edges), concurrency {R2_CONCURRENCY}, worktree per task, "
        f"`max_attempts: {R2_MAX_ATTEMPTS}` and `escalate_after: {R2_MAX_ATTEMPTS}` (one tier: "
        "the loop, not a limit, decides). Pool: "
        + ", ".join(f"`{p}` (account {a}, priority {pr})" for p, a, pr in R2_PROFILES)
        + f", all `cli: claude` = `fleet-fake-agent`, stall timeout {R2_STALL_S} s. Every attempt "
        f"draws its fate: {R2_FAULTS['FAKE_P_WRONG']:.0%} wrong result, "
        f"{R2_FAULTS['FAKE_P_RATE']:.0%} rate limited (the account stays limited "
        f"{R2_RESET_MS / 1000:.0f} s for every profile on it), {R2_FAULTS['FAKE_P_HANG']:.0%} hang, "
        f"{R2_FAULTS['FAKE_P_CRASH']:.0%} crash, else success (seed {R2_SEED}). Run `{r['run_id']}`.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| 100% of tasks pass | {r['merged']}/{n} merged"
        + ("" if r["merged"] == n else f" ({states})") + f"; `fleet run` exit "
        f"{r['exit_code']}; {n - len(r['bad_files'])}/{n} files right on the integration branch | "
        f"**{verdict(all_ok, str(n - r['merged']) + ' not merged')}** |",
        f"| total attempts <= 1.7x ideal ({n}) | {att} attempts = **{ratio:.2f}x** "
        f"(scripted floor: {r['floor']} = {r['floor'] / n:.2f}x; Fleet / floor "
        f"{att / r['floor']:.2f}x) | "
        f"**{verdict(ratio <= 1.7, f'by {(ratio / 1.7 - 1) * 100:.0f}%: {ratio:.2f}x vs 1.7x')}** |",
        f"| no wait > stall timeout + 10 s ({target_wait / 1000:.0f} s) once a usable agent exists "
        f"| max {max_uw / 1000:.2f} s (excluding also time all {R2_CONCURRENCY} slots were busy: "
        f"{max_ufw / 1000:.2f} s) | **{verdict(max_uw <= target_wait, f'{max_uw / 1000:.1f} s')}** |",
        f"| recorded spend = scripts' ground truth | ${sp['db_cost']:.6f} vs ${sp['ledger_cost']:.6f}; "
        f"tokens in {sp['db_input']} vs {sp['ledger_input']}, out {sp['db_output']} vs "
        f"{sp['ledger_output']}; {len(sp['mismatches'])} attempt mismatches | "
        f"**{verdict(spend_ok, str(len(sp['mismatches'])) + ' attempts differ')}** |",
        "",
        f"Wall time of `fleet run`: **{r['wall']:.1f} s** (agent phase {r['agent_phase_s']:.1f} s), "
        f"CPU (user+sys, Fleet and everything it ran) {r['cpu']:.1f} s.",
        "",
        "Attempts by outcome (Fleet's `attempts` table) and by the fate the script drew "
        "(ledger; hang and crash write no ledger line, their fate comes from the same PRNG):",
        "",
        "| outcome | attempts | per task | scripted fate(s) |",
        "|---|---:|---:|---|",
    ]
    fates_of: dict[str, list[str]] = {}
    for f, o, k in r["fate_rows"]:
        fates_of.setdefault(o, []).append(f"{f} {k}")
    for o, k in sorted(r["by_outcome"].items(), key=lambda x: -x[1]):
        out.append(f"| {o} | {k} | {k / n:.2f} | {', '.join(fates_of.get(o, []))} |")
    out.append(f"| **all** | **{att}** | **{ratio:.2f}** | |")
    al = r["acct_limited"]
    cls = {w: sum(1 for x in al if x["when"] == w) for w in ("unannounced", "signalled", "known")}
    p_ok = 1 - sum(R2_FAULTS.values())
    out += [
        "",
        f"The attempts target is out of reach for any orchestrator with these fault rates: an "
        f"attempt succeeds with probability {p_ok:.2f}, so {1 / p_ok:.1f} attempts per task are "
        f"needed on average, and this seed's scripts need {r['floor']} ({r['floor'] / n:.2f}x). "
        f"Fleet made {att - r['floor']:+d} attempts over that floor; "
        f"{len(al)} attempts met an already-limited account (below).",
        "",
        f"Profiles used: {', '.join(f'{p} {k}' for p, k in sorted(r['by_profile'].items()))}; "
        f"{r['swaps']} `attempt.swapped`, {r['cooldowns']} `account.cooldown`, "
        f"{r['waiting_events']} `task.waiting` events; most attempts of one task: "
        f"{r['per_task_max']} (scripted floor's worst task: {r['floor_max']}). "
        f"{len(al)} attempts met an account whose limit another attempt had already triggered "
        f"(the fake's `rate_limited_account`): {cls['unannounced']} started before any attempt "
        f"on that account had printed its rate-limit line (in flight together, or started in the "
        f"~0.1 s before the line), {cls['signalled']} after such a line was in Fleet's stream but "
        f"before that attempt ended (Fleet sets the cooldown only when the limited attempt "
        f"ends), {cls['known']} during a cooldown Fleet had already recorded.",
        "",
        "Waits between a task becoming ready (or retrying) and its next `attempt.started`:",
        "",
        "| measure | waits | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, xs in [("raw gap", gap), ("gap minus time no profile was usable", uw),
                      ("gap minus time no profile was usable or all slots were busy", ufw)]:
        xs = [x / 1000 for x in xs]
        out.append(f"| {label} | {len(xs)} | {pct(xs, 50):.3f} s | {pct(xs, 99):.3f} s | "
                   f"{max(xs, default=0):.3f} s |")
    blocked_s = sum(b - a for a, b in r["blocked"]) / 1000
    full_s = sum(b - a for a, b in r["full"]) / 1000
    span = r["waiting_span_ms"]
    late = [x[0] for x in r["lateness_ms"]]
    late_free = [x[0] - x[1] for x in r["lateness_ms"]]
    worst_s = ""
    if worst:
        worst_s = (f" Longest adjusted wait: task {worst['task']} attempt {worst['attempt']} "
                   f"(after {worst['after']}): gap {worst['gap'] / 1000:.2f} s, of which "
                   f"{worst['no_usable'] / 1000:.2f} s no profile usable and "
                   f"{worst['slots_full'] / 1000:.2f} s all slots busy.")
    out += [
        "",
        f"All three accounts were cooling down at once for {blocked_s:.1f} s in "
        f"{len(r['blocked'])} stretches; all {R2_CONCURRENCY} slots were busy for {full_s:.1f} s "
        f"(most tasks active at once: {r['max_level']}). `task.waiting` announced waits of "
        f"{(max(span) / 1000 if span else 0):.2f} s at most; the task's next attempt started "
        f"{pct(late, 50):.0f} ms (median) / {max(late, default=0):.0f} ms (max) after the "
        f"announced time ({len(late)} waits), {max(late_free, default=0):.0f} ms at most not "
        f"counting time all slots were busy.{worst_s}",
        "",
        "Spend per account (Fleet's attempts vs the ledger): "
        + "; ".join(f"{a} ${v['db']:.6f} vs ${v['ledger']:.6f}" for a, v in sp["by_account"].items())
        + f". Ledger: {sp['ledger_lines']} lines ("
        + ", ".join(f"{f} {k}" for f, k in r["ledger_fates"].items())
        + f"), {sp['ledger_micros']} micro-dollars in all.",
    ]
    if sp["mismatches"]:
        out += ["", "Attempts whose recorded spend differs from the ledger (first 10):", ""]
        for m in sp["mismatches"][:10]:
            out.append(f"- {m['task']} #{m['attempt']} ({m['outcome']}): DB {json.dumps(m['db'])}, "
                       f"ledger {json.dumps(m['ledger'])}")
    if sp["orphan_ledger"] or sp["dup_ledger"]:
        out += ["", f"Ledger lines without an attempt: {sp['orphan_ledger'][:10]}; "
                f"duplicate ledger lines: {sp['dup_ledger'][:10]}."]
    if r["script_mismatch"]:
        out += ["", f"{len(r['script_mismatch'])} attempts differ from the harness's replay of the "
                "fake agent's PRNG (the scripted floor is then unreliable): "
                + "; ".join(f"{m['task']} #{m['attempt']}" for m in r["script_mismatch"][:10])]
    if not all_ok:
        out += ["", "`fleet run` output (tail):", "", "```",
                (r["stdout_tail"] + "\n" + r["stderr_tail"]).strip(), "```"]
    out += [
        "",
        f"Method: the harness writes an instance `fleet.yaml` with the pool and a runbook whose "
        f"tasks each carry `FAKE-TASK: out/<id>.txt=chaos <id> done` in their prompt and the "
        f"check `grep -qx 'chaos <id> done' out/<id>.txt`, so a wrong result (content + `WRONG`) "
        f"fails its check; then runs `fleet run -q` once (timed). Every profile has the same "
        f"`FAKE_AGENT_SEED`, so the fake agent's draw for attempt n of a task depends only on "
        f"the task and n, not on which profile plays it; the harness replays that PRNG and checks "
        f"every ledger line and every hang/crash against it "
        f"({len(r['script_mismatch'])} differences). **Ideal** = one attempt per task ({n}). With "
        f"these probabilities an attempt succeeds with probability {p_ok:.2f}, so any "
        f"orchestrator needs {1 / p_ok:.1f} attempts per task on average; the **scripted floor** is "
        f"the exact number for this seed: for each task, the index of the first attempt the "
        f"script lets succeed, summed — what an orchestrator that never starts an attempt on a "
        f"limited account would need (attempts on an already-limited account replace that "
        f"attempt's draw, so a run can land slightly off the floor either way). "
        f"**Waits**: from the `events` table (ms timestamps), each `task.ready` or "
        f"`task.retrying` opens a wait that the task's next `attempt.started` closes (one per "
        f"attempt). An account counts as unusable from each `account.cooldown` event to its "
        f"`until` (the union of those intervals); no profile is usable while all "
        f"{len(R2_ACCOUNTS)} accounts are (every profile plays developer, one tier). The headline "
        f"wait is the gap minus its overlap with those no-usable-profile stretches; the last row "
        f"also removes the time all {R2_CONCURRENCY} concurrency slots were busy (a task holds a "
        f"slot from `task.started` until `task.retrying`/`task.passed`/`task.failed`). "
        f"**Spend**: each row of `attempts` (cost_usd, input/output/cache tokens) is matched to "
        f"the ledger line of the same task and attempt number (`FLEET_TASK`, `FLEET_ATTEMPT`); "
        f"an attempt without a line (hang, crash) must have recorded zero; equality within "
        f"1e-9 USD and exact tokens. Ledger costs are exact micro-dollars ($3/$15 per million "
        f"input/output tokens). {r['events']} events in the store, {r['jsonl_lines']} lines in "
        f"events.jsonl. Machine before: {r['state_before']}; after: {r['state_after']}.",
        "",
    ]
    return out


def main() -> None:
    """R2 alone: the same section as `bench.py r2`, written to bench/results/r2.md and r2.json
    (bench/results/latest.md, which `bench.py` writes, is left alone)."""
    import argparse
    import platform
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="r2", choices=["r2", "r3"],
                    help="r2: agents over a faulty pool; r3: kill -9 / SIGTERM (bench/kills.py)")
    ap.add_argument("--quick", action="store_true", help=f"{R2_QUICK[0] * R2_QUICK[1]} tasks instead of {R2_FULL[0] * R2_FULL[1]}")
    ap.add_argument("--no-build", action="store_true",
                    help="use the binaries already in target/release (skip cargo build)")
    args = ap.parse_args()
    if args.which == "r3":
        r3_main(args)
        return
    if args.no_build:
        for b in (FLEET, FAKE_AGENT):
            if not b.exists():
                sys.exit(f"chaos: {b} is missing; run without --no-build")
    else:
        bench.build(["r2"])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        raw = r2(Path(tmp), args.quick)
    report = [
        "# Fleet benchmarks",
        "",
        f"Run {started}{' (--quick)' if args.quick else ''}; Fleet {bench.revision()}; "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; {bench.tool_versions()}.",
        "",
    ] + r2_report(raw) + [
        f"_Total benchmark time {time.perf_counter() - t0:.0f} s "
        f"(`python3 bench/chaos.py{' --quick' if args.quick else ''}`)._"]
    text = "\n".join(report) + "\n"
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    (bench.RESULTS / "r2.md").write_text(text)
    (bench.RESULTS / "r2.json").write_text(json.dumps({"r2": raw}, indent=1) + "\n")
    print(text)


def r3_main(args) -> None:
    """R3 alone (bench/kills.py): the section goes to bench/results/r3.md, the raw figures to
    r3.json."""
    import platform
    import tempfile
    import kills
    if args.no_build:
        if not FLEET.exists():
            sys.exit(f"chaos: {FLEET} is missing; run without --no-build")
    else:
        bench.build(["r3"])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        raw = kills.r3(Path(tmp), args.quick)
    report = [
        "# Fleet benchmarks", "",
        f"Run {started}{' (--quick)' if args.quick else ''}; Fleet {bench.revision()}; "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; {bench.tool_versions()}.",
        "",
    ] + kills.r3_report(raw) + [
        f"_Total benchmark time {time.perf_counter() - t0:.0f} s "
        f"(`python3 bench/chaos.py r3{' --quick' if args.quick else ''}`)._"]
    text = "\n".join(report) + "\n"
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    (bench.RESULTS / "r3.md").write_text(text)
    (bench.RESULTS / "r3.json").write_text(json.dumps({"r3": raw}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
