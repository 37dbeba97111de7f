//! `fleet-model-server`: run the scripted model server standalone.
//!
//! ```text
//! fleet-model-server [--port N] [--scenarios FILE]... [--record FILE.jsonl] [--no-auto]
//! ```
//! Prints `http://127.0.0.1:PORT` on the first line of stdout, then serves until killed.
//! Scenario files (JSON or YAML) map names to scenarios; unless `--no-auto` is given, unknown
//! names are built from their spelling (`ok`, `429`, `500x2`, `hang`, `hangmid`, `-tag` suffix).

use std::io::Write;
use std::net::SocketAddr;

use fleet_testkit::{ModelServer, parse_scenarios};

fn usage() -> ! {
    eprintln!(
        "usage: fleet-model-server [--port N] [--scenarios FILE]... [--record FILE.jsonl] [--no-auto]"
    );
    std::process::exit(2)
}

fn main() {
    let mut port = 0u16;
    let mut files = Vec::new();
    let mut record = None;
    let mut auto = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--scenarios" => files.push(args.next().unwrap_or_else(|| usage())),
            "--record" => record = Some(args.next().unwrap_or_else(|| usage())),
            "--no-auto" => auto = false,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let mut builder = ModelServer::builder()
        .addr(SocketAddr::from(([127, 0, 0, 1], port)))
        .auto_scenarios(auto);
    if let Some(r) = record {
        builder = builder.record_to(r);
    }
    let server = builder.start().unwrap_or_else(|e| {
        eprintln!("fleet-model-server: cannot start: {e}");
        std::process::exit(1)
    });
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| {
            eprintln!("fleet-model-server: {f}: {e}");
            std::process::exit(1)
        });
        let scenarios = parse_scenarios(&text).unwrap_or_else(|e| {
            eprintln!("fleet-model-server: {f}: {e}");
            std::process::exit(1)
        });
        for (name, s) in scenarios {
            server.add_scenario(&name, s);
        }
    }
    println!("{}", server.url());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
