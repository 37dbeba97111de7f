//! One run of a task graph: every leaf's state, and the decisions that move it.
//!
//! Each mutating method returns the [`Transition`]s it made. The engine persists them
//! (with their events) *before* acting on them — spawning a process, merging a branch — so a
//! run killed at any moment can be restored with [`Run::restore`] and continued with
//! [`Run::recover`].

use crate::Millis;
use crate::graph::Graph;
use crate::retry::RetryPolicy;
use crate::state::TaskState;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// What the core needs to know about a task besides the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlan {
    pub retry: RetryPolicy,
    /// The task's work lands on the integration branch (it has its own worktree).
    pub needs_merge: bool,
}

/// The mutable part of a task, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub state: TaskState,
    /// Attempts started, interrupted ones included; numbers the next attempt.
    pub attempts: u32,
    /// Attempts that failed; the retry policy counts these.
    pub failures: u32,
    /// A ready task does not start before this time (retry backoff).
    pub not_before: Millis,
    /// Why the task failed, was skipped or cancelled.
    pub reason: Option<String>,
}

impl TaskRecord {
    pub fn pending() -> TaskRecord {
        TaskRecord {
            state: TaskState::Pending,
            attempts: 0,
            failures: 0,
            not_before: 0,
            reason: None,
        }
    }
}

/// One state change of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub task: usize,
    pub from: TaskState,
    pub to: TaskState,
    /// The attempt the change belongs to (0 before the first attempt).
    pub attempt: u32,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Run {
    graph: Graph,
    plans: Vec<TaskPlan>,
    tasks: Vec<TaskRecord>,
    /// Ready leaves ordered by scheduling priority: longest chain first, then spec order.
    ready: BTreeSet<(Reverse<u32>, usize)>,
}

impl Run {
    /// A fresh run: every leaf pending. Call [`Run::promote_all`] to make the roots ready.
    pub fn new(graph: Graph, plans: Vec<TaskPlan>) -> Run {
        let tasks = vec![TaskRecord::pending(); graph.len()];
        Run::restore(graph, plans, tasks)
    }

