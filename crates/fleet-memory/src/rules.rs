//! The rules of memory as plain functions over data: relevance and ranking, weight after an
//! outcome, decay with idleness, archiving, near-duplicate merging, per-scope caps and skill
//! proposals. No IO and no clock: the time is an argument, so tests drive it.

use crate::lesson::{AppliesWhen, Lesson, Millis, Scope};
use std::collections::BTreeSet;

const DAY: Millis = 24 * 60 * 60 * 1000;

/// The knobs, with the defaults `fleet.yaml`'s `memory:` may override.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Weight is multiplied by this when an attempt a lesson was injected into passed...
    pub gain: f64,
    /// ...and by this when it did not.
    pub loss: f64,
    pub max_weight: f64,
    /// Idle weight halves every this long (since last use, or creation).
    pub half_life: Millis,
    /// A lesson that has not helped once within this long of its last use (or creation) is
    /// archived.
    pub archive_after: Millis,
    /// Below this effective weight a lesson is archived whatever its history.
    pub min_weight: f64,
    /// Word-set similarity (Jaccard) at or above which two lessons of a scope are one.
    pub duplicate_at: f64,
    /// Live lessons per scope.
    pub scope_cap: usize,
    /// Helped this many times: proposed to a person as a skill.
    pub promote_after: u32,
    /// Lessons injected into one prompt take at most this many tokens (4 characters each).
    pub inject_tokens: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            gain: 1.25,
            loss: 0.8,
            max_weight: 4.0,
            half_life: 30 * DAY,
            archive_after: 60 * DAY,
            min_weight: 0.05,
            duplicate_at: 0.8,
            scope_cap: 200,
            promote_after: 3,
            inject_tokens: 800,
        }
    }
}

impl Policy {
    /// The defaults with `fleet.yaml`'s `memory:` knobs applied.
    pub fn from_config(c: &fleet_config::MemoryConfig) -> Policy {
        Policy {
            inject_tokens: c.inject_tokens,
            archive_after: c.archive_after_days as Millis * DAY,
            scope_cap: c.scope_cap,
            ..Policy::default()
        }
    }
}

/// What an attempt is about, to rank lessons for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskContext {
    pub text: String,
    pub paths: Vec<String>,
    pub role: Option<String>,
    pub kind: Option<String>,
    /// The scopes that apply (the instance, the project's bible, the project).
    pub scopes: Vec<Scope>,
}

/// The lowercase words (letters, digits, `_`) of at least 3 characters: what similarity and
/// the words a lesson and a task share compare.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// The lowercase words (letters, digits, `_`) of any length: what word triggers compare.
fn trigger_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// When the lesson last did something: its last use, else its creation.
pub fn last_touch(l: &Lesson) -> Millis {
    l.last_used_at.unwrap_or(l.created_at).max(l.created_at)
}

/// Weight after idleness: halves every `half_life` since the last touch. Computed, never
/// stored, so applying it twice cannot compound.
pub fn effective_weight(l: &Lesson, now: Millis, p: &Policy) -> f64 {
    let idle = (now - last_touch(l)).max(0) as f64;
    l.weight * 0.5f64.powf(idle / p.half_life.max(1) as f64)
}

/// Records one injection's result: counts, last use, weight.
pub fn record_outcome(l: &mut Lesson, passed: bool, now: Millis, p: &Policy) {
    l.used += 1;
    l.last_used_at = Some(now.max(l.created_at));
    if passed {
        l.helped += 1;
        l.weight = (l.weight * p.gain).min(p.max_weight);
    } else {
        l.weight *= p.loss;
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => path.starts_with(pattern),
        Some((head, tail)) => {
            path.starts_with(head) && path.len() >= head.len() + tail.len() && path.ends_with(tail)
        }
    }
}

/// How well a lesson fits a task, 0 when it does not apply at all. `text_score` is the
/// full-text match of the task's text against the lesson (0 when none; higher is better).
pub fn relevance(l: &Lesson, ctx: &TaskContext, text_score: f64, now: Millis, p: &Policy) -> f64 {
    if l.is_archived() || !ctx.scopes.contains(&l.scope) {
        return 0.0;
    }
    let w: &AppliesWhen = &l.applies_when;
    let listed = |list: &[String], v: &Option<String>| {
        list.is_empty() || v.as_ref().is_none_or(|v| list.iter().any(|x| x == v))
    };
    if !listed(&w.roles, &ctx.role) || !listed(&w.kinds, &ctx.kind) {
        return 0.0;
    }
    let path_hits = w
        .paths
        .iter()
        .filter(|pat| ctx.paths.iter().any(|path| path_matches(pat, path)))
        .count();
    if !w.paths.is_empty() && !ctx.paths.is_empty() && path_hits == 0 {
        return 0.0;
    }
    // A trigger is explicit, so its words count whatever their length ("ui", "db").
    let task_words = trigger_words(&ctx.text);
    let word_hits = w
        .words
        .iter()
        .filter(|t| {
            let t = trigger_words(t);
            !t.is_empty() && t.iter().all(|x| task_words.contains(x))
        })
        .count();
    let triggered = path_hits + word_hits;
    if triggered == 0 && text_score <= 0.0 {
        return 0.0;
    }
    // A lesson written for this role or kind of task ranks above one written for any.
    let fits = if explicitly_applies(l, ctx) { 0.5 } else { 0.0 };
    (triggered as f64 + text_score.max(0.0) + fits) * effective_weight(l, now, p)
}

