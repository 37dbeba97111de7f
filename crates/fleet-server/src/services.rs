//! The background services of `fleet serve`: the driver (works on every epic that needs
//! work, a few at a time, each on its own thread so a stage's engine run never blocks the
//! API), and the pull-request watcher (review comments on a delivered PR become the next
//! cycle's fix tasks).
//!
//! Nothing here holds state a crash could lose: which epics need work is read from the store
//! each round, and a restarted fleet resumes each epic's stage where it stopped.

use crate::Fleet;
use crate::report::WORKING;
use fleet_store::EpicQuery;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do once the driver has finished working on an epic (it needs a person, or it
/// ended): called on the drive's thread, after the epic's lease was let go.
#[derive(Clone)]
pub struct AfterEpic(pub Arc<dyn Fn(&fleet_store::EpicRow) + Send + Sync>);

impl std::fmt::Debug for AfterEpic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterEpic")
    }
}

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Epics worked on at once.
    pub epics: usize,
    /// How often to look for work written by other processes (CLI, MCP on stdio).
    pub scan: Duration,
    /// How often delivered pull requests are checked for review comments.
    pub pr_poll: Duration,
    /// Called after each drive of an epic that stopped (`review_runs:`, the framework review).
    pub after_epic: Option<AfterEpic>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            epics: 2,
            scan: Duration::from_secs(2),
            pr_poll: Duration::from_secs(60),
            after_epic: None,
        }
    }
}

/// Epics being driven now, and when a failed drive may be retried.
#[derive(Default)]
struct Driving {
    running: BTreeSet<String>,
    /// Epic -> (not before, ms; failures so far).
    backoff: BTreeMap<String, (i64, u32)>,
}

/// Drives every epic that needs work until `stop` is raised. Returns when it is.
async fn driver(
    fleet: Fleet,
    opts: ServiceOptions,
    state: Arc<Mutex<Driving>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = stop;
    loop {
        if *stop.borrow() {
            return;
        }
        let store = fleet.store().clone();
        let candidates = fleet_store::pg::spawn_blocking(move || {
            store.epic_page(&EpicQuery {
                states: WORKING.iter().map(|s| s.to_string()).collect(),
                limit: 1000,
                ..EpicQuery::default()
            })
        })
        .await;
        if let Ok(Ok(page)) = candidates {
            // Oldest first: a person waiting longest is served first.
            for epic in page.epics.iter().rev() {
                let now = fleet_core::clock::now_ms();
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                if st.running.len() >= opts.epics {
                    break;
                }
                if st.running.contains(&epic.id)
                    || st.backoff.get(&epic.id).is_some_and(|(t, _)| *t > now)
                {
                    continue;
                }
                st.running.insert(epic.id.clone());
                drop(st);
                spawn_drive(
                    fleet.clone(),
                    state.clone(),
                    epic.id.clone(),
                    opts.after_epic.clone(),
                );
            }
        }
        tokio::select! {
            _ = fleet.work.notified() => {}
            _ = tokio::time::sleep(opts.scan) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Drives one epic on its own thread and runtime: a stage's engine run is long and does
/// blocking IO; the API must stay responsive meanwhile.
fn spawn_drive(
    fleet: Fleet,
    state: Arc<Mutex<Driving>>,
    id: String,
    after_epic: Option<AfterEpic>,
) {
    /// Whatever happens on the thread (even a panic), the epic leaves `running` and the
    /// driver looks again.
    struct Done {
        fleet: Fleet,
        state: Arc<Mutex<Driving>>,
        id: String,
        /// How long to leave the epic alone; a panic leaves the default.
        wait_ms: Option<i64>,
    }
    impl Drop for Done {
        fn drop(&mut self) {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running.remove(&self.id);
            match self.wait_ms {
                Some(0) => {
                    st.backoff.remove(&self.id);
                }
                wait => {
                    let (_, n) = st.backoff.get(&self.id).copied().unwrap_or((0, 0));
                    let wait = wait.unwrap_or(5_000i64 << n.min(6));
                    st.backoff
                        .insert(self.id.clone(), (fleet_core::clock::now_ms() + wait, n + 1));
                }
            }
            drop(st);
            self.fleet.work.notify_one();
        }
    }
    let mut done = Done {
        fleet: fleet.clone(),
        state: state.clone(),
        id: id.clone(),
        wait_ms: None,
    };
    let spawned = std::thread::Builder::new()
        .name(format!("drive-{id}"))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(fleet.pipeline.try_drive(&id))
                        .map_err(|e| e.to_string())
                });
            let stopped = match &result {
                Ok(Some(epic)) => Some(epic.clone()),
                _ => None,
            };
            done.wait_ms = Some(match result {
                Ok(Some(_)) => 0,
                // Another process is working on it: look again in a while.
                Ok(None) => 5_000,
                Err(e) => {
                    // Retried later, backing off: a broken repository must not spin.
                    let st = done.state.lock().unwrap_or_else(|e| e.into_inner());
                    let n = st.backoff.get(&id).map(|b| b.1).unwrap_or(0);
                    let wait = 5_000i64 << n.min(6);
                    eprintln!("fleet serve: epic {id}: {e} (retrying in {}s)", wait / 1000);
                    wait
                }
            });
            drop(done); // releases the epic (see `Done`)
            // Not while the server is stopping: the drive was cut short, nothing ended.
            if let (Some(after), Some(epic)) = (after_epic, stopped)
                && !*fleet.stop.borrow()
            {
                (after.0)(&epic);
            }
        });
    if let Err(e) = spawned {
        // The closure (and its `Done`) was dropped: the epic is released and backed off.
        eprintln!("fleet serve: cannot start a thread for an epic: {e}");
    }
}

