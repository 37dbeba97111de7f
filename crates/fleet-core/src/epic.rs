//! An epic's life: Research -> (Architect) -> Plan -> Implement -> Review -> Deliver ->
//! awaiting acceptance, with its cycles and its recurring-problem ladder.
//!
//! ```text
//! research -> [architect] -> plan -> implement -> review -> deliver -> awaiting_acceptance -> done
//!                                                              |  (deployed) ^
//!                                                              +--> qa ------+ (QA passed)
//!                                                                    +-> plan (QA found bugs: next cycle)
//!                 ^            ^  \      |          |                      |
//!                 |            |   +-----+ (tasks failed: re-plan them)    |
//!                 |            +--------------------+ (review rejected: fix tasks, next cycle)
//!                 |            +-------------------------------------------+ (person rejected /
//!                 +------------ (re-planning did not help: re-plan the architecture)  PR comments)
//!                               (the architecture did not help either: blocked, then plan)
//! working stage -> blocked (needs a person: one clear question) -> the same stage again
//!                    (`fleet task answer` / `fleet task retry`), keeping what landed
//! a stage that could not finish, the end of the ladder, spent cycles -> blocked as well
//! any -> cancelled (a person gives up)
//! any not ended -> failed (a configured hard limit of money or time is reached)
//!
//! migration mode (read-only until approved; `crate::migration`):
//! research -> architect -> deliver (the eight documents only) -> awaiting approval
//!   -> accepted: plan (cycle 1, from the migration plan) -> implement -> ... as above
//!   -> reworked: research again (the documents are rewritten)
//! ```
//! Plain functions over data: the pipeline runs a stage, reports how it ended, and persists
//! the [`Step`] this module returns before acting on it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Research,
    Architect,
    Plan,
    Implement,
    Review,
    Deliver,
    /// A QA agent tests the app deployed to a test environment; bugs start the next cycle.
    Qa,
    AwaitingAcceptance,
    /// Waiting for a person to answer one question (or fix the config and retry); the epic
    /// then continues from the stage it stopped at ([`Blocked::at`]).
    Blocked,
    Done,
    Failed,
    Cancelled,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Research,
        Stage::Architect,
        Stage::Plan,
        Stage::Implement,
        Stage::Review,
        Stage::Deliver,
        Stage::Qa,
        Stage::AwaitingAcceptance,
        Stage::Blocked,
        Stage::Done,
        Stage::Failed,
        Stage::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Research => "research",
            Stage::Architect => "architect",
            Stage::Plan => "plan",
            Stage::Implement => "implement",
            Stage::Review => "review",
            Stage::Deliver => "deliver",
            Stage::Qa => "qa",
            Stage::AwaitingAcceptance => "awaiting_acceptance",
            Stage::Blocked => "blocked",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing more happens to the epic.
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Done | Stage::Failed | Stage::Cancelled)
    }

    /// Fleet works on it (as opposed to waiting for a person or having ended).
    pub fn is_working(self) -> bool {
        !self.is_final() && !matches!(self, Stage::AwaitingAcceptance | Stage::Blocked)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an epic works: the ordinary contour, or migration mode — the read-only legacy contour
/// whose research and architect stages deliver documents only, and which plans code only
/// after a person approved them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Standard,
    Migrate,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Migrate => "migrate",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Standard, Mode::Migrate]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    fn is_standard(&self) -> bool {
        *self == Mode::Standard
    }
}

/// Limits of the loops (from the project or instance config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Plan -> result cycles (the first included) before the epic gives up.
    pub max_cycles: u32,
    /// Re-plans of failed tasks within one cycle before re-planning the architecture.
    pub max_replans: u32,
    /// Times the architecture may be re-planned over the epic's life.
    pub max_rearchitects: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cycles: 4,
            max_replans: 1,
            max_rearchitects: 1,
        }
    }
}

