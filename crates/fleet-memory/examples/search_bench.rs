//! Benchmark M1: knowledge search latency over 100,000 entries (lessons, skills, traces,
//! decision logs, context, reports) in a real SQLite file. Prints one JSON object.
//!
//! `cargo run --release -p fleet-memory --example search_bench -- [ENTRIES] [QUERIES]`
//!
//! Wall-clock and thread-CPU percentiles, for a connection kept open and for one opened per
//! query (as the CLI and the MCP tool do), with the machine's load average before and after.

use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
use fleet_secrets::Redactor;
use std::time::Instant;

/// xorshift64*: deterministic, so every run searches the same corpus with the same queries.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The most frequent words of English (which the search drops), then common words of a
/// software project, then a long tail: a Zipf (s = 1) vocabulary of 20,000 words, as in
/// natural text.
const HEAD: &[&str] = &[
    "the",
    "to",
    "and",
    "a",
    "of",
    "in",
    "is",
    "for",
    "that",
    "it",
    "on",
    "with",
    "as",
    "be",
    "at",
    "by",
    "this",
    "from",
    "or",
    "an",
    "was",
    "are",
    "into",
    "test",
    "error",
    "api",
    "handler",
    "database",
    "migration",
    "timeout",
    "retry",
    "config",
    "build",
    "cache",
    "token",
    "user",
    "request",
    "response",
    "json",
    "schema",
    "index",
    "query",
    "commit",
    "branch",
    "merge",
    "review",
    "deploy",
    "log",
    "check",
    "lint",
    "format",
    "docker",
    "webhook",
    "payment",
    "session",
    "auth",
    "route",
    "model",
    "field",
    "column",
    "table",
    "file",
    "path",
];

struct Vocabulary {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize) -> Vocabulary {
        let words: Vec<String> = (0..size)
            .map(|i| match HEAD.get(i) {
                Some(w) => w.to_string(),
                None => format!("w{i:05}x"),
            })
            .collect();
        let mut cdf = Vec::with_capacity(size);
        let mut acc = 0.0;
        for r in 1..=size {
            acc += 1.0 / r as f64;
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        Vocabulary { words, cdf }
    }
    fn word(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self
            .cdf
            .partition_point(|c| *c < u)
            .min(self.words.len() - 1);
        &self.words[i]
    }
}

fn sentence(rng: &mut Rng, v: &Vocabulary, n: usize) -> String {
    (0..n).map(|_| v.word(rng)).collect::<Vec<_>>().join(" ")
}

/// CPU time of this thread: what a query costs, whatever else the machine is doing.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}

