//! What happened, and the message about it.

use serde::Serialize;
use std::fmt;

/// What a notification is about. The names are `fleet.yaml`'s `on:` values
/// ([`fleet_config::NOTIFY_EVENTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An epic was delivered and waits for a person to accept or reject it.
    AwaitingAcceptance,
    /// A task or an epic failed for good.
    Failed,
    /// An account spent its daily budget; its work waits for the next budget day.
    BudgetExhausted,
    /// An account's credentials were rejected; it is disabled until they are fixed.
    AuthFailed,
    /// An epic needs a person: one question to answer (or a fix, then a retry).
    Blocked,
    /// The epic's pull request was merged: the epic is done.
    PrMerged,
    /// The epic's pull request was closed without merging: the epic is cancelled.
    PrClosed,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::AwaitingAcceptance,
        Event::Failed,
        Event::BudgetExhausted,
        Event::AuthFailed,
        Event::Blocked,
        Event::PrMerged,
        Event::PrClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::AwaitingAcceptance => "awaiting_acceptance",
            Event::Failed => "failed",
            Event::BudgetExhausted => "budget_exhausted",
            Event::AuthFailed => "auth_failed",
            Event::Blocked => "blocked",
            Event::PrMerged => "pr_merged",
            Event::PrClosed => "pr_closed",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to people. Serialized (the generic webhook's body) it has every field, `null`
/// when unset, with `event` as its name (`"failed"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub event: Event,
    /// The task or epic id, when it is about one.
    pub task: Option<String>,
    pub project: Option<String>,
    /// One line: "Epic e1 awaits acceptance".
    pub title: String,
    /// What happened, in a few lines (may be empty).
    pub text: String,
    /// The task's page in the web UI: `{public_url}/#/tasks/{id}` ([`Notification::task_page`]).
    pub task_url: Option<String>,
    pub branch: Option<String>,
    pub pr_url: Option<String>,
    /// How to run the result: a command (`git fetch && git checkout fleet/epics/e1`) or the
    /// deployed URL.
    pub run_hint: Option<String>,
}

impl Notification {
    /// A notification with a title and text and no links.
    pub fn new(event: Event, title: impl Into<String>, text: impl Into<String>) -> Notification {
        Notification {
            event,
            task: None,
            project: None,
            title: title.into(),
            text: text.into(),
            task_url: None,
            branch: None,
            pr_url: None,
            run_hint: None,
        }
    }

    /// The web UI page of task `id`: `{public_url}/#/tasks/{id}` (a trailing `/` of
    /// `public_url` is dropped).
    pub fn task_page(public_url: &str, id: &str) -> String {
        format!("{}/#/tasks/{id}", public_url.trim_end_matches('/'))
    }

    /// How to try a branch locally: `git fetch && git checkout {branch}`.
    pub fn checkout_hint(branch: &str) -> String {
        format!("git fetch && git checkout {branch}")
    }

    /// Sets `task` and its `task_url` under `public_url`.
    pub fn with_task(mut self, public_url: &str, id: &str) -> Notification {
        self.task_url = Some(Notification::task_page(public_url, id));
        self.task = Some(id.to_string());
        self
    }

    /// The plain text of Slack, Telegram and email: the title, the text, then one line for
    /// each link that is set (`Task:`, `Branch:`, `Pull request:`, `Run it:`).
    pub fn render_text(&self) -> String {
        let mut out = self.title.trim_end().to_string();
        let text = self.text.trim();
        if !text.is_empty() {
            out.push('\n');
            out.push_str(text);
        }
        let links: Vec<String> = [
            ("Task", &self.task_url),
            ("Branch", &self.branch),
            ("Pull request", &self.pr_url),
            ("Run it", &self.run_hint),
        ]
        .into_iter()
        .filter_map(|(label, v)| v.as_deref().map(|v| format!("{label}: {v}")))
        .collect();
        if !links.is_empty() {
            out.push_str("\n\n");
            out.push_str(&links.join("\n"));
        }
        out
    }

    /// The email subject: `[fleet] {title}` on one line.
    pub fn subject(&self) -> String {
        let title: String = self
            .title
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("[fleet] {}", title.trim())
    }

    /// The generic webhook's body: every field, plus `message` (the [`render_text`]).
    ///
    /// [`render_text`]: Notification::render_text
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a notification serializes");
        v["message"] = serde_json::Value::String(self.render_text());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_match_the_config_names() {
        let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, fleet_config::NOTIFY_EVENTS);
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(Event::parse("exploded"), None);
    }

    #[test]
    fn text_has_only_the_links_that_are_set() {
        let mut n = Notification::new(Event::Failed, "Task t1 failed", "checks failed 8 times\n")
            .with_task("http://fleet:7420/", "t1");
        assert_eq!(
            n.render_text(),
            "Task t1 failed\nchecks failed 8 times\n\nTask: http://fleet:7420/#/tasks/t1"
        );
        n.branch = Some("fleet/epics/e1".into());
        n.run_hint = Some(Notification::checkout_hint("fleet/epics/e1"));
        assert_eq!(
            n.render_text(),
            "Task t1 failed\nchecks failed 8 times\n\nTask: http://fleet:7420/#/tasks/t1\n\
             Branch: fleet/epics/e1\nRun it: git fetch && git checkout fleet/epics/e1"
        );
        let bare = Notification::new(Event::AuthFailed, "Account a: credentials rejected", "");
        assert_eq!(bare.render_text(), "Account a: credentials rejected");
        assert_eq!(bare.subject(), "[fleet] Account a: credentials rejected");
    }

    #[test]
    fn json_has_every_field() {
        let mut n = Notification::new(Event::AwaitingAcceptance, "Epic e1 awaits acceptance", "x")
            .with_task("http://f", "e1");
        n.pr_url = Some("https://github.com/o/r/pull/1".into());
        let v = n.to_json();
        assert_eq!(v["event"], "awaiting_acceptance");
        assert_eq!(v["task"], "e1");
        assert_eq!(v["task_url"], "http://f/#/tasks/e1");
        assert_eq!(v["pr_url"], "https://github.com/o/r/pull/1");
        assert!(v["branch"].is_null() && v["project"].is_null() && v["run_hint"].is_null());
        assert_eq!(v["title"], "Epic e1 awaits acceptance");
        assert_eq!(v["message"], n.render_text());
    }
}
