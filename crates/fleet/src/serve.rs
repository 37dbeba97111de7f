//! `fleet serve`, `fleet token …` and `fleet mcp`: the long-running fleet and its access.

use crate::{InvalidInput, epics, exit};
use fleet_server::{Fleet, Scope};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

pub struct ServeFlags {
    pub bind: Option<String>,
    pub public_url: Option<String>,
    pub epics: usize,
    pub pr_poll: u64,
    pub quiet: bool,
}

pub fn serve(home: &Path, flags: ServeFlags) -> anyhow::Result<u8> {
    // A stop signal during start-up waits for the listener below (see `fleet_engine::signals`).
    fleet_engine::signals::hold();
    let mut pipeline = epics::pipeline(home, flags.quiet)?;
    let bind = flags.bind.unwrap_or_else(|| pipeline.instance.bind.clone());
    let review_runs = pipeline.instance.review_runs;
    let (events, wake) = fleet_server::event_channel();
    // One stop for the server, its services and the stage runs it drives.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    pipeline.shutdown = Some(stopped);
    let log = pipeline.observer.take();
    pipeline.observer = Some(Arc::new(move |e: &fleet_store::Event| {
        if let Some(log) = &log {
            log(e);
        }
        wake(e);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|e| InvalidInput(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener.local_addr()?;
        let public_url = flags
            .public_url
            .or_else(|| pipeline.instance.public_url.clone())
            .unwrap_or_else(|| format!("http://{addr}"));
        let mut fleet = Fleet::new(Arc::new(pipeline), events, public_url.clone());
        fleet.stop = stop;
        let opts = fleet_server::services::ServiceOptions {
            epics: flags.epics,
            pr_poll: std::time::Duration::from_secs(flags.pr_poll.max(1)),
            after_epic: review_runs.map(|cfg| {
                let home = home.to_path_buf();
                fleet_server::services::AfterEpic(Arc::new(move |epic: &fleet_store::EpicRow| {
                    crate::review_run::after_epic(&home, cfg, epic)
                }))
            }),
            ..Default::default()
        };
        let services = fleet_server::services::start(fleet.clone(), opts).map_err(InvalidInput)?;
        println!("fleet serve: listening on http://{addr}");
        println!("dashboard: {public_url}/  api: {public_url}/api/v1  mcp: {public_url}/mcp");
        // Ctrl-C, SIGTERM (systemd, docker stop) or SIGHUP stop the server; epics being driven
        // stop with the process and resume from the store on the next start.
        let stop = fleet.stop.clone();
        let mut signals = fleet_engine::signals::Listener::new()?;
        tokio::spawn(async move {
            let why = signals.recv().await;
            eprintln!("fleet serve: {why}: stopping");
            let _ = stop.send(true);
        });
        fleet_server::serve(fleet, listener).await?;
        // Stage runs stop as on SIGTERM (attempts end, state is kept); give them and the
        // services a moment, then go: whatever did not finish resumes on the next start.
        services.finish(std::time::Duration::from_secs(20)).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(exit::PASSED)
}

pub fn token_create(home: &Path, scope: &str, name: Option<String>) -> anyhow::Result<u8> {
    let scope = Scope::parse(scope).ok_or_else(|| {
        InvalidInput(format!("--scope {scope:?}: expected admin, submit or read"))
    })?;
    let store = epics::store(home)?;
    let name = match name {
        Some(n) => {
            fleet_core::validate_id(&n)
                .map_err(|e| InvalidInput(format!("token name {n:?}: {e}")))?;
            n
        }
        None => format!("{}-{}", scope.as_str(), store.tokens()?.len() + 1),
    };
    let secret = fleet_server::create_token(&*store, &name, scope).map_err(|e| match e {
        fleet_store::StoreError::Exists(..) => {
            anyhow::Error::from(InvalidInput(format!("a token named {name:?} exists")))
        }
        other => other.into(),
    })?;
    eprintln!(
        "created token {name:?} with scope {}; it is shown once, store it now:",
        scope.as_str()
    );
    println!("{secret}");
    Ok(exit::PASSED)
}

pub fn token_ls(home: &Path, json_out: bool) -> anyhow::Result<u8> {
    let store = epics::store(home)?;
    let tokens = store.tokens()?;
    if json_out {
        let list: Vec<_> = tokens
            .iter()
            .map(|t| json!({"name": t.name, "scope": t.scope, "created_at": fleet_engine::rfc3339(t.created_at),
                            "revoked_at": t.revoked_at.map(fleet_engine::rfc3339)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::PASSED);
    }
    println!("{:<24} {:<8} {:<26} STATE", "NAME", "SCOPE", "CREATED");
    for t in tokens {
        let state = match t.revoked_at {
            Some(at) => format!("revoked {}", fleet_engine::rfc3339(at)),
            None => "live".into(),
        };
        println!(
            "{:<24} {:<8} {:<26} {state}",
            t.name,
            t.scope,
            fleet_engine::rfc3339(t.created_at)
        );
    }
    Ok(exit::PASSED)
}

pub fn token_revoke(home: &Path, name: &str) -> anyhow::Result<u8> {
    let store = epics::store(home)?;
    if !store.revoke_token(name, fleet_engine::now_ms())? {
        return Err(InvalidInput(format!("no live token named {name:?}")).into());
    }
    println!("revoked {name}");
    Ok(exit::PASSED)
}

pub fn mcp(home: &Path) -> anyhow::Result<u8> {
    // stdout is the protocol: nothing else may be printed there.
    let pipeline = Arc::new(epics::pipeline(home, true)?);
    crate::runtime()?
        .block_on(fleet_server::mcp::serve_stdio(pipeline))
        .map_err(|e| anyhow::anyhow!("mcp: {e}"))?;
    Ok(exit::PASSED)
}
