//! People are told when work needs them: the notifier turns events into notifications (an
//! epic awaiting acceptance or failed, an account out of budget or with rejected credentials)
//! and the Telegram bot takes requests and decisions from allow-listed chats.
//!
//! The notifier follows the event log with a durable cursor (`notify.cursor` in the store):
//! a restarted fleet goes on from the first event it had not handled, and records every
//! delivery as a `notification.sent` (or `notification.failed`) event.

use crate::Fleet;
use crate::report::WORKING;
use fleet_notify::{
    BotBackend, Channel, Event as Alert, Notification, Notifier, Retry, TelegramApi,
};
use fleet_pipeline::EpicData;
use fleet_store::{Batch, EpicQuery, Event, NewEvent, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const CURSOR: &str = "notify.cursor";

/// The channels of fleet.yaml's `notifications:`, secrets read from the environment.
pub struct Channels {
    pub list: Vec<(fleet_config::NotifySpec, Channel)>,
    pub retry: Retry,
}

impl Channels {
    pub fn from_config(cfg: &fleet_config::InstanceConfig) -> Result<Channels, String> {
        let list = cfg
            .notifications
            .iter()
            .map(|spec| {
                fleet_notify::resolve(spec, |k| std::env::var(k).ok()).map(|c| (spec.clone(), c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Channels {
            list,
            retry: Retry::from(cfg.notify_retry),
        })
    }
}

/// The epic an event belongs to: its own events, or those of one of its stage runs.
fn epic_of(
    fleet: &Fleet,
    e: &Event,
) -> Result<Option<(fleet_store::EpicRow, EpicData)>, StoreError> {
    let store = fleet.store();
    let Some(id) = e.run_id.split('-').next() else {
        return Ok(None);
    };
    let Some(epic) = store.epic(id)? else {
        return Ok(None);
    };
    // Its own events, or those of one of its stage runs (named `<epic>-<stage>-…`).
    let ours = epic.id == e.run_id || e.run_id.starts_with(&format!("{}-", epic.id));
    if !ours {
        return Ok(None);
    }
    let data = serde_json::from_value(epic.data.clone()).unwrap_or_default();
    Ok(Some((epic, data)))
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

/// What to tell people about `e`, if anything. A store error is returned, not taken for
/// "nothing to tell": the notifier then tries the event again.
pub fn notification_for(fleet: &Fleet, e: &Event) -> Result<Option<Notification>, StoreError> {
    let base = &fleet.public_url;
    let epic_level = e.task.as_deref() == Some(e.run_id.as_str());
    match e.kind.as_str() {
        "task.awaiting_acceptance" if epic_level => {
            let Some((epic, data)) = epic_of(fleet, e)? else {
                return Ok(None);
            };
            let mut n = Notification::new(
                Alert::AwaitingAcceptance,
                format!("{} is ready for acceptance: {}", epic.id, first_line(&epic.request, 80)),
                format!(
                    "Project {}, cycle {}. Accept it, or reject it with a comment saying what to change \
                     (fleet task accept {id} / fleet task reject {id} --comment …).",
                    epic.project,
                    epic.cycle,
                    id = epic.id
                ),
            )
            .with_task(base, &epic.id);
            n.project = Some(epic.project.clone());
            n.branch = Some(epic.branch.clone());
            let delivery = data.delivery.unwrap_or_default();
            match delivery.kind.as_str() {
                "pull_request" => n.pr_url = delivery.url,
                "deploy" => n.run_hint = delivery.url.map(|u| format!("open {u}")),
                _ => {}
            }
            if n.run_hint.is_none() {
                n.run_hint = Some(Notification::checkout_hint(&epic.branch));
            }
            Ok(Some(n))
        }
        "task.blocked" if epic_level => {
            let Some((epic, _)) = epic_of(fleet, e)? else {
                return Ok(None);
            };
            let question = e.data["question"]
                .as_str()
                .unwrap_or("no question recorded");
            let mut n = Notification::new(
                Alert::Blocked,
                format!("{} needs you: {}", epic.id, first_line(&epic.request, 80)),
                format!(
                    "{question}\nAnswer: fleet task answer {id} \"…\" (or /answer {id} … to the \
                     bot) — or fix it, then: fleet task retry {id} (or /retry {id})",
                    id = epic.id
                ),
            )
            .with_task(base, &epic.id);
            n.project = Some(epic.project);
            n.branch = Some(epic.branch);
            Ok(Some(n))
        }
        "pr.merged" | "pr.closed" if epic_level => {
            let Some((epic, _)) = epic_of(fleet, e)? else {
                return Ok(None);
            };
            let merged = e.kind == "pr.merged";
            let (alert, what, outcome) = if merged {
                (Alert::PrMerged, "was merged", "The epic is done.")
            } else {
                (
                    Alert::PrClosed,
                    "was closed without merging",
                    "The epic is cancelled.",
                )
            };
            let mut n = Notification::new(
                alert,
                format!(
                    "{}: its pull request {what}: {}",
                    epic.id,
                    first_line(&epic.request, 80)
                ),
                format!("Project {}. {outcome}", epic.project),
            )
            .with_task(base, &epic.id);
            n.pr_url = e.data["url"].as_str().map(str::to_string);
            n.project = Some(epic.project);
            n.branch = Some(epic.branch);
            Ok(Some(n))
        }
        "task.failed" if epic_level => {
            let Some((epic, _)) = epic_of(fleet, e)? else {
                return Ok(None);
            };
            let reason = e.data["reason"].as_str().unwrap_or("no reason recorded");
            let mut n = Notification::new(
                Alert::Failed,
                format!("{} failed: {}", epic.id, first_line(&epic.request, 80)),
                format!("Why: {}", first_line(reason, 400)),
            )
            .with_task(base, &epic.id);
            n.project = Some(epic.project);
            n.branch = Some(epic.branch);
            Ok(Some(n))
        }
        "budget.exhausted" => {
            let account = e.data["account"].as_str().unwrap_or("?");
            let mut n = Notification::new(
                Alert::BudgetExhausted,
                format!("Account {account} spent its daily budget"),
                format!(
                    "Spent {} today. Tasks needing it swap to another account or wait \
                     for the next budget day (fleet budget).",
                    spend_words(&e.data)
                ),
            );
            if let Some((epic, _)) = epic_of(fleet, e)? {
                n = n.with_task(base, &epic.id);
                n.project = Some(epic.project);
            }
            Ok(Some(n))
        }
        "account.disabled" => {
            let account = e.data["account"].as_str().unwrap_or("?");
            let mut n = Notification::new(
                Alert::AuthFailed,
                format!("Account {account} was disabled: its credentials were rejected"),
                "Fix the account's secret in the environment and restart fleet; tasks swap to \
                 other accounts meanwhile (fleet agents doctor)."
                    .to_string(),
            );
            if let Some((epic, _)) = epic_of(fleet, e)? {
                n = n.with_task(base, &epic.id);
                n.project = Some(epic.project);
            }
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

/// Follows the event log and sends notifications until `stop` is raised.
pub async fn notifier(
    fleet: Fleet,
    channels: Channels,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let notifier = Notifier::new(channels.retry);
    let store = fleet.store().clone();
    let retry_pause = Duration::from_secs(2);
    // Where it left off; on the very first start, from now on (an old log is history, not
    // news). A store that cannot answer is asked again: guessing could skip or repeat.
    let mut cursor: u64 = loop {
        let s = store.clone();
        match fleet_store::pg::spawn_blocking(move || -> Result<u64, StoreError> {
            match s.meta(CURSOR)? {
                Some(v) => v.parse().map_err(|_| {
                    StoreError::Corrupt(format!("{CURSOR} is not a sequence number: {v:?}"))
                }),
                None => {
                    let now = s.newest_seq()?;
                    s.set_meta(CURSOR, &now.to_string())?;
                    Ok(now)
                }
            }
        })
        .await
        {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => eprintln!("fleet serve: notifications: {e}; trying again"),
            Err(e) => eprintln!("fleet serve: notifications: {e}; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_pause) => {}
            _ = stop.changed() => return,
        }
    };
    let mut wake = fleet.events.subscribe();
    loop {
        wake.borrow_and_update();
        let s = store.clone();
        let events =
            match fleet_store::pg::spawn_blocking(move || s.events(None, cursor, 200)).await {
                Ok(Ok(ev)) => ev,
                _ => Vec::new(),
            };
        let mut failed = false;
        let mut moved = false;
        for e in &events {
            let f = fleet.clone();
            let e2 = e.clone();
            let note =
                match fleet_store::pg::spawn_blocking(move || notification_for(&f, &e2)).await {
                    Ok(Ok(n)) => n,
                    Ok(Err(err)) => {
                        eprintln!(
                            "fleet serve: notifications: event {}: {err}; trying again",
                            e.seq
                        );
                        failed = true;
                        break;
                    }
                    Err(err) => {
                        eprintln!("fleet serve: notifications: event {}: {err}", e.seq);
                        None
                    }
                };
            if let Some(n) = note {
                let targets: Vec<&Channel> = channels
                    .list
                    .iter()
                    .filter(|(spec, _)| spec.wants(n.event.as_str()))
                    .map(|(_, c)| c)
                    .collect();
                let results = notifier.send_all(targets, &n).await;
                let records: Vec<NewEvent> = results
                    .into_iter()
                    .map(|(channel, r)| {
                        let (kind, data) = match r {
                            Ok(sent) => (
                                "notification.sent",
                                json!({"channel": channel.name(), "event": n.event.as_str(),
                                       "attempts": sent.attempts, "about": e.seq}),
                            ),
                            Err(err) => (
                                "notification.failed",
                                json!({"channel": channel.name(), "event": n.event.as_str(),
                                       "attempts": err.attempts, "error": err.message, "about": e.seq}),
                            ),
                        };
                        NewEvent {
                            at: fleet_core::clock::now_ms(),
                            run_id: e.run_id.clone(),
                            task: e.task.clone(),
                            attempt: e.attempt,
                            kind: kind.into(),
                            data,
                        }
                    })
                    .collect();
                // The cursor moves past this event right after sending: a crash in between
                // repeats at most this one notification.
                cursor = e.seq;
                let s = store.clone();
                let c = cursor.to_string();
                if let Ok(Ok(seqs)) = fleet_store::pg::spawn_blocking(move || {
                    s.set_meta(CURSOR, &c)?;
                    s.commit(&Batch {
                        events: records,
                        ..Batch::default()
                    })
                })
                .await
                    && let Some(last) = seqs.last()
                {
                    fleet.published(*last);
                }
                moved = false;
            } else {
                cursor = e.seq;
                moved = true;
            }
        }
        if moved {
            // Events that told nobody anything: the cursor is saved once per batch.
            let s = store.clone();
            let c = cursor.to_string();
            let _ = fleet_store::pg::spawn_blocking(move || s.set_meta(CURSOR, &c)).await;
        }
        if events.len() == 200 && !failed {
            continue;
        }
        tokio::select! {
            _ = wake.changed(), if !failed => {}
            _ = tokio::time::sleep(if failed { retry_pause } else { Duration::from_secs(1) }) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The Telegram bot's view of the fleet.
struct BotOverFleet(Fleet);

impl BotBackend for BotOverFleet {
    fn submit(&self, project: &str, text: &str) -> Result<String, String> {
        let epic = self
            .0
            .pipeline
            .submit(project, text)
            .map_err(|e| e.to_string())?;
        self.0.work.notify_one();
        Ok(epic.id)
    }

    fn status(&self) -> String {
        let store = self.0.store();
        let page = |states: &[&str]| {
            store
                .epic_page(&EpicQuery {
                    states: states.iter().map(|s| s.to_string()).collect(),
                    limit: 10,
                    ..EpicQuery::default()
                })
                .map(|p| {
                    let list: Vec<String> = p
                        .epics
                        .iter()
                        .map(|e| format!("{} ({}) {}", e.id, e.state, first_line(&e.request, 60)))
                        .collect();
                    (p.total, list)
                })
        };
        match (page(WORKING), page(&["awaiting_acceptance"])) {
            (Ok((nw, work)), Ok((na, ready))) => {
                let mut out = format!("In work: {nw}\n");
                for l in work {
                    out.push_str(&format!("  {l}\n"));
                }
                out.push_str(&format!("Ready for acceptance: {na}\n"));
                for l in ready {
                    out.push_str(&format!("  {l}\n"));
                }
                out.trim_end().to_string()
            }
            (Err(e), _) | (_, Err(e)) => format!("status unavailable: {e}"),
        }
    }

    fn accept(&self, id: &str) -> Result<String, String> {
        let epic = self.0.pipeline.accept(id).map_err(|e| e.to_string())?;
        Ok(format!("{} accepted: {}", epic.id, epic.state))
    }

    fn reject(&self, id: &str, reason: &str) -> Result<String, String> {
        let epic = self
            .0
            .pipeline
            .reject(id, reason)
            .map_err(|e| e.to_string())?;
        self.0.work.notify_one();
        Ok(format!(
            "{} sent back: cycle {} plans fixes from your comment",
            epic.id, epic.cycle
        ))
    }

    fn answer(&self, id: &str, text: &str) -> Result<String, String> {
        let epic = self
            .0
            .pipeline
            .answer(id, text)
            .map_err(|e| e.to_string())?;
        self.0.work.notify_one();
        Ok(format!(
            "{} goes on with your answer: {}",
            epic.id, epic.state
        ))
    }

    fn retry(&self, id: &str) -> Result<String, String> {
        let epic = self.0.pipeline.retry(id).map_err(|e| e.to_string())?;
        self.0.work.notify_one();
        Ok(format!("{} goes on: {}", epic.id, epic.state))
    }
}

/// The bot's client and settings from fleet.yaml's `telegram:`, if configured.
pub fn bot_from_config(
    fleet: &Fleet,
) -> Result<Option<(TelegramApi, fleet_notify::BotConfig)>, String> {
    let Some(spec) = &fleet.pipeline.instance.telegram else {
        return Ok(None);
    };
    let (api, mut cfg) =
        fleet_notify::resolve_bot(spec, |k| std::env::var(k).ok(), Notifier::http_client())?;
    cfg.public_url = Some(fleet.public_url.clone());
    Ok(Some((api, cfg)))
}

/// Runs the bot until `stop` is raised.
pub async fn bot(
    fleet: Fleet,
    api: TelegramApi,
    cfg: fleet_notify::BotConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let backend: Arc<dyn BotBackend> = Arc::new(BotOverFleet(fleet));
    fleet_notify::run_bot(api, cfg, backend, crate::stopped(stop)).await;
}

/// What an account spent, in the units its budgets are in: "$4.20 of $5.00 and 1,200,000 of
/// 1,000,000 tokens" (a token budget spent with $0.00 must not read "Spent $0.00").
fn spend_words(d: &serde_json::Value) -> String {
    fn thousands(n: u64) -> String {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
    let usd = d["spent_usd"].as_f64().unwrap_or(0.0);
    let tokens = d["spent_tokens"].as_u64().unwrap_or(0);
    let mut parts = Vec::new();
    match d["budget_usd"].as_f64() {
        Some(b) => parts.push(format!("${usd:.2} of ${b:.2}")),
        None if usd > 0.0 => parts.push(format!("${usd:.2}")),
        None => {}
    }
    match d["budget_tokens"].as_u64() {
        Some(b) => parts.push(format!("{} of {} tokens", thousands(tokens), thousands(b))),
        None => parts.push(format!("{} tokens", thousands(tokens))),
    }
    parts.join(" and ")
}

#[cfg(test)]
mod spend_tests {
    use super::spend_words;
    use serde_json::json;

    #[test]
    fn a_spent_token_budget_reads_as_tokens_not_zero_dollars() {
        let d =
            json!({"spent_usd": 0.0, "spent_tokens": 1_200_000u64, "budget_tokens": 1_000_000u64});
        assert_eq!(spend_words(&d), "1,200,000 of 1,000,000 tokens");
        let d = json!({"spent_usd": 5.5, "spent_tokens": 900u64, "budget_usd": 5.0});
        assert_eq!(spend_words(&d), "$5.50 of $5.00 and 900 tokens");
    }
}
