//! The task graph: nodes of four kinds linked by `parent` and `depends_on`, and its validation.
//!
//! Nodes are addressed by their position (`usize`) in the spec list, so callers can map an
//! error back to where the node was written (a runbook's line and column, a plan's JSON path).
//!
//! Containers (`epic`, `phase`, and a `task` with children) are not executed; they group work.
//! A dependency on a container means a dependency on every leaf under it, and a container's
//! own `depends_on` is inherited by everything under it. [`Graph::deps`] holds those
//! effective dependencies between leaves, which is all the scheduler needs.

use crate::id::{IdError, validate_id};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Kind of a node, from the broadest to the narrowest. A child is always narrower than its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Epic,
    Phase,
    Task,
    Atomic,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Epic => "epic",
            TaskKind::Phase => "phase",
            TaskKind::Task => "task",
            TaskKind::Atomic => "atomic",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        Some(match s {
            "epic" => TaskKind::Epic,
            "phase" => TaskKind::Phase,
            "task" => TaskKind::Task,
            "atomic" => TaskKind::Atomic,
            _ => return None,
        })
    }
}

/// One node as written by a user or a planner, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    pub kind: TaskKind,
    pub parent: Option<String>,
    pub depends_on: Vec<String>,
}

impl NodeSpec {
    pub fn leaf(id: impl Into<String>, depends_on: &[&str]) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            kind: TaskKind::Atomic,
            parent: None,
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What is wrong with a graph. `node` and `position` index the spec list and a node's
/// `depends_on` list, so the caller can point at the exact place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    InvalidId {
        node: usize,
        id: String,
        error: IdError,
    },
    DuplicateId {
        node: usize,
        first: usize,
        id: String,
    },
    UnknownDependency {
        node: usize,
        position: usize,
        dep: String,
    },
    SelfDependency {
        node: usize,
        position: usize,
    },
    DuplicateDependency {
        node: usize,
        position: usize,
        dep: String,
    },
    DependsOnAncestor {
        node: usize,
        position: usize,
        dep: String,
    },
    UnknownParent {
        node: usize,
        parent: String,
    },
    /// A child must be narrower than its parent (epic > phase > task > atomic).
    BadParentKind {
        node: usize,
        kind: TaskKind,
        parent: usize,
        parent_kind: TaskKind,
    },
    /// A dependency cycle; `path` lists node ids and ends where it starts.
    Cycle {
        path: Vec<usize>,
    },
}

impl GraphError {
    /// The node the error is reported at.
    pub fn node(&self) -> usize {
        match self {
            GraphError::InvalidId { node, .. }
            | GraphError::DuplicateId { node, .. }
            | GraphError::UnknownDependency { node, .. }
            | GraphError::SelfDependency { node, .. }
            | GraphError::DuplicateDependency { node, .. }
            | GraphError::DependsOnAncestor { node, .. }
            | GraphError::UnknownParent { node, .. }
            | GraphError::BadParentKind { node, .. } => *node,
            GraphError::Cycle { path } => path[0],
        }
    }

