#!/usr/bin/env python3
"""The pipeline chaos benchmark (issue 18; Python 3.11 stdlib only).

    python3 bench/pipeline_chaos.py [--fleet target/debug/fleet] [--epics 4] [--keep]

30 requests go through `fleet serve` (its HTTP API) over four projects — branch delivery,
deploy with QA, and two pull-request projects on a GitHub double served by this script — with
scripted agents and faults at every stage:

- agents: every attempt of every role draws its fate from R2's seeded PRNG (30% wrong result,
  10% rate limited, 5% hang, 5% crash; `fleet-fake-agent` plays the `claude` CLI, wrapped by a
  script that writes the role's artifact: a valid one on success, an invalid one when wrong);
- review rejections (3 requests), QA finding a bug in the deployed app (2), a deploy that fails
  twice (1), forge 500s on opening the pull request (2 requests, twice each), one 401 (a
  repository the token may not write to), LGTM and bot comments on delivered pull requests (2),
  one request too vague to plan (the planner answers `{"questions": [...]}`), one request
  routed to a role nobody plays (`db`).

Phase 1 waits until every request awaits acceptance, is blocked with a question, or was
refused at submit (and checks that comments left on pull requests start no new cycle). Then a
scripted person answers every question (or fixes the cause and retries; for the missing role
adds a `db` profile, restarts `fleet serve` and submits again), and phase 2 waits again. The
report gives each case's outcome against the expected one, attempts against the scripted floor
(per agent task: the first attempt whose scripted fate is a success), cost and time per request,
and Fleet's own overhead: submit -> first agent start, and last merge -> pull request opened
(with the agents' own time in that window subtracted; the scripted agents are instant).
Results: bench/results/pipeline_chaos.md and .json.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from chaos import scripted  # noqa: E402  (R2's PRNG: the fate of each attempt)

SEED = "20261206"
FAULTS = {"FAKE_P_WRONG": "0.3", "FAKE_P_RATE": "0.1", "FAKE_P_HANG": "0.05", "FAKE_P_CRASH": "0.05"}
ROLES = ["researcher", "planner", "developer", "reviewer", "qa"]
PHASE_TIMEOUT_S = 2400
MAX_ATTEMPTS = 8
STUCK_S = 120              # a task still waiting this long after its announced wait is stuck            # the engine's default attempts per task
ENDED = {"awaiting_acceptance", "blocked", "failed", "done", "cancelled"}

# (id, project, request, expected after phase 1) — the tag in brackets tells the scripted agents,
# the deploy and the forge double which fault to play.
CASES: list[tuple[str, str, str, str]] = (
    [(f"r{i:02}", "app", f"Add feature {i} to the app", "awaiting") for i in range(1, 11)]
    + [(f"r{i:02}", "app", f"[review-reject] Add report {i} to the app", "awaiting") for i in range(11, 14)]
    + [(f"r{i:02}", "site", f"Add page {i} to the site", "awaiting") for i in range(14, 19)]
    + [(f"r{i:02}", "site", f"[qa-bug] Add form {i} to the site", "awaiting") for i in (19, 20)]
    + [("r21", "site", "[flaky-env] Add the pricing page to the site", "awaiting")]
    + [(f"r{i:02}", "shop", f"Add product filter {i} to the shop", "awaiting") for i in range(22, 26)]
    + [(f"r{i:02}", "shop", f"[forge-500] Add coupon {i} to the shop", "awaiting") for i in (26, 27)]
    + [("r28", "locked", "Add the returns policy to the locked shop", "blocked:token")]
    + [("r29", "app", "[vague] make it better", "blocked:questions")]
    + [("r30", "app", "the database is slow when listing orders", "refused:db")]
)
COMMENTED = {"r22", "r23"}
VAGUE_QUESTION = "Which part of the app should get better, and better how?"

WRAPPER = r'''#!/usr/bin/env python3
# A scripted agent playing the `claude` CLI: writes its role's artifact (valid on a scripted
# success, invalid when the scripted fate is a wrong result), then hands over to
# fleet-fake-agent, which plays the CLI's output and the fate (429, hang, crash) for real.
import json, os, subprocess, sys, urllib.request
sys.path.insert(0, BENCH)
from chaos import scripted
role = os.environ["SCRIPTED_ROLE"]
prompt = sys.stdin.read()
task = os.environ.get("FLEET_TASK", "")
attempt = int(os.environ.get("FLEET_ATTEMPT", "1"))
run = os.environ.get("FLEET_RUN", "")
name = run.rsplit("-", 2)[0] if run.count("-") >= 3 else run
epic = name.split("-")[0]
if role == "developer":
    line = f"FAKE-TASK: {task}.txt=ok {task} {epic}"
else:
    line = f"FAKE-TASK: .fleet-out/{role}-note.txt=run {name}"
fate = scripted(os.environ["FAKE_AGENT_SEED"], line, task, attempt)["fate"]
with open(os.environ["SCRIPT_LEDGER"], "a") as f:
    f.write(json.dumps({"run": name, "task": task, "attempt": attempt, "fate": fate, "line": line}) + "\n")

def write(path, text):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

def task_json(tid, deps=()):
    return {"id": tid, "title": f"Add {tid}", "role": "developer",
            "description": f"Write {tid}.txt holding exactly: ok {tid} {epic}",
            "depends_on": list(deps),
            "acceptance": {"commands": [f"test \"$(cat {tid}.txt)\" = 'ok {tid} {epic}'"]}}

def plan(tasks, summary):
    return json.dumps({"summary": summary, "phases": [{"id": "p-" + tasks[0]["id"], "title": summary, "tasks": tasks}]})

def planner():
    if "[vague]" in prompt and "The person answered" not in prompt:
        return json.dumps({"questions": [QUESTION]})
    if "QA tested the app deployed at" in prompt:
        return plan([task_json("fix-qa")], "fix what QA found")
    if "sent the work back" in prompt:
        return plan([task_json("fix-review")], "fix what the review found")
    if "could not be done" in prompt:
        n = prompt.count("redo-") + 1
        return plan([task_json(f"redo-{n}")], "re-plan what failed")
    if "This is a follow-up plan" in prompt:
        return plan([task_json("follow-up")], "follow up")
    tasks = [task_json("a"), task_json("b", ["a"])]
    if "[flaky-env]" in prompt:
        tasks.append(task_json("flaky"))
    return plan(tasks, "two small files")

def reviewer():
    if "[review-reject]" in prompt and not os.path.exists("fix-review.txt"):
        return json.dumps({"verdict": "reject", "summary": "fix-review.txt is missing",
                           "bugs": [{"title": "no fix-review.txt", "details": "the request needs fix-review.txt"}]})
    return json.dumps({"verdict": "approve", "summary": "all criteria hold"})

def qa():
    url = os.environ.get("FLEET_QA_URL", "")
    if "[qa-bug]" in prompt:
        try:
            urllib.request.urlopen(url + "fix-qa.txt", timeout=10).read()
        except Exception:
            return json.dumps({"verdict": "fail", "summary": "the form is broken",
                               "bugs": [{"title": "fix-qa.txt missing", "steps": f"open {url}fix-qa.txt",
                                         "expected": "the file", "actual": "404"}]})
    urllib.request.urlopen(url, timeout=10).read()
    return json.dumps({"verdict": "pass", "summary": "the deployed app works", "tested": ["home page"]})

ARTIFACT = {"researcher": ".fleet-out/context.md", "planner": ".fleet-out/plan.json",
            "reviewer": ".fleet-out/review.json", "qa": ".fleet-out/qa.json"}
if role != "developer" and fate in ("success", "wrong"):
    if fate == "wrong":
        write(ARTIFACT[role], "{}" if role != "researcher" else "")
    elif role == "researcher":
        write(ARTIFACT[role], "# project\nFiles: *.txt. Test: test -s FILE.\n")
    else:
        write(ARTIFACT[role], {"planner": planner, "reviewer": reviewer, "qa": qa}[role]())
r = subprocess.run([FAKE], input=line + "\n", text=True)
sys.exit(r.returncode)
'''

DEPLOY = r'''#!/bin/sh
# The test environment: publishes the branch's files under the static server's root. A branch
# with flaky.txt finds the environment busy on its first two deploys.
set -e
br=$(git rev-parse --abbrev-ref HEAD); epic=${br##*/}; sha=$(git rev-parse --short HEAD)
if [ -f flaky.txt ]; then
  n=$(cat "$STATE/$epic.deploys" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$STATE/$epic.deploys"
  if [ $n -le 2 ]; then echo "deploy failed: the test environment is busy (try $n)"; exit 1; fi
fi
d="$SITE/$epic-$sha"; mkdir -p "$d"; cp ./*.txt "$d"/ 2>/dev/null || true; echo ok > "$d/index.html"
echo "URL: http://127.0.0.1:$PORT/$epic-$sha/"
'''


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Forge:
    """A GitHub double: pull requests, comments, reviews; 500s for `[forge-500]` titles (twice
    each), 401 for acme/locked until the person fixes the token."""

    def __init__(self):
        self.lock = threading.Lock()
        self.prs: dict[int, dict] = {}
        self.comments: dict[int, list] = {}
        self.fails: dict[str, int] = {}
        self.unlocked = False
        self.next_id = 1000
        self.statuses: list[tuple[str, int]] = []
        forge = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                forge.statuses.append((self.command + " " + self.path.split("?")[0], code))

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_POST(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                b = self.body()
                with forge.lock:
                    if parts[-1] == "pulls":
                        if parts[2] == "locked" and not forge.unlocked:
                            return self.reply(401, {"message": "Bad credentials"})
                        t = b.get("title", "")
                        if "[forge-500]" in t and forge.fails.get(t, 0) < 2:
                            forge.fails[t] = forge.fails.get(t, 0) + 1
                            return self.reply(500, {"message": "Server Error"})
                        n = len(forge.prs) + 1
                        pr = {"number": n, "state": "open", "merged": False, "title": t,
                              "head": {"ref": b.get("head")}, "body": b.get("body"),
                              "html_url": f"http://forge.invalid/{parts[1]}/{parts[2]}/pull/{n}",
                              "opened_at": time.time()}
                        forge.prs[n] = pr
                        forge.comments[n] = []
                        return self.reply(201, pr)
                    if parts[-1] == "comments":
                        forge.next_id += 1
                        c = {"id": forge.next_id, "body": b.get("body"), "user": {"login": "fleet", "type": "User"}}
                        forge.comments.setdefault(int(parts[-2]), []).append(c)
                        return self.reply(201, c)
                self.reply(404, {"message": "Not Found"})

            def do_PATCH(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                b = self.body()
                with forge.lock:
                    pr = forge.prs.get(int(parts[-1]))
                    if pr is None:
                        return self.reply(404, {"message": "Not Found"})
                    pr["body"] = b.get("body", pr["body"])
                    return self.reply(200, pr)

            def do_GET(self):
                path, _, query = self.path.partition("?")
                parts = path.strip("/").split("/")
                with forge.lock:
                    if parts[-1] == "pulls":
                        head = dict(q.split("=", 1) for q in query.split("&") if "=" in q).get("head", "")
                        head = urllib.request.unquote(head).split(":")[-1]
                        return self.reply(200, [p for p in forge.prs.values() if p["head"]["ref"] == head])
                    if parts[-2] == "pulls" and parts[-1].isdigit():
                        pr = forge.prs.get(int(parts[-1]))
                        return self.reply(200 if pr else 404, pr or {"message": "Not Found"})
                    if parts[-1] == "comments" and parts[-3] == "issues":
                        return self.reply(200, forge.comments.get(int(parts[-2]), []))
                    if parts[-1] in ("comments", "reviews"):
                        return self.reply(200, [])
                self.reply(404, {"message": "Not Found"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def comment(self, number: int, login: str, typ: str, body: str) -> None:
        with self.lock:
            self.next_id += 1
            self.comments.setdefault(number, []).append(
                {"id": self.next_id, "body": body, "user": {"login": login, "type": typ}})


def static_server(root: Path) -> int:
    class H(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s.server_address[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, text=True,
                          capture_output=True).stdout


def init_repo(path: Path, remote: Path | None = None) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("bench\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=bench", "-c", "user.email=b@localhost", "commit", "-q", "-m", "init")
    if remote:
        git(path.parent, "init", "-q", "--bare", str(remote))
        git(path, "remote", "add", "origin", str(remote))


class Bench:
    def __init__(self, args):
        self.args = args
        self.fleet = Path(args.fleet).resolve()
        self.fake = self.fleet.parent / "fleet-fake-agent"
        for b in (self.fleet, self.fake):
            if not b.exists():
                raise SystemExit(f"{b} is missing: cargo build -p fleet -p fleet-testkit")
        self.work = Path(tempfile.mkdtemp(prefix="pipeline-chaos-"))
        self.home = self.work / "home"
        self.home.mkdir()
        self.bin = self.work / "bin"
        self.bin.mkdir()
        self.ledger = self.work / "ledger.jsonl"
        self.forge = Forge()
        self.site = self.work / "www"
        self.site.mkdir()
        self.state = self.work / "deploy-state"
        self.state.mkdir()
        self.site_port = static_server(self.site)
        self.port = free_port()
        self.serve: subprocess.Popen | None = None
        self.ids: dict[str, str] = {}
        self.submitted_at: dict[str, float] = {}
        self.refused: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {c[0]: [] for c in CASES}
        self.commented: set[str] = set()
        self.comment_checked: set[str] = set()
        self.stuck: set[str] = set()

    # ---------------------------------------------------------------------------------- setup

    def profile(self, name: str, role: str, account: str) -> str:
        path = f"{self.bin}:/usr/local/bin:/usr/bin:/bin"
        env = {"PATH": path, "SCRIPTED_ROLE": role, "FAKE_AGENT_SEED": SEED,
               "SCRIPT_LEDGER": str(self.ledger), "FAKE_RATE_RESET_MS": "2000", **FAULTS}
        env_s = ", ".join(f"{k}: {json.dumps(v)}" for k, v in env.items())
        return (f"  {name}:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [{role}]\n"
                f"    account: {account}\n    stall_timeout: 5s\n    env: {{ {env_s} }}\n")

    def write_config(self, with_db: bool) -> None:
        profiles = "".join(self.profile(f"{r}-{a}", r, f"acct-{a}") for r in ROLES for a in "ab")
        if with_db:
            profiles += self.profile("db-a", "developer", "acct-a").replace("roles: [developer]", "roles: [db]").replace("SCRIPTED_ROLE: \"developer\"", "SCRIPTED_ROLE: \"developer\"")
        (self.home / "fleet.yaml").write_text(
            "agents:\n" + profiles +
            "accounts:\n  acct-a: { secrets: [CHAOS_KEY_A] }\n  acct-b: { secrets: [CHAOS_KEY_B] }\n")

    def setup(self) -> None:
        wrapper = WRAPPER.replace("BENCH)", repr(str(HERE)) + ")", 1) \
            .replace("[FAKE]", f"[{str(self.fake)!r}]").replace("[QUESTION]", f"[{VAGUE_QUESTION!r}]")
        (self.bin / "claude").write_text(wrapper)
        (self.bin / "claude").chmod(0o755)
        (self.work / "deploy.sh").write_text(DEPLOY)
        self.write_config(with_db=False)
        for name in ("app", "site", "shop", "locked"):
            init_repo(self.work / name, self.work / f"{name}.git")
        api = f"http://127.0.0.1:{self.forge.port}"
        self.token = self.fleet_ok("token", "create", "--scope", "admin").strip().splitlines()[-1]
        self.fleet_ok("project", "add", "app", "--repo", str(self.work / "app"))
        self.fleet_ok("project", "add", "site", "--repo", str(self.work / "site"), "--delivery", "deploy",
                      "--deploy-command",
                      f"SITE={self.site} STATE={self.state} PORT={self.site_port} sh {self.work / 'deploy.sh'}",
                      "--qa")
        for name in ("shop", "locked"):
            self.fleet_ok("project", "add", name, "--repo", str(self.work / name), "--delivery", "pull_request",
                          "--forge", "github", "--api-url", api, "--forge-repo", f"acme/{name}")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_KEY"))}
        env.update({"FLEET_HOME": str(self.home), "GITHUB_TOKEN": "ghp_benchtoken0123456789",
                    "CHAOS_KEY_A": "sk-ant-chaos-a", "CHAOS_KEY_B": "sk-ant-chaos-b",
                    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@localhost",
                    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@localhost"})
        return env

    def fleet_ok(self, *args: str) -> str:
        r = subprocess.run([str(self.fleet), *args], env=self.env(), text=True, capture_output=True,
                           cwd=self.work)
        if r.returncode != 0:
            raise SystemExit(f"fleet {args}: {r.stdout}{r.stderr}")
        return r.stdout

    def start_serve(self) -> None:
        out = open(self.work / "serve.log", "a")
        self.serve = subprocess.Popen(
            [str(self.fleet), "serve", "--bind", f"127.0.0.1:{self.port}", "--epics", str(self.args.epics),
             "--pr-poll", "2", "--quiet"], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
            cwd=self.work)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return
            except Exception:
                time.sleep(0.1)
        raise SystemExit("fleet serve did not come up; see serve.log")

    def stop_serve(self) -> None:
        if self.serve:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(60)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                self.serve.wait()
            self.serve = None

    # ------------------------------------------------------------------------------------ API

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"error": text}

    def submit(self, case: str, project: str, request: str) -> None:
        self.submitted_at[case] = time.time()
        code, body = self.api("POST", "/api/v1/tasks", {"project": project, "request": request})
        if code == 201:
            self.ids[case] = body["task"]["id"]
            self.refused.pop(case, None)
        else:
            self.refused[case] = str(body.get("error", body))
            self.notes[case].append(f"refused at submit ({code})")

    def detail(self, case: str) -> dict:
        body = self.api("GET", f"/api/v1/tasks/{self.ids[case]}")[1]
        return {**body.get("task", {}), "stages": body.get("stages", [])}

    def wait_all(self, label: str) -> dict[str, dict]:
        deadline = time.time() + PHASE_TIMEOUT_S
        seen: dict[str, dict] = {}
        commented = self.commented
        while time.time() < deadline:
            pending = []
            for case in self.ids:
                d = self.detail(case)
                seen[case] = d
                st = d.get("state")
                if st == "awaiting_acceptance" and case in COMMENTED and case not in commented:
                    self.leave_comments(case, d)
                    commented.add(case)
                    pending.append(case)
                elif st not in ENDED and case not in self.stuck:
                    if self.overslept(case) > STUCK_S:
                        self.stuck.add(case)
                        self.notes[case].append(
                            f"stuck: waiting {STUCK_S} s past the end of its wait in stage {st} (last: "
                            f"{self.last_event(case)})")
                    else:
                        pending.append(case)
            if commented and not pending and not all(c in self.comment_checked for c in commented):
                # Give the server three poll periods to (wrongly) start a cycle from them.
                time.sleep(7)
                seen = {c: self.detail(c) for c in self.ids}
                if all(seen[c].get("state") in ENDED for c in seen):
                    for c in commented:
                        self.comment_checked.add(c)
                        self.notes[c].append(f"after the comments and 3 polls: {seen[c].get('state')}, "
                                             f"cycle {seen[c].get('cycle')}")
                    break
                continue
            if not pending:
                break
            log(f"{label}: {len(pending)} working: {', '.join(sorted(pending)[:10])}")
            time.sleep(3)
        return seen

    def events_of(self, case: str) -> list:
        db = sqlite3.connect(self.home / ".fleet" / "fleet.db", timeout=30)
        try:
            e = self.ids[case]
            return list(db.execute(
                "SELECT at, kind, data FROM events WHERE run_id = ? OR run_id LIKE ? ORDER BY seq DESC LIMIT 1",
                (e, e + "-%")))
        finally:
            db.close()

    def overslept(self, case: str) -> float:
        """Seconds since the end of the wait a task announced as its last event (0: none)."""
        ev = self.events_of(case)
        if not ev or ev[0][1] != "task.waiting":
            return 0.0
        until = json.loads(ev[0][2]).get("until")
        if not until:
            return 0.0
        from datetime import datetime
        end = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
        return time.time() - end

    def last_event(self, case: str) -> str:
        ev = self.events_of(case)
        return f"{ev[0][1]} {ev[0][2][:200]}" if ev else "none"

    def leave_comments(self, case: str, d: dict) -> None:
        url = (d.get("delivery") or {}).get("url") or ""
        number = int(url.rsplit("/", 1)[-1]) if url.rsplit("/", 1)[-1].isdigit() else None
        if number is None:
            self.notes[case].append("no pull request to comment on")
            return
        self.forge.comment(number, "alice", "User", "LGTM, thanks! Merging now.")
        self.forge.comment(number, "codecov[bot]", "Bot", "Codecov report: coverage 91.2% (+0.1%)")
        self.notes[case].append(f"LGTM and a bot comment left on PR #{number} (cycle {d.get('cycle')})")

    # ----------------------------------------------------------------------------------- person

    def person(self, seen: dict[str, dict]) -> None:
        for case, d in seen.items():
            if d.get("state") != "blocked":
                continue
            q = (d.get("blocked") or {}).get("question") or d.get("reason") or ""
            self.notes[case].append(f"blocked at {(d.get('blocked') or {}).get('at')}: {q[:160]}")
            if case == "r28":
                self.forge.unlocked = True
                code, body = self.api("POST", f"/api/v1/tasks/{self.ids[case]}/retry", {})
                self.notes[case].append(f"person fixed the token on the forge and retried ({code})")
            else:
                answer = ("Make the order list faster: paginate it, 50 per page."
                          if case == "r29" else "Go on as planned.")
                code, body = self.api("POST", f"/api/v1/tasks/{self.ids[case]}/answer", {"answer": answer})
                self.notes[case].append(f"person answered ({code})")
        stuck, self.stuck = sorted(self.stuck), set()
        if "r30" in self.refused or stuck:
            self.stop_serve()
            self.write_config(with_db=True)
            self.start_serve()
            for c in stuck:
                self.notes[c].append("person restarted fleet serve (the stage's run resumes)")
        if "r30" in self.refused:
            self.notes["r30"].append("person added a db profile, restarted fleet serve and submitted again")
            case = next(c for c in CASES if c[0] == "r30")
            self.submit(case[0], case[1], case[2])

    # --------------------------------------------------------------------------------- report

    def outcome(self, case: str, d: dict | None) -> str:
        if case in self.refused:
            return "refused: " + self.refused[case][:200]
        if not d:
            return "unknown"
        st = d.get("state")
        if case in self.stuck:
            return f"stuck in {st} (still waiting {STUCK_S} s after its wait ended)"
        if st == "blocked":
            q = (d.get("blocked") or {}).get("question") or ""
            return f"blocked at {(d.get('blocked') or {}).get('at')}: {q[:200]}"
        return st or "?"

    @staticmethod
    def matches(expected: str, outcome: str) -> bool:
        if expected == "awaiting":
            return outcome == "awaiting_acceptance"
        if expected == "blocked:token":
            return outcome.startswith("blocked") and "token" in outcome.lower()
        if expected == "blocked:questions":
            return outcome.startswith("blocked") and VAGUE_QUESTION in outcome
        if expected == "refused:db":
            return (outcome.startswith("refused") or outcome.startswith("blocked")) and "db" in outcome
        return False

    def figures(self) -> dict:
        db = sqlite3.connect(self.home / ".fleet" / "fleet.db")
        runs = {rid: name for rid, name in db.execute("SELECT id, name FROM runs")}
        fates = {}
        for line in (self.ledger.read_text() if self.ledger.exists() else "").splitlines():
            e = json.loads(line)
            fates.setdefault((e["run"], e["task"]), e["line"])
        per = {}
        inv = {v: k for k, v in self.ids.items()}
        for rid, task, n, profile, cost, started, finished, outcome in db.execute(
                "SELECT run_id, task_id, n, profile, cost_usd, started_at, finished_at, outcome FROM attempts"):
            if not profile:
                continue
            name = runs.get(rid, "")
            epic = name.split("-")[0]
            case = inv.get(epic)
            if case is None:
                continue
            p = per.setdefault(case, {"attempts": 0, "cost": 0.0, "tasks": {}, "agent_ms": []})
            p["attempts"] += 1
            p["cost"] += cost or 0.0
            p["tasks"].setdefault((name, task), 0)
            p["tasks"][(name, task)] += 1
            p["agent_ms"].append((started, finished or started))
        # The floor: per agent task, the first attempt whose scripted fate is a success.
        task_state = {(runs.get(r, ""), t): s for r, t, s in db.execute("SELECT run_id, id, state FROM tasks")}
        floor_total = fleet_total = 0
        unfinished, over_limit = [], []
        for case, p in per.items():
            p["floor"] = 0
            for (name, task), n in p["tasks"].items():
                line = fates.get((name, task))
                if line is None or task_state.get((name, task)) not in ("merged", "passed"):
                    k = 1
                    while line and scripted(SEED, line, task, k)["fate"] != "success" and k < 100:
                        k += 1
                    unfinished.append(f"{case}:{name}/{task} ({task_state.get((name, task))}, {n} attempts, "
                                      f"first scripted success at attempt {k})")
                    if line and k > MAX_ATTEMPTS:
                        over_limit.append(f"{case}:{name}/{task} needs {k} attempts, the limit is {MAX_ATTEMPTS}")
                    continue
                k = 1
                while scripted(SEED, line, task, k)["fate"] != "success" and k < 100:
                    k += 1
                p["floor"] += k
                floor_total += k
                fleet_total += n
        # Times: submit -> awaiting acceptance; submit -> first agent start; last merge -> PR.
        events = list(db.execute("SELECT at, run_id, task, kind, data FROM events ORDER BY seq"))
        first_start, awaiting, merged_last, pr_opened, stage_start = {}, {}, {}, {}, {}
        evidence: dict[str, dict[str, int]] = {}
        created = {}
        for at, run_id, task, kind, data in events:
            epic = runs.get(run_id, run_id).split("-")[0] if run_id in runs else run_id
            if kind in ("epic.delivery_retried", "task.qa_failed", "task.review_rejected",
                        "epic.qa_passed", "epic.qa_rendered"):
                ev = evidence.setdefault(epic, {})
                ev[kind.split(".", 1)[1]] = ev.get(kind.split(".", 1)[1], 0) + 1
            if kind == "epic.stage_started":
                stage_start.setdefault(epic, at)
            if kind == "task.created":
                created.setdefault(epic, at)
            elif kind == "attempt.started":
                first_start.setdefault(epic, at)
            elif kind == "task.awaiting_acceptance":
                awaiting[epic] = at
            elif kind == "task.merged" and "-implement-" in runs.get(run_id, ""):
                merged_last[epic] = at
            elif kind == "epic.stage_finished":
                d = json.loads(data)
                if d.get("stage") == "deliver" and "pull request" in (d.get("detail") or ""):
                    pr_opened[epic] = at
        for case, p in per.items():
            e = self.ids[case]
            if e in created and e in awaiting:
                p["time_s"] = (awaiting[e] - created[e]) / 1000
            if e in created and e in first_start:
                p["to_first_agent_ms"] = first_start[e] - created[e]
            if e in stage_start and e in first_start:
                p["stage_to_first_agent_ms"] = first_start[e] - stage_start[e]
            p["evidence"] = evidence.get(e, {})
            if e in merged_last and e in pr_opened and pr_opened[e] > merged_last[e]:
                a, b = merged_last[e], pr_opened[e]
                agent = sum(max(0, min(f, b) - max(s, a)) for s, f in p["agent_ms"])
                p["merge_to_pr_ms"] = b - a
                p["merge_to_pr_fleet_ms"] = b - a - agent
        return {"per": per, "floor": floor_total, "fleet": fleet_total, "unfinished": unfinished,
                "over_limit": over_limit}

    def report(self, phase1: dict, phase2: dict, fig: dict, wall: float) -> str:
        lines = ["# Pipeline chaos benchmark", "",
                 f"`python3 bench/pipeline_chaos.py` — {len(CASES)} requests, `fleet serve --epics "
                 f"{self.args.epics}`, fleet binary `{self.fleet.relative_to(ROOT) if self.fleet.is_relative_to(ROOT) else self.fleet}`, "
                 f"seed {SEED}, wall {wall:.0f} s.", "",
                 "| case | project | request | expected (phase 1) | phase 1 | ok | phase 2 | faults seen | attempts | floor | cost $ | time s |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ok1 = ok2 = 0
        for case, project, request, expected in CASES:
            o1, o2 = phase1.get(case, "?"), phase2.get(case, "?")
            m = self.matches(expected, o1)
            forced = [u for u in fig["over_limit"] if u.startswith(case + ":")]
            if not m and forced and o1.startswith("blocked"):
                m = True
                self.notes[case].append("blocked as the script forces: " + "; ".join(forced))
            ok1 += m
            ok2 += o2 == "awaiting_acceptance"
            p = fig["per"].get(case, {})
            lines.append(f"| {case} | {project} | {request[:40]} | {expected} | {o1[:90].replace('|', '/')} | "
                         f"{'yes' if m else '**no**'} | {o2[:40]} | {', '.join(f'{k} {v}' for k, v in sorted(p.get('evidence', {}).items()))} | {p.get('attempts', 0)} | {p.get('floor', 0)} | "
                         f"{p.get('cost', 0):.4f} | {p.get('time_s', float('nan')):.1f} |")
        failed1 = sum(1 for o in phase1.values() if o == "failed")
        failed2 = sum(1 for o in phase2.values() if o == "failed")
        per = [p for p in fig["per"].values()]
        def stat(key, scale=1.0):
            v = [p[key] * scale for p in per if key in p]
            if not v:
                return "n/a"
            return f"median {statistics.median(v):.2f}, max {max(v):.2f} (n={len(v)})"
        ratio = fig["fleet"] / fig["floor"] if fig["floor"] else float("nan")
        lines += ["",
                  f"- Phase 1: {ok1}/{len(CASES)} cases as expected; {failed1} failed.",
                  f"- Phase 2 (after the scripted person): {ok2}/{len(CASES)} await acceptance; {failed2} failed.",
                  f"- Attempts on finished agent tasks: Fleet {fig['fleet']}, scripted floor {fig['floor']} -> "
                  f"**{ratio:.2f}x** (target <= 1.2x).",
                  f"- Agent tasks left unfinished (excluded from the ratio): {len(fig['unfinished'])}"
                  + (": " + "; ".join(fig["unfinished"][:8]) if fig["unfinished"] else ""),
                  f"- Attempts per request: {stat('attempts')}; cost per request ($): {stat('cost')}.",
                  f"- Time per request, submit -> awaiting acceptance (s): {stat('time_s')}.",
                  f"- Submit -> first agent start (ms), queueing for one of the {self.args.epics} epic slots "
                  f"included: {stat('to_first_agent_ms')}; Fleet's own part, the epic's first stage "
                  f"started -> its first agent started (ms): {stat('stage_to_first_agent_ms')}.",
                  f"- Last merge -> pull request opened (ms): {stat('merge_to_pr_ms')}; without the "
                  f"agents' own time in that window (ms): {stat('merge_to_pr_fleet_ms')}.",
                  "", "## Notes per case", ""]
        for case, notes in self.notes.items():
            if notes:
                lines.append(f"- {case}: " + "; ".join(notes))
        forge_codes = {}
        for k, c in self.forge.statuses:
            forge_codes[c] = forge_codes.get(c, 0) + 1
        lines.append(f"- forge double answered: {forge_codes}")
        return "\n".join(lines) + "\n"

    def run(self) -> None:
        self.setup()
        self.start_serve()
        t0 = time.time()
        try:
            for case, project, request, _ in CASES:
                self.submit(case, project, request)
            log(f"submitted {len(self.ids)}, refused {len(self.refused)}")
            seen1 = self.wait_all("phase 1")
            phase1 = {c[0]: self.outcome(c[0], seen1.get(c[0])) for c in CASES}
            for c, o in phase1.items():
                log(f"phase 1 {c}: {o[:120]}")
            self.person(seen1)
            seen2 = self.wait_all("phase 2")
            phase2 = {c[0]: self.outcome(c[0], seen2.get(c[0])) for c in CASES}
            wall = time.time() - t0
            fig = self.figures()
            text = self.report(phase1, phase2, fig, wall)
            out = HERE / "results"
            out.mkdir(exist_ok=True)
            (out / "pipeline_chaos.md").write_text(text)
            (out / "pipeline_chaos.json").write_text(json.dumps(
                {"phase1": phase1, "phase2": phase2, "floor": fig["floor"], "fleet": fig["fleet"],
                 "per": {k: {kk: vv for kk, vv in v.items() if kk not in ("tasks", "agent_ms")}
                         for k, v in fig["per"].items()}, "notes": self.notes}, indent=1))
            print(text)
        finally:
            self.stop_serve()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                log(f"kept {self.work}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fleet", default=str(ROOT / "target" / "debug" / "fleet"))
    ap.add_argument("--epics", type=int, default=4)
    ap.add_argument("--keep", action="store_true")
    Bench(ap.parse_args()).run()


if __name__ == "__main__":
    main()