    /// A run rebuilt from persisted records.
    pub fn restore(graph: Graph, plans: Vec<TaskPlan>, tasks: Vec<TaskRecord>) -> Run {
        assert_eq!(graph.len(), plans.len());
        assert_eq!(graph.len(), tasks.len());
        let mut run = Run {
            graph,
            plans,
            tasks,
            ready: BTreeSet::new(),
        };
        for node in 0..run.graph.len() {
            if run.tasks[node].state == TaskState::Ready {
                run.ready.insert(run.key(node));
            }
        }
        run
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn task(&self, node: usize) -> &TaskRecord {
        &self.tasks[node]
    }

    pub fn plan(&self, node: usize) -> &TaskPlan {
        &self.plans[node]
    }

    pub fn state(&self, node: usize) -> TaskState {
        self.tasks[node].state
    }

    fn key(&self, node: usize) -> (Reverse<u32>, usize) {
        (Reverse(self.graph.critical_path(node)), node)
    }

    fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.graph.len()).filter(|&n| self.graph.is_leaf(n))
    }

    /// The task's result is usable by its dependents.
    pub fn is_satisfied(&self, node: usize) -> bool {
        match self.tasks[node].state {
            TaskState::Merged => true,
            TaskState::Passed => !self.plans[node].needs_merge,
            _ => false,
        }
    }

    pub fn is_final(&self, node: usize) -> bool {
        self.tasks[node]
            .state
            .is_final(self.plans[node].needs_merge)
    }

    /// Every leaf has reached a final state.
    pub fn is_finished(&self) -> bool {
        self.leaves().all(|n| self.is_final(n))
    }

    /// Every leaf ended satisfied (passed or merged).
    pub fn all_satisfied(&self) -> bool {
        self.leaves().all(|n| self.is_satisfied(n))
    }

    /// Leaves currently in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.leaves()
            .filter(|&n| self.tasks[n].state == state)
            .count()
    }

    fn set(&mut self, node: usize, to: TaskState, reason: Option<String>) -> Transition {
        let from = self.tasks[node].state;
        assert!(
            from.can_become(to),
            "illegal transition {from} -> {to} for task {}",
            self.graph.id(node)
        );
        if from == TaskState::Ready {
            self.ready.remove(&self.key(node));
        }
        if to == TaskState::Ready {
            self.ready.insert(self.key(node));
        }
        let rec = &mut self.tasks[node];
        rec.state = to;
        if reason.is_some() {
            rec.reason = reason.clone();
        }
        Transition {
            task: node,
            from,
            to,
            attempt: rec.attempts,
            reason,
        }
    }

    /// Makes ready every pending leaf whose dependencies are satisfied, and skips every
    /// pending leaf that can no longer run. Idempotent; used at start and after restore.
    pub fn promote_all(&mut self) -> Vec<Transition> {
        let mut out = Vec::new();
        for node in self.graph.topo_order().to_vec() {
            if self.tasks[node].state != TaskState::Pending {
                continue;
            }
            if let Some(reason) = self.blocked_reason(node) {
                out.push(self.set(node, TaskState::Skipped, Some(reason)));
            } else if self.graph.deps(node).iter().all(|&d| self.is_satisfied(d)) {
                out.push(self.set(node, TaskState::Ready, None));
            }
        }
        out
    }

    /// Why a pending task can never run, if one of its dependencies ended unsatisfied.
    fn blocked_reason(&self, node: usize) -> Option<String> {
        self.graph.deps(node).iter().find_map(|&d| {
            let st = self.tasks[d].state;
            let dep = self.graph.id(d);
            match st {
                TaskState::Failed => Some(format!("dependency `{dep}` failed")),
                TaskState::Skipped => Some(format!("dependency `{dep}` was skipped")),
                TaskState::Cancelled => Some(format!("dependency `{dep}` was cancelled")),
                _ => None,
            }
        })
    }

    /// Running/checking tasks of a run that was interrupted go back to ready; the interrupted
    /// attempt does not count as a failure. Returns the transitions.
    pub fn recover(&mut self, reason: &str) -> Vec<Transition> {
        let mut out = Vec::new();
        for node in 0..self.graph.len() {
            if self.tasks[node].state.is_active() {
                out.push(self.interrupt(node, reason));
            }
        }
        out.extend(self.promote_all());
        out
    }

    /// Ready tasks allowed to start at `now`, best first, at most `slots`.
    pub fn next_to_start(&self, now: Millis, slots: usize) -> Vec<usize> {
        self.ready
            .iter()
            .map(|&(_, n)| n)
            .filter(|&n| self.tasks[n].not_before <= now)
            .take(slots)
            .collect()
    }

    /// The earliest time a ready task waiting on its backoff may start, if any is waiting.
    pub fn next_wakeup(&self, now: Millis) -> Option<Millis> {
        self.ready
            .iter()
            .map(|&(_, n)| self.tasks[n].not_before)
            .filter(|&t| t > now)
            .min()
    }

    /// Ready -> running; opens a new attempt.
    pub fn start(&mut self, node: usize) -> Transition {
        self.tasks[node].attempts += 1;
        self.set(node, TaskState::Running, None)
    }

    /// Running -> checking: the command or agent finished well; acceptance checks run next.
    pub fn begin_checks(&mut self, node: usize) -> Transition {
        self.set(node, TaskState::Checking, None)
    }

    /// The attempt passed (and its checks). Dependents of a task that merges nothing may start.
    pub fn attempt_passed(&mut self, node: usize) -> Vec<Transition> {
        let mut out = vec![self.set(node, TaskState::Passed, None)];
        if !self.plans[node].needs_merge {
            out.extend(self.promote_dependents(node));
        }
        out
    }

    /// The attempt failed: retry after the backoff, or fail the task and skip what depends on it.
    pub fn attempt_failed(&mut self, node: usize, now: Millis, reason: &str) -> Vec<Transition> {
        self.tasks[node].failures += 1;
        let failures = self.tasks[node].failures;
        match self.plans[node].retry.next_delay(failures) {
            Some(delay) => {
                self.tasks[node].not_before = now.saturating_add(delay);
                vec![self.set(node, TaskState::Ready, Some(reason.to_string()))]
            }
            None => self.fail(node, reason),
        }
    }

    /// The attempt failed and the caller's policy (the agent pool) says try again at
    /// `not_before`; `counted` says whether it counts as a failure (a vendor's rate limit is
    /// not the task's failure).
    pub fn retry_at(
        &mut self,
        node: usize,
        not_before: Millis,
        reason: &str,
        counted: bool,
    ) -> Transition {
        if counted {
            self.tasks[node].failures += 1;
        }
        self.tasks[node].not_before = not_before;
        self.set(node, TaskState::Ready, Some(reason.to_string()))
    }

    /// The caller's policy gives up on the task: it fails and its dependents are skipped.
    /// May come while the task is ready: no agent will ever be usable for it.
    pub fn give_up(&mut self, node: usize, reason: &str) -> Vec<Transition> {
        self.fail(node, reason)
    }

    /// A ready task cannot start before `until` (nothing can run it yet). Not a transition;
    /// the caller persists the record.
    pub fn defer(&mut self, node: usize, until: Millis) {
        debug_assert_eq!(self.tasks[node].state, TaskState::Ready);
        self.tasks[node].not_before = until;
    }

    /// Passed -> merged; dependents may start.
    pub fn merged(&mut self, node: usize) -> Vec<Transition> {
        let mut out = vec![self.set(node, TaskState::Merged, None)];
        out.extend(self.promote_dependents(node));
        out
    }

    /// Passed -> checking: the merge queue brought the task's work up to date with what landed
    /// meanwhile, and its checks run again before it may land.
    pub fn recheck(&mut self, node: usize) -> Transition {
        self.set(node, TaskState::Checking, None)
    }

    /// Passed -> ready: the task's work conflicts with what landed meanwhile; a rework attempt
    /// resolves it. Not counted as a failure (nobody failed), but it is a new attempt, so the
    /// attempt limits bound it.
    pub fn rework(&mut self, node: usize, reason: &str) -> Transition {
        self.tasks[node].not_before = 0;
        self.set(node, TaskState::Ready, Some(reason.to_string()))
    }

    /// Passed -> failed because its work could not land (e.g. a merge conflict).
    pub fn merge_failed(&mut self, node: usize, reason: &str) -> Vec<Transition> {
        self.fail(node, reason)
    }

    /// An active task's attempt was cut short by Fleet itself (shutdown, crash); no failure counted.
    pub fn interrupt(&mut self, node: usize, reason: &str) -> Transition {
        self.tasks[node].not_before = 0;
        self.set(node, TaskState::Ready, Some(reason.to_string()))
    }

    /// Cancels every task that has not ended.
    pub fn cancel_all(&mut self, reason: &str) -> Vec<Transition> {
        let mut out = Vec::new();
        for node in self.leaves().collect::<Vec<_>>() {
            if !self.is_final(node) {
                out.push(self.set(node, TaskState::Cancelled, Some(reason.to_string())));
            }
        }
        out
    }

    fn fail(&mut self, node: usize, reason: &str) -> Vec<Transition> {
        let mut out = vec![self.set(node, TaskState::Failed, Some(reason.to_string()))];
        // Skip everything downstream that has not started; it never will.
        let mut stack: Vec<usize> = self.graph.dependents(node).to_vec();
        while let Some(d) = stack.pop() {
            if self.tasks[d].state == TaskState::Pending {
                let reason = self
                    .blocked_reason(d)
                    .expect("a dependency just ended unsatisfied");
                out.push(self.set(d, TaskState::Skipped, Some(reason)));
                stack.extend(self.graph.dependents(d).iter().copied());
            }
        }
        out
    }

    fn promote_dependents(&mut self, node: usize) -> Vec<Transition> {
        let mut out = Vec::new();
        for i in 0..self.graph.dependents(node).len() {
            let d = self.graph.dependents(node)[i];
            if self.tasks[d].state == TaskState::Pending
                && self.graph.deps(d).iter().all(|&x| self.is_satisfied(x))
            {
                out.push(self.set(d, TaskState::Ready, None));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{NodeSpec, validate};

    fn run(specs: &[NodeSpec], retries: u32, needs_merge: bool) -> Run {
        let g = validate(specs).unwrap();
        let plan = TaskPlan {
            retry: RetryPolicy {
                retries,
                backoff_base_ms: 100,
                backoff_factor: 2,
                backoff_max_ms: 1000,
            },
            needs_merge,
        };
        Run::new(g, vec![plan; specs.len()])
    }

    #[test]
    fn failure_retries_with_backoff_then_fails_and_skips_downstream() {
        let specs = [
            NodeSpec::leaf("a", &[]),
            NodeSpec::leaf("b", &["a"]),
            NodeSpec::leaf("c", &["b"]),
        ];
        let mut r = run(&specs, 1, false);
        r.promote_all();
        assert_eq!(r.next_to_start(0, 4), [0]);
        r.start(0);
        let t = r.attempt_failed(0, 1000, "exit 1");
        assert_eq!(t[0].to, TaskState::Ready);
        assert!(r.next_to_start(1099, 4).is_empty());
        assert_eq!(r.next_wakeup(1000), Some(1100));
        assert_eq!(r.next_to_start(1100, 4), [0]);
        r.start(0);
        let t = r.attempt_failed(0, 2000, "exit 1");
        let states: Vec<_> = t.iter().map(|t| (t.task, t.to)).collect();
        assert_eq!(
            states,
            [
                (0, TaskState::Failed),
                (1, TaskState::Skipped),
                (2, TaskState::Skipped)
            ]
        );
        assert_eq!(
            r.task(2).reason.as_deref(),
            Some("dependency `b` was skipped")
        );
        assert!(r.is_finished());
        assert!(!r.all_satisfied());
    }

    #[test]
    fn dependents_wait_for_the_merge() {
        let specs = [NodeSpec::leaf("a", &[]), NodeSpec::leaf("b", &["a"])];
        let mut r = run(&specs, 0, true);
        r.promote_all();
        r.start(0);
        r.begin_checks(0);
        assert_eq!(r.attempt_passed(0).len(), 1);
        assert!(r.next_to_start(0, 4).is_empty());
        let t = r.merged(0);
        assert_eq!(t[1].to, TaskState::Ready);
        assert_eq!(r.next_to_start(0, 4), [1]);
    }

    #[test]
    fn recover_puts_active_tasks_back_without_counting_a_failure() {
        let specs = [NodeSpec::leaf("a", &[])];
        let mut r = run(&specs, 0, true);
        r.promote_all();
        r.start(0);
        r.begin_checks(0);
        let mut restored =
            Run::restore(r.graph().clone(), vec![*r.plan(0)], vec![r.task(0).clone()]);
        let t = restored.recover("interrupted");
        assert_eq!(t[0].to, TaskState::Ready);
        assert_eq!(restored.task(0).failures, 0);
        assert_eq!(restored.task(0).attempts, 1);
        assert_eq!(restored.next_to_start(0, 1), [0]);
    }

    #[test]
    fn longest_chain_is_scheduled_first() {
        let specs = [
            NodeSpec::leaf("short", &[]),
            NodeSpec::leaf("long1", &[]),
            NodeSpec::leaf("long2", &["long1"]),
        ];
        let mut r = run(&specs, 0, false);
        r.promote_all();
        assert_eq!(r.next_to_start(0, 1), [1]);
    }
}
