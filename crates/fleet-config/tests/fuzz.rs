//! The runbook and `fleet.yaml` decoders against hostile text: arbitrary bytes, valid
//! documents cut and spliced with YAML's own syntax, deep nesting, huge scalars and alias
//! bombs ("billion laughs"). No panic, and no parse may allocate more than a fixed bound,
//! whatever the text says: this binary counts every allocation of the parsing thread and
//! refuses (abort: the test fails) past a hard cap. A hang fails the suite by never ending.
//! Bounded so the whole file runs in a few seconds.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Bytes the parsing thread may hold at once beyond what it held before; past it the
/// allocator fails, which aborts this test binary: an unbounded allocation cannot pass (nor
/// take the machine down with it).
const HARD_CAP: usize = 512 << 20;
/// What a parse may use at its peak: the text is at most 4 MiB, expansions at most 16 MiB of
/// text and 100,000 values.
const PEAK_BOUND: usize = 160 << 20;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counts `grow` more bytes for this thread; false if that passes its limit.
fn grow(bytes: usize) -> bool {
    LIVE.try_with(|live| {
        let now = live.get().saturating_add(bytes);
        if now > LIMIT.with(Cell::get) {
            return false;
        }
        live.set(now);
        PEAK.with(|p| p.set(p.get().max(now)));
        true
    })
    .unwrap_or(true)
}

