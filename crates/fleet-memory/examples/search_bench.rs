//! Benchmark M1: knowledge search latency over 100,000 entries (lessons, skills, traces,
//! decision logs, context, reports) in a real SQLite file and in a real PostgreSQL database,
//! side by side in one run. Prints one JSON object, a section per backend.
//!
//! `cargo run --release -p fleet-memory --example search_bench -- [ENTRIES] [QUERIES]`
//! (`FLEET_BENCH_BACKENDS=sqlite` or `=postgres` for one only.)
//!
//! Wall-clock and thread-CPU percentiles, for a connection kept open and for one opened per
//! query (as the CLI and the MCP tool do), with the machine's load average before and after. On
//! PostgreSQL the server's CPU per query (its backend's, from /proc) is given too.

use fleet_memory::db::DOCUMENT_CAPS;
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

/// One backend to measure: how to open a handle, the corpus's size on disk, and (PostgreSQL)
/// the CPU its server process spent so far, in ms.
struct Case {
    name: &'static str,
    open: Box<dyn Fn() -> MemoryDb>,
    size: Box<dyn Fn() -> u64>,
    server_cpu_ms: Box<dyn Fn() -> f64>,
    /// Run when measured: drops a database made for the run.
    cleanup: Box<dyn Fn()>,
    /// Around loading the documents (`true` before, `false` after): the load's set-up only,
    /// the corpus searched is the same.
    bulk: Box<dyn Fn(bool)>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(100_000);
    let queries: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let backends = std::env::var("FLEET_BENCH_BACKENDS").unwrap_or("sqlite,postgres".into());
    let mut out = serde_json::Map::new();
    out.insert("entries".into(), entries.into());
    out.insert("queries".into(), queries.into());
    out.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
            .into(),
    );
    for name in backends.split(',') {
        let case = match name {
            "sqlite" => sqlite_case(&dir),
            "postgres" => postgres_case(),
            other => panic!("unknown backend {other} (sqlite, postgres)"),
        };
        out.insert(name.into(), measure(&case, entries, queries));
        (case.cleanup)();
    }
    println!("{}", serde_json::Value::Object(out));
}

/// FLEET_BENCH_DB names a file to keep: a second run with the same arguments reuses the
/// corpus it holds (the same one: the generator is deterministic) instead of loading it.
fn sqlite_case(dir: &tempfile::TempDir) -> Case {
    let path = match std::env::var_os("FLEET_BENCH_DB") {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("memory.db"),
    };
    let (p1, p2) = (path.clone(), path);
    Case {
        name: "sqlite",
        open: Box::new(move || MemoryDb::open(&p1, Redactor::new([])).unwrap()),
        size: Box::new(move || {
            std::fs::metadata(&p2).unwrap().len()
                + std::fs::metadata(p2.with_extension("db-wal"))
                    .map(|m| m.len())
                    .unwrap_or(0)
        }),
        server_cpu_ms: Box::new(|| 0.0),
        cleanup: Box::new(|| {}),
        bulk: Box::new(|_| {}),
    }
}

