//! The floor for `fleet runner`'s claim throughput (bench/runners.py): N threads, each with
//! one connection, claim rows of a minimal queue with `FOR UPDATE SKIP LOCKED` and mark them
//! done, nothing else (no leases, no events, no processes). Prints one JSON line: the wall time
//! and every claim's latency (from starting to claim to the claim's commit, in µs).
//!
//! With a fourth argument, each claimed task also runs that command through `sh -c` before it
//! is marked done: the least any runner must do for a shell task, a floor that spends what a
//! task's own process costs.
//!
//! `cargo run -p fleet-store --example claim_floor -- URL TASKS THREADS [COMMAND]`

use postgres::{Client, NoTls};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, tasks, threads) = (
        args[1].clone(),
        args[2].parse::<i64>().unwrap(),
        args[3].parse::<usize>().unwrap(),
    );
    let command = args.get(4).cloned();
    let mut c = Client::connect(&url, NoTls).unwrap();
    c.batch_execute(
        "DROP TABLE IF EXISTS floor_q;
         CREATE TABLE floor_q (id BIGINT PRIMARY KEY, state TEXT NOT NULL, holder TEXT);
         CREATE INDEX floor_q_open ON floor_q (id) WHERE state = 'queued';",
    )
    .unwrap();
    c.execute(
        "INSERT INTO floor_q SELECT g, 'queued', NULL FROM generate_series(1::bigint, $1::bigint) g",
        &[&tasks],
    )
    .unwrap();
    let started = Instant::now();
    let lat: Vec<u128> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                let url = url.clone();
                let command = command.clone();
                s.spawn(move || {
                    let mut c = Client::connect(&url, NoTls).unwrap();
                    let me = format!("floor{i}");
                    let mut lat = Vec::new();
                    loop {
                        let t = Instant::now();
                        let mut tx = c.transaction().unwrap();
                        let row = tx
                            .query_opt(
                                "UPDATE floor_q SET state = 'claimed', holder = $1
                                 WHERE id = (SELECT id FROM floor_q WHERE state = 'queued'
                                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                                 RETURNING id",
                                &[&me],
                            )
                            .unwrap();
                        tx.commit().unwrap();
                        let Some(row) = row else { break };
                        lat.push(t.elapsed().as_micros());
                        let id: i64 = row.get(0);
                        if let Some(cmd) = &command {
                            let ran = std::process::Command::new("sh")
                                .args(["-c", cmd])
                                .status()
                                .unwrap();
                            assert!(ran.success(), "{cmd}: {ran}");
                        }
                        c.execute("UPDATE floor_q SET state = 'done' WHERE id = $1", &[&id])
                            .unwrap();
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{{\"wall_s\": {wall}, \"claims\": {}, \"latency_us\": {:?}}}",
        lat.len(),
        lat
    );
}