/// Words that say nothing about what a task or lesson is about.
const FILLER: &[&str] = &[
    "and", "are", "for", "from", "into", "that", "the", "this", "was", "with", "you", "your",
];

/// A lesson's words: its text's and its word triggers'.
fn lesson_words(l: &Lesson) -> BTreeSet<String> {
    let mut w = words(&l.text);
    for t in &l.applies_when.words {
        w.extend(words(t));
    }
    w
}

/// The task's words that tell the candidate lessons apart: held by at most half of them (a
/// word every lesson holds, like "module" in four lessons about modules, matches them all and
/// says nothing). With fewer than 3 candidates there are too few to tell: every word counts.
pub fn distinctive_words(task_text: &str, candidates: &[&Lesson]) -> BTreeSet<String> {
    let task: BTreeSet<String> = words(task_text)
        .into_iter()
        .filter(|w| !FILLER.contains(&w.as_str()))
        .collect();
    if candidates.len() < 3 {
        return task;
    }
    let held: Vec<BTreeSet<String>> = candidates.iter().map(|l| lesson_words(l)).collect();
    task.into_iter()
        .filter(|w| held.iter().filter(|h| h.contains(w)).count() * 2 <= candidates.len())
        .collect()
}

/// Whether the lesson names this task's role or kind (not merely allows any).
pub fn explicitly_applies(l: &Lesson, ctx: &TaskContext) -> bool {
    let named = |list: &[String], v: &Option<String>| {
        v.as_ref().is_some_and(|v| list.iter().any(|x| x == v))
    };
    named(&l.applies_when.roles, &ctx.role) || named(&l.applies_when.kinds, &ctx.kind)
}

/// Whether a lesson that no trigger (path, word) fires for still matches the task's words
/// well enough to be injected: it must hold two of the task's distinctive words (one when the
/// lesson names the task's role or kind, or the task has only one). One shared common word
/// was enough for BM25, which injected every lesson into every task.
pub fn words_match(l: &Lesson, ctx: &TaskContext, distinctive: &BTreeSet<String>) -> bool {
    let shared = lesson_words(l).intersection(distinctive).count();
    let need = if explicitly_applies(l, ctx) { 1 } else { 2 };
    shared > 0 && shared >= need.min(distinctive.len())
}

/// Estimated tokens of a text (4 characters each, rounded up).
pub fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// The lessons to inject, best first, under the token cap: `scored` is (lesson, relevance).
/// Ties go to the older id order, so the choice is deterministic.
pub fn select_for_injection(mut scored: Vec<(&Lesson, f64)>, token_cap: usize) -> Vec<&Lesson> {
    scored.retain(|(_, s)| *s > 0.0);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut left = token_cap;
    let mut out = Vec::new();
    for (l, _) in scored {
        let cost = tokens(&l.text) + 8;
        if cost <= left {
            left -= cost;
            out.push(l);
        }
    }
    out
}

/// Why a lesson should be archived now, if it should.
pub fn archive_reason(l: &Lesson, now: Millis, p: &Policy) -> Option<String> {
    if l.is_archived() {
        return None;
    }
    let idle = now - last_touch(l);
    if l.helped == 0 && idle >= p.archive_after {
        return Some(if l.used == 0 {
            format!("never used in {} days", p.archive_after / DAY)
        } else {
            format!(
                "injected {} times, never helped, idle {} days",
                l.used,
                p.archive_after / DAY
            )
        });
    }
    let w = effective_weight(l, now, p);
    (w < p.min_weight).then(|| format!("weight fell to {w:.3}"))
}

/// Word-set similarity (Jaccard) of two texts, 0..=1.
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

