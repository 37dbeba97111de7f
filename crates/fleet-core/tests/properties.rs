//! Property tests for the pure core: graph validation over random DAGs, and a simulated
//! engine that drives a [`Run`] through a random script of outcomes (passes, failures,
//! failing checks, interrupts, merge conflicts, crashes with restore + recover, cancel) on a
//! fake clock, checking the invariants after every call.

use fleet_core::graph::validate;
use fleet_core::{
    Graph, GraphError, Millis, NodeSpec, RetryPolicy, Run, TaskKind, TaskPlan, TaskRecord,
    TaskState, Transition,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;

// ---------------------------------------------------------------------------------------------
// Random DAGs
// ---------------------------------------------------------------------------------------------

/// A generated flat graph (every node a leaf). Spec order is a random permutation of the
/// generation order, so spec order is not a topological order, and ids are random.
#[derive(Debug, Clone)]
struct Dag {
    specs: Vec<NodeSpec>,
    /// `deps[i]`: spec indices spec `i` depends on, in the order written.
    deps: Vec<Vec<usize>>,
    /// `anc[i]`: bit set of every spec index `i` depends on, transitively (n < 64).
    anc: Vec<u64>,
}

fn kind() -> impl Strategy<Value = TaskKind> {
    prop_oneof![
        Just(TaskKind::Atomic),
        Just(TaskKind::Task),
        Just(TaskKind::Phase),
        Just(TaskKind::Epic),
    ]
}

fn dag() -> impl Strategy<Value = Dag> {
    (1usize..40)
        .prop_flat_map(|n| {
            (
                // For generation-order node i: picks reduced modulo i (a subset of nodes < i).
                prop::collection::vec(prop::collection::vec(any::<u32>(), 0..5), n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                prop::collection::btree_set("[a-z0-9][a-z0-9_-]{0,11}", n)
                    .prop_map(|s| s.into_iter().collect::<Vec<String>>())
                    .prop_shuffle(),
                prop::collection::vec(kind(), n),
            )
        })
        .prop_map(|(raw, perm, names, kinds)| build_dag(&raw, &perm, &names, &kinds))
}

fn build_dag(raw: &[Vec<u32>], perm: &[usize], names: &[String], kinds: &[TaskKind]) -> Dag {
    let n = raw.len();
    let mut deps = vec![Vec::new(); n];
    for (logical, picks) in raw.iter().enumerate().skip(1) {
        let at = perm[logical];
        for &r in picks {
            let d = perm[r as usize % logical];
            if !deps[at].contains(&d) {
                deps[at].push(d);
            }
        }
    }
    let specs = (0..n)
        .map(|i| NodeSpec {
            id: names[i].clone(),
            kind: kinds[i],
            parent: None,
            depends_on: deps[i].iter().map(|&d| names[d].clone()).collect(),
        })
        .collect();
    // Transitive closure in generation order (a topological order).
    let mut anc = vec![0u64; n];
    for &at in perm {
        let mut mask = 0u64;
        for &d in &deps[at] {
            mask |= (1u64 << d) | anc[d];
        }
        anc[at] = mask;
    }
    Dag { specs, deps, anc }
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |&j| (mask >> j) & 1 == 1)
}

fn config() -> ProptestConfig {
    // No regression files: this suite must not write next to the sources.
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 7, 8: graph properties
// ---------------------------------------------------------------------------------------------

fn check_graph(dag: &Dag, pick_node: Index, pick_dep: Index, pick_pos: Index) -> TestCaseResult {
    let specs = &dag.specs;
    let n = specs.len();
    let g = match validate(specs) {
        Ok(g) => g,
        Err(errs) => return Err(TestCaseError::fail(format!("valid DAG refused: {errs:?}"))),
    };
    prop_assert_eq!(g.len(), n);
    for (i, spec) in specs.iter().enumerate() {
        prop_assert!(g.is_leaf(i));
        prop_assert_eq!(g.id(i), spec.id.as_str());
        prop_assert_eq!(g.find(&spec.id), Some(i));
        let mut want = dag.deps[i].clone();
        want.sort_unstable();
        prop_assert_eq!(g.deps(i), want.as_slice(), "effective deps of {}", spec.id);
        let mut dependents: Vec<usize> = g.dependents(i).to_vec();
        dependents.sort_unstable();
        let want: Vec<usize> = (0..n).filter(|&j| dag.deps[j].contains(&i)).collect();
        prop_assert_eq!(dependents, want, "dependents of {}", spec.id);
    }

    // topo_order: every leaf exactly once, dependencies first.
    let topo = g.topo_order();
    prop_assert_eq!(topo.len(), n);
    let mut pos = vec![usize::MAX; n];
    for (k, &node) in topo.iter().enumerate() {
        prop_assert!(node < n);
        prop_assert_eq!(pos[node], usize::MAX, "{} listed twice", node);
        pos[node] = k;
    }
    for i in 0..n {
        for &d in &dag.deps[i] {
            prop_assert!(pos[d] < pos[i], "{} listed before its dependency {}", i, d);
        }
    }

    // 8: critical path, by the recurrence and by an independent longest-chain count.
    let mut longest = vec![0u32; n];
    for &node in topo.iter().rev() {
        let after = (0..n)
            .filter(|&j| dag.deps[j].contains(&node))
            .map(|j| longest[j])
            .max();
        longest[node] = 1 + after.unwrap_or(0);
    }
    for (i, &want) in longest.iter().enumerate() {
        let after = g.dependents(i).iter().map(|&d| g.critical_path(d)).max();
        prop_assert_eq!(g.critical_path(i), 1 + after.unwrap_or(0));
        prop_assert_eq!(g.critical_path(i), want);
    }

    // 7: one back edge closes a cycle. `b` depends (transitively) on `a`; make `a` depend on `b`.
    let with_deps: Vec<usize> = (0..n).filter(|&i| dag.anc[i] != 0).collect();
    if with_deps.is_empty() {
        return Ok(());
    }
    let b = with_deps[pick_node.index(with_deps.len())];
    let upstream: Vec<usize> = bits(dag.anc[b]).collect();
    let a = upstream[pick_dep.index(upstream.len())];
    let mut cyclic = specs.clone();
    let at = pick_pos.index(cyclic[a].depends_on.len() + 1);
    cyclic[a].depends_on.insert(at, specs[b].id.clone());
    let errs = match validate(&cyclic) {
        Ok(_) => return Err(TestCaseError::fail("cycle accepted")),
        Err(errs) => errs,
    };
    prop_assert_eq!(errs.len(), 1, "{:?}", errs);
    let GraphError::Cycle { path } = &errs[0] else {
        return Err(TestCaseError::fail(format!("not a cycle error: {errs:?}")));
    };
    prop_assert!(path.len() >= 3, "{:?}", path);
    prop_assert_eq!(path.first(), path.last());
    let body = &path[..path.len() - 1];
    for (k, &x) in body.iter().enumerate() {
        prop_assert!(x < n);
        prop_assert!(!body[..k].contains(&x), "node {} twice in {:?}", x, path);
    }
    for w in path.windows(2) {
        let dep = &cyclic[w[1]].id;
        prop_assert!(
            cyclic[w[0]].depends_on.contains(dep),
            "{} does not depend on {} as written; path {:?}",
            cyclic[w[0]].id,
            dep,
            path
        );
    }
    prop_assert!(
        path.windows(2).any(|w| w == [a, b]),
        "new edge missing from {:?}",
        path
    );
    prop_assert_eq!(errs[0].node(), path[0]);
    let names: Vec<&str> = path.iter().map(|&i| cyclic[i].id.as_str()).collect();
    prop_assert_eq!(
        errs[0].describe(&cyclic),
        format!("dependency cycle: {}", names.join(" -> "))
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn graph_validates_orders_and_reports_cycles(
        dag in dag(),
        pick_node in any::<Index>(),
        pick_dep in any::<Index>(),
        pick_pos in any::<Index>(),
    ) {
        check_graph(&dag, pick_node, pick_dep, pick_pos)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 1-6: the simulated engine
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Running or checking: the attempt passes. Awaiting a merge: the merge lands.
    Pass,
    /// Running: the command finished, checks begin. Checking: checks pass. Awaiting a merge:
    /// rebased onto what landed meanwhile, checks run again.
    Checks,
    /// Running: the attempt fails. Checking: checks fail. Awaiting a merge: merge conflict.
    Fail,
    /// An active task is interrupted by Fleet (no failure counted). Awaiting a merge: a
    /// conflict sends it back to rework. Otherwise like `Pass`.
    Interrupt,
    /// Fleet crashes: the run is rebuilt from copied records and recovered.
    Crash,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    /// Which event (active task or task awaiting its merge) this step resolves.
    pick: u8,
    kind: Kind,
    /// Clock advance before the step.
    dt: u8,
}

#[derive(Debug, Clone)]
struct Scenario {
    dag: Dag,
    plans: Vec<TaskPlan>,
    concurrency: usize,
    script: Vec<Step>,
    /// Script position at which `cancel_all` is called, if any.
    cancel_at: Option<usize>,
    failures_allowed: bool,
}

fn plan() -> impl Strategy<Value = TaskPlan> {
    (0u32..=3, any::<bool>(), 0u64..50, 0u32..4, 0u64..200).prop_map(
        |(retries, needs_merge, backoff_base_ms, backoff_factor, backoff_max_ms)| TaskPlan {
            retry: RetryPolicy {
                retries,
                backoff_base_ms,
                backoff_factor,
                backoff_max_ms,
            },
            needs_merge,
        },
    )
}

fn step(failures_allowed: bool) -> BoxedStrategy<Step> {
    let kind = if failures_allowed {
        prop_oneof![
            6 => Just(Kind::Pass),
            4 => Just(Kind::Checks),
            3 => Just(Kind::Fail),
            2 => Just(Kind::Interrupt),
            1 => Just(Kind::Crash),
        ]
        .boxed()
    } else {
        prop_oneof![
            6 => Just(Kind::Pass),
            4 => Just(Kind::Checks),
            2 => Just(Kind::Interrupt),
            1 => Just(Kind::Crash),
        ]
        .boxed()
    };
    (any::<u8>(), kind, 0u8..30)
        .prop_map(|(pick, kind, dt)| Step { pick, kind, dt })
        .boxed()
}

fn scenario(failures_allowed: bool) -> impl Strategy<Value = Scenario> {
    dag().prop_flat_map(move |dag| {
        let n = dag.specs.len();
        let cancel = if failures_allowed {
            prop::option::weighted(0.15, 0usize..40).boxed()
        } else {
            Just(None).boxed()
        };
        (
            Just(dag),
            prop::collection::vec(plan(), n),
            1usize..=6,
            prop::collection::vec(step(failures_allowed), 0..300),
            cancel,
        )
            .prop_map(
                move |(dag, plans, concurrency, script, cancel_at)| Scenario {
                    dag,
                    plans,
                    concurrency,
                    script,
                    cancel_at,
                    failures_allowed,
                },
            )
    })
}

/// The engine's view of the run, mirrored independently of `Run`.
struct Sim<'a> {
    sc: &'a Scenario,
    run: Run,
    n: usize,
    now: Millis,
    /// Number of transitions seen so far; orders events.
    seq: usize,
    /// Each task's state as implied by the transitions returned so far.
    mirror: Vec<TaskState>,
    attempts: Vec<u32>,
    failures: Vec<u32>,
    /// `seq` of every start of each task.
    starts: Vec<Vec<usize>>,
    /// `seq` at which the task became satisfied.
    satisfied_at: Vec<Option<usize>>,
    /// `seq` at which the task failed, and whether it failed through an attempt.
    failed_at: Vec<Option<(usize, bool)>>,
    cancelled: bool,
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario) -> Result<Sim<'a>, TestCaseError> {
        let graph = match validate(&sc.dag.specs) {
            Ok(g) => g,
            Err(errs) => return Err(TestCaseError::fail(format!("valid DAG refused: {errs:?}"))),
        };
        let n = graph.len();
        Ok(Sim {
            sc,
            run: Run::new(graph, sc.plans.clone()),
            n,
            now: 1_000,
            seq: 0,
            mirror: vec![TaskState::Pending; n],
            attempts: vec![0; n],
            failures: vec![0; n],
            starts: vec![Vec::new(); n],
            satisfied_at: vec![None; n],
            failed_at: vec![None; n],
            cancelled: false,
        })
    }

    fn graph(&self) -> &Graph {
        self.run.graph()
    }

    fn needs_merge(&self, node: usize) -> bool {
        self.sc.plans[node].needs_merge
    }

    fn active(&self) -> usize {
        self.mirror.iter().filter(|s| s.is_active()).count()
    }

    /// 3: every transition starts where the task was, is allowed, and never leaves a final state.
    fn apply(&mut self, ts: &[Transition]) -> TestCaseResult {
        for t in ts {
            prop_assert!(t.task < self.n);
            let node = t.task;
            prop_assert_eq!(t.from, self.mirror[node], "transition {:?}", t);
            prop_assert!(t.from.can_become(t.to), "illegal transition {:?}", t);
            prop_assert!(
                !t.from.is_final(self.needs_merge(node)),
                "left a final state: {:?}",
                t
            );
            prop_assert_eq!(t.attempt, self.attempts[node], "attempt number of {:?}", t);
            self.seq += 1;
            self.mirror[node] = t.to;
            if t.to == TaskState::Merged || (t.to == TaskState::Passed && !self.needs_merge(node)) {
                self.satisfied_at[node] = Some(self.seq);
            }
            if t.to == TaskState::Failed {
                let through_attempt = t.from.is_active();
                self.failed_at[node] = Some((self.seq, through_attempt));
            }
        }
        self.check_consistent()
    }

    /// The run agrees with the mirror: no state changed without a transition saying so.
    fn check_consistent(&self) -> TestCaseResult {
        for node in 0..self.n {
            let rec = self.run.task(node);
            prop_assert_eq!(rec.state, self.mirror[node], "state of {}", node);
            prop_assert_eq!(rec.attempts, self.attempts[node], "attempts of {}", node);
            // 5: interrupted attempts (and crashes) never count as failures.
            prop_assert_eq!(rec.failures, self.failures[node], "failures of {}", node);
        }
        // 4: never more active tasks than the concurrency.
        prop_assert!(self.active() <= self.sc.concurrency);
        Ok(())
    }

    fn start_what_can_start(&mut self) -> TestCaseResult {
        let slots = self.sc.concurrency - self.active();
        if slots == 0 {
            return Ok(());
        }
        let picks = self.run.next_to_start(self.now, slots);
        prop_assert!(picks.len() <= slots);
        for (k, &node) in picks.iter().enumerate() {
            prop_assert!(!picks[..k].contains(&node), "{:?} repeats a task", picks);
            prop_assert_eq!(self.mirror[node], TaskState::Ready);
            prop_assert!(
                self.run.task(node).not_before <= self.now,
                "started during its backoff"
            );
        }
        // Best first (longest chain, then spec order), and no eligible task is passed over
        // for a worse one or held back while a slot is free.
        let key = |node: usize| (std::cmp::Reverse(self.graph().critical_path(node)), node);
        prop_assert!(
            picks.windows(2).all(|w| key(w[0]) < key(w[1])),
            "{:?} not best first",
            picks
        );
        for node in 0..self.n {
            if self.mirror[node] == TaskState::Ready
                && self.run.task(node).not_before <= self.now
                && !picks.contains(&node)
            {
                prop_assert!(picks.len() == slots, "eligible task {} not offered", node);
                prop_assert!(
                    picks.iter().all(|&p| key(p) < key(node)),
                    "{} passed over",
                    node
                );
            }
        }
        for node in picks {
            // 1: every effective dependency is satisfied.
            for &d in self.graph().deps(node) {
                prop_assert!(
                    self.run.is_satisfied(d),
                    "{} started before dependency {}",
                    node,
                    d
                );
            }
            // 2: nothing upstream has failed.
            for a in bits(self.sc.dag.anc[node]) {
                prop_assert!(
                    self.mirror[a] != TaskState::Failed,
                    "{} started after {} failed",
                    node,
                    a
                );
            }
            self.attempts[node] += 1;
            let t = self.run.start(node);
            prop_assert_eq!(t.to, TaskState::Running);
            self.apply(std::slice::from_ref(&t))?;
            self.starts[node].push(self.seq);
        }
        Ok(())
    }

    fn crash_and_restore(&mut self) -> TestCaseResult {
        let records: Vec<TaskRecord> = (0..self.n).map(|i| self.run.task(i).clone()).collect();
        let plans: Vec<TaskPlan> = (0..self.n).map(|i| *self.run.plan(i)).collect();
        let restored = Run::restore(self.run.graph().clone(), plans, records.clone());
        for (i, rec) in records.iter().enumerate() {
            prop_assert_eq!(restored.task(i), rec);
        }
        prop_assert_eq!(
            restored.next_to_start(self.now, self.n),
            self.run.next_to_start(self.now, self.n),
            "restore changed the ready queue"
        );
        self.run = restored;
        let ts = self.run.recover("fleet restarted");
        for t in &ts {
            let ok = (t.from.is_active() && t.to == TaskState::Ready)
                || (t.from == TaskState::Pending
                    && matches!(t.to, TaskState::Ready | TaskState::Skipped));
            prop_assert!(ok, "unexpected transition on recover: {:?}", t);
        }
        self.apply(&ts)?;
        prop_assert_eq!(self.active(), 0);
        Ok(())
    }

    fn resolve(&mut self, node: usize, kind: Kind) -> TestCaseResult {
        let ts = match (self.mirror[node], kind) {
            (TaskState::Passed, Kind::Fail) => self.run.merge_failed(node, "merge conflict"),
            // The merge queue: rebased onto what landed and re-checked, or sent back to rework.
            // (A re-check takes a slot like any check: the engine starts one only when free.)
            (TaskState::Passed, Kind::Checks) if self.active() < self.sc.concurrency => {
                vec![self.run.recheck(node)]
            }
            (TaskState::Passed, Kind::Interrupt) => vec![self.run.rework(node, "merge conflict")],
            (TaskState::Passed, _) => self.run.merged(node),
            (TaskState::Running | TaskState::Checking, Kind::Interrupt) => {
                vec![self.run.interrupt(node, "shutting down")]
            }
            (TaskState::Running, Kind::Checks) => vec![self.run.begin_checks(node)],
            (TaskState::Running | TaskState::Checking, Kind::Pass | Kind::Checks) => {
                self.run.attempt_passed(node)
            }
            (TaskState::Running | TaskState::Checking, Kind::Fail) => {
                self.failures[node] += 1;
                let failures = self.failures[node];
                let ts = self.run.attempt_failed(node, self.now, "exit status 1");
                let retry = self.sc.plans[node].retry;
                match retry.next_delay(failures) {
                    Some(delay) => {
                        prop_assert_eq!(ts.len(), 1);
                        prop_assert_eq!(ts[0].to, TaskState::Ready);
                        prop_assert_eq!(self.run.task(node).not_before, self.now + delay);
                    }
                    None => prop_assert_eq!(ts[0].to, TaskState::Failed),
                }
                ts
            }
            (state, kind) => {
                return Err(TestCaseError::fail(format!(
                    "no event for {state} with {kind:?}"
                )));
            }
        };
        if let Some(first) = ts.first() {
            prop_assert_eq!(first.task, node);
        }
        self.apply(&ts)
    }

    fn drive(&mut self) -> TestCaseResult {
        let ts = self.run.promote_all();
        self.apply(&ts)?;
        let script = &self.sc.script;
        let max_steps = 2 * script.len() + 4 * self.n + 10;
        let mut next = 0usize;
        let mut steps = 0usize;
        while !self.run.is_finished() {
            steps += 1;
            // 5: the run finishes within a bounded number of steps.
            prop_assert!(
                steps <= max_steps,
                "run did not finish in {} steps",
                max_steps
            );
            if self.sc.cancel_at == Some(next) && !self.cancelled {
                self.cancelled = true;
                let ts = self.run.cancel_all("cancelled by user");
                self.apply(&ts)?;
                continue;
            }
            self.start_what_can_start()?;
            let events: Vec<usize> = (0..self.n)
                .filter(|&i| {
                    self.mirror[i].is_active()
                        || (self.mirror[i] == TaskState::Passed && self.needs_merge(i))
                })
                .collect();
            if events.is_empty() {
                // Nothing running, nothing to merge, nothing startable: wait for a backoff.
                let wake = self.run.next_wakeup(self.now);
                prop_assert!(
                    matches!(wake, Some(t) if t > self.now),
                    "stuck at {} with states {:?}",
                    self.now,
                    self.mirror
                );
                self.now = wake.unwrap_or(self.now);
                continue;
            }
            let step = script.get(next).copied().unwrap_or(Step {
                pick: 0,
                kind: Kind::Pass,
                dt: 0,
            });
            next += 1;
            self.now += Millis::from(step.dt);
            if step.kind == Kind::Crash {
                self.crash_and_restore()?;
            } else {
                let node = events[usize::from(step.pick) % events.len()];
                self.resolve(node, step.kind)?;
            }
        }
        self.check_end()
    }

    fn check_end(&self) -> TestCaseResult {
        let g = self.graph();
        for node in 0..self.n {
            let state = self.mirror[node];
            let plan = self.sc.plans[node];
            prop_assert!(self.run.is_final(node));
            prop_assert!(state.is_final(plan.needs_merge), "{} ended {}", node, state);
            prop_assert_eq!(
                self.run.task(node).attempts as usize,
                self.starts[node].len()
            );
            if let Some((at, through_attempt)) = self.failed_at[node] {
                prop_assert_eq!(state, TaskState::Failed);
                if through_attempt {
                    // 5: a task fails through its attempts only once they are all used up.
                    prop_assert_eq!(self.failures[node], plan.retry.retries + 1);
                } else {
                    prop_assert!(self.failures[node] <= plan.retry.retries);
                }
                // 2: every transitive dependent is skipped and never started after the failure.
                for j in (0..self.n).filter(|&j| (self.sc.dag.anc[j] >> node) & 1 == 1) {
                    prop_assert_eq!(
                        self.mirror[j],
                        TaskState::Skipped,
                        "dependent {} of failed {}",
                        j,
                        node
                    );
                    prop_assert!(self.starts[j].iter().all(|&s| s < at));
                }
            }
            if state == TaskState::Skipped {
                prop_assert!(
                    self.starts[node].is_empty(),
                    "skipped task {} had started",
                    node
                );
                // 2: the reason names a dependency that ended unsatisfied.
                let reason = self.run.task(node).reason.clone().unwrap_or_default();
                let named = reason
                    .strip_prefix("dependency `")
                    .and_then(|rest| rest.split_once('`'))
                    .and_then(|(id, how)| Some((g.find(id)?, how)));
                let Some((dep, how)) = named else {
                    return Err(TestCaseError::fail(format!(
                        "skip reason {reason:?} of {node}"
                    )));
                };
                prop_assert!(
                    g.deps(node).contains(&dep),
                    "{:?} names no dependency",
                    reason
                );
                let want = match self.mirror[dep] {
                    TaskState::Failed => " failed",
                    TaskState::Skipped => " was skipped",
                    TaskState::Cancelled => " was cancelled",
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "{reason:?} but dependency is {other}"
                        )));
                    }
                };
                prop_assert_eq!(how, want);
            }
            if !self.cancelled {
                prop_assert!(state != TaskState::Cancelled);
            }
        }
        if !self.sc.failures_allowed {
            // 6: no failures means everything is satisfied, in an order the graph allows.
            prop_assert!(self.run.all_satisfied());
            for node in 0..self.n {
                let first = self.starts[node][0];
                for &d in g.deps(node) {
                    prop_assert!(
                        self.starts[d][0] < first,
                        "{} started before dependency {}",
                        node,
                        d
                    );
                    let sat = self.satisfied_at[d].unwrap_or(usize::MAX);
                    prop_assert!(
                        sat < first,
                        "{} started before dependency {} was satisfied",
                        node,
                        d
                    );
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn run_with_any_outcomes_keeps_its_invariants(sc in scenario(true)) {
        Sim::new(&sc)?.drive()?;
    }

    #[test]
    fn run_without_failures_satisfies_everything_in_order(sc in scenario(false)) {
        Sim::new(&sc)?.drive()?;
    }
}