/// Where the epic stands, as the pure machine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpicState {
    pub stage: Stage,
    /// Plan -> result cycles begun (1 from the first plan on).
    pub cycle: u32,
    /// Re-plans of failed tasks in the current cycle.
    pub replans: u32,
    pub rearchitects: u32,
    /// The project has a context file already (no research needed).
    pub has_context: bool,
    /// The request needs an architecture note before planning.
    pub needs_design: bool,
    /// While [`Stage::Blocked`]: where it stopped and what it asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// Times a person unblocked it: a stage run again after that is a new engine run.
    #[serde(default)]
    pub resumes: u32,
    /// A reviewed result was delivered once: it stays acceptable whatever a later fix cycle
    /// does (blocks, or ends at a hard limit), see [`acceptable`].
    #[serde(default)]
    pub delivered: bool,
    /// Migration mode: read-only until a person approves the documents.
    #[serde(default, skip_serializing_if = "Mode::is_standard")]
    pub mode: Mode,
    /// Migration mode: a person approved the documents; code may now be planned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
}

impl EpicState {
    /// Migration mode, before approval: no code may change yet.
    pub fn read_only(&self) -> bool {
        self.mode == Mode::Migrate && !self.approved
    }

    /// A migration epic: the legacy system is studied first, whatever context exists (the
    /// eight documents are about this request), then the architect writes the plan documents.
    pub fn migration() -> EpicState {
        EpicState {
            mode: Mode::Migrate,
            ..EpicState::new(false, true)
        }
    }
}

/// Whether a person may accept the epic now: it awaits acceptance, or an approved result was
/// delivered and a later fix cycle stopped (blocked, or failed at a hard limit) — the person
/// may still take that result. Never while a stage runs, nor after done or cancelled.
pub fn acceptable(state: &EpicState) -> bool {
    match state.stage {
        Stage::AwaitingAcceptance => true,
        Stage::Blocked | Stage::Failed => state.delivered,
        _ => false,
    }
}

/// Why an epic waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The stage that could not go on; the epic continues there.
    pub at: Stage,
    /// One clear question, saying what to do (`fleet task answer` or fix and `fleet task retry`).
    pub question: String,
}

impl EpicState {
    pub fn new(has_context: bool, needs_design: bool) -> EpicState {
        EpicState {
            stage: if has_context {
                if needs_design {
                    Stage::Architect
                } else {
                    Stage::Plan
                }
            } else {
                Stage::Research
            },
            cycle: 0,
            replans: 0,
            rearchitects: 0,
            has_context,
            needs_design,
            blocked: None,
            resumes: 0,
            delivered: false,
            mode: Mode::Standard,
            approved: false,
        }
    }
}

/// How a stage (or a person) ended the current step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stage did its job (research written, plan valid, every task landed, delivered).
    Passed,
    /// The stage's agent could not produce its artifact, after its own retries and swaps.
    Failed {
        why: String,
    },
    /// Implement: some tasks failed after every swap and escalation.
    TasksFailed {
        tasks: Vec<String>,
    },
    /// Review: approved.
    Approved,
    /// Review: rejected with a bug report.
    Rejected,
    /// Deliver: deployed to a test environment that QA tests before a person is asked.
    Deployed,
    /// A person accepted the delivered result.
    Accepted,
    /// A person rejected it (or review comments arrived on its pull request).
    Reworked,
    /// The stage cannot go on without a person: a missing token or profile, a deploy that
    /// keeps failing, a forge that keeps refusing. Never `failed`: the cause is fixable.
    NeedsPerson {
        question: String,
    },
    /// A person answered the question or fixed the config: continue where it stopped.
    Unblocked,
    Cancel,
    /// A configured hard limit of money or time per epic is reached (`crate::budget`): the
    /// only way to `failed` besides a person cancelling.
    LimitReached {
        why: String,
    },
}

/// What happens next, and why (the why is an event and shows in `fleet task show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub state: EpicState,
    pub why: String,
}

/// The epic waits for a person to answer `question`; answered, it continues at `at`.
fn block(mut s: EpicState, at: Stage, question: String) -> Step {
    let why = format!("{} needs a person: {question}", s.stage);
    s.stage = Stage::Blocked;
    s.blocked = Some(Blocked { at, question });
    Step { state: s, why }
}