fn shrink(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// decide whether to fail an allocation, which callers must handle anyway.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !grow(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            shrink(new_size.saturating_sub(layout.size()));
        } else if new_size < layout.size() {
            shrink(layout.size() - new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` on this thread and returns the most bytes it held at once.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LIMIT.with(|l| l.set(base + HARD_CAP));
    f();
    LIMIT.with(|l| l.set(usize::MAX));
    PEAK.with(Cell::get) - base
}

/// A path in a directory that does not exist: `prompt_file` and `report:` are looked up
/// there and found missing, never anything on this machine.
fn place() -> PathBuf {
    PathBuf::from("/nonexistent-fleet-fuzz/runbook.yaml")
}

/// Both decoders on `text`: no panic, bounded memory.
fn decode_both(text: &str) {
    let path = place();
    let peak = peak_of(|| {
        let _ = fleet_config::parse_runbook(&path, text);
        let _ = fleet_config::parse_instance(Path::new("fleet.yaml"), text);
    });
    assert!(
        peak <= PEAK_BOUND,
        "a {} byte document took {peak} bytes to decode",
        text.len()
    );
}

const RUNBOOK: &str = r#"name: add-auth
repo: .
base: main
concurrency: 4
report: docs/summary.md
defaults: &d { timeout: 30m, retries: 2, env: { RUST_LOG: info, CI: true } }
tasks:
  - id: db-schema
    command: "make schema"
    checks: ["cargo test -q"]
  - id: api
    depends_on: [db-schema]
    agent: claude
    prompt: |
      Build the API.
    env: { RUST_LOG: debug, PORT: 8080 }
  - id: review
    kind: task
    parent: api
    depends_on: api
    role: reviewer
    prompt_file: docs/review.md
    timeout: 1h30m
    retry_backoff: 500ms
    max_attempts: 3
    budget_usd: 2.5
    workspace: none
"#;

const FLEET_YAML: &str = r#"store: sqlite
server: { bind: "127.0.0.1:7420", public_url: "https://fleet.example" }
agents:
  claude-dev:
    cli: claude
    model: claude-sonnet-4-5
    roles: [developer, reviewer]
    priority: 10
    account: anthropic
    stall_timeout: 5m
    env: { PATH: "/usr/bin:/bin" }
  cmd:
    cli: command
    command: "sh -c true"
accounts:
  anthropic: { secrets: [ANTHROPIC_API_KEY], daily_budget_usd: 100, window: "09:00-17:00" }
routing:
  - match: [bug, crash]
    route: fix
notifications:
  - kind: webhook
    url_env: HOOK_URL
    on: [failed, awaiting_acceptance]
"#;

/// YAML's own syntax, to splice into valid documents.
const FRAGMENTS: &[&str] = &[
    "&a ",
    "*a",
    "&b [",
    "*b",
    "[",
    "]",
    "{",
    "}",
    "- ",
    ": ",
    ", ",
    "\n  ",
    "\n",
    "\t",
    "'",
    "\"",
    "? ",
    "|",
    ">-",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "# c",
    "!!int ",
    "!!str ",
    "!x ",
    "<<: *a\n",
    "~",
    "null",
    "1e999",
    "99999999999999999999",
    "-0x1",
    "é",
    "\u{0}",
    "\u{feff}",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Repeat(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..FRAGMENTS.len()).prop_map(|(at, f)| Edit::Insert(at, f)),
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..60, 1usize..20).prop_map(|(at, n, k)| Edit::Repeat(at, n, k)),
    ]
}

/// Applies `edits` to `doc` at char boundaries.
fn mutate(doc: &str, edits: &[Edit]) -> String {
    let mut text = doc.to_string();
    let boundary = |text: &str, at: usize| {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    for e in edits {
        match *e {
            Edit::Insert(at, f) => {
                let at = boundary(&text, at);
                text.insert_str(at, FRAGMENTS[f]);
            }
            Edit::Delete(at, n) => {
                let start = boundary(&text, at);
                let end = boundary(&text, (start + n).min(text.len()));
                text.replace_range(start..end.max(start), "");
            }
            Edit::Repeat(at, n, k) => {
                let start = boundary(&text, at);
                let end = boundary(&text, (start + n).min(text.len()));
                let piece = text[start..end.max(start)].repeat(k);
                text.insert_str(end.max(start), &piece);
            }
        }
    }
    text
}

/// `levels` anchors, each a list of `fan` aliases of the one before; the first anchors a
/// scalar of `base` bytes. Expanded, that is base * fan^levels bytes.
fn alias_bomb(base: usize, fan: usize, levels: usize, flow: bool) -> String {
    let mut text = format!("name: x\nl0: &l0 \"{}\"\n", "a".repeat(base));
    for i in 1..=levels {
        let aliases = vec![format!("*l{}", i - 1); fan];
        if flow {
            text.push_str(&format!("l{i}: &l{i} [{}]\n", aliases.join(", ")));
        } else {
            text.push_str(&format!("l{i}: &l{i}\n"));
            for a in aliases {
                text.push_str(&format!("  - {a}\n"));
            }
        }
    }
    text.push_str(&format!("tasks: *l{levels}\n"));
    text
}

/// Anchors nested `depth` levels deep, each aliased inside the next: the expanded tree is
/// `depth * levels` deep although no single level of the text is.
fn deep_aliases(depth: usize, levels: usize) -> String {
    let mut text = format!("a0: &a0 {}x{}\n", "[".repeat(depth), "]".repeat(depth));
    for i in 1..=levels {
        text.push_str(&format!(
            "a{i}: &a{i} {}*a{}{}\n",
            "[".repeat(depth),
            i - 1,
            "]".repeat(depth)
        ));
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_both(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn spliced_valid_documents_never_panic(
        fleet_yaml in any::<bool>(),
        edits in prop::collection::vec(edit(), 1..12),
    ) {
        decode_both(&mutate(if fleet_yaml { FLEET_YAML } else { RUNBOOK }, &edits));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn alias_bombs_are_bounded(
        base in prop_oneof![0usize..64, 60_000usize..200_000],
        fan in 2usize..40,
        levels in 1usize..10,
        flow in any::<bool>(),
    ) {
        decode_both(&alias_bomb(base, fan, levels, flow));
    }

    #[test]
    fn deep_nesting_is_bounded(
        depth in 1usize..3000,
        levels in 0usize..40,
        close in any::<bool>(),
    ) {
        let mut text = deep_aliases(depth.min(120), levels);
        // Unclosed and block-style nesting far past any limit.
        text.push_str(&"[".repeat(depth));
        if close {
            text.push_str(&"]".repeat(depth));
        }
        decode_both(&text);
        let block: String = (0..depth.min(600)).map(|i| format!("{}- k{i}:\n", "  ".repeat(i))).collect();
        decode_both(&block);
    }

}

proptest! {
    // A scalar of a megabyte takes the unoptimised test build a third of a second to scan.
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn huge_scalars_are_bounded(len in 1usize..(1 << 20), quoted in any::<bool>()) {
        let big = "x".repeat(len);
        let value = if quoted { format!("\"{big}\"") } else { big };
        decode_both(&format!(
            "name: x\ntasks:\n  - id: a\n    command: {value}\n    checks: [{value}]\n"
        ));
    }
}

/// The classic: nine levels of ten aliases, a billion values if expanded.
#[test]
fn the_billion_laughs_are_refused() {
    let text = alias_bomb(3, 10, 9, true);
    let err = fleet_config::parse_runbook(&place(), &text).unwrap_err();
    assert!(err[0].message.contains("expands to more than"), "{err:?}");
}

/// One long scalar aliased many times: few values, but gigabytes of text once expanded.
#[test]
fn a_long_scalar_aliased_many_times_is_refused_before_it_is_copied() {
    let mut text = format!("name: x\nbig: &big \"{}\"\nmany: [", "x".repeat(1 << 20));
    text.push_str(&vec!["*big"; 5_000].join(", "));
    text.push_str("]\ntasks: []\n");
    let mut result = None;
    let peak = peak_of(|| result = Some(fleet_config::parse_runbook(&place(), &text)));
    let err = result.unwrap().unwrap_err();
    assert!(err[0].message.contains("MiB of text"), "{err:?}");
    assert!(peak <= PEAK_BOUND, "{peak} bytes");
}

/// Anchors aliased inside each other build a tree far deeper than the text's own nesting.
#[test]
fn aliases_cannot_nest_past_the_depth_limit() {
    let err = fleet_config::parse_runbook(&place(), &deep_aliases(100, 30)).unwrap_err();
    assert!(err[0].message.contains("deeper than"), "{err:?}");
}
