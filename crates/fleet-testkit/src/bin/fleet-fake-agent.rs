//! `fleet-fake-agent`: impersonates the `claude` CLI (`claude -p --output-format stream-json
//! --verbose …`, prompt on stdin) for Fleet's chaos and event-throughput benchmarks. Put it on
//! `PATH` as `claude` (symlink or wrapper); it ignores flags it does not know.
//!
//! Everything is driven by the environment (a Fleet profile's `env`):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FAKE_AGENT_MODE` | `task` | `task` or `stream` |
//! | `FAKE_AGENT_SEED` | `0` | PRNG seed (a non-number is hashed) |
//! | `FAKE_P_WRONG` | `0.3` | task: probability of writing wrong content |
//! | `FAKE_P_RATE` | `0.1` | task: probability of being rate limited (429) |
//! | `FAKE_P_HANG` | `0.05` | task: probability of hanging forever after `system/init` |
//! | `FAKE_P_CRASH` | `0.05` | task: probability of `abort()` (SIGABRT) mid-run |
//! | `FAKE_RATE_LIMIT_FILE` | unset | task: account-wide rate-limit state (unix ms, reset time) |
//! | `FAKE_RATE_RESET_MS` | `5000` | task: how long a rate limit lasts |
//! | `FAKE_STEP_MS` | `0` | task: pause between output lines |
//! | `FAKE_LEDGER` | unset | JSONL file of the ground truth, one line per reported result |
//! | `FAKE_ACCOUNT` | `""` | account name written to the ledger |
//! | `FAKE_EVENTS_PER_SEC` | `100` | stream: assistant lines per second |
//! | `FAKE_DURATION_SECS` | `60` | stream: how long to stream |
//!
//! Task mode: the prompt holds a line `FAKE-TASK: <file>=<content>` (`\n`, `\t`, `\r`, `\\`
//! escapes in the content). The fate of the attempt (success, wrong, rate_limited, hang,
//! crash) and its usage are drawn from a PRNG seeded by `FAKE_AGENT_SEED` and a hash of that
//! line, `FLEET_ATTEMPT` and `FLEET_TASK`, so a rerun of the same attempt behaves the same.
//! The probabilities partition `[0, 1)` in the order wrong, rate, hang, crash; the rest
//! succeed. A probability of 1 or more forces its fate (checked in the order crash, hang,
//! rate, wrong), whatever the others say.
//!
//! - success / wrong: `system/init`, assistant `tool_use` Write, the file really written in the
//!   cwd (wrong: content + `WRONG`), user `tool_result`, assistant `DONE`, result success with
//!   1000-5000 input and 50-500 output tokens; exit 0.
//! - rate_limited (the dice) / rate_limited_account (`FAKE_RATE_LIMIT_FILE` holds a future
//!   time): `system/init`, `rate_limit_event` rejected with `resetsAt` (seconds), result
//!   `is_error: true`, `api_error_status: 429` with 20-200 input tokens; exit 1. The dice also
//!   write now + `FAKE_RATE_RESET_MS` into the file (temp file + rename).
//! - hang: `system/init`, then sleeps forever. crash: `system/init`, one assistant line with
//!   zero usage, then `abort()` (SIGABRT). Neither prints a result nor a ledger line.
//!
//! Cost is $3 / $15 per million input / output tokens, an exact number of micro-dollars. Only
//! the result line carries totals; the ledger line
//! `{"task","attempt","fate","input_tokens","output_tokens","cost_usd","account"}` is appended
//! (one `write` on an `O_APPEND` file) before the result line is printed.
//!
//! Stream mode: `system/init`, then `FAKE_EVENTS_PER_SEC × FAKE_DURATION_SECS` assistant text
//! lines (380-500 bytes, each with its own usage) on an even schedule, then a result with their
//! summed usage; the ledger gets `{"task","attempt","lines","messages","input_tokens",
//! "output_tokens","cost_usd","account"}` (`lines` counts every stdout line, result included).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const VERSION: &str = "2.1.197 (Claude Code; fleet-fake-agent)";
const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// Prices in micro-dollars per token ($3 / $15 per million input / output tokens), so a cost
/// is an exact number of micro-dollars: six decimals, no rounding drift.
const INPUT_MICROS: u64 = 3;
const OUTPUT_MICROS: u64 = 15;