/// Folds `dup` into `keep`: both provenances (sorted, without repeats), counts summed, the
/// stronger weight, the triggers' union, the earlier creation and last use kept.
pub fn merge(keep: &mut Lesson, dup: &Lesson) {
    keep.provenance.extend(dup.provenance.iter().cloned());
    keep.provenance.sort();
    keep.provenance.dedup();
    keep.used += dup.used;
    keep.helped += dup.helped;
    keep.weight = keep.weight.max(dup.weight);
    keep.created_at = keep.created_at.min(dup.created_at);
    keep.last_used_at = keep.last_used_at.max(dup.last_used_at);
    let union = |a: &mut Vec<String>, b: &[String]| {
        a.extend(b.iter().cloned());
        a.sort();
        a.dedup();
    };
    let w = &mut keep.applies_when;
    union(&mut w.paths, &dup.applies_when.paths);
    union(&mut w.roles, &dup.applies_when.roles);
    union(&mut w.kinds, &dup.applies_when.kinds);
    union(&mut w.words, &dup.applies_when.words);
}

/// A near-duplicate found among live lessons: `dup` is folded into `keep` (the older one).
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    pub keep: String,
    pub dup: String,
}

/// Which live lessons of the same scope are near-duplicates, each merged into the oldest of its
/// group (by creation, then id).
pub fn find_duplicates(lessons: &[Lesson], p: &Policy) -> Vec<Merge> {
    let mut live: Vec<&Lesson> = lessons.iter().filter(|l| !l.is_archived()).collect();
    live.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut gone: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, keep) in live.iter().enumerate() {
        if gone.contains(keep.id.as_str()) {
            continue;
        }
        for dup in &live[i + 1..] {
            if dup.scope == keep.scope
                && !gone.contains(dup.id.as_str())
                && similarity(&keep.text, &dup.text) >= p.duplicate_at
            {
                gone.insert(&dup.id);
                out.push(Merge {
                    keep: keep.id.clone(),
                    dup: dup.id.clone(),
                });
            }
        }
    }
    out
}

/// The live lessons to archive so that no scope holds more than `scope_cap`: the weakest
/// (effective weight), then the oldest, then by id.
pub fn over_cap(lessons: &[Lesson], now: Millis, p: &Policy) -> Vec<String> {
    let mut by_scope: std::collections::BTreeMap<&Scope, Vec<&Lesson>> = Default::default();
    for l in lessons.iter().filter(|l| !l.is_archived()) {
        by_scope.entry(&l.scope).or_default().push(l);
    }
    let mut out = Vec::new();
    for (_, mut ls) in by_scope {
        if ls.len() <= p.scope_cap {
            continue;
        }
        ls.sort_by(|a, b| {
            effective_weight(a, now, p)
                .total_cmp(&effective_weight(b, now, p))
                .then(a.created_at.cmp(&b.created_at))
                .then(a.id.cmp(&b.id))
        });
        let n = ls.len() - p.scope_cap;
        out.extend(ls[..n].iter().map(|l| l.id.clone()));
    }
    out
}

/// Whether to ask a person to make this lesson a skill now (once: never again after asking).
pub fn due_for_proposal(l: &Lesson, p: &Policy) -> bool {
    !l.is_archived() && l.proposed_at.is_none() && l.helped >= p.promote_after
}

/// What the maintenance pass does at `now`: merges first, then archives (by rule, then by cap
/// over what is left), then proposals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Upkeep {
    pub merges: Vec<Merge>,
    pub archive: Vec<(String, String)>,
    pub propose: Vec<String>,
}

/// The whole maintenance pass, applied to `lessons` in place and described in the result.
pub fn upkeep(lessons: &mut Vec<Lesson>, now: Millis, p: &Policy) -> Upkeep {
    let mut done = Upkeep {
        merges: find_duplicates(lessons, p),
        ..Upkeep::default()
    };
    for m in &done.merges {
        let dup = lessons.iter().find(|l| l.id == m.dup).cloned();
        if let (Some(dup), Some(keep)) = (dup, lessons.iter_mut().find(|l| l.id == m.keep)) {
            merge(keep, &dup);
        }
    }
    let merged: BTreeSet<&str> = done.merges.iter().map(|m| m.dup.as_str()).collect();
    lessons.retain(|l| !merged.contains(l.id.as_str()));
    for l in lessons.iter_mut() {
        if let Some(why) = archive_reason(l, now, p) {
            l.archived_at = Some(now);
            l.archived_why = Some(why.clone());
            done.archive.push((l.id.clone(), why));
        }
    }
    for id in over_cap(lessons, now, p) {
        if let Some(l) = lessons.iter_mut().find(|l| l.id == id) {
            let why = format!("scope {} over its cap of {}", l.scope.key(), p.scope_cap);
            l.archived_at = Some(now);
            l.archived_why = Some(why.clone());
            done.archive.push((id, why));
        }
    }
    for l in lessons.iter_mut() {
        if due_for_proposal(l, p) {
            l.proposed_at = Some(now);
            done.propose.push(l.id.clone());
        }
    }
    done
}