    /// Human-readable message; `specs` are the same specs that were validated.
    pub fn describe(&self, specs: &[NodeSpec]) -> String {
        let id = |i: usize| specs[i].id.as_str();
        match self {
            GraphError::InvalidId { id, error, .. } => format!("invalid id {id:?}: {error}"),
            GraphError::DuplicateId { id, first, .. } => {
                format!("duplicate id {id:?}: task #{} already uses it", first + 1)
            }
            GraphError::UnknownDependency { node, dep, .. } => {
                format!(
                    "task {:?} depends on {dep:?}, which is not defined",
                    id(*node)
                )
            }
            GraphError::SelfDependency { node, .. } => {
                format!("task {:?} depends on itself", id(*node))
            }
            GraphError::DuplicateDependency { node, dep, .. } => {
                format!("task {:?} lists dependency {dep:?} twice", id(*node))
            }
            GraphError::DependsOnAncestor { node, dep, .. } => format!(
                "task {:?} depends on {dep:?}, which contains it; a task cannot wait for its own parent",
                id(*node)
            ),
            GraphError::UnknownParent { node, parent } => {
                format!(
                    "task {:?} has parent {parent:?}, which is not defined",
                    id(*node)
                )
            }
            GraphError::BadParentKind {
                node,
                kind,
                parent,
                parent_kind,
            } => format!(
                "{} {:?} cannot be under {} {:?}; expected a child narrower than its parent (epic > phase > task > atomic)",
                kind.as_str(),
                id(*node),
                parent_kind.as_str(),
                id(*parent)
            ),
            GraphError::Cycle { path } => {
                let names: Vec<&str> = path.iter().map(|&i| id(i)).collect();
                format!("dependency cycle: {}", names.join(" -> "))
            }
        }
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A validated, acyclic task graph.
#[derive(Debug, Clone)]
pub struct Graph {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    kinds: Vec<TaskKind>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    /// Effective dependencies between leaves (containers expanded, inherited deps added).
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Leaves in an order where every dependency comes first.
    topo: Vec<usize>,
    /// Length of the longest dependency chain starting at the node (itself included).
    critical: Vec<u32>,
}

impl Graph {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, node: usize) -> &str {
        &self.ids[node]
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn kind(&self, node: usize) -> TaskKind {
        self.kinds[node]
    }

    pub fn parent(&self, node: usize) -> Option<usize> {
        self.parent[node]
    }

    pub fn children(&self, node: usize) -> &[usize] {
        &self.children[node]
    }

    /// A leaf is a node that runs; containers only group.
    pub fn is_leaf(&self, node: usize) -> bool {
        self.children[node].is_empty()
    }

    /// Effective dependencies of a leaf (empty for containers).
    pub fn deps(&self, node: usize) -> &[usize] {
        &self.deps[node]
    }

    /// Leaves that depend directly (effectively) on this leaf.
    pub fn dependents(&self, node: usize) -> &[usize] {
        &self.dependents[node]
    }

    /// Leaves in dependency order.
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// Longest chain of leaves that starts at `node`; the scheduler runs long chains first.
    pub fn critical_path(&self, node: usize) -> u32 {
        self.critical[node]
    }

    /// Every leaf under `node` (the node itself if it is a leaf).
    pub fn leaves_under(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if self.is_leaf(n) {
                out.push(n);
            } else {
                stack.extend(self.children[n].iter().rev());
            }
        }
        out.sort_unstable();
        out
    }

    fn ancestors(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.parent[node], move |&p| self.parent[p])
    }
}