/// Checks the pull requests of epics awaiting acceptance: a merged one ends its epic as done,
/// a closed one as cancelled; new comments are triaged and only change requests start rework
/// (`Pipeline::poll_review_comments`), so bots and approvals never loop.
pub async fn pr_watcher(
    fleet: Fleet,
    opts: ServiceOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = stop;
    loop {
        let store = fleet.store().clone();
        let waiting = fleet_store::pg::spawn_blocking(move || {
            store.epic_page(&EpicQuery {
                states: vec!["awaiting_acceptance".into()],
                limit: 1000,
                ..EpicQuery::default()
            })
        })
        .await;
        if let Ok(Ok(page)) = waiting {
            for epic in page.epics {
                if *stop.borrow() {
                    return;
                }
                match fleet.pipeline.poll_review_comments(&epic.id).await {
                    Ok(n) if n > 0 => fleet.work.notify_one(),
                    Ok(_) => {}
                    Err(e) => eprintln!(
                        "fleet serve: epic {}: polling review comments: {e}",
                        epic.id
                    ),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.pr_poll) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs the configured audits when their slots come (`fleet_pipeline::audit::tick`, once per
/// slot however long the server was down); their findings become requests for the driver.
pub async fn auditor(fleet: Fleet, stop: tokio::sync::watch::Receiver<bool>) {
    let mut stop = stop;
    loop {
        match fleet_pipeline::audit::tick(&fleet.pipeline, fleet_pipeline::audit::local_now()).await
        {
            Ok(ran)
                if ran
                    .iter()
                    .any(|r| r.findings.iter().any(|f| f.disposition == "submitted")) =>
            {
                fleet.work.notify_one()
            }
            Ok(_) => {}
            Err(e) => eprintln!("fleet serve: audits: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The running services of `fleet serve`.
pub struct Services {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    driving: Arc<Mutex<Driving>>,
}

impl Services {
    /// After [`Fleet::stop`] was raised: waits up to `grace` for the services to end and
    /// for the epics being driven to stop.
    pub async fn finish(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for t in self.tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        while tokio::time::Instant::now() < deadline {
            if self
                .driving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .running
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self
            .driving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .len();
        if left > 0 {
            eprintln!("fleet serve: {left} epic(s) still stopping; they resume on the next start");
        }
    }
}

/// Starts every service of `fleet serve`; each ends when [`Fleet::stop`] is raised.
pub fn start(fleet: Fleet, opts: ServiceOptions) -> Result<Services, String> {
    let stop = fleet.stop.subscribe();
    // Configuration errors (a missing secret) stop the start, before anything runs.
    let channels = crate::alerts::Channels::from_config(&fleet.pipeline.instance)?;
    let bot = crate::alerts::bot_from_config(&fleet)?;
    let driving = Arc::new(Mutex::new(Driving::default()));
    let mut tasks = vec![tokio::spawn(crate::store_watch::watch(
        fleet.clone(),
        stop.clone(),
    ))];
    // `epics: 0` pauses the fleet: the API answers, nothing is worked on.
    if opts.epics > 0 {
        tasks.push(tokio::spawn(driver(
            fleet.clone(),
            opts.clone(),
            driving.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(pr_watcher(fleet.clone(), opts, stop.clone())));
        if !fleet.pipeline.instance.audits.is_empty() {
            tasks.push(tokio::spawn(auditor(fleet.clone(), stop.clone())));
        }
    }
    if !channels.list.is_empty() {
        tasks.push(tokio::spawn(crate::alerts::notifier(
            fleet.clone(),
            channels,
            stop.clone(),
        )));
    }
    if let Some((api, cfg)) = bot {
        tasks.push(tokio::spawn(crate::alerts::bot(fleet, api, cfg, stop)));
    }
    Ok(Services { tasks, driving })
}