/// The machine's load average (1, 5, 15 minutes), as `/proc/loadavg` says.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// p50, p90, p99 and max of `v` (sorted here), in ms.
fn percentiles(v: &mut [f64]) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({"p50": r(at(0.50)), "p90": r(at(0.90)), "p99": r(at(0.99)),
                       "max": r(v[v.len() - 1])})
}

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(100_000);
    let queries: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(2_000);
    let load_before = loadavg();
    let dir = tempfile::tempdir().unwrap();
    // FLEET_BENCH_DB names a file to keep: a second run with the same arguments reuses the
    // corpus it holds (the same one: the generator is deterministic) instead of loading it.
    let path = match std::env::var_os("FLEET_BENCH_DB") {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("memory.db"),
    };
    let mut db = MemoryDb::open(&path, Redactor::new([])).unwrap();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let tail = Vocabulary::new(20_000);
    let kinds = ["skill", "trace", "decision", "context", "report"];

    let load = Instant::now();
    let reused = db.lessons(false).unwrap().len() + db.search("w00100x", &[], 1).unwrap().len() > 0;
    // One in ten entries is a lesson (through the real add path: dedupe and caps apply, so a
    // scope per 100 lessons keeps them under the default cap); the rest are documents.
    let lessons = entries / 10;
    let p = Policy::default();
    for i in 0..lessons {
        let text = format!("{} (lesson {i})", sentence(&mut rng, &tail, 12));
        let l = Lesson::new(
            Scope::Project(format!("p{}", i / 100)),
            AppliesWhen {
                words: vec![tail.word(&mut rng).to_string()],
                ..AppliesWhen::default()
            },
            text,
            Provenance {
                source: "bench".into(),
                run: None,
                task: Some(format!("t{i}")),
                attempt: Some(1),
                at: i as i64,
            },
        );
        if !reused {
            db.add_lesson(l, i as i64, &p).unwrap();
        }
    }
    let docs: Vec<(String, String, String, String)> = (0..entries - lessons)
        .map(|i| {
            let n = 40 + (rng.next() % 200) as usize;
            (
                kinds[i % kinds.len()].to_string(),
                format!("d{i}"),
                sentence(&mut rng, &tail, 6),
                sentence(&mut rng, &tail, n),
            )
        })
        .collect();
    if !reused {
        for chunk in docs.chunks(5_000) {
            db.put_documents(
                chunk
                    .iter()
                    .map(|(k, key, t, b)| (k.as_str(), key.as_str(), t.as_str(), b.as_str())),
                0,
            )
            .unwrap();
        }
    }
    // The maintenance pass (`upkeep`) merges the index's segments; a long-running instance
    // has had it run. FLEET_BENCH_NO_COMPACT=1 measures the index as the writes left it.
    if std::env::var_os("FLEET_BENCH_NO_COMPACT").is_none() {
        db.compact().unwrap();
    }
    let load_s = load.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).unwrap().len()
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);

    // Warm the page cache as a long-running server would have it.
    for _ in 0..50 {
        let q = sentence(&mut rng, &tail, 3);
        db.search(&q, &[], 10).unwrap();
    }
    let qs: Vec<(String, Vec<String>)> = (0..queries)
        .map(|i| {
            let q = sentence(&mut rng, &tail, 2 + (i % 4));
            let kinds: Vec<String> = if i % 5 == 0 {
                vec!["lesson".into()]
            } else {
                Vec::new()
            };
            (q, kinds)
        })
        .collect();

    // 1. One connection kept open, as a long-running process holds it.
    let mut times = Vec::with_capacity(queries);
    let mut cpu_times = Vec::with_capacity(queries);
    let mut total_hits = 0usize;
    for (q, kinds) in &qs {
        let (t, cpu) = (Instant::now(), thread_cpu_ms());
        let hits = db.search(q, kinds, 10).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        cpu_times.push(thread_cpu_ms() - cpu);
        total_hits += hits.len();
    }
    let lessons_live = db.lessons(false).unwrap().len();
    drop(db);

    // 2. The file opened for each query, as `fleet memory search` and the MCP tool
    // `memory_search` do: a connection's page cache and the cached document frequencies are
    // cold every time. Open and search are timed apart, and together.
    let mut open_times = Vec::with_capacity(queries);
    let mut cold_times = Vec::with_capacity(queries);
    let mut both_times = Vec::with_capacity(queries);
    let mut both_cpu = Vec::with_capacity(queries);
    for (q, kinds) in &qs {
        let (t, cpu) = (Instant::now(), thread_cpu_ms());
        let db = MemoryDb::open(&path, Redactor::new([])).unwrap();
        let opened = t.elapsed().as_secs_f64() * 1000.0;
        let t2 = Instant::now();
        db.search(q, kinds, 10).unwrap();
        cold_times.push(t2.elapsed().as_secs_f64() * 1000.0);
        drop(db);
        open_times.push(opened);
        both_times.push(t.elapsed().as_secs_f64() * 1000.0);
        both_cpu.push(thread_cpu_ms() - cpu);
    }
    println!(
        "{}",
        serde_json::json!({
            "entries": entries,
            "lessons": lessons_live,
            "queries": queries,
            "reused_corpus": reused,
            "compacted": std::env::var_os("FLEET_BENCH_NO_COMPACT").is_none(),
            "load_s": (load_s * 100.0).round() / 100.0,
            "db_mb": (size as f64 / 1e6 * 10.0).round() / 10.0,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "warm_wall_ms": percentiles(&mut times),
            "warm_cpu_ms": percentiles(&mut cpu_times),
            "open_per_query": {
                "open_wall_ms": percentiles(&mut open_times),
                "search_wall_ms": percentiles(&mut cold_times),
                "total_wall_ms": percentiles(&mut both_times),
                "total_cpu_ms": percentiles(&mut both_cpu),
            },
            "mean_hits": total_hits as f64 / queries as f64,
        })
    );
}