/// Validates specs and builds the graph. All errors are returned, not just the first,
/// except that a cycle is only looked for once everything else is valid.
pub fn validate(specs: &[NodeSpec]) -> Result<Graph, Vec<GraphError>> {
    let mut errors = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::with_capacity(specs.len());
    for (node, spec) in specs.iter().enumerate() {
        if let Err(error) = validate_id(&spec.id) {
            errors.push(GraphError::InvalidId {
                node,
                id: spec.id.clone(),
                error,
            });
            continue;
        }
        if let Some(&first) = index.get(&spec.id) {
            errors.push(GraphError::DuplicateId {
                node,
                first,
                id: spec.id.clone(),
            });
        } else {
            index.insert(spec.id.clone(), node);
        }
    }

    let n = specs.len();
    let mut parent = vec![None; n];
    let mut children = vec![Vec::new(); n];
    for (node, spec) in specs.iter().enumerate() {
        let Some(p) = &spec.parent else { continue };
        match index.get(p) {
            None => errors.push(GraphError::UnknownParent {
                node,
                parent: p.clone(),
            }),
            Some(&pi) if specs[pi].kind >= spec.kind => errors.push(GraphError::BadParentKind {
                node,
                kind: spec.kind,
                parent: pi,
                parent_kind: specs[pi].kind,
            }),
            Some(&pi) => {
                parent[node] = Some(pi);
                children[pi].push(node);
            }
        }
    }

    let mut raw_deps = vec![Vec::new(); n];
    for (node, spec) in specs.iter().enumerate() {
        for (position, dep) in spec.depends_on.iter().enumerate() {
            match index.get(dep) {
                None => errors.push(GraphError::UnknownDependency {
                    node,
                    position,
                    dep: dep.clone(),
                }),
                Some(&d) if d == node => errors.push(GraphError::SelfDependency { node, position }),
                Some(&d) if raw_deps[node].contains(&d) => {
                    errors.push(GraphError::DuplicateDependency {
                        node,
                        position,
                        dep: dep.clone(),
                    })
                }
                Some(&d) => raw_deps[node].push(d),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut graph = Graph {
        ids: specs.iter().map(|s| s.id.clone()).collect(),
        index,
        kinds: specs.iter().map(|s| s.kind).collect(),
        parent,
        children,
        deps: vec![Vec::new(); n],
        dependents: vec![Vec::new(); n],
        topo: Vec::new(),
        critical: vec![0; n],
    };

    for (node, spec) in specs.iter().enumerate() {
        for (position, &d) in raw_deps[node].iter().enumerate() {
            if graph.ancestors(node).any(|a| a == d) {
                errors.push(GraphError::DependsOnAncestor {
                    node,
                    position,
                    dep: spec.depends_on[position].clone(),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // A cycle among the edges as written is reported with the user's own names.
    if let Some(path) = find_cycle(n, |i| raw_deps[i].as_slice()) {
        return Err(vec![GraphError::Cycle { path }]);
    }

    // Effective leaf dependencies: own and inherited deps, containers expanded to leaves.
    for node in 0..n {
        if !graph.is_leaf(node) {
            continue;
        }
        let mut eff: Vec<usize> = Vec::new();
        let sources = std::iter::once(node).chain(graph.ancestors(node).collect::<Vec<_>>());
        for src in sources {
            for &d in &raw_deps[src] {
                for leaf in graph.leaves_under(d) {
                    if leaf != node && !eff.contains(&leaf) {
                        eff.push(leaf);
                    }
                }
            }
        }
        eff.sort_unstable();
        graph.deps[node] = eff;
    }
    if let Some(path) = find_cycle(n, |i| graph.deps[i].as_slice()) {
        return Err(vec![GraphError::Cycle { path }]);
    }
    for node in 0..n {
        for i in 0..graph.deps[node].len() {
            let d = graph.deps[node][i];
            graph.dependents[d].push(node);
        }
    }

    graph.topo = topo_order(&graph);
    for &node in graph.topo.iter().rev() {
        let longest_after = graph.dependents[node]
            .iter()
            .map(|&d| graph.critical[d])
            .max()
            .unwrap_or(0);
        graph.critical[node] = 1 + longest_after;
    }
    Ok(graph)
}

/// Kahn's algorithm over leaves, stable by spec order.
fn topo_order(graph: &Graph) -> Vec<usize> {
    let n = graph.len();
    let mut indegree: Vec<usize> = (0..n).map(|i| graph.deps[i].len()).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..n)
        .filter(|&i| graph.is_leaf(i) && indegree[i] == 0)
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some(node) = ready.pop_first() {
        out.push(node);
        for &d in &graph.dependents[node] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    out
}

/// Depth-first search for a cycle; returns the path of the first one found, closed
/// (first element repeated at the end), starting from the lowest node on it.
fn find_cycle<'a>(n: usize, edges: impl Fn(usize) -> &'a [usize]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; n];
    for start in 0..n {
        if color[start] != Color::White {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = Color::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let out = edges(node);
            if *next < out.len() {
                let to = out[*next];
                *next += 1;
                match color[to] {
                    Color::White => {
                        color[to] = Color::Grey;
                        stack.push((to, 0));
                    }
                    Color::Grey => {
                        let from = stack.iter().position(|&(s, _)| s == to).unwrap();
                        let mut path: Vec<usize> = stack[from..].iter().map(|&(s, _)| s).collect();
                        // Edges point from a task to what it depends on; show "a -> b" as
                        // "a depends on b", rotated to start at the lowest index.
                        let min_at = path.iter().enumerate().min_by_key(|&(_, &v)| v).unwrap().0;
                        path.rotate_left(min_at);
                        path.push(path[0]);
                        return Some(path);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(g: &Graph, nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|&i| g.id(i).to_string()).collect()
    }

    #[test]
    fn diamond_builds_with_topo_order_and_critical_path() {
        let specs = vec![
            NodeSpec::leaf("a", &[]),
            NodeSpec::leaf("b", &["a"]),
            NodeSpec::leaf("c", &["a"]),
            NodeSpec::leaf("d", &["b", "c"]),
        ];
        let g = validate(&specs).unwrap();
        assert_eq!(ids(&g, g.topo_order()), ["a", "b", "c", "d"]);
        assert_eq!(g.critical_path(0), 3);
        assert_eq!(g.critical_path(3), 1);
        assert_eq!(ids(&g, g.dependents(0)), ["b", "c"]);
    }

    #[test]
    fn cycle_is_named_with_its_path() {
        let specs = vec![
            NodeSpec::leaf("ok", &[]),
            NodeSpec::leaf("a", &["c"]),
            NodeSpec::leaf("b", &["a"]),
            NodeSpec::leaf("c", &["b"]),
        ];
        let errs = validate(&specs).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].describe(&specs),
            "dependency cycle: a -> c -> b -> a"
        );
        assert_eq!(errs[0].node(), 1);
    }

    #[test]
    fn reports_unknown_self_duplicate_and_invalid() {
        let specs = vec![
            NodeSpec::leaf("a", &["nope", "a"]),
            NodeSpec::leaf("a", &[]),
            NodeSpec::leaf("../x", &[]),
            NodeSpec::leaf("b", &["a", "a"]),
        ];
        let errs = validate(&specs).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.describe(&specs)).collect();
        assert!(
            text.iter().any(|t| t.contains("duplicate id \"a\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("invalid id \"../x\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("depends on \"nope\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("depends on itself")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("lists dependency \"a\" twice")),
            "{text:?}"
        );
    }

    #[test]
    fn containers_expand_and_pass_on_their_dependencies() {
        let mut specs = vec![
            NodeSpec {
                id: "e".into(),
                kind: TaskKind::Epic,
                parent: None,
                depends_on: vec![],
            },
            NodeSpec {
                id: "p1".into(),
                kind: TaskKind::Phase,
                parent: Some("e".into()),
                depends_on: vec![],
            },
            NodeSpec {
                id: "p2".into(),
                kind: TaskKind::Phase,
                parent: Some("e".into()),
                depends_on: vec!["p1".into()],
            },
        ];
        for (id, parent) in [("a1", "p1"), ("a2", "p1"), ("b1", "p2")] {
            specs.push(NodeSpec {
                id: id.into(),
                kind: TaskKind::Atomic,
                parent: Some(parent.into()),
                depends_on: vec![],
            });
        }
        let g = validate(&specs).unwrap();
        let b1 = g.find("b1").unwrap();
        assert_eq!(ids(&g, g.deps(b1)), ["a1", "a2"]);
        assert!(!g.is_leaf(g.find("p1").unwrap()));
        assert_eq!(ids(&g, &g.leaves_under(0)), ["a1", "a2", "b1"]);
    }

    #[test]
    fn child_must_be_narrower_and_cannot_wait_for_its_parent() {
        let specs = vec![
            NodeSpec {
                id: "t".into(),
                kind: TaskKind::Atomic,
                parent: None,
                depends_on: vec![],
            },
            NodeSpec {
                id: "p".into(),
                kind: TaskKind::Phase,
                parent: Some("t".into()),
                depends_on: vec![],
            },
        ];
        let errs = validate(&specs).unwrap_err();
        assert!(matches!(errs[0], GraphError::BadParentKind { .. }));
        let specs = vec![
            NodeSpec {
                id: "p".into(),
                kind: TaskKind::Phase,
                parent: None,
                depends_on: vec![],
            },
            NodeSpec {
                id: "a".into(),
                kind: TaskKind::Atomic,
                parent: Some("p".into()),
                depends_on: vec!["p".into()],
            },
        ];
        let errs = validate(&specs).unwrap_err();
        assert!(matches!(errs[0], GraphError::DependsOnAncestor { .. }));
    }
}