// ---------------------------------------------------------------------------------------------
// Determinism

/// SplitMix64: tiny, fast, good enough to draw fates and token counts.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(n);
        s
    }
}

/// FNV-1a over the parts, each followed by a separator byte that no UTF-8 text contains.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn seeded(parts: &[&str]) -> Rng {
    let seed = env("FAKE_AGENT_SEED").unwrap_or_default();
    let seed = seed.trim().parse::<u64>().unwrap_or_else(|_| fnv(&[&seed]));
    let mut mix = Rng(seed ^ fnv(parts));
    // One round so that neighbouring seeds do not start from neighbouring states.
    Rng(mix.next_u64())
}

// ---------------------------------------------------------------------------------------------
// Environment and output

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn env_f64(name: &str, default: f64) -> f64 {
    env(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(default)
}

fn env_u64(name: &str, default: u64) -> u64 {
    env(name)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A JSON object with its keys in the given order (claude prints `type` first; `Value` sorts).
fn ordered(fields: &[(&str, Value)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&Value::from(*k).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

/// Writes one line and flushes it; the reader is gone if this fails, so stop quietly.
fn emit(line: &str) {
    let mut line = line.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(1);
    }
}

fn cost_micros(input: u64, output: u64) -> u64 {
    input * INPUT_MICROS + output * OUTPUT_MICROS
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// Appends `v` as one line to `FAKE_LEDGER` with a single `write` on an `O_APPEND` file, so
/// concurrent agents never interleave their lines.
fn ledger(v: &Value) {
    let Some(path) = env("FAKE_LEDGER").filter(|p| !p.is_empty()) else {
        return;
    };
    let mut line = v.to_string();
    line.push('\n');
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write(line.as_bytes()));
    match written {
        Ok(n) if n == line.len() => {}
        Ok(n) => eprintln!(
            "fleet-fake-agent: short write to ledger {path}: {n} of {}",
            line.len()
        ),
        Err(e) => eprintln!("fleet-fake-agent: cannot write ledger {path}: {e}"),
    }
}

fn attempt_value() -> Value {
    match env("FLEET_ATTEMPT") {
        Some(a) => a.trim().parse::<u64>().map(Value::from).unwrap_or(a.into()),
        None => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Default)]
struct Args {
    model: Option<String>,
    resume: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        match flag.as_str() {
            "--version" | "-v" => {
                println!("{VERSION}");
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!(
                    "fleet-fake-agent: a scripted stand-in for `claude -p --output-format stream-json`.\n\
                     Behaviour comes from FAKE_* environment variables; see the source's header."
                );
                std::process::exit(0);
            }
            "--model" => args.model = inline.or_else(|| it.next()),
            "--resume" | "-r" => args.resume = inline.or_else(|| it.next()),
            // Flags with a value that matters to no one here; consume the value.
            "--append-system-prompt"
            | "--system-prompt"
            | "--max-turns"
            | "--output-format"
            | "--input-format"
            | "--permission-mode"
            | "--allowedTools"
            | "--disallowedTools"
            | "--mcp-config"
            | "--settings"
            | "--add-dir"
            | "--fallback-model"
                if inline.is_none() =>
            {
                it.next();
            }
            _ => {}
        }
    }
    args
}

// ---------------------------------------------------------------------------------------------
// Shared line shapes (as recorded from claude 2.1.197)

struct Session {
    id: String,
    model: String,
    cwd: PathBuf,
    started: Instant,
    rng: Rng,
    messages: u64,
}

impl Session {
    fn init(&self) -> String {
        ordered(&[
            ("type", "system".into()),
            ("subtype", "init".into()),
            ("cwd", self.cwd.display().to_string().into()),
            ("session_id", self.id.clone().into()),
            (
                "tools",
                json!([
                    "Task",
                    "Bash",
                    "Edit",
                    "Glob",
                    "Grep",
                    "NotebookEdit",
                    "Read",
                    "TodoWrite",
                    "WebFetch",
                    "WebSearch",
                    "Write"
                ]),
            ),
            ("mcp_servers", json!([])),
            ("model", self.model.clone().into()),
            ("permissionMode", "bypassPermissions".into()),
            ("slash_commands", json!([])),
            ("apiKeySource", "ANTHROPIC_API_KEY".into()),
            ("claude_code_version", "2.1.197".into()),
            ("output_style", "default".into()),
            ("agents", json!(["general-purpose"])),
            ("skills", json!([])),
            ("plugins", json!([])),
            ("uuid", uuid_of(&self.id, 0).into()),
            ("fast_mode_state", "off".into()),
        ])
    }

    /// An assistant message with `content` and that message's own usage.
    fn assistant(&mut self, content: Value, input: u64, output: u64) -> String {
        self.messages += 1;
        let message = ordered(&[
            ("id", format!("msg_01{}", self.rng.hex(22)).into()),
            ("type", "message".into()),
            ("role", "assistant".into()),
            ("model", self.model.clone().into()),
            ("content", content),
            ("stop_reason", Value::Null),
            ("stop_sequence", Value::Null),
            (
                "usage",
                json!({
                    "input_tokens": input,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": output,
                    "service_tier": "standard",
                }),
            ),
        ]);
        // `message` is already JSON text; splice it in rather than reparse it.
        let rest = ordered(&[
            ("parent_tool_use_id", Value::Null),
            ("session_id", self.id.clone().into()),
            ("uuid", self.rng.uuid().into()),
            ("request_id", format!("req_fake_{}", self.messages).into()),
        ]);
        format!(r#"{{"type":"assistant","message":{message},{}"#, &rest[1..])
    }

    /// The one line that carries the attempt's totals.
    fn result(
        &mut self,
        is_error: bool,
        api_error_status: Option<u64>,
        text: &str,
        input: u64,
        output: u64,
    ) -> String {
        let elapsed = self.started.elapsed().as_millis() as u64;
        ordered(&[
            ("type", "result".into()),
            ("subtype", "success".into()),
            ("is_error", is_error.into()),
            ("api_error_status", api_error_status.into()),
            ("duration_ms", elapsed.into()),
            ("duration_api_ms", (elapsed / 2).into()),
            ("num_turns", self.messages.max(1).into()),
            ("result", text.into()),
            (
                "stop_reason",
                if is_error {
                    "stop_sequence"
                } else {
                    "end_turn"
                }
                .into(),
            ),
            ("session_id", self.id.clone().into()),
            ("total_cost_usd", usd(cost_micros(input, output)).into()),
            (
                "usage",
                json!({
                    "input_tokens": input,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": output,
                    "service_tier": "standard",
                }),
            ),
            ("permission_denials", json!([])),
            ("terminal_reason", "completed".into()),
            ("fast_mode_state", "off".into()),
            ("uuid", self.rng.uuid().into()),
        ])
    }

    /// A compact assistant text line (stream mode).
    fn stream_line(&mut self, text: &str, input: u64, output: u64) -> String {
        self.messages += 1;
        let id = self.rng.hex(22);
        let uuid = self.rng.uuid();
        format!(
            r#"{{"type":"assistant","message":{{"id":"msg_01{id}","type":"message","role":"assistant","model":{},"content":[{{"type":"text","text":{}}}],"stop_reason":null,"usage":{{"input_tokens":{input},"output_tokens":{output}}}}},"session_id":"{}","uuid":"{uuid}"}}"#,
            Value::from(self.model.as_str()),
            Value::from(text),
            self.id,
        )
    }
}

fn uuid_of(session: &str, n: u64) -> String {
    Rng(fnv(&[session, &n.to_string()])).uuid()
}

fn read_prompt() -> String {
    let mut buf = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn main() {
    let args = parse_args();
    let prompt = read_prompt();
    let mode = env("FAKE_AGENT_MODE").unwrap_or_default();
    match mode.trim() {
        "" | "task" => task_mode(&args, &prompt),
        "stream" => stream_mode(&args),
        other => {
            eprintln!("fleet-fake-agent: unknown FAKE_AGENT_MODE {other:?} (task | stream)");
            std::process::exit(2);
        }
    }
}

fn new_session(args: &Args, rng: &mut Rng) -> Session {
    let id = args.resume.clone().unwrap_or_else(|| rng.uuid());
    let line_rng = Rng(rng.next_u64());
    Session {
        id,
        model: args.model.clone().unwrap_or_else(|| DEFAULT_MODEL.into()),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        started: Instant::now(),
        rng: line_rng,
        messages: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Task mode

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Success,
    Wrong,
    RateLimited,
    Hang,
    Crash,
}

fn pick_fate(u: f64) -> Fate {
    let p = |name, default| env_f64(name, default).max(0.0);
    let (wrong, rate, hang, crash) = (
        p("FAKE_P_WRONG", 0.3),
        p("FAKE_P_RATE", 0.1),
        p("FAKE_P_HANG", 0.05),
        p("FAKE_P_CRASH", 0.05),
    );
    let forced = [
        (crash, Fate::Crash),
        (hang, Fate::Hang),
        (rate, Fate::RateLimited),
        (wrong, Fate::Wrong),
    ];
    if let Some((_, f)) = forced.iter().find(|(p, _)| *p >= 1.0) {
        return *f;
    }
    let mut edge = 0.0;
    for (p, f) in [
        (wrong, Fate::Wrong),
        (rate, Fate::RateLimited),
        (hang, Fate::Hang),
        (crash, Fate::Crash),
    ] {
        edge += p;
        if u < edge {
            return f;
        }
    }
    Fate::Success
}

/// `FAKE-TASK: <file>=<content>` from the prompt: (the line from `FAKE-TASK:` on, file,
/// unescaped content).
fn fake_task(prompt: &str) -> Option<(String, String, String)> {
    prompt.lines().find_map(|line| {
        let at = line.find("FAKE-TASK:")?;
        let spec = line[at..].trim_end_matches('\r');
        let (file, content) = spec["FAKE-TASK:".len()..].trim_start().split_once('=')?;
        let file = file.trim();
        (!file.is_empty()).then(|| (spec.to_string(), file.to_string(), unescape(content)))
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The account's rate-limit reset time (unix ms), if it is still in the future.
fn account_limited(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let until = text.trim().parse::<u64>().ok()?;
    (until > now_ms()).then_some(until)
}

/// Records that the account is limited until `until` (unix ms): temp file plus rename, never
/// moving an existing later reset time earlier.
fn set_account_limit(path: &str, until: u64) -> u64 {
    let until = account_limited(path).map_or(until, |cur| cur.max(until));
    let target = Path::new(path);
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = PathBuf::from(format!("{path}.tmp.{}.{nanos}", std::process::id()));
    let res =
        std::fs::write(&tmp, format!("{until}\n")).and_then(|_| std::fs::rename(&tmp, target));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("fleet-fake-agent: cannot write rate-limit file {path}: {e}");
    }
    until
}

fn task_mode(args: &Args, prompt: &str) {
    let Some((task_line, file, content)) = fake_task(prompt) else {
        eprintln!("fleet-fake-agent: no `FAKE-TASK: <file>=<content>` line in the prompt");
        let mut rng = seeded(&[prompt]);
        let mut s = new_session(args, &mut rng);
        emit(&s.init());
        emit(&s.result(
            true,
            None,
            "fleet-fake-agent: no FAKE-TASK line in the prompt",
            0,
            0,
        ));
        std::process::exit(1);
    };
    let attempt = env("FLEET_ATTEMPT").unwrap_or_default();
    let task = env("FLEET_TASK").unwrap_or_default();
    let mut rng = seeded(&[&task_line, &attempt, &task]);
    // Draw order is fixed: fate, then usage, then everything cosmetic.
    let fate = pick_fate(rng.unit());
    let input = rng.range(1000, 5000);
    let output = rng.range(50, 500);
    let split_in = rng.range(input / 4, input * 3 / 4);
    let split_out = rng.range(output / 4, output * 3 / 4);
    let limited_input = rng.range(20, 200);
    let mut s = new_session(args, &mut rng);
    let step = Duration::from_millis(env_u64("FAKE_STEP_MS", 0));
    let pause = || {
        if !step.is_zero() {
            std::thread::sleep(step);
        }
    };
    let ledger_line = |fate: &str, input: u64, output: u64| {
        ledger(&json!({
            "task": task,
            "attempt": attempt_value(),
            "fate": fate,
            "input_tokens": input,
            "output_tokens": output,
            "cost_usd": usd(cost_micros(input, output)),
            "account": env("FAKE_ACCOUNT").unwrap_or_default(),
        }));
    };

    emit(&s.init());
    pause();

    let limit_file = env("FAKE_RATE_LIMIT_FILE").filter(|p| !p.is_empty());
    let limited = match (&limit_file, fate) {
        (Some(path), _) if let Some(until) = account_limited(path) => {
            Some((until, "rate_limited_account"))
        }
        (_, Fate::RateLimited) => {
            let until = now_ms() + env_u64("FAKE_RATE_RESET_MS", 5000);
            let until = match &limit_file {
                Some(path) => set_account_limit(path, until),
                None => until,
            };
            Some((until, "rate_limited"))
        }
        _ => None,
    };
    if let Some((until, name)) = limited {
        emit(&ordered(&[
            ("type", "rate_limit_event".into()),
            (
                "rate_limit_info",
                json!({
                    "status": "rejected",
                    "resetsAt": until.div_ceil(1000),
                    "rateLimitType": "five_hour",
                    "isUsingOverage": false,
                }),
            ),
            ("uuid", s.rng.uuid().into()),
            ("session_id", s.id.clone().into()),
        ]));
        pause();
        ledger_line(name, limited_input, 0);
        emit(&s.result(
            true,
            Some(429),
            "API Error: Request rejected (429) · rate limited",
            limited_input,
            0,
        ));
        std::process::exit(1);
    }

    match fate {
        Fate::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Fate::Crash => {
            // Zero usage: a crashed attempt reports nothing, and the ledger records nothing.
            let text = json!([{"type": "text", "text": format!("I'll create {file} now.")}]);
            emit(&s.assistant(text, 0, 0));
            std::process::abort();
        }
        Fate::Success | Fate::Wrong | Fate::RateLimited => {}
    }

    let path = s.cwd.join(&file);
    let written = if fate == Fate::Wrong {
        format!("{content}WRONG")
    } else {
        content
    };
    let tool_id = format!("toolu_01{}", s.rng.hex(22));
    let abs = path.display().to_string();
    let call = json!([{
        "type": "tool_use",
        "id": tool_id,
        "name": "Write",
        "input": {"file_path": abs, "content": written},
    }]);
    emit(&s.assistant(call, split_in, split_out));
    pause();

    let res = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&path, &written));
    let (ok, result_text) = match &res {
        Ok(()) => (true, format!("File created successfully at: {abs}")),
        Err(e) => (false, format!("<tool_use_error>{e}</tool_use_error>")),
    };
    emit(&ordered(&[
        ("type", "user".into()),
        (
            "message",
            json!({"role": "user", "content": [{
                "tool_use_id": tool_id,
                "type": "tool_result",
                "content": result_text,
                "is_error": !ok,
            }]}),
        ),
        ("parent_tool_use_id", Value::Null),
        ("session_id", s.id.clone().into()),
        ("uuid", s.rng.uuid().into()),
        (
            "tool_use_result",
            json!({"type": "create", "filePath": abs, "content": written}),
        ),
    ]));
    pause();

    let done = json!([{"type": "text", "text": "DONE"}]);
    emit(&s.assistant(done, input - split_in, output - split_out));
    pause();

    let name = if fate == Fate::Wrong {
        "wrong"
    } else {
        "success"
    };
    ledger_line(name, input, output);
    emit(&s.result(false, None, "DONE", input, output));
}

// ---------------------------------------------------------------------------------------------
// Stream mode

const WORDS: &[&str] = &[
    "parser",
    "worktree",
    "scheduler",
    "retry",
    "budget",
    "stream",
    "session",
    "adapter",
    "ledger",
    "backoff",
    "manifest",
    "checkpoint",
    "socket",
    "buffer",
    "invariant",
    "fixture",
];

/// Plain ASCII prose of exactly `len` bytes (nothing JSON would escape).
fn stream_text(rng: &mut Rng, i: u64, len: usize) -> String {
    let file = format!(
        "src/{}_{}.rs",
        WORDS[(rng.next_u64() % 16) as usize],
        i % 97
    );
    let mut text = format!("Step {i}: reading {file}. ");
    while text.len() < len {
        let w = WORDS[(rng.next_u64() % 16) as usize];
        let v = WORDS[(rng.next_u64() % 16) as usize];
        text.push_str(&format!(
            "The {w} keeps its {v} consistent, so the next check holds. "
        ));
    }
    text.truncate(len.saturating_sub(1));
    text.push('.');
    text
}

fn stream_mode(args: &Args) {
    let task = env("FLEET_TASK").unwrap_or_default();
    let attempt = env("FLEET_ATTEMPT").unwrap_or_default();
    let mut rng = seeded(&["stream", &attempt, &task]);
    let mut s = new_session(args, &mut rng);
    let rate = env_f64("FAKE_EVENTS_PER_SEC", 100.0).max(0.0);
    let secs = env_f64("FAKE_DURATION_SECS", 60.0).max(0.0);
    let count = (rate * secs).round() as u64;
    // Bytes of an assistant line around its text; lines are sized 380-500 bytes in all.
    let envelope = s.stream_line("", 10, 10).len();
    s.messages = 0;
    let start = Instant::now();
    let mut lines = 0u64;
    let (mut total_in, mut total_out) = (0u64, 0u64);

    emit(&s.init());
    lines += 1;
    for i in 0..count {
        // Absolute schedule: line i is due at i / rate, so pacing never drifts.
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let input = rng.range(8, 40);
        let output = rng.range(4, 60);
        total_in += input;
        total_out += output;
        let len = (rng.range(380, 500) as usize)
            .saturating_sub(envelope)
            .max(16);
        let text = stream_text(&mut rng, i, len);
        emit(&s.stream_line(&text, input, output));
        lines += 1;
    }
    let end = start + Duration::from_secs_f64(secs);
    let now = Instant::now();
    if end > now {
        std::thread::sleep(end - now);
    }
    lines += 1; // the result line below
    ledger(&json!({
        "task": task,
        "attempt": attempt_value(),
        "lines": lines,
        "messages": count,
        "input_tokens": total_in,
        "output_tokens": total_out,
        "cost_usd": usd(cost_micros(total_in, total_out)),
        "account": env("FAKE_ACCOUNT").unwrap_or_default(),
    }));
    emit(&s.result(false, None, "DONE", total_in, total_out));
}
