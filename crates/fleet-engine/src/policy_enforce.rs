//! Enforcing a run's always-on policies (`policies:`; issue 21). The rules are pure
//! (`fleet_core::policy`); this file is where they bite:
//!
//! - before a run: an integration branch a rule protects is refused (`refuse_protected_branch`);
//! - before an agent attempt: `after_edit` rules become a hook script the CLI runs after every
//!   file edit where its adapter supports that (claude's `PostToolUse`), and ACP agents get the
//!   protected paths and the task's `allowed_paths` / `allowed_tools` for their permission
//!   requests (`attempt_policy`); the protected branches' tips are noted (`refs_before`);
//! - after it: what the hook did becomes events, and a protected branch the agent created,
//!   moved or deleted is put back and fails the attempt (`after_attempt`);
//! - before the checks: a change touching a protected path fails (the paths are put back), and
//!   every `after_edit` command must pass, else the attempt fails with its output in the next
//!   handoff and, when the rule says so, the worktree's changes are undone (`check_change`).
//!
//! Every enforcement is an event `policy.<kind>` naming its rule. A child module of the engine:
//! it works on the engine's own context.

use super::{AttemptEnd, Ctx, FinishResult, Msg, write_log_line};
use crate::EngineError;
use crate::plan::{Plan, TaskAction};
use crate::process::{self, CommandSpec, Finished};
use fleet_agents::AgentEvent;
use fleet_config::PolicyRule;
use fleet_core::policy::{ProtectedPaths, branch_protected, violations};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

macro_rules! log_line {
    ($log:expr, $($arg:tt)*) => {
        write_log_line(&$log, format_args!($($arg)*))
    };
}

/// A run's rules, compiled.
#[derive(Debug, Default)]
pub(crate) struct Enforcer {
    rules: Vec<PolicyRule>,
    protected: Vec<ProtectedPaths>,
}

impl Enforcer {
    pub(crate) fn new(rules: &[PolicyRule]) -> Result<Enforcer, String> {
        let mut protected = Vec::new();
        for r in rules {
            if !r.protected_paths.is_empty() {
                protected.push(
                    ProtectedPaths::new(&r.name, &r.protected_paths)
                        .map_err(|e| format!("policy `{}`: {e}", r.name))?,
                );
            }
            branch_protected(&r.protected_branches, "")
                .map_err(|e| format!("policy `{}`: {e}", r.name))?;
        }
        Ok(Enforcer {
            rules: rules.to_vec(),
            protected,
        })
    }

    fn after_edit(&self) -> impl Iterator<Item = (&PolicyRule, &str)> {
        self.rules
            .iter()
            .filter_map(|r| r.after_edit.as_deref().map(|c| (r, c)))
    }

    /// The rule protecting `branch`, if any.
    pub(crate) fn branch_rule(&self, branch: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| branch_protected(&r.protected_branches, branch).unwrap_or(false))
            .map(|r| r.name.as_str())
    }

    fn guards_branches(&self) -> bool {
        self.rules.iter().any(|r| !r.protected_branches.is_empty())
    }
}

/// What one agent attempt is told of the run's policies.
#[derive(Debug, Clone, Default)]
pub struct AttemptPolicy {
    /// A command the CLI runs after every file edit (see `Adapter::add_post_edit_hook`).
    pub post_edit_hook: Option<String>,
    pub protected: Vec<ProtectedPaths>,
    /// The task's `allowed_paths`, compiled; `None` = the whole worktree.
    pub allowed_paths: Option<ProtectedPaths>,
    pub allowed_tools: Vec<String>,
}

/// Refuses a run whose integration branch a policy protects: Fleet never writes one.
pub(crate) fn refuse_protected_branch(plan: &Plan, branch: &str) -> Result<(), EngineError> {
    let enforcer = Enforcer::new(&plan.policies).map_err(EngineError::Invalid)?;
    match enforcer.branch_rule(branch) {
        Some(rule) => Err(EngineError::Invalid(format!(
            "branch {branch} is protected by policy `{rule}`: Fleet never merges into or pushes \
             a protected branch; land the work on another branch and deliver it by a pull request"
        ))),
        None => Ok(()),
    }
}

fn policy_dir(ctx: &Ctx) -> PathBuf {
    ctx.layout.run_dir(&ctx.run_id).join("policy")
}

/// Where a task's hook reports what it did, one line per failure: rule, exit code, whether it
/// reverted, path.
fn hook_log(ctx: &Ctx, task: usize) -> PathBuf {
    policy_dir(ctx).join(format!("{}.log", ctx.tasks[task].id))
}

