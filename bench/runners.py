#!/usr/bin/env python3
"""`fleet runner` on PostgreSQL (issue 19), side by side in one run:

  RQ1  1,000 instant tasks (`workspace: none`) claimed by 1, 2 and 4 runners (concurrency 1
       each) vs the floor: a minimal `FOR UPDATE SKIP LOCKED` claim loop with as many threads
       (crates/fleet-store/examples/claim_floor.rs, same client library). Throughput (tasks/s,
       first claim to last task done) and claim-to-start latency p50/p99 (Fleet: from the
       runner starting its claim to the task's command running; floor: from starting the claim
       to its commit).
       Beside it, the same floor running, for each task, the command Fleet's task runs
       (`sh -c "date '+<task> %s%N' >> <file>"`, the line Fleet's claim-to-start latency is
       read from): what any runner must spend on a shell task's own process.
  RQ2  400 `workspace: none` tasks of `sleep 0.2`: 1 runner vs 4 runners (concurrency 1 each),
       wall time from the first claim to the last task done.

Usage: python3 bench/runners.py [--quick] [--no-build] [--base FLEET_BINARY]
       (writes bench/results/runners.md). `--base` adds, to RQ1, the same cases with another
       `fleet` binary (e.g. one built before a change), alternating with this one's.
Each case also reports the runners' CPU time per task (user + system, from wait4) and the
load average: the machine may be shared, and then wall time measures waiting for a core.
Needs PostgreSQL at FLEET_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres)
and psql. Debug binaries unless `--release`.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("FLEET_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# `--release`: optimized binaries (what a deployment runs); debug ones otherwise.
PROFILE = "release" if "--release" in sys.argv else "debug"
FLEET = ROOT / f"target/{PROFILE}/fleet"
FLOOR = ROOT / f"target/{PROFILE}/examples/claim_floor"


def db_url(name):
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def psql(url, sql):
    out = subprocess.run(["psql", "-qAtX", url, "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout


def fresh_db(tag):
    name = f"fleet_bench_{tag}_{os.getpid()}"
    psql(ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(ADMIN, f"CREATE DATABASE {name}")
    return name


def drop_db(name):
    psql(ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def project(tmp, tasks, command):
    remote, work = tmp / "remote.git", tmp / "proj"
    git(tmp, "init", "-q", "--bare", "-b", "main", "remote.git")
    git(tmp, "clone", "-q", str(remote), "proj")
    lines = ["name: bench", "tasks:"]
    for i in range(tasks):
        lines += [f"  - id: t{i:04d}", "    workspace: none", f"    command: {json.dumps(command)}"]
    (work / "runbook.yaml").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "seed"], check=True, env=env)
    git(work, "push", "-q", "origin", "main")
    return work


def fleet_case(runners, tasks, command, tag, fleet=FLEET):
    """Starts `runners` runners, queues the runbook, waits; returns the run's events and the
    runners' CPU seconds (user + system)."""
    name = fresh_db(tag)
    url = db_url(name)
    tmp = Path(tempfile.mkdtemp(prefix="fleet-runners-"))
    try:
        work = project(tmp, tasks, command.replace("STARTS", str(tmp / "starts")))
        home = tmp / "home"
        home.mkdir()
        (home / "fleet.yaml").write_text(f"store: {url}\n")
        # Migrate once before the runners start (they would wait on the advisory lock).
        subprocess.run([str(fleet), "runs"], env=dict(os.environ, FLEET_HOME=str(home)),
                       check=True, capture_output=True)
        procs = [subprocess.Popen([str(fleet), "runner", "--store", url, "--workspace",
                                   str(tmp / f"ws{i}"), "--concurrency", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(runners)]
        deadline = time.time() + 30
        while int(psql(url, "SELECT count(*) FROM runners").strip() or 0) < runners:
            assert time.time() < deadline, "runners did not advertise"
            time.sleep(0.05)
        out = subprocess.run([str(fleet), "run", "-q", "--on-runners", str(work / "runbook.yaml")],
                             env=dict(os.environ, FLEET_HOME=str(home)), capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        for p in procs:
            p.send_signal(signal.SIGTERM)
        cpu = 0.0
        for p in procs:
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
        rows = psql(url, "SELECT task, kind, at FROM events WHERE kind IN ('task.started', 'task.done')")
        started, done = {}, {}
        for line in rows.splitlines():
            task, kind, at = line.split("|")
            (started if kind == "task.started" else done)[task] = int(at)
        starts = {}
        if (tmp / "starts").exists():
            for line in (tmp / "starts").read_text().splitlines():
                task, ns = line.split()
                starts[task] = int(ns) / 1e6  # ns -> ms
        assert len(done) == tasks, f"{len(done)} of {tasks} done"
        return started, done, starts, cpu
    finally:
        drop_db(name)
        LEFT.append(tmp)


# Every case's files are removed when the benchmark ends, not after the case: on a file system
# without a journal (this machine's ext4), creating a file looks past every inode deleted in
# the last minutes (ext4's `recently_deleted`), so one case's clean-up slowed the next ones'
# file creations (Fleet's task logs) by up to 2x, more the later the case ran.
LEFT = []


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def floor_case(threads, tasks, tag, command=None):
    name = fresh_db(tag)
    try:
        out = subprocess.run([str(FLOOR), db_url(name), str(tasks), str(threads),
                              *([command] if command else [])],
                             check=True, capture_output=True, text=True)
        d = json.loads(out.stdout)
        lat = [x / 1000 for x in d["latency_us"]]
        return tasks / d["wall_s"], pct(lat, 0.5), pct(lat, 0.99)
    finally:
        drop_db(name)


def load():
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


SINK = tempfile.mkstemp(prefix="fleet-floor-starts-")[1]


def main():
    quick = "--quick" in sys.argv
    base = Path(sys.argv[sys.argv.index("--base") + 1]) if "--base" in sys.argv else None
    if "--no-build" not in sys.argv:
        release = ["--release"] if PROFILE == "release" else []
        subprocess.run(["cargo", "build", "-q", *release, "-p", "fleet"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "-q", *release, "-p", "fleet-store", "--example",
                        "claim_floor"], cwd=ROOT, check=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    report = [f"# fleet runner benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"Fleet `{head}`, {os.cpu_count()} CPUs, {PROFILE} build)", ""]
    n1 = 200 if quick else 1000
    report += [f"## RQ1 — {n1} instant tasks: runners vs a minimal SKIP LOCKED loop", "",
               "| runners | fleet | floor tasks/s | Fleet tasks/s | Fleet / floor "
               "| floor + the task's process, tasks/s | Fleet / that floor "
               "| floor claim p50 / p99 (ms) | Fleet claim-to-start p50 / p99 (ms) "
               "| runners' CPU ms / task | load 1/5/15 min |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
    fleets = [("this", FLEET)] + ([("base", base)] if base else [])
    for n in (1, 2, 4):
        for label, binary in fleets:
            before = load()
            f_tp, f50, f99 = floor_case(n, n1, f"floor{n}")
            # The same loop running what Fleet's task runs (its command, through sh -c).
            # Both append a line to a file: the floor's to one it never reads.
            p_tp, _, _ = floor_case(n, n1, f"floorp{n}", f"date '+t %s%N' >> {SINK}")
            started, done, starts, cpu = fleet_case(
                n, n1, "date \"+$FLEET_TASK %s%N\" >> STARTS", f"rq1_{n}", binary)
            span = (max(done.values()) - min(started.values())) / 1000
            tp = n1 / span
            lat = [starts[t] - started[t] for t in started if t in starts]
            report.append(f"| {n} | {label} | {f_tp:.0f} | {tp:.0f} | {tp / f_tp:.2f} "
                          f"| {p_tp:.0f} | {tp / p_tp:.2f} "
                          f"| {f50:.2f} / {f99:.2f} "
                          f"| {pct(lat, 0.5):.2f} / {pct(lat, 0.99):.2f} "
                          f"| {cpu * 1000 / n1:.1f} | {before} → {load()} |")
            print(report[-1], flush=True)
    n2 = 100 if quick else 400
    report += ["", f"## RQ2 — {n2} tasks of `sleep 0.2`: 1 vs 4 runners (concurrency 1)", "",
               "| runners | wall, first claim to last done (s) | ideal (s) "
               "| runners' CPU ms / task | load 1/5/15 min |", "|---|---|---|---|---|"]
    walls = {}
    for n in (1, 4):
        before = load()
        started, done, _, cpu = fleet_case(n, n2, "sleep 0.2", f"rq2_{n}")
        walls[n] = (max(done.values()) - min(started.values())) / 1000
        report.append(f"| {n} | {walls[n]:.2f} | {n2 * 0.2 / n:.1f} | {cpu * 1000 / n2:.1f} "
                      f"| {before} → {load()} |")
        print(report[-1], flush=True)
    report += ["", f"Speed-up 1 → 4 runners: **{walls[1] / walls[4]:.2f}x**"]
    for tmp in LEFT:
        shutil.rmtree(tmp, ignore_errors=True)
    os.unlink(SINK)
    text = "\n".join(report) + "\n"
    out = ROOT / "bench/results"
    out.mkdir(exist_ok=True)
    (out / "runners.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
