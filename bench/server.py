"""Server benchmark P6 for bench/bench.py (Python 3.11 stdlib only).

P6  `GET /api/v1/tasks` over 10,000 tasks (epics), p99 <= 20 ms at 200 requests/s.
    An instance gets 10,000 epics in the mix of states a busy fleet has (written straight into
    its SQLite store, columns as `SqliteStore::save_epic` writes them: each row's document is an
    epic as Fleet stores it, with stages and plan tasks, ~2 KB). `fleet serve --epics 0` (release build; the API alone, nothing worked on)
    then takes an open-loop load of 200 requests/s for 30 s from `fleet-http-load`: the
    dashboard's board queries (one per column, 50 newest each), the unfiltered list, a deep
    page and a text search, round-robin. Latency counts from when each request was due, so
    queueing is not hidden. Side by side in the same run and at the same rate: `/healthz`
    (the smallest handler that touches the store), the floor this machine allows.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from bench import FLEET, ROOT, log, machine_state

LOAD = ROOT / "target" / "release" / "fleet-http-load"
BINARIES = [FLEET, LOAD]
STATES = ([("done", 60), ("failed", 8), ("cancelled", 4), ("awaiting_acceptance", 8), ("implement", 8),
           ("review", 4), ("plan", 4), ("research", 2), ("deliver", 1), ("architect", 1)])
QUERIES = [
    "/api/v1/tasks?state=research,architect,plan&limit=50",
    "/api/v1/tasks?state=implement&limit=50",
    "/api/v1/tasks?state=review,deliver&limit=50",
    "/api/v1/tasks?state=awaiting_acceptance&limit=50",
    "/api/v1/tasks?state=done&limit=50",
    "/api/v1/tasks?state=failed&limit=50",
    "/api/v1/tasks?state=cancelled&limit=50",
    "/api/v1/tasks?limit=50",
    "/api/v1/tasks?limit=50&offset=5000",
    "/api/v1/tasks?q=login&limit=50",
]


def epic_doc(i: int, state: str) -> dict:
    stages = [{"stage": s, "cycle": 1, "run_id": f"e{i}-{s}-c1r0a0", "state": "passed",
               "started_at": 1_700_000_000_000 + i, "finished_at": 1_700_000_060_000 + i,
               "detail": "3 atomic tasks: a, b, c"} for s in ["research", "plan", "implement", "review"]]
    tasks = [{"id": t, "phase": "build", "title": f"Add {t}", "role": "developer",
              "description": f"Create {t}.txt and its test.", "depends_on": [], "commands": [f"test -s {t}.txt"],
              "statements": [f"{t}.txt exists"], "cycle": 1, "state": "merged",
              "run_id": f"e{i}-implement-c1r0a0"} for t in ["a", "b", "c"]]
    words = ["Add a login page", "Fix the cart total", "Export orders as CSV", "Dark mode", "Rate limits"]
    return {"id": f"e{i}", "project": "shop" if i % 3 else "api", "request": f"{words[i % 5]} (#{i})",
            "state": state, "cycle": 1, "branch": f"fleet/epics/e{i}", "base_sha": "0" * 40,
            "intent": "feature", "roles": ["developer"], "stages": stages,
            "data": {"plan_summary": "three small files", "tasks": tasks, "reviews": [
                {"cycle": 1, "verdict": "approve", "summary": "fine", "bugs": [], "checks_passed": True}]},
            "created_at": 1_700_000_000_000 + i * 1000, "updated_at": 1_700_000_000_000 + i * 1000}


def seed(home: Path, n: int) -> None:
    home.mkdir(parents=True)
    (home / "fleet.yaml").write_text("store: sqlite\n")
    repo = home / "shop"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "i"],
                   cwd=repo, check=True)
    # `project add` creates and migrates the store, as a user would.
    subprocess.run([str(FLEET), "--home", str(home), "project", "add", "shop", "--repo", str(repo)],
                   check=True, capture_output=True)
    states = [s for s, w in STATES for _ in range(w)]
    db = sqlite3.connect(home / ".fleet" / "fleet.db")
    with db:
        db.executemany("INSERT INTO epics (id, project, state, created_at, updated_at, doc, request, cycle) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       [(d["id"], d["project"], d["state"], d["created_at"], d["updated_at"], json.dumps(d),
                         d["request"], d["cycle"])
                        for d in (epic_doc(i, states[i % len(states)]) for i in range(1, n + 1))])
    db.close()


def load(urls: list[str], rate: int, secs: int) -> dict:
    out = subprocess.run([str(LOAD), "--rate", str(rate), "--secs", str(secs), *urls],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def p6(work: Path, quick: bool) -> dict:
    home = work / "p6"
    n = 10_000
    seed(home, n)
    rate, secs = 200, (10 if quick else 30)
    server = subprocess.Popen([str(FLEET), "--home", str(home), "serve", "--bind", "127.0.0.1:0", "--epics", "0", "-q"],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline().strip()
        base = "http://" + first.rsplit("http://", 1)[1]
        # Check what the list answers before timing it.
        check = json.loads(subprocess.run(["curl", "-s", base + "/api/v1/tasks?limit=50"], capture_output=True,
                                          text=True).stdout)
        assert check["total"] == n and len(check["tasks"]) == 50, check
        before = machine_state()
        runs = []
        # Interleaved: list, floor, list, floor (each half the time), so noise hits both.
        for _ in range(2):
            runs.append(("list", load([base + q for q in QUERIES], rate, secs // 2)))
            runs.append(("healthz", load([base + "/healthz"], rate, max(5, secs // 4))))
        log(f"p6: {[(k, r['p99_ms']) for k, r in runs]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    lists = [r for k, r in runs if k == "list"]
    floors = [r for k, r in runs if k == "healthz"]
    return {"tasks": n, "rate": rate, "secs": secs, "queries": QUERIES, "list": lists, "healthz": floors,
            "machine": before}


def p6_report(r: dict) -> list[str]:
    worst = max(x["p99_ms"] for x in r["list"])
    floor = max(x["p99_ms"] for x in r["healthz"])
    errors = sum(x["errors"] for x in r["list"])
    verdict = "met" if worst <= 20 and errors == 0 else "**missed**"
    lines = [
        "## P6 — task list over 10,000 tasks at 200 requests/s",
        "",
        f"Target: p99 <= 20 ms. Measured: **p99 {worst:.2f} ms** (worst of {len(r['list'])} runs of "
        f"{r['secs'] // 2} s; open loop at {r['rate']} req/s, latency from each request's due time), "
        f"{errors} errors — {verdict}. Floor in the same run (`/healthz`, same rate): p99 {floor:.2f} ms.",
        "",
        "| run | requests | p50 ms | p90 ms | p99 ms | max ms | errors | achieved req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, xs in [("tasks list", r["list"]), ("healthz (floor)", r["healthz"])]:
        for x in xs:
            lines.append(f"| {name} | {x['requests']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | "
                         f"{x['max_ms']:.2f} | {x['errors']} | {x['achieved_rate']:.0f} |")
    lines += ["", f"Query mix (round-robin): {', '.join('`' + q + '`' for q in r['queries'])}.",
              f"Machine before the run: {r['machine']}.", ""]
    return lines
