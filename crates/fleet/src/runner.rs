//! `fleet runner` (a worker claiming tasks from the shared store) and `fleet run FILE
//! --on-runners` (a run handed to runners instead of run here): the CLI side of
//! `fleet_engine::runner` and `fleet_engine::remote`.

use crate::{InvalidInput, exit, state_store};
use fleet_engine::layout::StateDir;
use fleet_engine::remote;
use fleet_engine::runner::{AgentSetup, RunnerOptions, serve};
use fleet_store::{Durability, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunnerArgs {
    /// The shared store (`postgres://…`); default: the instance's fleet.yaml `store:`.
    #[arg(long, env = "FLEET_STORE")]
    store: Option<String>,
    /// This runner's own directory for task workspaces and logs (never shared).
    #[arg(long, value_name = "DIR")]
    workspace: PathBuf,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// A label tasks may need (repeatable), advertised as `label:<l>`.
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Seconds a claim lives without a heartbeat: a dead runner's task is redone after this.
    #[arg(long, default_value_t = 30.0)]
    lease_ttl: f64,
    /// Seconds a stopping runner lets running tasks finish before handing them back.
    #[arg(long, default_value_t = 30.0)]
    grace: f64,
    /// Seconds between SIGTERM and SIGKILL when a task's processes are ended.
    #[arg(long, default_value_t = 5.0)]
    kill_grace: f64,
    /// After a task shorter than a fifth of this, the next one is claimed while the current
    /// one runs; seconds it may wait for its turn before it is handed back. 0: never.
    #[arg(long, default_value_t = 0.25)]
    claim_ahead: f64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The store a runner or a run on runners uses: `--store`, else the instance's.
fn open_shared(home: Option<&Path>, url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = url {
        return fleet_store::open(url, Durability::Process)
            .map_err(|e| anyhow::Error::new(e).context("cannot open --store"));
    }
    let home = home.map(Path::to_path_buf).ok_or_else(|| {
        InvalidInput(
            "fleet runner needs --store postgres://… or an instance (FLEET_HOME, --home) whose \
             fleet.yaml sets `store:`"
                .into(),
        )
    })?;
    state_store::open(&StateDir::new(home.join(".fleet")), false)
}

/// Agent CLIs installed here (their binaries on PATH).
fn installed_clis() -> Vec<String> {
    fleet_agents::cli::all()
        .into_iter()
        .filter(|a| crate::agents::on_path(a.binary()).is_some())
        .map(|a| a.name().to_string())
        .collect()
}

/// `fleet runner`: claims and does tasks until a stop signal, then drains.
pub fn runner(home: Option<PathBuf>, args: RunnerArgs) -> anyhow::Result<u8> {
    let stop = fleet_engine::signals::stop_watch();
    let home = crate::find_home(home, &std::env::current_dir()?);
    // Refused before opening: opening a SQLite URL would leave a new file behind.
    if let Some(url) = &args.store
        && let Ok(fleet_store::StoreUrl::Sqlite(_)) = fleet_store::StoreUrl::parse(url)
    {
        eprintln!(
            "fleet: error: --store {url}: runners need a store shared by several machines \
             (`postgres://…`); a SQLite file has no task queue"
        );
        return Ok(exit::UNAVAILABLE);
    }
    let store = open_shared(home.as_deref(), args.store.as_deref())?;
    if store.queue().is_none() {
        eprintln!("fleet: error: {}", remote::NO_QUEUE);
        return Ok(exit::UNAVAILABLE);
    }
    let workspace = std::path::absolute(&args.workspace)
        .map_err(|e| InvalidInput(format!("--workspace {}: {e}", args.workspace.display())))?;
    std::fs::create_dir_all(&workspace)
        .map_err(|e| InvalidInput(format!("--workspace {}: {e}", workspace.display())))?;
    // Held until this function returns (or the process dies): the root is this runner's alone.
    let held = fleet_engine::runner_workspace::hold(&workspace)?;
    // The instance's profiles and accounts play agent tasks; with no fleet.yaml, none.
    let clis = installed_clis();
    let instance = crate::load_instance(home.as_deref())?;
    // Agents get the instance's `fleet mcp` (and retrospectives its memory) when it works on
    // the store this runner does: its fleet.yaml's, or the same `--store`.
    let same_store = match (&args.store, &instance.store) {
        (None, _) => true,
        (Some(url), fleet_config::StoreConfig::Postgres(own)) => url == own,
        (Some(_), fleet_config::StoreConfig::Sqlite) => false,
    };
    let shared_home = home.as_deref().filter(|_| same_store);
    if home.is_some() && !same_store && !instance.agents.is_empty() {
        eprintln!(
            "fleet runner: agents get no Fleet MCP tools: the instance's fleet.yaml names another store than --store"
        );
    }
    let agents = (!instance.agents.is_empty()).then(|| {
        let mut setup = AgentSetup::new(instance, &clis);
        setup.mcp = shared_home.and_then(|h| crate::mcp_server(h).ok());
        setup.memory_state = shared_home.map(|h| h.join(".fleet"));
        setup
    });
    let opts = RunnerOptions {
        workspace,
        concurrency: args.concurrency.max(1),
        labels: args.labels,
        clis,
        agents,
        lease_ttl: secs(args.lease_ttl).max(Duration::from_millis(300)),
        grace: secs(args.grace),
        kill_grace: secs(args.kill_grace),
        idle_poll: Duration::from_secs(1),
        claim_ahead: secs(args.claim_ahead),
    };
    println!(
        "fleet runner: pid {}, concurrency {}, offers {}, workspace {}",
        std::process::id(),
        opts.concurrency,
        fleet_engine::runner::offers(&opts.clis, &opts.labels, opts.agents.as_ref()).join(" "),
        opts.workspace.display()
    );
    if let Some(reason) = &held.unlocked {
        println!(
            "fleet runner: cannot lock the workspace ({reason}): what a killed runner left in it \
             is not removed, and a second runner given it would not be refused"
        );
    }
    for what in &held.not_removed {
        println!("fleet runner: could not remove what a runner that died left: {what}");
    }
    if held.leftovers > 0 {
        println!(
            "fleet runner: removed {} task {} a runner that died left in {}",
            held.leftovers,
            if held.leftovers == 1 {
                "directory"
            } else {
                "directories"
            },
            opts.workspace.join("tasks").display()
        );
    }
    let rt = crate::runtime()?;
    let tally = rt.block_on(serve(store, opts, stop))?;
    drop(held);
    println!(
        "fleet runner: stopped: {} done, {} failed, {} handed back, {} lost to other runners, {} cancelled",
        tally.done, tally.failed, tally.handed_back, tally.lost, tally.cancelled
    );
    Ok(exit::PASSED)
}

/// `fleet run FILE --on-runners`: the run's tasks are queued for runners, which clone the
/// repository's `origin`; this waits for them and reports like a run.
pub fn run_on_runners(
    store: Arc<dyn Store>,
    plan: &fleet_engine::Plan,
    repo: &Path,
    base_sha: &str,
    quiet: bool,
    redactor: &fleet_secrets::Redactor,
) -> anyhow::Result<u8> {
    if store.queue().is_none() {
        eprintln!("fleet: error: {}", remote::NO_QUEUE);
        return Ok(exit::UNAVAILABLE);
    }
    let stop = fleet_engine::signals::stop_watch();
    let out = fleet_git::command(repo)
        .args(["remote", "get-url", "origin"])
        .output()?;
    let origin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || origin.is_empty() {
        return Err(InvalidInput(format!(
            "a run on runners needs the repository's `origin` remote (runners clone it): {} has none",
            repo.display()
        ))
        .into());
    }
    let sub = remote::submit(&*store, plan, repo, &origin, base_sha, redactor)?;
    if !quiet {
        println!(
            "run {}: {} queued for runners; they land on {} at {}",
            sub.run_id,
            match sub.tasks {
                1 => "1 task".to_string(),
                n => format!("{n} tasks"),
            },
            sub.integration,
            remote::without_password(&origin)
        );
    }
    // Said at once (on stderr, even with --quiet): a task nobody can play would otherwise
    // wait without a word until a runner that offers what it needs starts.
    for (task, needs) in remote::unplayable(&*store, &sub.needs)? {
        eprintln!(
            "fleet: task {task} needs {}, which no live runner offers; it waits until one does \
             (fleet runners lists them)",
            needs.join(" and ")
        );
    }
    wait_for(&*store, &sub.run_id, stop)
}

/// `fleet runners`: the live runners of the shared store, what each offers.
pub fn list(home: Option<PathBuf>, store_url: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let home = crate::find_home(home, &std::env::current_dir()?);
    let store = open_shared(home.as_deref(), store_url)?;
    let Some(queue) = store.queue() else {
        eprintln!("fleet: error: {}", remote::NO_QUEUE);
        return Ok(exit::UNAVAILABLE);
    };
    let runners = queue.runners()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runners)?);
    } else if runners.is_empty() {
        println!("no live runner (start one with fleet runner --workspace DIR)");
    } else {
        for r in &runners {
            println!(
                "{}  concurrency {}  offers {}",
                r.name,
                r.concurrency,
                r.offers.join(" ")
            );
        }
    }
    Ok(exit::PASSED)
}