/// The next stage after `outcome` of the current one.
pub fn next(state: &EpicState, outcome: &Outcome, limits: &Limits) -> Step {
    let mut s = state.clone();
    fn go(mut s: EpicState, stage: Stage, why: String) -> Step {
        s.stage = stage;
        Step { state: s, why }
    }
    if *outcome == Outcome::Cancel {
        s.blocked = None;
        return go(s, Stage::Cancelled, "cancelled".into());
    }
    if let Outcome::LimitReached { why } = outcome
        && !state.stage.is_final()
    {
        s.blocked = None;
        return go(s, Stage::Failed, why.clone());
    }
    if let Outcome::NeedsPerson { question } = outcome
        && state.stage.is_working()
    {
        return block(s, state.stage, question.clone());
    }
    if *outcome == Outcome::Unblocked
        && let Some(b) = s.blocked.take()
    {
        s.resumes += 1;
        return go(s, b.at, format!("unblocked: {} continues", b.at));
    }
    // A stage that could not finish after its agents' retries and swaps asks a person; it
    // does not end the epic (only a person or a hard limit of money or time does).
    if let Outcome::Failed { why } = outcome
        && state.stage.is_working()
    {
        let question = format!(
            "{} could not finish: {why}. Tell Fleet how to go on (`fleet task answer`), or fix \
             the cause and `fleet task retry`; `fleet task cancel` gives up.",
            state.stage
        );
        return block(s, state.stage, question);
    }
    let new_cycle = |s: &EpicState, why: &str| -> Step {
        if s.cycle >= limits.max_cycles {
            // The cycles are spent: a person decides whether one more is worth it. Answered,
            // it plans that cycle.
            let mut b = s.clone();
            b.cycle += 1;
            b.replans = 0;
            let question = format!(
                "{why}, but {} cycles were spent (limit {}). Answer with what matters most for \
                 one more cycle (`fleet task answer`), or `fleet task cancel`.",
                s.cycle, limits.max_cycles
            );
            return block(b, Stage::Plan, question);
        }
        let mut n = s.clone();
        n.stage = Stage::Plan;
        n.cycle += 1;
        n.replans = 0;
        Step {
            state: n,
            why: format!("{why}: planning fix tasks (cycle {})", s.cycle + 1),
        }
    };
    if state.read_only()
        && let Some(step) = read_only_next(state, outcome)
    {
        return step;
    }
    match (state.stage, outcome) {
        (Stage::Research, Outcome::Passed) => {
            s.has_context = true;
            if s.needs_design {
                go(
                    s,
                    Stage::Architect,
                    "context written; the request needs design".into(),
                )
            } else {
                go(s, Stage::Plan, "context written".into())
            }
        }
        (Stage::Architect, Outcome::Passed) => {
            go(s, Stage::Plan, "architecture note written".into())
        }
        (Stage::Plan, Outcome::Passed) => {
            if s.cycle == 0 {
                s.cycle = 1;
            }
            go(s, Stage::Implement, "the plan is valid and atomic".into())
        }
        (Stage::Implement, Outcome::Passed) => go(
            s,
            Stage::Review,
            "every task passed its checks and landed".into(),
        ),
        (Stage::Implement, Outcome::TasksFailed { tasks }) => {
            let list = tasks.join(", ");
            if s.replans < limits.max_replans {
                s.replans += 1;
                go(
                    s,
                    Stage::Plan,
                    format!("{list} failed after every agent tried: re-planning them"),
                )
            } else if s.rearchitects < limits.max_rearchitects {
                s.rearchitects += 1;
                s.replans = 0;
                s.needs_design = true;
                go(
                    s,
                    Stage::Architect,
                    format!("{list} failed again after re-planning: re-planning the architecture"),
                )
            } else {
                let question = format!(
                    "{list} failed after re-planning the tasks and the architecture. Tell the \
                     planner how to go on (`fleet task answer`), or fix the cause (a check, a \
                     profile) and `fleet task retry`; `fleet task cancel` gives up."
                );
                block(s, Stage::Plan, question)
            }
        }
        (Stage::Review, Outcome::Approved) => go(s, Stage::Deliver, "the review approved".into()),
        (Stage::Review, Outcome::Rejected) => new_cycle(state, "the review sent it back"),
        (Stage::Deliver, Outcome::Passed) => {
            s.delivered = true;
            go(
                s,
                Stage::AwaitingAcceptance,
                "delivered; waiting for a person to accept".into(),
            )
        }
        (Stage::Deliver, Outcome::Deployed) => go(
            s,
            Stage::Qa,
            "deployed to the test environment; QA tests it".into(),
        ),
        (Stage::Qa, Outcome::Passed) => {
            // Only a deployed app QA passed is a result a person may accept later.
            s.delivered = true;
            go(
                s,
                Stage::AwaitingAcceptance,
                "QA passed on the deployed app; waiting for a person to accept".into(),
            )
        }
        (Stage::Qa, Outcome::Rejected) => new_cycle(state, "QA found bugs in the deployed app"),
        (_, Outcome::Accepted) if acceptable(state) => {
            let why = if state.stage == Stage::AwaitingAcceptance {
                "accepted".to_string()
            } else {
                format!(
                    "accepted the result delivered earlier (the fix cycle {} had stopped: {})",
                    state.cycle, state.stage
                )
            };
            s.blocked = None;
            go(s, Stage::Done, why)
        }
        (Stage::AwaitingAcceptance, Outcome::Reworked) => {
            new_cycle(state, "a person asked for changes")
        }
        (stage, outcome) => Step {
            state: state.clone(),
            why: format!("{outcome:?} does not apply to an epic in {stage}; nothing changes"),
        },
    }
}