/// The policy of one agent attempt of `task` in `cwd`. Writes the hook script (and clears the
/// hook's report of the previous attempt) off the event loop.
pub(super) async fn attempt_policy(
    ctx: &Arc<Ctx>,
    task: usize,
    n: u32,
    cwd: &Path,
) -> AttemptPolicy {
    let def = &ctx.tasks[task];
    let mut policy = AttemptPolicy {
        protected: ctx.policy.protected.clone(),
        allowed_paths: (!def.allowed_paths.is_empty())
            .then(|| ProtectedPaths::new("allowed_paths", &def.allowed_paths).ok())
            .flatten(),
        allowed_tools: def.allowed_tools.clone(),
        post_edit_hook: None,
    };
    if ctx.policy.after_edit().next().is_none() {
        return policy;
    }
    let script = hook_script(ctx, task, n, cwd);
    let c = ctx.clone();
    let written = fleet_store::pg::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = policy_dir(&c);
        std::fs::create_dir_all(&dir)?;
        let log = hook_log(&c, task);
        let _ = std::fs::remove_file(&log);
        let path = dir.join(format!("{}.sh", c.tasks[task].id));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&path)?;
        std::io::Write::write_all(&mut f, script.as_bytes())?;
        Ok::<_, std::io::Error>(path)
    })
    .await;
    if let Ok(Ok(path)) = written {
        policy.post_edit_hook = Some(format!("sh {}", quote(&path.display().to_string())));
    }
    policy
}