/// Whether `run_id` was queued for runners (`fleet run --resume` then waits for it again).
pub fn is_on_runners(store: &dyn Store, run_id: &str) -> bool {
    store
        .queue()
        .and_then(|q| q.queued(run_id).ok())
        .is_some_and(|rows| !rows.is_empty())
}

/// `fleet run --resume RUN` of a run on runners: nothing to redo here (the runners have it),
/// so this waits for its end again and reports it — at once if it ended meanwhile.
pub fn resume_on_runners(store: &dyn Store, run_id: &str) -> anyhow::Result<u8> {
    wait_for(store, run_id, fleet_engine::signals::stop_watch())
}

/// Waits for the run's end (or a stop signal) and reports it.
fn wait_for(
    store: &dyn Store,
    run_id: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<u8> {
    let end = remote::wait(store, run_id, Duration::from_secs(1), || *stop.borrow())?;
    let Some(end) = end else {
        println!(
            "run {run_id}: stopped waiting; the runners go on with it \
             (`fleet run --resume {run_id}` waits again)"
        );
        return Ok(exit::INTERRUPTED);
    };
    if end.cancelled > 0 {
        println!(
            "run {} cancelled: {} done, {} cancelled",
            run_id, end.done, end.cancelled
        );
        return Ok(exit::INTERRUPTED);
    }
    for (task, reason) in &end.failed {
        println!("  failed {task}: {reason}");
    }
    println!(
        "run {} {}: {} done, {} failed, {} skipped",
        run_id,
        if end.passed() { "passed" } else { "failed" },
        end.done,
        end.failed.len(),
        end.skipped
    );
    Ok(if end.passed() {
        exit::PASSED
    } else {
        exit::FAILED
    })
}
