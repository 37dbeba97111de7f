//! An open-loop HTTP load generator for benchmarks: sends GET requests at a fixed rate
//! (request i is due at start + i/rate, whether or not earlier ones have answered) and
//! prints latency percentiles as JSON. Latency is measured from when a request was due, so a
//! slow server cannot hide its queueing (no coordinated omission).
//!
//!     fleet-http-load --rate 200 --secs 30 URL [URL…]   (URLs are used round-robin)

use std::time::{Duration, Instant};

fn main() {
    let mut rate = 200.0f64;
    let mut secs = 30.0f64;
    let mut warmup = 2.0f64;
    let mut urls = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--rate" => rate = num("--rate"),
            "--secs" => secs = num("--secs"),
            "--warmup" => warmup = num("--warmup"),
            _ => urls.push(a),
        }
    }
    assert!(
        !urls.is_empty(),
        "usage: fleet-http-load --rate N --secs S URL…"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let total = ((warmup + secs) * rate) as usize;
        let start = Instant::now() + Duration::from_millis(100);
        let mut handles = Vec::with_capacity(total);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let url = urls[i % urls.len()].clone();
            let client = client.clone();
            tokio::time::sleep_until(due.into()).await;
            handles.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().is_success();
                        r.bytes().await.is_ok() && status
                    }
                    Err(_) => false,
                };
                let done = Instant::now();
                (
                    i,
                    ok,
                    (done - due).as_secs_f64() * 1000.0,
                    (done - sent).as_secs_f64() * 1000.0,
                )
            }));
        }
        let skip = (warmup * rate) as usize;
        let mut from_due = Vec::new();
        let mut from_send = Vec::new();
        let mut errors = 0usize;
        for h in handles {
            let (i, ok, d, s) = h.await.unwrap();
            if i < skip {
                continue;
            }
            if !ok {
                errors += 1;
            }
            from_due.push(d);
            from_send.push(s);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let idx = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
            v[idx.min(v.len() - 1)]
        };
        let out = serde_json::json!({
            "requests": from_due.len(), "errors": errors, "rate": rate, "secs": secs,
            "achieved_rate": total as f64 / elapsed,
            "p50_ms": pct(&mut from_due, 50.0), "p90_ms": pct(&mut from_due, 90.0),
            "p99_ms": pct(&mut from_due, 99.0), "max_ms": pct(&mut from_due, 100.0),
            "send_p99_ms": pct(&mut from_send, 99.0),
        });
        println!("{out}");
    });
}
