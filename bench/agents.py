"""Agent benchmarks P4 and P5 for bench/bench.py (Python 3.11 stdlib only).

P4  200 concurrent fake `claude` agents (target/release/fleet-fake-agent in stream mode), each
    printing 100 stream-json lines per second for 60 s: Fleet's own CPU share and peak RSS, and
    whether every line became a persisted `agent.message` event (store and events.jsonl).
P5  the real claude and codex CLIs on the same scripted task (fleet-model-server, built-in
    scenario `ok`): launched alone exactly as Fleet's adapter launches them vs through
    `fleet run` of a one-task runbook (`workspace: none`, and the default worktree).

bench.py calls `p4(work, quick)` / `p5(work, quick)` for the raw results and `p4_report(raw)` /
`p5_report(raw)` for the Markdown section. The module is self-contained (it repeats the few
helpers it shares with bench.py) so it can be imported without bench.py's globals.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path

import bench
from bench import FLEET, ROOT, children_cpu, log, machine_state, pct, yq

RELEASE = ROOT / "target" / "release"
FAKE_AGENT = RELEASE / "fleet-fake-agent"
MODEL_SERVER = RELEASE / "fleet-model-server"
BINARIES = [FLEET, FAKE_AGENT, MODEL_SERVER]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Credentials the adapters would pass on (their default secrets): never inherited from the
# caller; the benchmarks set dummy values.
SECRETS = {
    "claude": ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"],
    "codex": ["OPENAI_API_KEY", "CODEX_API_KEY"],
}
DUMMY_SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-bench-dummy", "OPENAI_API_KEY": "sk-bench-dummy"}


def clean_env() -> dict[str, str]:
    """bench.py's environment, without the caller's agent credentials."""
    drop = {s for v in SECRETS.values() for s in v}
    return {k: v for k, v in bench.clean_env().items() if k not in drop}


ENV = clean_env()


def sh(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, env=ENV, check=True, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


def init_repo(path: Path, exclude: str = "") -> None:
    path.mkdir(parents=True, exist_ok=True)
    sh(["git", "init", "-q", "-b", "main"], cwd=path)
    (path / "README").write_text("benchmark repository\n")
    if exclude:
        (path / ".git" / "info" / "exclude").write_text(exclude)
    sh(["git", "add", "-A"], cwd=path)
    sh(["git", "commit", "-q", "--no-gpg-sign", "-m", "init"], cwd=path)


def require_binaries() -> None:
    for b in BINARIES:
        if not b.exists():
            raise RuntimeError(f"{b} is missing: cargo build --release -p fleet -p fleet-testkit")


# --------------------------------------------------------------------------------------------
# /proc readers


def proc_stat(pid: int) -> dict:
    """utime/stime (the process, all its threads) and cutime/cstime (children it has waited
    for), in seconds, from /proc/<pid>/stat; also readable while the process is a zombie."""
    text = Path(f"/proc/{pid}/stat").read_text()
    f = text[text.rindex(")") + 2:].split()  # f[0] is field 3 (state)
    return {"state": f[0], "cpu": (int(f[11]) + int(f[12])) / CLK_TCK,
            "children_cpu": (int(f[13]) + int(f[14])) / CLK_TCK, "threads": int(f[17])}


def proc_status_kb(pid: int, keys: tuple[str, ...] = ("VmHWM", "VmRSS")) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_children(pid: int) -> int:
    """Number of live children of all the process's threads."""
    n = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                n += len(Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
            except OSError:
                pass
    except OSError:
        pass
    return n


def machine_cpu() -> dict[str, float]:
    """Whole-machine jiffies (as seconds) from /proc/stat: busy (not idle/iowait), steal, total."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    total = sum(f[:8])
    idle = f[3] + f[4]
    return {"busy": (total - idle) / CLK_TCK, "steal": f[7] / CLK_TCK, "total": total / CLK_TCK}


# --------------------------------------------------------------------------------------------
# P4: 200 concurrent fake agents streaming 100 events/s each

P4_RATE = 100
P4_FULL = (200, 60)   # agents, seconds
P4_QUICK = (50, 10)
P4_SAMPLE_S = 0.25
P4_CPU_TARGET = 0.25  # share of one core
P4_RSS_TARGET_MB = 200


def p4_files(d: Path, agents: int, secs: int) -> tuple[Path, Path, Path, Path]:
    repo, home, bindir, ledger = d / "repo", d / "instance", d / "bin", d / "ledger.jsonl"
    init_repo(repo, exclude="stream.yaml\n")
    home.mkdir(parents=True)
    bindir.mkdir(parents=True)
    (bindir / "claude").symlink_to(FAKE_AGENT)
    (home / "fleet.yaml").write_text("\n".join([
        "agents:",
        "  fake:",
        "    cli: claude",
        "    model: claude-sonnet-4-5",
        "    stall_timeout: 30s",
        "    env:",
        f"      PATH: {yq(f'{bindir}:/usr/bin:/bin')}",
        "      FAKE_AGENT_MODE: stream",
        f"      FAKE_EVENTS_PER_SEC: \"{P4_RATE}\"",
        f"      FAKE_DURATION_SECS: \"{secs}\"",
        f"      FAKE_LEDGER: {yq(str(ledger))}",
    ]) + "\n")
    lines = ["name: bench-stream", f"concurrency: {agents}",
             "defaults:", "  workspace: none", "  retries: 0", "tasks:"]
    for i in range(agents):
        lines += [f"  - id: s{i:03d}", "    agent: fake", "    prompt: \"stream\""]
    (repo / "stream.yaml").write_text("\n".join(lines) + "\n")
    return repo, home, bindir, ledger


def p4_persisted(home: Path, ledger: Path) -> dict:
    runs = sorted((home / ".fleet" / "runs").iterdir())
    if len(runs) != 1:
        raise RuntimeError(f"P4: expected one run in {home / '.fleet' / 'runs'}, found {len(runs)}")
    run = runs[0].name
    # Ground truth: every stdout line the agents printed, minus system/init and result.
    led = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    want = {}
    for e in led:
        want[e["task"]] = want.get(e["task"], 0) + e["lines"] - 2
    ledger_msgs = sum(e["messages"] for e in led)
    con = sqlite3.connect(home / ".fleet" / "fleet.db")
    try:
        got = dict(con.execute(
            "SELECT task, COUNT(*) FROM events WHERE run_id = ? AND kind = 'agent.message' "
            "GROUP BY task", (run,)).fetchall())
        db_events = con.execute("SELECT COUNT(*) FROM events WHERE run_id = ?",
                                (run,)).fetchone()[0]
    finally:
        con.close()
    journal = runs[0] / "events.jsonl"
    jl_msgs = jl_lines = 0
    needle = b'"kind":"agent.message"'
    with open(journal, "rb") as f:
        first = f.readline()
        if first and json.loads(first).get("kind") is None:
            raise RuntimeError("P4: events.jsonl lines have no `kind`")
        f.seek(0)
        for line in f:
            jl_lines += 1
            if needle in line:
                jl_msgs += 1
    mismatched = sorted(t for t in set(want) | set(got) if want.get(t, 0) != got.get(t, 0))
    sizes = {}
    for name, paths in {
        "fleet.db (+ WAL)": [home / ".fleet" / n for n in ("fleet.db", "fleet.db-wal")],
        "events.jsonl": [journal],
        "transcripts": list((runs[0] / "transcripts").glob("*"))
        if (runs[0] / "transcripts").exists() else [],
    }.items():
        sizes[name] = sum(p.stat().st_size for p in paths if p.exists())
    return {
        "run": run, "ledger_entries": len(led), "ledger_expected": sum(want.values()),
        "ledger_messages": ledger_msgs, "db_messages": sum(got.values()), "db_events": db_events,
        "jsonl_messages": jl_msgs, "jsonl_lines": jl_lines, "tasks_mismatched": mismatched[:10],
        "n_mismatched": len(mismatched), "sizes": sizes,
    }


def p4(work: Path, quick: bool) -> dict:
    require_binaries()
    agents, secs = P4_QUICK if quick else P4_FULL
    d = work / "p4"
    repo, home, _, ledger = p4_files(d, agents, secs)
    env = dict(ENV, FLEET_HOME=str(home), **{"ANTHROPIC_API_KEY": DUMMY_SECRETS["ANTHROPIC_API_KEY"]})
    log(f"P4: {agents} fake agents x {P4_RATE} events/s x {secs} s under `fleet run`")
    state_before = machine_state()
    m0 = machine_cpu()
    out, err = open(d / "fleet.out", "w"), open(d / "fleet.err", "w")
    t0 = time.perf_counter()
    p = subprocess.Popen([str(FLEET), "run", "-q", "stream.yaml"], cwd=repo, env=env,
                         stdout=out, stderr=err)
    samples: list[dict] = []
    next_t = t0
    while os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        st = proc_stat(p.pid)
        kb = proc_status_kb(p.pid)
        samples.append({"t": time.perf_counter() - t0, "cpu": st["cpu"],
                        "children_cpu": st["children_cpu"], "threads": st["threads"],
                        "hwm_kb": kb.get("VmHWM", 0), "rss_kb": kb.get("VmRSS", 0),
                        "children": proc_children(p.pid)})
        next_t += P4_SAMPLE_S
        time.sleep(max(0.0, next_t - time.perf_counter()))
    # Exited but not reaped: the zombie's stat still holds its final CPU times.
    final = proc_stat(p.pid)
    wall = time.perf_counter() - t0
    m1 = machine_cpu()
    code = p.wait()
    out.close()
    err.close()
    state_after = machine_state()
    if code != 0:
        raise RuntimeError(f"P4: fleet run exited {code}:\n{(d / 'fleet.out').read_text()[-3000:]}\n"
                           f"{(d / 'fleet.err').read_text()[-3000:]}")
    # Streaming phase: from the first sample with every agent running to the last one.
    full = [s for s in samples if s["children"] >= agents]
    phase = None
    if len(full) >= 2 and full[-1]["t"] - full[0]["t"] > 1.0:
        a, b = full[0], full[-1]
        phase = {"from": a["t"], "to": b["t"], "cpu": b["cpu"] - a["cpu"],
                 "share": (b["cpu"] - a["cpu"]) / (b["t"] - a["t"])}
    # The busiest 5 s window (sliding over the samples).
    win, peak5 = 5.0, 0.0
    j = 0
    for i, s in enumerate(samples):
        while samples[j]["t"] < s["t"] - win:
            j += 1
        if s["t"] - samples[j]["t"] >= win - P4_SAMPLE_S:
            peak5 = max(peak5, (s["cpu"] - samples[j]["cpu"]) / (s["t"] - samples[j]["t"]))
    persisted = p4_persisted(home, ledger)
    res = {
        "quick": quick, "agents": agents, "secs": secs, "rate": P4_RATE, "wall": wall,
        "cpu": final["cpu"], "share": final["cpu"] / wall,
        "children_cpu": final["children_cpu"],
        "peak_rss_mb": max((s["hwm_kb"] for s in samples), default=0) / 1024,
        "max_children": max((s["children"] for s in samples), default=0),
        "max_threads": max((s["threads"] for s in samples), default=0),
        "phase": phase, "peak5_share": peak5, "exit": code,
        "machine_busy": (m1["busy"] - m0["busy"]) / wall,
        "machine_steal": (m1["steal"] - m0["steal"]) / wall,
        "samples": samples, "persisted": persisted,
        "state_before": state_before, "state_after": state_after,
    }
    log(f"P4: wall {wall:.1f} s, Fleet CPU {final['cpu']:.2f} s = {res['share']:.3f} of a core, "
        f"peak RSS {res['peak_rss_mb']:.1f} MB, agents' CPU {final['children_cpu']:.1f} s, "
        f"agent.message: ledger {persisted['ledger_expected']}, store {persisted['db_messages']}, "
        f"events.jsonl {persisted['jsonl_messages']}")
    shutil.rmtree(d, ignore_errors=True)  # about 1 KB per event; a few large files
    return res


def p4_report(r: dict) -> list[str]:
    P = r["persisted"]
    share, rss = r["share"], r["peak_rss_mb"]
    total = r["agents"] * r["rate"] * r["secs"]

    def verdict(x: float, target: float, unit: str, fmt: str) -> str:
        return (f"met ({x:{fmt}}{unit})" if x <= target
                else f"MISSED by {(x / target - 1) * 100:.0f}% ({x:{fmt}}{unit} vs {target:{fmt}}{unit})")

    persisted_ok = (P["db_messages"] == P["ledger_expected"] == P["jsonl_messages"]
                    == P["ledger_messages"] and P["n_mismatched"] == 0
                    and P["ledger_entries"] == r["agents"])
    equal = (f"{P['ledger_expected']:,} = {P['db_messages']:,} = {P['jsonl_messages']:,}")
    phase = r["phase"]
    mb = lambda n: f"{n / 1e6:,.0f} MB"  # noqa: E731
    other = max(0.0, r["machine_busy"] - (r["cpu"] + r["children_cpu"]) / r["wall"])
    out = [
        f"## P4 — {r['agents']} concurrent agents streaming {r['rate']} events/s each for "
        f"{r['secs']} s",
        "",
        f"{r['agents']} `agent:` tasks (`workspace: none`, concurrency {r['agents']}), each played "
        f"by `fleet-fake-agent` as `claude` in stream mode: {r['rate']} assistant stream-json "
        f"lines (380–500 bytes) per second for {r['secs']} s, {total:,} lines in all.",
        "",
        "| what | measured | target |",
        "|---|---:|---|",
        f"| Fleet CPU (user+sys, all its threads), whole run | {r['cpu']:.2f} s in {r['wall']:.1f} s "
        f"wall = **{share:.3f} of one core** | <= {P4_CPU_TARGET} core: "
        f"**{verdict(share, P4_CPU_TARGET, ' core', '.3f')}** |",
    ]
    if phase:
        out.append(f"| Fleet CPU while all {r['agents']} agents ran ({phase['from']:.1f}–"
                   f"{phase['to']:.1f} s) | {phase['share']:.3f} of one core | — |")
    out += [
        f"| Fleet CPU, busiest 5 s window | {r['peak5_share']:.3f} of one core | — |",
        f"| Fleet peak RSS (VmHWM) | **{rss:.1f} MB** | <= {P4_RSS_TARGET_MB} MB: "
        f"**{verdict(rss, P4_RSS_TARGET_MB, ' MB', '.1f')}** |",
        f"| `agent.message` events: lines printed (ledger) = in the store = in events.jsonl "
        f"| {equal} | all persisted: **{'met' if persisted_ok else 'MISSED'}** |",
        f"| tasks whose store count differs from their ledger | {P['n_mismatched']}"
        + (f" ({', '.join(P['tasks_mismatched'])})" if P["n_mismatched"] else "") + " | 0 |",
        f"| `fleet run` exit code | {r['exit']} | 0 |",
        f"| agents running at once (max seen) | {r['max_children']} | {r['agents']} |",
        f"| events in the store for the run (all kinds) | {P['db_events']:,} | — |",
        f"| data written: " + ", ".join(P["sizes"]) + " | "
        + ", ".join(mb(v) for v in P["sizes"].values()) + " | — |",
        f"| fake agents' own CPU (Fleet's reaped children) | {r['children_cpu']:.1f} s = "
        f"{r['children_cpu'] / r['wall']:.2f} of one core | — |",
        f"| whole machine busy during the run ({os.cpu_count()} cores): all processes / other "
        f"than Fleet and its agents | {r['machine_busy']:.2f} / {other:.2f} cores "
        f"(steal {r['machine_steal']:.2f}) | — |",
        "",
        f"Method: one `fleet run -q` of the runbook above with `FLEET_HOME` set to a fresh "
        "instance directory whose `fleet.yaml` has one profile `fake` (`cli: claude`, "
        "`stall_timeout: 30s`, env: `PATH` to a directory whose `claude` is a symlink to "
        "`target/release/fleet-fake-agent`, `FAKE_AGENT_MODE=stream`, "
        f"`FAKE_EVENTS_PER_SEC={r['rate']}`, `FAKE_DURATION_SECS={r['secs']}`, `FAKE_LEDGER`), "
        "`retries: 0`, a dummy `ANTHROPIC_API_KEY`. Only the Fleet process is measured, not its "
        f"children: every {P4_SAMPLE_S * 1000:.0f} ms the harness reads utime+stime (all "
        "threads) from `/proc/<pid>/stat`, VmHWM from `/proc/<pid>/status` and the number of "
        "live children; when the process exits it is read once more before it is reaped "
        "(`waitid(WNOWAIT)`: a zombie's stat still holds its final CPU times), so the CPU total "
        "is exact to the 10 ms tick. CPU share = Fleet's CPU seconds / its wall seconds "
        f"(spawn to exit, including start-up, the {r['agents']} spawns and the end of the run); the "
        "'all agents ran' row takes the samples from the first to the last with every agent "
        "alive. The fake agents' CPU is Fleet's cutime+cstime at exit (children it reaped). "
        "Persistence: each agent appends `lines` (every stdout line it printed, `system/init` "
        "and `result` included) to the ledger before its result line; each assistant line is "
        "one `agent.message` event, so the expected count is the sum of `lines` − 2; the store "
        "is counted in `.fleet/fleet.db` (SQLite, per task and in total) and events.jsonl "
        "line by line. One run (the figures are CPU and memory of one process, which other "
        "load moves far less than wall time); its agents keep a good part of the 2 cores busy "
        "themselves. "
        f"Machine before: {r['state_before']}; after: {r['state_after']}.",
        "",
    ]
    return out


# --------------------------------------------------------------------------------------------
# P5: Fleet-launched claude / codex vs the same CLI alone

P5_CLIS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5.1-codex"}
P5_PROMPT = "Create hello.txt, then edit it."
P5_EXPECT = "hello from fleet, edited\n"  # the built-in scenario `ok` (Scenario::hello)
P5_VARIANTS = ["alone", "fleet-none", "fleet-worktree"]
P5_LABELS = {"alone": "alone (as Fleet's adapter launches it)",
             "fleet-none": "`fleet run`, `workspace: none`",
             "fleet-worktree": "`fleet run`, default worktree (+ merge)"}
P5_TARGET = 0.3
# Kept from the caller's environment by Fleet for agent processes (process::scrubbed_env).
SCRUB_KEEP = ["PATH", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "SHELL", "SSL_CERT_FILE",
              "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS"]


def agent_bin_dir() -> Path:
    p = subprocess.run(["bash", str(ROOT / "scripts" / "install-agent-clis.sh")], cwd=ROOT,
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"P5: scripts/install-agent-clis.sh failed:\n{p.stderr[-2000:]}")
    return Path(lines[-1])


class ModelServer:
    def __init__(self, record: Path):
        self.record = record
        self.proc = subprocess.Popen([str(MODEL_SERVER), "--record", str(record)], env=ENV,
                                     text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.url = (self.proc.stdout.readline() if self.proc.stdout else "").strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("P5: fleet-model-server did not print its URL")

    def base_url(self, scenario: str) -> str:
        return f"{self.url}/s/{scenario}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def alone_launch(cli: str, model: str, base_url: str, workdir: Path, home: Path,
                 fleet_env: dict[str, str], path: str) -> tuple[list[str], dict[str, str]]:
    """What fleet-agents' `launch()` and the engine's agent runner would spawn (program with
    arguments, complete environment), mirroring crates/fleet-agents/src/cli/{claude,codex,mod}.rs
    and crates/fleet-engine/src/agent.rs. Writes codex's config.toml into the home."""
    env = {k: v for k, v in fleet_env.items() if k in SCRUB_KEEP or k.startswith("LC_")}
    if cli == "claude":
        for k in ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"):
            env.pop(k, None)
    launch = {  # base_env
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local/state"), "TMPDIR": str(home / "tmp"),
        "NO_COLOR": "1", "TERM": "dumb", "CI": "1",
    }
    for k in SECRETS[cli]:  # the profile's secrets (its CLI's defaults), if set
        if fleet_env.get(k):
            launch[k] = fleet_env[k]
    launch.update({"PATH": path,  # profile env, then the task env
                   "FLEET_RUN": "bench-alone", "FLEET_TASK": "hello", "FLEET_ATTEMPT": "1",
                   "FLEET_WORKDIR": str(workdir)})
    if cli == "claude":
        args = ["-p", "--output-format", "stream-json", "--verbose",
                "--dangerously-skip-permissions", "--model", model]
        launch.update({
            "CLAUDE_CONFIG_DIR": str(home / ".claude"), "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "2", "ANTHROPIC_BASE_URL": base_url,
        })
    else:
        codex_home = home / ".codex"
        codex_home.mkdir(mode=0o700, parents=True)
        base = base_url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        (codex_home / "config.toml").write_text(
            f"model = {json.dumps(model)}\nmodel_provider = \"fleet\"\n\n"
            f"[model_providers.fleet]\nname = \"fleet\"\nbase_url = {json.dumps(base)}\n"
            "env_key = \"OPENAI_API_KEY\"\nwire_api = \"responses\"\n"
            "request_max_retries = 1\nstream_max_retries = 1\nstream_idle_timeout_ms = 60000\n")
        args = ["exec", "--json", "--skip-git-repo-check", "-C", str(workdir),
                "--dangerously-bypass-approvals-and-sandbox", "-"]
        launch["CODEX_HOME"] = str(codex_home)
    env.update(launch)
    program = shutil.which(cli, path=env["PATH"])
    if program is None:
        raise RuntimeError(f"P5: `{cli}` not found on {env['PATH']}")
    return [program] + args, env


class P5Runner:
    def __init__(self, work: Path, server: ModelServer, bindir: Path):
        self.work, self.server = work, server
        node = shutil.which("node")
        extra = [str(Path(node).parent)] if node else []
        self.path = ":".join([str(bindir)] + extra + ["/usr/local/bin", "/usr/bin", "/bin"])
        self.fleet_env = dict(ENV, **DUMMY_SECRETS)
        self.n = 0

    def _fresh(self, tag: str) -> tuple[Path, str]:
        self.n += 1
        d = self.work / f"{self.n:03d}-{tag}"
        init_repo(d / "repo", exclude="p5.yaml\n")
        return d, f"ok-{self.n:03d}{tag.replace('-', '')}"

    def alone(self, cli: str) -> dict:
        d, scenario = self._fresh(f"{cli}-alone")
        repo, home = d / "repo", d / "home"
        (home / "tmp").mkdir(mode=0o700, parents=True)
        cmd, env = alone_launch(cli, P5_CLIS[cli], self.server.base_url(scenario), repo, home,
                                self.fleet_env, self.path)
        c0 = children_cpu()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=repo, env=env, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             process_group=0)
        try:
            stdout, stderr = p.communicate(P5_PROMPT, timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            raise RuntimeError(f"P5: {cli} alone timed out")
        wall = time.perf_counter() - t0
        cpu = children_cpu() - c0
        content = (repo / "hello.txt").read_text() if (repo / "hello.txt").exists() else None
        if p.returncode != 0 or content != P5_EXPECT:
            raise RuntimeError(f"P5: {cli} alone failed (exit {p.returncode}, hello.txt "
                               f"{content!r}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
        shutil.rmtree(d, ignore_errors=True)  # untimed
        return {"wall": wall, "cpu": cpu, "scenario": scenario}

    def fleet(self, cli: str, worktree: bool) -> dict:
        tag = f"{cli}-{'wt' if worktree else 'none'}"
        d, scenario = self._fresh(tag)
        repo, home = d / "repo", self.work / f"instance-{cli}"
        home.mkdir(exist_ok=True)
        (home / "fleet.yaml").write_text("\n".join([
            "agents:",
            f"  bench-{cli}:",
            f"    cli: {cli}",
            f"    model: {P5_CLIS[cli]}",
            f"    base_url: {yq(self.server.base_url(scenario))}",
            "    stall_timeout: 60s",
            f"    env: {{ PATH: {yq(self.path)} }}",
        ]) + "\n")
        (repo / "p5.yaml").write_text("\n".join([
            f"name: p5-{tag}", "concurrency: 1", "tasks:", "  - id: hello",
            f"    agent: bench-{cli}", f"    prompt: {yq(P5_PROMPT)}", "    retries: 0",
            "    timeout: 2m",
        ] + ([] if worktree else ["    workspace: none"])) + "\n")
        env = dict(self.fleet_env, FLEET_HOME=str(home))
        c0 = children_cpu()
        t0 = time.perf_counter()
        p = subprocess.run([str(FLEET), "run", "-q", "p5.yaml"], cwd=repo, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
        wall = time.perf_counter() - t0
        cpu = children_cpu() - c0
        if worktree:
            refs = sh(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads/fleet/runs/"],
                      cwd=repo).split()
            content = None
            if len(refs) == 1:
                q = subprocess.run(["git", "show", f"{refs[0]}:hello.txt"], cwd=repo, env=ENV,
                                   text=True, capture_output=True)
                content = q.stdout if q.returncode == 0 else None
        else:
            f = repo / "hello.txt"
            content = f.read_text() if f.exists() else None
        if p.returncode != 0 or content != P5_EXPECT:
            raise RuntimeError(f"P5: fleet run ({tag}) failed (exit {p.returncode}, hello.txt "
                               f"{content!r}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return {"wall": wall, "cpu": cpu, "scenario": scenario}

    def one(self, cli: str, variant: str) -> dict:
        if variant == "alone":
            return self.alone(cli)
        return self.fleet(cli, worktree=variant == "fleet-worktree")


def p5_calls(record: Path) -> dict[str, list[str]]:
    """Model-call outcomes per scenario, from the server's request record."""
    out: dict[str, list[str]] = {}
    for line in record.read_text().splitlines():
        r = json.loads(line)
        if r["api"] in ("anthropic_messages", "open_ai_responses", "open_ai_chat"):
            out.setdefault(r["scenario"], []).append(r["outcome"])
    return out


def p5(work: Path, quick: bool) -> dict:
    require_binaries()
    min_reps, max_reps, budget = (2, 2, 0.0) if quick else (7, 11, 90.0)
    bindir = agent_bin_dir()
    d = work / "p5"
    d.mkdir(parents=True)
    server = ModelServer(d / "requests.jsonl")
    runner = P5Runner(d, server, bindir)
    clis = list(P5_CLIS)
    samples: dict[str, dict[str, list[dict]]] = {c: {v: [] for v in P5_VARIANTS} for c in clis}
    try:
        versions = {c: subprocess.run([str(bindir / c), "--version"], capture_output=True,
                                      text=True).stdout.strip().splitlines()[0] for c in clis}
        log(f"P5: warm-up, then {min_reps}-{max_reps} interleaved reps of "
            f"{len(clis)} CLIs x {len(P5_VARIANTS)} launches")
        for c in clis:
            for v in P5_VARIANTS:
                runner.one(c, v)  # warm-up (page cache, node's compile cache, the instance's DB)
        state_before = machine_state()
        t_start = time.perf_counter()
        reps = 0
        while reps < max_reps and (reps < min_reps or time.perf_counter() - t_start < budget):
            r = reps
            reps += 1
            for c in clis[r % len(clis):] + clis[:r % len(clis)]:
                order = P5_VARIANTS[r % 3:] + P5_VARIANTS[:r % 3]  # rotate who goes first
                for v in order:
                    s = runner.one(c, v)
                    s["rep"] = r
                    samples[c][v].append(s)
                log(f"P5 rep {r + 1} {c}: " + ", ".join(
                    f"{v} {samples[c][v][-1]['wall']:.3f} s" for v in P5_VARIANTS))
        elapsed = time.perf_counter() - t_start
        state_after = machine_state()
    finally:
        server.stop()
    calls = p5_calls(d / "requests.jsonl")
    bad = [s["scenario"] for c in clis for v in P5_VARIANTS for s in samples[c][v]
           if calls.get(s["scenario"]) != ["tool_call Write", "tool_call Edit", 'text "DONE"']
           and calls.get(s["scenario"]) != ["tool_call exec_command", "tool_call exec_command",
                                            'text "DONE"']]
    return {"quick": quick, "reps": reps, "samples": samples, "clis": clis, "versions": versions,
            "elapsed": elapsed, "bad_scenarios": bad, "calls_checked": sum(
                len(samples[c][v]) for c in clis for v in P5_VARIANTS),
            "state_before": state_before, "state_after": state_after}


def p5_report(r: dict) -> list[str]:
    S = r["samples"]
    out = [
        "## P5 — Fleet-launched claude and codex vs the same CLI alone",
        "",
        f"The real CLIs ({'; '.join(f'{c} {v}' for c, v in r['versions'].items())}) against "
        "`fleet-model-server`'s built-in scenario `ok` (write `hello.txt` with the CLI's write "
        "tool, edit it, answer DONE: three model calls), prompt "
        f"{yq(P5_PROMPT)}; each launch in a fresh git repository.",
        "",
        "| CLI | launched | runs | median wall | min | max | p90 | median CPU (user+sys, incl. children) | Fleet overhead: median − alone median | paired (same rep) median [min – max] |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for c in r["clis"]:
        base = S[c]["alone"]
        bmed = statistics.median(x["wall"] for x in base)
        for v in P5_VARIANTS:
            xs = [x["wall"] for x in S[c][v]]
            med = statistics.median(xs)
            cpu = statistics.median(x["cpu"] for x in S[c][v])
            if v == "alone":
                diff, paired = "—", "—"
            else:
                diff = f"**{med - bmed:+.3f} s**" if v == "fleet-none" else f"{med - bmed:+.3f} s"
                by_rep = {x["rep"]: x["wall"] for x in base}
                pd = [x["wall"] - by_rep[x["rep"]] for x in S[c][v] if x["rep"] in by_rep]
                paired = (f"{statistics.median(pd):+.3f} s [{min(pd):+.3f} – {max(pd):+.3f}]"
                          if pd else "—")
            out.append(f"| {c} | {P5_LABELS[v]} | {len(xs)} | {med:.3f} s | {min(xs):.3f} s | "
                       f"{max(xs):.3f} s | {pct(xs, 90):.3f} s | {cpu:.3f} s | {diff} | {paired} |")
        d = statistics.median(x["wall"] for x in S[c]["fleet-none"]) - bmed
        dcpu = (statistics.median(x["cpu"] for x in S[c]["fleet-none"])
                - statistics.median(x["cpu"] for x in base))
        verdicts.append((f"{c} **met ({d:+.3f} s)**" if d <= P5_TARGET else
                         f"{c} **MISSED by {d - P5_TARGET:.3f} s ({d:+.3f} s vs {P5_TARGET} s)**")
                        + f" (CPU: {dcpu:+.3f} s)")
    checked = (f"all {r['calls_checked']} timed runs (and the warm-ups) exited 0 with "
               f"`hello.txt` = \"hello from fleet, edited\" and the server saw exactly the three "
               "scripted model calls of each run's private scenario"
               if not r["bad_scenarios"] else
               f"{len(r['bad_scenarios'])} run(s) did not show the three scripted model calls: "
               f"{', '.join(r['bad_scenarios'][:10])}")
    out += [
        "",
        f"Target Fleet adds <= {P5_TARGET} s (`workspace: none`, difference of the medians): "
        + "; ".join(verdicts) + ". The CPU figure is the difference of the median CPU times, a "
        "view less moved by other load than wall time; single pairs (last column) scatter by a "
        f"few tenths of a second on a loaded machine, so judge by the medians. Checked: {checked}.",
        "",
        "Method: one `fleet-model-server` (auto scenarios) on a free loopback port serves every "
        "run; each run uses a private copy of the scenario (`ok-<n>`), so every run is checked "
        "against its own request record. **Alone**: the CLI is spawned exactly as Fleet's "
        "adapter launches it (`launch()` in crates/fleet-agents/src/cli/claude.rs and codex.rs, "
        "the environment built as in crates/fleet-engine/src/agent.rs): Fleet's kept variables "
        "(PATH, LANG, LC_*, …) only, a fresh private HOME with XDG_*/TMPDIR inside it, NO_COLOR, "
        "TERM=dumb, CI=1, a dummy API key, the profile's PATH and FLEET_* task variables; claude: "
        "`claude -p --output-format stream-json --verbose --dangerously-skip-permissions "
        "--model claude-sonnet-4-5` with CLAUDE_CONFIG_DIR, IS_SANDBOX=1, "
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, DISABLE_AUTOUPDATER/TELEMETRY/"
        "ERROR_REPORTING=1, CLAUDE_CODE_MAX_RETRIES=2, ANTHROPIC_BASE_URL=<server>/s/<scenario>; "
        "codex: `codex exec --json --skip-git-repo-check -C <repo> "
        "--dangerously-bypass-approvals-and-sandbox -` with CODEX_HOME holding Fleet's "
        "config.toml (model, provider `fleet` with base_url <server>/s/<scenario>/v1, env_key "
        "OPENAI_API_KEY, wire_api responses, retry caps); the prompt on stdin, stdout and stderr "
        "read to the end; wall time from spawn to exit (home and config file made before, "
        "untimed). **Via Fleet**: `fleet run -q` of a one-task runbook (`agent: bench-<cli>`, "
        "the prompt, no checks, `retries: 0`) with `FLEET_HOME` set to one instance directory "
        "per CLI (kept across runs, so its store exists after the warm-up, as for a user's "
        "second run) whose `fleet.yaml` profile has `cli`, `model`, `base_url` "
        "(<server>/s/<scenario>), `stall_timeout` and `env: PATH`; timed around the whole "
        "`fleet run` process (start-up, config, store, the attempt's home, the CLI, events, "
        "summary; the worktree variant also creates the worktree and branch, commits the "
        "agent's work and merges it into `fleet/runs/<run>`, whose hello.txt is checked). "
        "Overhead = median(via Fleet) − median(alone); 'paired' is via-Fleet minus alone within "
        "the same rep. CPU is user+sys of the process and everything it waited for "
        "(getrusage RUSAGE_CHILDREN), so the via-Fleet figure includes the CLI's. "
        f"One discarded warm-up of every launch, then {r['reps']} reps "
        f"({'--quick' if r['quick'] else 'at least 7, more while 90 s last'}; "
        f"{r['elapsed']:.0f} s); in each rep both CLIs run all three launches back to back, "
        "the first CLI and the first launch rotating every rep. "
        f"Machine before: {r['state_before']}; after: {r['state_after']}.",
        "",
    ]
    return out
