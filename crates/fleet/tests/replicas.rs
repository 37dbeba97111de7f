//! API replicas: two `fleet serve` processes with separate homes (two machines, in effect)
//! on one PostgreSQL. Epics submitted to either are each driven exactly once (the epic's lease
//! is in the store, not a file of one machine), and an SSE stream on either replica sees every
//! event of both exactly once, in order (another replica's commits wake it through LISTEN/
//! NOTIFY). The epics are worked on by the real claude CLI against the scripted model server.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// Reads an SSE stream in the background: the seq of every event, until dropped.
struct SseReader {
    seen: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseReader {
    fn open(http: &Http, url: String) -> SseReader {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = http.rt.spawn(async move {
            let mut resp = reqwest::Client::new().get(url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            out.lock().unwrap().push(v.trim().parse::<u64>().unwrap());
                        }
                    }
                }
            }
        });
        SseReader { seen, task }
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const STAGES: [&str; 8] = [
    "research1",
    "plan1",
    "implement1",
    "review1",
    "plan2",
    "implement2",
    "review2",
    "deliver2",
];

#[test]
fn two_replicas_on_one_postgres_drive_each_epic_once_and_stream_every_event_once() {
    let db = TestDb::create();
    let server = scripted_server();
    let a = Instance::new(&server);
    // Both homes name the same PostgreSQL; nothing else is shared between the replicas'
    // state directories.
    let yaml = format!(
        "store: {}\n{}",
        db.url(),
        std::fs::read_to_string(a.home.join("fleet.yaml")).unwrap()
    );
    std::fs::write(a.home.join("fleet.yaml"), &yaml).unwrap();
    let b = Instance {
        _tmp: tempfile::tempdir().unwrap(),
        home: std::path::PathBuf::new(),
        repo: a.repo.clone(),
        remote: a.remote.clone(),
    };
    let b = Instance {
        home: b._tmp.path().join("instance-b"),
        ..b
    };
    std::fs::create_dir_all(&b.home).unwrap();
    std::fs::write(b.home.join("fleet.yaml"), &yaml).unwrap();
    a.add_shop();
    let submit = a
        .ok(&["token", "create", "--scope", "submit", "--name", "ci"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();

    let ra = Served::start(&a, "127.0.0.1", &["--epics", "2"]);
    let rb = Served::start(&b, "127.0.0.1", &["--epics", "2"]);
    let http = Http::new();
    let sse_a = SseReader::open(&http, format!("{}/api/v1/events?after=0", ra.url));
    let sse_b = SseReader::open(&http, format!("{}/api/v1/events?after=0", rb.url));

    // One epic through each replica; the other replica sees it too.
    let mut ids = Vec::new();
    for (replica, what) in [(&ra, "a"), (&rb, "b")] {
        let (s, created) = http.post(
            &format!("{}/api/v1/tasks", replica.url),
            Some(&submit),
            json!({"project": "shop", "request": format!("Add the {what} files to the shop")}),
        );
        assert_eq!(s, 201, "{created}");
        ids.push(created["task"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids, ["e1", "e2"]);
    for id in &ids {
        for replica in [&ra, &rb] {
            wait_for(
                300,
                &format!("{id} awaiting acceptance on {}", replica.url),
                || {
                    let (_, d) = http.get(&format!("{}/api/v1/tasks/{id}", replica.url), None);
                    (d["task"]["state"] == "awaiting_acceptance" && d["task"]["cycle"] == 2)
                        .then_some(())
                },
            );
        }
    }

    let store = PostgresStore::open(db.url()).unwrap();
    for id in &ids {
        let (_, d): (u16, Value) = http.get(&format!("{}/api/v1/tasks/{id}", ra.url), None);
        let stages: Vec<String> = d["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}{}", s["stage"].as_str().unwrap(), s["cycle"]))
            .collect();
        assert_eq!(stages, STAGES, "{id}");
        // Each stage was started and finished once: a second driver would have doubled them.
        let events = store.events(Some(id), 0, 100_000).unwrap();
        for kind in ["epic.stage_started", "epic.stage_finished"] {
            let n = events.iter().filter(|e| e.kind == kind).count();
            assert_eq!(n, STAGES.len(), "{id}: {kind} × {n}");
        }
        let runs = store.runs_named(&format!("{id}-")).unwrap();
        let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        let all = names.len();
        names.dedup();
        assert_eq!(
            names.len(),
            all,
            "{id}: a stage run was made twice: {runs:?}"
        );
    }

    // Every event of the store, on both streams, once each and in order.
    let newest = store.newest_seq().unwrap();
    let every: Vec<u64> = store
        .events(None, 0, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(every, (1..=newest).collect::<Vec<_>>());
    for (name, sse) in [("a", &sse_a), ("b", &sse_b)] {
        let seen = wait_for(
            30,
            &format!("replica {name}'s stream reaching seq {newest}"),
            || {
                let seen = sse.seen();
                (seen.last() >= Some(&newest)).then_some(seen)
            },
        );
        assert_eq!(
            seen[..every.len()],
            every[..],
            "replica {name}'s stream: every event once, in order"
        );
    }
    ra.stop();
    rb.stop();
}
