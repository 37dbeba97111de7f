//! `fleet stats`: the outcomes (`fleet_views::outcomes`) — per project and week, requests
//! delivered, accepted, rejected and blocked, attempts per task, cost per accepted request,
//! time to the pull request; per agent profile its pass rate, stalls, rate limits and cost
//! per passed task.

use crate::exit;
use fleet_store::Store;
use fleet_views::outcomes::Bucket;

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn secs(s: f64) -> String {
    fleet_engine::fmt_duration(std::time::Duration::from_millis(
        (s * 1000.0).max(0.0) as u64
    ))
}

fn bucket_line(b: &Bucket) -> String {
    format!(
        "{:<9} {:<14} {:>8} {:>9} {:>8} {:>8} {:>7} {:>9} {:>10} {:>9}",
        b.week,
        b.project,
        b.requests,
        b.delivered,
        b.accepted,
        b.rejected,
        b.blocked,
        opt(b.attempts_per_task, |v| format!("{v:.2}")),
        opt(b.cost_per_accepted_usd, |v| format!("${v:.4}")),
        opt(b.to_pull_request_secs_avg, secs),
    )
}

pub fn stats(store: &dyn Store, json_out: bool) -> anyhow::Result<u8> {
    let o = fleet_views::outcomes(store)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(exit::PASSED);
    }
    if o.total.requests == 0 {
        println!("no requests yet: fleet task add PROJECT \"what you want\"");
        return Ok(exit::PASSED);
    }
    println!(
        "{:<9} {:<14} {:>8} {:>9} {:>8} {:>8} {:>7} {:>9} {:>10} {:>9}",
        "WEEK",
        "PROJECT",
        "REQUESTS",
        "DELIVERED",
        "ACCEPTED",
        "REJECTED",
        "BLOCKED",
        "TRIES/TSK",
        "$/ACCEPTED",
        "TO PR"
    );
    for b in &o.weeks {
        println!("{}", bucket_line(b));
    }
    println!("{}", bucket_line(&o.total));
    if !o.profiles.is_empty() {
        println!(
            "\n{:<24} {:>8} {:>8} {:>9} {:>7} {:>11} {:>10} {:>12}",
            "PROFILE",
            "ATTEMPTS",
            "PASSED",
            "PASS RATE",
            "STALLS",
            "RATE LIMITS",
            "COST",
            "$/PASSED"
        );
        for p in &o.profiles {
            println!(
                "{:<24} {:>8} {:>8} {:>9} {:>7} {:>11} {:>10} {:>12}",
                p.profile,
                p.attempts,
                p.passed,
                opt(p.pass_rate, |v| format!("{:.0}%", v * 100.0)),
                p.stalls,
                p.rate_limits,
                format!("${:.4}", p.cost_usd),
                opt(p.cost_per_passed_usd, |v| format!("${v:.4}")),
            );
        }
    }
    Ok(exit::PASSED)
}