/// The database FLEET_BENCH_PG_URL names (kept: a second run reuses its corpus), else a
/// fresh one on the server FLEET_TEST_PG_URL names (default 127.0.0.1:5432, trust auth).
/// The server runs on this machine: its backend's CPU is read from /proc.
fn postgres_case() -> Case {
    let mut made = None;
    let url = match std::env::var("FLEET_BENCH_PG_URL") {
        Ok(u) => u,
        Err(_) => {
            let admin = std::env::var("FLEET_TEST_PG_URL")
                .unwrap_or("postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("fleet_m1_{}", std::process::id());
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            let base = admin[..admin.rfind('/').unwrap()].to_string();
            made = Some((admin, name.clone()));
            format!("{base}/{name}")
        }
    };
    let tagged = format!(
        "{url}{}application_name=fleet_m1_bench",
        if url.contains('?') { "&" } else { "?" }
    );
    let (u1, u2, u3, u4) = (tagged.clone(), url.clone(), url.clone(), url);
    // Inserting 90,000 documents one index entry at a time (`fastupdate = off`) takes the
    // best part of an hour here: the search index is dropped for the load and built again
    // after it from its own definition, in one pass.
    let index_def = std::sync::Mutex::new(None::<String>);
    Case {
        name: "postgres",
        open: Box::new(move || MemoryDb::open_postgres(&u1, Redactor::new([])).unwrap()),
        size: Box::new(move || {
            let mut c = postgres::Client::connect(&u2, postgres::NoTls).unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT pg_total_relation_size('memory_documents')
                          + pg_total_relation_size('memory_lessons')",
                    &[],
                )
                .unwrap()
                .get(0);
            n as u64
        }),
        server_cpu_ms: Box::new(move || {
            let mut c = postgres::Client::connect(&u3, postgres::NoTls).unwrap();
            let pids: Vec<i32> = c
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'fleet_m1_bench'",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Nanoseconds on a CPU, first field of schedstat (the backend is one process).
            pids.iter()
                .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .sum::<f64>()
                / 1e6
        }),
        cleanup: Box::new(move || {
            if let Some((admin, name)) = &made {
                let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
                c.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .unwrap();
            }
        }),
        bulk: Box::new(move |before| {
            let mut c = postgres::Client::connect(&u4, postgres::NoTls).unwrap();
            let mut def = index_def.lock().unwrap();
            if before {
                let d: String = c
                    .query_one(
                        "SELECT pg_get_indexdef('memory_documents_search'::regclass)",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                c.batch_execute("DROP INDEX memory_documents_search")
                    .unwrap();
                *def = Some(d);
            } else if let Some(d) = def.take() {
                c.batch_execute(&d).unwrap();
            }
        }),
    }
}

fn measure(case: &Case, entries: usize, queries: usize) -> serde_json::Value {
    let load_before = loadavg();
    let mut db = (case.open)();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let tail = Vocabulary::new(20_000);

    let load = Instant::now();
    let reused = db.lessons(false).unwrap().len() + db.search("w00100x", &[], 1).unwrap().len() > 0;
    // Every entry is kept: Fleet caps each kind of document (`DOCUMENT_CAPS`, 51,000 in all),
    // so documents fill each kind up to its cap, in proportion, and lessons make up the rest
    // (through the real add path: dedupe and caps apply, so a scope per 100 lessons keeps
    // them under the default cap of a scope).
    let room: i64 = DOCUMENT_CAPS.iter().map(|(_, n)| n).sum();
    let doc_count = ((entries as i64 * 9 / 10).min(room)) as usize;
    let lessons = entries - doc_count;
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
    let kind_of = |i: usize| {
        let mut at = i as i64 * room / doc_count as i64;
        for (kind, cap) in DOCUMENT_CAPS {
            if at < *cap {
                return *kind;
            }
            at -= cap;
        }
        unreachable!("within the caps' sum")
    };
    let docs: Vec<(String, String, String, String)> = (0..doc_count)
        .map(|i| {
            let n = 40 + (rng.next() % 200) as usize;
            (
                kind_of(i).to_string(),
                format!("d{i}"),
                sentence(&mut rng, &tail, 6),
                sentence(&mut rng, &tail, n),
            )
        })
        .collect();
    if !reused {
        (case.bulk)(true);
        for chunk in docs.chunks(5_000) {
            let dropped = db
                .put_documents(
                    chunk
                        .iter()
                        .map(|(k, key, t, b)| (k.as_str(), key.as_str(), t.as_str(), b.as_str())),
                    0,
                )
                .unwrap();
            assert!(
                dropped.is_empty(),
                "a cap dropped {} documents",
                dropped.len()
            );
        }
        (case.bulk)(false);
    }
    // The maintenance pass (`upkeep`) merges the index's segments; a long-running instance
    // has had it run. FLEET_BENCH_NO_COMPACT=1 measures the index as the writes left it.
    if std::env::var_os("FLEET_BENCH_NO_COMPACT").is_none() {
        db.compact().unwrap();
    }
    let load_s = load.elapsed().as_secs_f64();
    let size = (case.size)();

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
    let mut server_times = Vec::with_capacity(queries);
    let mut total_hits = 0usize;
    for (q, kinds) in &qs {
        let server = (case.server_cpu_ms)();
        let (t, cpu) = (Instant::now(), thread_cpu_ms());
        let hits = db.search(q, kinds, 10).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        cpu_times.push(thread_cpu_ms() - cpu);
        server_times.push((case.server_cpu_ms)() - server);
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
        let db = (case.open)();
        let opened = t.elapsed().as_secs_f64() * 1000.0;
        let t2 = Instant::now();
        db.search(q, kinds, 10).unwrap();
        cold_times.push(t2.elapsed().as_secs_f64() * 1000.0);
        drop(db);
        open_times.push(opened);
        both_times.push(t.elapsed().as_secs_f64() * 1000.0);
        both_cpu.push(thread_cpu_ms() - cpu);
    }
    serde_json::json!({
            "backend": case.name,
            "lessons": lessons_live,
            "documents": doc_count,
            "entries_live": lessons_live + doc_count,
            "reused_corpus": reused,
            "compacted": std::env::var_os("FLEET_BENCH_NO_COMPACT").is_none(),
            "load_s": (load_s * 100.0).round() / 100.0,
            "db_mb": (size as f64 / 1e6 * 10.0).round() / 10.0,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "warm_wall_ms": percentiles(&mut times),
            "warm_cpu_ms": percentiles(&mut cpu_times),
            "warm_server_cpu_ms": percentiles(&mut server_times),
            "open_per_query": {
                "open_wall_ms": percentiles(&mut open_times),
                "search_wall_ms": percentiles(&mut cold_times),
                "total_wall_ms": percentiles(&mut both_times),
                "total_cpu_ms": percentiles(&mut both_cpu),
            },
            "mean_hits": total_hits as f64 / queries as f64,
    })
}
