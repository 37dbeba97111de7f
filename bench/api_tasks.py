#!/usr/bin/env python3
"""API task list on PostgreSQL (issue 19): `GET /api/v1/tasks` over 100,000 tasks, target
p99 <= 20 ms at 200 requests/s.

One command: makes a fresh PostgreSQL database, seeds it with N tasks (epics) through the
store (`crates/fleet-store/examples/seed_epics.rs`: `Store::create_epic`, the row, its summary
and its event, ~2 KB documents in the mix of states a busy fleet has), starts `fleet serve
--epics 0` on it (the API alone), and drives an open-loop load from `fleet-http-load`
(request i is due at start + i/rate whatever earlier ones did; latency counts from the due
time, so queueing is not hidden) at 200 requests/s against the task-list route with the
dashboard's query mix (round-robin): the board's columns (one state filter each, 50 newest),
the unfiltered list and a deep page (offset N/2). Side by side, at the same rate, the
`/healthz` floor (the smallest handler that touches the store), and a text search
(`q=login`, which a fifth of the tasks match) alone at 2 requests/s, last: a search counts
its matches by scanning every task, which 200 requests/s of any mix with searches in it
cannot afford (see docs/BENCHMARKS.md), so it is reported apart. Interleaved: list, floor,
list, floor, then the search. Reports p50/p90/p99/max, the server's CPU time per request and
the load average.

Seeding runs with `synchronous_commit = off` for the database (setup speed only: no effect on
what is stored); it is reset, then the database is vacuumed and analyzed (as autovacuum would
after a bulk load) before `fleet serve` starts.

Usage: python3 bench/api_tasks.py [--tasks N] [--secs S] [--rate R] [--no-build] [--release]
       (--rate: the list's and the floor's rate, default 200)
       (writes bench/results/api_tasks.md). Debug binaries unless --release.
Needs PostgreSQL at FLEET_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres)
and psql.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("FLEET_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# `--release`: optimized binaries (what a deployment runs); debug ones otherwise.
PROFILE = "release" if "--release" in sys.argv else "debug"
FLEET = ROOT / f"target/{PROFILE}/fleet"
SEED = ROOT / f"target/{PROFILE}/examples/seed_epics"
LOAD = ROOT / f"target/{PROFILE}/fleet-http-load"
RATE = 200


def queries(n):
    return [
        "/api/v1/tasks?state=research,architect,plan&limit=50",
        "/api/v1/tasks?state=implement&limit=50",
        "/api/v1/tasks?state=review,deliver&limit=50",
        "/api/v1/tasks?state=awaiting_acceptance&limit=50",
        "/api/v1/tasks?state=done&limit=50",
        "/api/v1/tasks?state=failed&limit=50",
        "/api/v1/tasks?state=cancelled&limit=50",
        "/api/v1/tasks?limit=50",
        f"/api/v1/tasks?limit=50&offset={n // 2}",
    ]


SEARCH = "/api/v1/tasks?q=login&limit=50"
SEARCH_RATE = 2


def arg(name, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def psql(url, sql):
    return subprocess.run(["psql", "-qAtX", url, "-c", sql], check=True, capture_output=True,
                          text=True).stdout


def load_avg():
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(urls, secs, rate):
    out = subprocess.run([str(LOAD), "--rate", str(rate), "--secs", str(secs), *urls],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    n, secs, rate = arg("--tasks", 100_000), arg("--secs", 30), arg("--rate", RATE)
    if "--no-build" not in sys.argv:
        for what in (["-p", "fleet"], ["-p", "fleet-store", "--example", "seed_epics"],
                     ["-p", "fleet-testkit", "--bin", "fleet-http-load"]):
            release = ["--release"] if PROFILE == "release" else []
            subprocess.run(["cargo", "build", "-q", *release, *what], cwd=ROOT, check=True)
    name = f"fleet_bench_api_{os.getpid()}"
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    psql(ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(ADMIN, f"CREATE DATABASE {name}")
    server, home = None, None
    try:
        psql(ADMIN, f"ALTER DATABASE {name} SET synchronous_commit = off")
        t = time.time()
        subprocess.run([str(SEED), url, str(n), "4"], check=True)
        seed_s = time.time() - t
        psql(ADMIN, f"ALTER DATABASE {name} RESET synchronous_commit")
        psql(url, "VACUUM ANALYZE")
        home = Path(tempfile.mkdtemp(prefix="fleet-api-bench-"))
        (home / "fleet.yaml").write_text(f"store: {url}\n")
        server = subprocess.Popen([str(FLEET), "--home", str(home), "serve", "--bind",
                                   "127.0.0.1:0", "--epics", "0", "-q"],
                                  stdout=subprocess.PIPE, text=True)
        base = "http://" + server.stdout.readline().strip().rsplit("http://", 1)[1]
        with urllib.request.urlopen(base + "/api/v1/tasks?limit=50") as r:
            check = json.load(r)
        assert check["total"] == n and len(check["tasks"]) == 50, check["total"]
        urls = [base + q for q in queries(n)]
        runs = []
        cases = [("tasks list", urls, rate), ("healthz (floor)", [base + "/healthz"], rate)] * 2
        cases.append(("text search", [base + SEARCH], SEARCH_RATE))
        for kind, target, case_rate in cases:
            before, c0 = load_avg(), cpu_s(server.pid)
            r = drive(target, secs // 2, case_rate)
            r["cpu_ms_per_req"] = (cpu_s(server.pid) - c0) * 1000 / r["requests"]
            r["load"] = f"{before} → {load_avg()}"
            runs.append((kind, r))
            print(kind, json.dumps(r), flush=True)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        psql(ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if home:
            shutil.rmtree(home, ignore_errors=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    worst = max(r["p99_ms"] for k, r in runs if k == "tasks list")
    lines = [f"# API task list over {n:,} tasks on PostgreSQL "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Fleet `{head}`, "
             f"{os.cpu_count()} CPUs, {PROFILE} build)", "",
             f"Seeded through the store in {seed_s:.0f} s. Open loop, {secs // 2} s per run, "
             f"{rate} req/s ({SEARCH_RATE} for the search). Worst tasks-list p99: "
             f"**{worst:.2f} ms** (target <= 20 ms at {RATE} req/s).",
             "", "| run | requests | p50 ms | p90 ms | p99 ms | max ms | errors | achieved req/s "
             "| server CPU ms / request | load 1/5/15 min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in runs:
        lines.append(f"| {k} | {r['requests']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                     f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['errors']} "
                     f"| {r['achieved_rate']:.0f} | {r['cpu_ms_per_req']:.2f} | {r['load']} |")
    lines += ["", "Query mix (round-robin): " + ", ".join(f"`{q}`" for q in queries(n))
              + f". Search: `{SEARCH}`."]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/api_tasks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