/// Migration mode before approval: research, architect, the documents delivered, then a
/// person approves (the implementation is planned as cycle 1) or sends them back (research
/// again, as a new run). `None`: the ordinary rules apply (blocks, answers, cancellation).
fn read_only_next(state: &EpicState, outcome: &Outcome) -> Option<Step> {
    let mut s = state.clone();
    let (stage, why) = match (state.stage, outcome) {
        (Stage::Research, Outcome::Passed) => {
            s.has_context = true;
            (
                Stage::Architect,
                "legacy documents written (read-only); the architect writes the migration plan",
            )
        }
        (Stage::Architect, Outcome::Passed) => (
            Stage::Deliver,
            "the eight migration documents are written; delivering them (no code changed)",
        ),
        // The documents are no result a person may accept as done: `delivered` stays false.
        // (A deploying project's documents are delivered the same way: there is nothing to
        // deploy or test.)
        (Stage::Deliver, Outcome::Passed | Outcome::Deployed) => (
            Stage::AwaitingAcceptance,
            "migration documents delivered; waiting for a person to approve them",
        ),
        (Stage::AwaitingAcceptance, Outcome::Accepted) => {
            s.approved = true;
            s.cycle = 1;
            s.replans = 0;
            (
                Stage::Plan,
                "the migration documents are approved: planning the implementation from the \
                 migration plan (cycle 1)",
            )
        }
        (Stage::AwaitingAcceptance, Outcome::Reworked) => {
            // A new run of research, not a read-back of the approved-for-nothing old one.
            s.resumes += 1;
            (
                Stage::Research,
                "a person asked for changes to the migration documents: studying again",
            )
        }
        // Blocks, answers, cancellation and limits: the ordinary rules, which lead back only
        // to the stage that stopped.
        _ => return None,
    };
    s.stage = stage;
    Some(Step {
        state: s,
        why: why.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stage: Stage) -> EpicState {
        let mut s = EpicState::new(true, false);
        s.stage = stage;
        s.cycle = 1;
        s
    }

    #[test]
    fn starts_with_research_only_without_context() {
        assert_eq!(EpicState::new(false, false).stage, Stage::Research);
        assert_eq!(EpicState::new(true, false).stage, Stage::Plan);
        assert_eq!(EpicState::new(true, true).stage, Stage::Architect);
        let l = Limits::default();
        let s = next(&EpicState::new(false, true), &Outcome::Passed, &l).state;
        assert_eq!((s.stage, s.has_context), (Stage::Architect, true));
    }

    #[test]
    fn the_happy_path_ends_awaiting_acceptance_then_done() {
        let l = Limits::default();
        let mut s = EpicState::new(false, false);
        for (o, want) in [
            (Outcome::Passed, Stage::Plan),
            (Outcome::Passed, Stage::Implement),
            (Outcome::Passed, Stage::Review),
            (Outcome::Approved, Stage::Deliver),
            (Outcome::Passed, Stage::AwaitingAcceptance),
            (Outcome::Accepted, Stage::Done),
        ] {
            s = next(&s, &o, &l).state;
            assert_eq!(s.stage, want);
        }
        assert_eq!(s.cycle, 1);
    }

    #[test]
    fn rejections_start_counted_cycles_until_the_limit() {
        let l = Limits {
            max_cycles: 2,
            ..Limits::default()
        };
        let s = next(&at(Stage::Review), &Outcome::Rejected, &l);
        assert_eq!((s.state.stage, s.state.cycle), (Stage::Plan, 2));
        assert!(s.why.contains("cycle 2"), "{}", s.why);
        let mut waiting = s.state.clone();
        waiting.stage = Stage::AwaitingAcceptance;
        let f = next(&waiting, &Outcome::Reworked, &l);
        assert_eq!(f.state.stage, Stage::Blocked);
        assert!(f.why.contains("2 cycles"), "{}", f.why);
        // Answered, one more cycle is planned.
        let more = next(&f.state, &Outcome::Unblocked, &l).state;
        assert_eq!((more.stage, more.cycle), (Stage::Plan, 3));
    }

    #[test]
    fn failing_tasks_climb_the_ladder_replan_then_architecture_then_ask_a_person() {
        let l = Limits::default();
        let failed = Outcome::TasksFailed {
            tasks: vec!["api".into()],
        };
        let s1 = next(&at(Stage::Implement), &failed, &l).state;
        assert_eq!((s1.stage, s1.replans), (Stage::Plan, 1));
        let mut s2 = s1.clone();
        s2.stage = Stage::Implement;
        let s3 = next(&s2, &failed, &l);
        assert_eq!(s3.state.stage, Stage::Architect);
        assert!(s3.why.contains("architecture"));
        let mut s4 = s3.state.clone();
        s4.stage = Stage::Implement;
        s4.replans = 1;
        let asked = next(&s4, &failed, &l).state;
        assert_eq!(asked.stage, Stage::Blocked);
        let b = asked.blocked.clone().unwrap();
        assert_eq!(b.at, Stage::Plan);
        assert!(b.question.contains("api failed"), "{}", b.question);
    }

    #[test]
    fn a_stage_failure_asks_a_person_with_its_reason_and_odd_outcomes_change_nothing() {
        let l = Limits::default();
        let f = next(
            &at(Stage::Plan),
            &Outcome::Failed {
                why: "plan invalid 3 times".into(),
            },
            &l,
        );
        assert_eq!(f.state.stage, Stage::Blocked);
        let b = f.state.blocked.clone().unwrap();
        assert_eq!(b.at, Stage::Plan);
        assert!(
            b.question
                .contains("plan could not finish: plan invalid 3 times")
        );
        let s = at(Stage::Done);
        assert_eq!(next(&s, &Outcome::Approved, &l).state, s);
        assert_eq!(
            next(&at(Stage::Review), &Outcome::Cancel, &l).state.stage,
            Stage::Cancelled
        );
    }

    #[test]
    fn a_blocked_epic_asks_one_question_then_continues_where_it_stopped() {
        let l = Limits::default();
        let mut at_deliver = at(Stage::Deliver);
        at_deliver.cycle = 2;
        let b = next(
            &at_deliver,
            &Outcome::NeedsPerson {
                question: "set GITHUB_TOKEN".into(),
            },
            &l,
        );
        assert_eq!(b.state.stage, Stage::Blocked);
        assert!(!b.state.stage.is_working() && !b.state.stage.is_final());
        let blocked = b.state.blocked.clone().unwrap();
        assert_eq!(
            (blocked.at, blocked.question.as_str()),
            (Stage::Deliver, "set GITHUB_TOKEN")
        );
        assert!(b.why.contains("set GITHUB_TOKEN"), "{}", b.why);
        // Nothing but an answer/retry or a cancellation moves it.
        for o in [Outcome::Passed, Outcome::Approved, Outcome::Accepted] {
            assert_eq!(next(&b.state, &o, &l).state, b.state);
        }
        let u = next(&b.state, &Outcome::Unblocked, &l).state;
        assert_eq!(
            (u.stage, u.cycle, u.blocked.clone()),
            (Stage::Deliver, 2, None)
        );
        assert_eq!(u.resumes, 1);
        // Unblocking an epic that is not blocked changes nothing.
        assert_eq!(next(&u, &Outcome::Unblocked, &l).state, u);
        let c = next(&b.state, &Outcome::Cancel, &l).state;
        assert_eq!((c.stage, c.blocked), (Stage::Cancelled, None));
        // A person cannot be asked about an epic that waits for acceptance or ended.
        let waiting = at(Stage::AwaitingAcceptance);
        let q = Outcome::NeedsPerson {
            question: "?".into(),
        };
        assert_eq!(next(&waiting, &q, &l).state, waiting);
    }

    #[test]
    fn a_blocked_state_round_trips_and_old_states_without_it_still_read() {
        let mut s = at(Stage::Blocked);
        s.blocked = Some(Blocked {
            at: Stage::Implement,
            question: "add a db profile".into(),
        });
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<EpicState>(&text).unwrap(), s);
        let old = r#"{"stage":"plan","cycle":1,"replans":0,"rearchitects":0,"has_context":true,"needs_design":false}"#;
        let o: EpicState = serde_json::from_str(old).unwrap();
        assert_eq!((o.stage, o.blocked, o.resumes), (Stage::Plan, None, 0));
    }

    #[test]
    fn migration_mode_delivers_documents_then_plans_code_only_after_approval() {
        let l = Limits::default();
        let mut s = EpicState::migration();
        assert_eq!((s.stage, s.read_only()), (Stage::Research, true));
        for (o, want) in [
            (Outcome::Passed, Stage::Architect),
            (Outcome::Passed, Stage::Deliver),
            (Outcome::Passed, Stage::AwaitingAcceptance),
        ] {
            s = next(&s, &o, &l).state;
            assert_eq!(s.stage, want);
        }
        assert!(!s.delivered, "documents are no acceptable result");
        let sent_back = next(&s, &Outcome::Reworked, &l).state;
        assert_eq!((sent_back.stage, sent_back.resumes), (Stage::Research, 1));
        let approved = next(&s, &Outcome::Accepted, &l);
        assert_eq!(
            (
                approved.state.stage,
                approved.state.cycle,
                approved.state.approved
            ),
            (Stage::Plan, 1, true)
        );
        assert!(approved.why.contains("migration plan"), "{}", approved.why);
        // From here on, the ordinary contour.
        let mut s = approved.state;
        for (o, want) in [
            (Outcome::Passed, Stage::Implement),
            (Outcome::Passed, Stage::Review),
            (Outcome::Approved, Stage::Deliver),
            (Outcome::Passed, Stage::AwaitingAcceptance),
            (Outcome::Accepted, Stage::Done),
        ] {
            s = next(&s, &o, &l).state;
            assert_eq!(s.stage, want);
        }
        let text = serde_json::to_string(&EpicState::new(true, false)).unwrap();
        assert!(
            !text.contains("mode"),
            "a standard epic's document is unchanged: {text}"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
    }
}
