//! The epic driver holds the lease `epic/<id>` in the store while it works. When another
//! process takes the lease over (as one may once the driver's renewals failed past its TTL),
//! the driver stops: the stage run going is stopped (its agent killed, the run interrupted for
//! the new holder to resume), nothing more of the epic is written, and an error and an event
//! say why.

use fleet_pipeline::{NewProject, Pipeline, PipelineError, StateDir};
use fleet_store::{SqliteStore, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Polls `cond` until it holds; panics after `within`.
fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The researcher says it started (with its pid), then works for a minute.
const AGENT: &str = r##"echo $$ > "$DIR/agent.pid"
sleep 60
mkdir -p .fleet-out && echo "# context" > .fleet-out/context.md
"##;

/// A pipeline over a fresh instance whose one agent profile runs [`AGENT`] in every role, and
/// a registered project `shop`.
fn pipeline(tmp: &Path) -> Arc<Pipeline> {
    let (home, repo) = (tmp.join("instance"), tmp.join("shop"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# shop\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(tmp.join("agent.sh"), AGENT).unwrap();
    let yaml = format!(
        "agents:\n  sh:\n    cli: command\n    command: \"sh {}\"\n    \
         roles: [researcher, planner, developer, reviewer]\n    env: {{ DIR: \"{}\" }}\n",
        tmp.join("agent.sh").display(),
        tmp.display()
    );
    let instance = fleet_config::parse_instance(&home.join("fleet.yaml"), &yaml).unwrap();
    let layout = StateDir::new(home.join(".fleet"));
    std::fs::create_dir_all(layout.root()).unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &layout.root().join("fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap(),
    );
    let pipeline = Pipeline {
        layout,
        store,
        instance,
        library: fleet_config::Library::load(None).unwrap(),
        fleet_exe: "fleet".into(),
        limits: fleet_core::epic::Limits::default(),
        concurrency: 1,
        observer: None,
        shutdown: None,
    };
    pipeline
        .add_project(NewProject {
            name: "shop".into(),
            repo: repo.display().to_string(),
            delivery: "branch".into(),
            ..NewProject::default()
        })
        .unwrap();
    Arc::new(pipeline)
}

#[test]
fn a_driver_that_loses_its_epics_lease_stops_its_stage_run_and_writes_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = pipeline(tmp.path());
    let store = pipeline.store.clone();
    let id = pipeline.submit("shop", "add a greeting").unwrap().id;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let drive = {
        let (p, id) = (pipeline.clone(), id.clone());
        rt.spawn(async move { p.drive(&id).await })
    };
    let pid_file = tmp.path().join("agent.pid");
    wait_for(Duration::from_secs(60), "the researcher to start", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty())
    });
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let name = format!("epic/{id}");
    let ours = store
        .lease(&name)
        .unwrap()
        .expect("the driver holds the lease");
    let before = store.epic(&id).unwrap().unwrap();
    assert_eq!(before.stages.last().unwrap().state, "running");

    // Another replica takes the lease over, as after this driver's lease expired.
    store.release_lease(&name, &ours.holder).unwrap();
    assert!(
        store
            .acquire_lease(&name, "replica-b:1:1:0", Duration::from_secs(30))
            .unwrap()
    );
    let ended = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), drive).await })
        .expect("the driver stops once its lease is lost, not when its stage ends")
        .unwrap();
    match ended {
        Err(PipelineError::LeaseLost(e, why)) => {
            assert_eq!(e, id);
            assert!(why.contains(&format!("lost the lease {name}")), "{why}");
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }

    // Nothing more of the epic was written: the new holder finds it as it was.
    let after = store.epic(&id).unwrap().unwrap();
    assert_eq!(after.updated_at, before.updated_at);
    assert_eq!(after.stages, before.stages);
    // The stage run was stopped, for the new holder to resume, and its agent is gone.
    let runs = store.runs().unwrap();
    let research = runs
        .iter()
        .find(|r| r.name.starts_with(&format!("{id}-research")))
        .unwrap_or_else(|| panic!("no research run in {runs:?}"));
    assert_eq!(research.state, "interrupted");
    wait_for(Duration::from_secs(10), "the agent to be killed", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    // Why, for whoever watches the events; and the lease stays the new holder's.
    let events = store.events(Some(&id), 0, 1000).unwrap();
    let lost = events
        .iter()
        .find(|e| e.kind == "epic.lease_lost")
        .expect("an epic.lease_lost event");
    assert_eq!(lost.data["holder"], ours.holder.as_str());
    assert_eq!(
        store.lease(&name).unwrap().map(|l| l.holder).as_deref(),
        Some("replica-b:1:1:0")
    );
}