/// A single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The hook: reads the tool call (JSON on stdin) for the edited file, runs every `after_edit`
/// command in the worktree with the environment checks get less `pass_env` (never the agent's
/// keys), and on a
/// failure reports to the agent on stderr with exit 2, reverting the file to its committed
/// state where the rule says so.
fn hook_script(ctx: &Ctx, task: usize, n: u32, cwd: &Path) -> String {
    // What checks see of Fleet's own environment and the task's markers, but not the values of
    // `pass_env` (they may be credentials, and this script is a file).
    let mut env: BTreeMap<String, String> = ctx.command_env.clone();
    env.extend(super::task_env(ctx, task, n, cwd));
    let env_words: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(k, v)| quote(&format!("{k}={v}")))
        .collect();
    let mut s = String::from(
        "#!/bin/sh\n# Fleet's after_edit policies, run by the agent CLI after every file edit.\n",
    );
    s.push_str(&format!(
        "wt={}\nlog={}\n",
        quote(&cwd.display().to_string()),
        quote(&hook_log(ctx, task).display().to_string())
    ));
    s.push_str(
        r#"input=$(cat)
file=$(printf '%s' "$input" | tr -d '\n' | sed -n 's/.*"file_path" *: *"\([^"]*\)".*/\1/p')
rel=${file#"$wt"/}
[ "$rel" = "$file" ] && case "$file" in /*) rel= ;; esac
cd "$wt" || exit 0
status=0
msg=
run_rule() {
  out=$(env -i "$@" 2>&1)
  code=$?
  [ "$code" -eq 0 ] && return 0
  reverted=no
  if [ "$revert" = yes ] && [ -n "$rel" ]; then
    if git cat-file -e "HEAD:$rel" 2>/dev/null; then
      git checkout -q HEAD -- "$rel" && reverted=yes
    else
      rm -f -- "$rel" && reverted=yes
    fi
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$reverted" "$rel" >> "$log"
  msg="${msg}Fleet policy \`$name\` failed after your edit of ${rel:-a file}: \`$cmd\` exited $code.
$(printf '%s\n' "$out" | tail -n 40)
"
  if [ "$reverted" = yes ]; then
    msg="${msg}Fleet reverted $rel to its last committed state. Make your change again so that \`$cmd\` passes.
"
  fi
  status=2
}
"#,
    );
    for (rule, command) in ctx.policy.after_edit() {
        s.push_str(&format!(
            "name={} cmd={} revert={}\nrun_rule {} sh -c \"$cmd\"\n",
            quote(&rule.name),
            quote(command),
            if rule.revert { "yes" } else { "no" },
            env_words.join(" ")
        ));
    }
    // Exit 2 with the report on stderr (claude, gemini); `json` (qwen, whose exit-2 stderr
    // does not reach the model headless): exit 0 with a JSON block decision and the report as
    // additional context of the tool's result.
    s.push_str(
        r#"[ "$status" -eq 0 ] && exit 0
if [ "$1" = json ]; then
  esc=$(printf '%s' "$msg" | tr -d '\000-\010\013-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' | awk 'BEGIN{ORS="\\n"} {print}')
  printf '{"decision":"block","reason":"%s","hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"%s"}}\n' "$esc" "$esc"
  exit 0
fi
printf '%s' "$msg" >&2
exit 2
"#,
    );
    s
}

/// The protected branches' tips before an agent attempt (`None` when no rule protects one).
pub(super) async fn refs_before(ctx: &Arc<Ctx>) -> Option<Vec<(String, String)>> {
    if !ctx.policy.guards_branches() {
        return None;
    }
    let c = ctx.clone();
    fleet_store::pg::spawn_blocking(move || protected_tips(&c))
        .await
        .ok()
        .flatten()
}

fn protected_tips(ctx: &Ctx) -> Option<Vec<(String, String)>> {
    let tips = ctx.repo.branch_tips().ok()?;
    Some(
        tips.into_iter()
            .filter(|(b, _)| ctx.policy.branch_rule(b).is_some())
            .collect(),
    )
}

fn send(ctx: &Ctx, task: usize, events: Vec<AgentEvent>) {
    if !events.is_empty() {
        let _ = ctx.tx.send(Msg::Agent { task, events });
    }
}

fn event(kind: &str, rule: &str, detail: String) -> AgentEvent {
    AgentEvent::Policy {
        kind: kind.into(),
        rule: rule.into(),
        detail,
    }
}

/// After an agent attempt: the hook's report as events; a protected branch the agent moved is
/// put back, and the attempt fails with the reason.
pub(super) async fn after_attempt(
    ctx: &Arc<Ctx>,
    task: usize,
    before: Option<Vec<(String, String)>>,
    mut result: Result<AttemptEnd, String>,
) -> Result<AttemptEnd, String> {
    if before.is_none() && ctx.policy.after_edit().next().is_none() {
        return result; // No hook and no branch to guard: nothing to look at.
    }
    let c = ctx.clone();
    let joined = fleet_store::pg::spawn_blocking(move || {
        // No hook log: the hook never ran (no edit was made).
        let reported = std::fs::read_to_string(hook_log(&c, task)).unwrap_or_default();
        let moved = before
            .map(|b| put_branches_back(&c, &b))
            .unwrap_or_default();
        (reported, moved)
    })
    .await;
    // A guard that could not look must not pass for one that found nothing moved.
    let (reported, moved) = match joined {
        Ok(found) => found,
        Err(e) => return Err(format!("the policy check after the attempt failed: {e}")),
    };
    let mut events = Vec::new();
    for line in reported.lines() {
        let mut f = line.split('\t');
        let (Some(rule), Some(code), Some(reverted), path) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = path.filter(|p| !p.is_empty()).unwrap_or("a file");
        events.push(event(
            "failed",
            rule,
            format!("after the agent's edit of {path}: exit {code} (the agent was told at once)"),
        ));
        if reverted == "yes" {
            events.push(event(
                "reverted",
                rule,
                format!("{path} put back as committed"),
            ));
        }
    }
    if let Ok(end) = &mut result
        && let Some(agent) = &mut end.agent
        && !moved.is_empty()
    {
        let mut said = Vec::new();
        for (rule, branch, what) in &moved {
            events.push(event("protected", rule, format!("branch {branch}: {what}")));
            said.push(format!(
                "branch {branch} is protected by policy `{rule}` ({what})"
            ));
        }
        agent.outcome = fleet_agents::Outcome {
            class: fleet_agents::OutcomeClass::AgentError,
            resets_at: None,
            detail: Some(format!(
                "{}; do not create, move or delete protected branches",
                said.join("; ")
            )),
        };
        if let Ok(log) = super::open_log(ctx, task) {
            log_line!(log, "── policy: {} ──", said.join("; "));
        }
    }
    send(ctx, task, events);
    result
}

/// Puts every protected branch back where it was; says which were moved and how.
fn put_branches_back(ctx: &Ctx, before: &[(String, String)]) -> Vec<(String, String, String)> {
    let Some(after) = protected_tips(ctx) else {
        return Vec::new();
    };
    let mut moved = Vec::new();
    let tip = |list: &[(String, String)], b: &str| {
        list.iter()
            .find(|(name, _)| name == b)
            .map(|(_, sha)| sha.clone())
    };
    let mut names: Vec<&String> = before.iter().chain(after.iter()).map(|(b, _)| b).collect();
    names.sort();
    names.dedup();
    for b in names {
        let (old, now) = (tip(before, b), tip(&after, b));
        if old == now {
            continue;
        }
        let what = match (&old, &now) {
            (None, Some(_)) => "created by the agent; deleted again",
            (Some(_), None) => "deleted by the agent; made again",
            _ => "moved by the agent; put back",
        };
        let rule = ctx.policy.branch_rule(b).unwrap_or("protected_branches");
        let what = match ctx.repo.put_branch_back(b, old.as_deref(), now.as_deref()) {
            Ok(()) => what.to_string(),
            Err(e) => format!("changed by the agent; could not be put back: {e}"),
        };
        moved.push((rule.to_string(), b.clone(), what));
    }
    moved
}

/// Before the checks of a task's attempt: protected paths, then `after_edit` commands (agent
/// tasks). `Some` is the attempt's failure.
pub(super) async fn check_change(
    ctx: &Arc<Ctx>,
    task: usize,
    cwd: &Path,
    log: &File,
    env: &BTreeMap<String, String>,
) -> Option<FinishResult> {
    if let Some(failed) = protected_paths(ctx, task, cwd, log).await {
        return Some(failed);
    }
    if !matches!(ctx.tasks[task].action, TaskAction::Agent(_)) {
        return None;
    }
    for (rule, command) in ctx.policy.after_edit() {
        log_line!(log, "── policy `{}` ──\n$ {command}", rule.name);
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let spec = CommandSpec {
            command,
            cwd,
            env,
            timeout: ctx.tasks[task].timeout,
            kill_grace: ctx.kill_grace,
        };
        let finished = match process::run(spec, log, ctx.stop.clone(), |_| {}).await {
            Ok(f) => f,
            Err(e) => {
                return Some(FinishResult::Error(format!(
                    "could not run policy `{}`: {e}",
                    rule.name
                )));
            }
        };
        super::redact_log_since(ctx, task, log, from);
        if finished.stopped {
            return Some(FinishResult::Stopped);
        }
        if finished.success() {
            continue;
        }
        let output = super::read_from(&ctx.layout.log(&ctx.run_id, &ctx.tasks[task].id), from);
        let output = crate::fix_loop::tail(&output, 60, 6000);
        let mut events = vec![event(
            "failed",
            &rule.name,
            format!("`{command}` {} after the attempt", finished.describe()),
        )];
        let mut note = String::new();
        if rule.revert {
            let c = ctx.clone();
            let path = cwd.to_path_buf();
            let undone =
                fleet_store::pg::spawn_blocking(move || c.repo.discard_changes(&path)).await;
            if let Ok(Ok(())) = undone {
                events.push(event(
                    "reverted",
                    &rule.name,
                    "the attempt's uncommitted changes were undone".into(),
                ));
                note = "\nFleet undid the attempt's uncommitted changes (the policy says so); \
                        make the change again so that the command passes."
                    .into();
            }
        }
        log_line!(
            log,
            "── policy `{}`: {}{} ──",
            rule.name,
            finished.describe(),
            if note.is_empty() {
                ""
            } else {
                ", changes undone"
            }
        );
        send(ctx, task, events);
        return Some(FinishResult::CheckFailed {
            check: format!("policy `{}`: {command}", rule.name),
            finished,
            output: format!("{output}{note}"),
        });
    }
    None
}

/// Fails a change that touches a protected path, and puts those paths back as they are where
/// the task forked off the integration branch, so nothing of it can land.
async fn protected_paths(
    ctx: &Arc<Ctx>,
    task: usize,
    cwd: &Path,
    log: &File,
) -> Option<FinishResult> {
    if ctx.policy.protected.is_empty() {
        return None;
    }
    let c = ctx.clone();
    let path = cwd.to_path_buf();
    let found = fleet_store::pg::spawn_blocking(move || {
        let changed = c.repo.paths_changed(&path, &c.integration)?;
        let found = violations(&c.policy.protected, &changed);
        if !found.is_empty() {
            let fork = c.repo.fork_point(&path, &c.integration)?;
            let paths: Vec<String> = found.iter().map(|v| v.path.clone()).collect();
            c.repo.restore_paths(&path, &fork, &paths)?;
        }
        Ok::<_, fleet_git::GitError>(found)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let found = match found {
        Ok(found) if found.is_empty() => return None,
        Ok(found) => found,
        Err(e) => {
            return Some(FinishResult::Error(format!(
                "cannot check the change against protected paths: {e}"
            )));
        }
    };
    let lines: Vec<String> = found
        .iter()
        .map(|v| {
            format!(
                "{} is protected by policy `{}` (pattern `{}`)",
                v.path, v.rule, v.pattern
            )
        })
        .collect();
    send(
        ctx,
        task,
        found
            .iter()
            .map(|v| {
                event(
                    "protected",
                    &v.rule,
                    format!("{} (pattern `{}`): put back", v.path, v.pattern),
                )
            })
            .collect(),
    );
    let output = format!(
        "the change touches protected paths, so it cannot land:\n{}\nFleet put them back as \
         they are on the integration branch; do the task without changing them.",
        lines.join("\n")
    );
    log_line!(log, "── {output} ──");
    let rules: Vec<&str> = {
        let mut r: Vec<&str> = found.iter().map(|v| v.rule.as_str()).collect();
        r.dedup();
        r
    };
    Some(FinishResult::CheckFailed {
        check: format!("policy `{}`: protected paths", rules.join("`, `")),
        finished: Finished::failed_check(),
        output,
    })
}
