//! The QA stage: after a deploy, a QA agent tests the deployed app at its URL and returns a
//! bug report (`.fleet-out/qa.json`, `fleet_core::qa`). Bugs become the next cycle's plan;
//! a pass lets the epic await acceptance. Where the project asks for a browser, Fleet renders
//! the page itself with headless chromium first (the rendered DOM goes into the agent's
//! prompt and a file, with a screenshot beside it), so even an agent without a browser sees
//! what a user would.

use crate::stages::{
    OUT, StageEnd, delivery_spec, fail, needs_person, render, run_failure, shell_quote,
};
use crate::{DeliverySpec, EpicData, Pipeline, QaRecord, Result};
use fleet_core::epic::Outcome;
use fleet_core::qa::{QaReport, QaVerdict};
use fleet_store::{EpicRow, ProjectRow};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rendered page goes into the prompt up to this size; the whole of it is in a file.
const PAGE_IN_PROMPT: usize = 40_000;
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a project's deploys are tested by QA: it asks for QA, or some profile plays `qa`.
pub(crate) fn wanted(p: &Pipeline, spec: &DeliverySpec) -> bool {
    spec.kind == "deploy" && (spec.qa.is_some() || p.playable("qa"))
}

/// The bug reports of earlier cycles (review rejections, a person's, QA's), for the next
/// cycle's reviewer and QA to check that they were fixed. Empty when there were none.
pub(crate) fn earlier_reports(data: &EpicData) -> String {
    let mut lines = Vec::new();
    for r in data.reviews.iter().filter(|r| r.verdict != "approve") {
        let by = if r.verdict == "rejected_by_person" {
            "a person"
        } else {
            "review"
        };
        for b in &r.bugs {
            lines.push(format!("- cycle {} ({by}): {b}", r.cycle));
        }
    }
    for q in data.qa.iter().filter(|q| q.verdict == "fail") {
        for b in &q.bugs {
            lines.push(format!("- cycle {} (QA at {}): {b}", q.cycle, q.url));
        }
    }
    lines.join("\n")
}

/// What Fleet's own headless browser saw at the URL.
struct Rendered {
    dom: String,
    dom_file: PathBuf,
    screenshot: Option<PathBuf>,
}

/// The chromium Fleet runs (`FLEET_CHROMIUM`, else Debian's `chromium`).
fn chromium() -> String {
    std::env::var("FLEET_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Whether the chromium Fleet runs can be found (an existing file, or a name on `PATH`):
/// checked before QA starts and again on `fleet task retry`, so a missing browser asks its
/// question without any agent being launched.
pub(crate) fn chromium_found() -> bool {
    let exe = chromium();
    let runnable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if exe.contains('/') {
        return runnable(Path::new(&exe));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| runnable(&d.join(&exe))))
}

/// The question of a QA stage that needs a browser Fleet cannot find or run.
pub(crate) fn browser_question(url: &str, why: &str, epic: &str) -> String {
    format!(
        "QA of {url} needs a headless browser (the project's `qa: {{browser: true}}`), and \
         Fleet could not render the page: {why}. Install Debian's chromium (`apt-get install \
         chromium`, or set FLEET_CHROMIUM), then run `fleet task retry {epic}`."
    )
}

/// Whether QA of `spec` needs a browser that is missing: the question, or `None`.
pub(crate) fn browser_missing(spec: &DeliverySpec, data: &EpicData, epic: &str) -> Option<String> {
    let browser = spec.qa.as_ref().is_some_and(|q| q.browser);
    if !browser || chromium_found() {
        return None;
    }
    let url = data
        .delivery
        .as_ref()
        .and_then(|d| d.url.clone())
        .unwrap_or_else(|| "the deployed app".into());
    Some(browser_question(
        &url,
        &format!("{} is not installed (not found on PATH)", chromium()),
        epic,
    ))
}

async fn chromium_run(args: &[String], profile: &Path) -> std::result::Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .env_clear()
    .envs(fleet_engine::process::command_env(&[]))
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("{} gave no page in {BROWSER_TIMEOUT:?}", chromium()))?
        .map_err(|e| format!("cannot start {}: {e}", chromium()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        return Err(format!("{} exited with {}: {tail}", chromium(), out.status));
    }
    Ok(out.stdout)
}

/// Renders `url` with headless chromium: its DOM after scripts ran (saved as `<stem>.html`)
/// and a screenshot (`<stem>.png`, best effort) in `dir`.
async fn render_page(url: &str, dir: &Path, stem: &str) -> std::result::Result<Rendered, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let profile = dir.join(format!("{stem}-chromium"));
    let dom = chromium_run(&["--dump-dom".into(), url.into()], &profile).await?;
    let dom = String::from_utf8_lossy(&dom).into_owned();
    let dom_file = dir.join(format!("{stem}.html"));
    std::fs::write(&dom_file, &dom).map_err(|e| format!("{}: {e}", dom_file.display()))?;
    let shot = dir.join(format!("{stem}.png"));
    let screenshot = chromium_run(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,800".into(),
            url.into(),
        ],
        &profile,
    )
    .await
    .ok()
    .filter(|_| shot.is_file())
    .map(|_| shot);
    let _ = std::fs::remove_dir_all(&profile);
    Ok(Rendered {
        dom,
        dom_file,
        screenshot,
    })
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… ({} more bytes in the file)",
        &text[..end],
        text.len() - end
    )
}

pub(crate) async fn run(
    p: &Pipeline,
    epic: &EpicRow,
    data: &mut EpicData,
    project: &ProjectRow,
    name: &str,
    v: &BTreeMap<&'static str, String>,
) -> Result<StageEnd> {
    let spec = delivery_spec(project)?;
    let Some(url) = data.delivery.as_ref().and_then(|d| d.url.clone()) else {
        return Ok(needs_person(format!(
            "QA has no address to test: the deploy printed no URL. Make the deploy command \
             print the test environment's URL, then run `fleet task retry {}`.",
            epic.id
        )));
    };
    let cycle = epic.cycle.max(1);
    let dir = p.layout.root().join("epics").join(&epic.id);
    let browser = spec.qa.as_ref().is_some_and(|q| q.browser);
    let mut rendered = None;
    if browser {
        match render_page(&url, &dir, &format!("{name}-page")).await {
            Ok(r) => {
                p.record_events(vec![p.emit(
                    epic,
                    "epic.qa_rendered",
                    json!({"url": url, "dom": r.dom_file, "screenshot": r.screenshot,
                           "bytes": r.dom.len()}),
                )])?;
                rendered = Some(r);
            }
            Err(why) => return Ok(needs_person(browser_question(&url, &why, &epic.id))),
        }
    }
    let mut v = v.clone();
    v.insert("url", url.clone());
    v.insert(
        "page",
        rendered
            .as_ref()
            .map(|r| cut(&r.dom, PAGE_IN_PROMPT))
            .unwrap_or_default(),
    );
    v.insert("feedback", crate::qa::earlier_reports(data));
    v.insert("architecture", String::new());
    v.insert(
        "plan",
        data.tasks
            .iter()
            .filter(|t| t.state == "merged")
            .map(|t| format!("- {} (cycle {}): {}", t.id, t.cycle, t.title))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let statements: Vec<String> = data
        .tasks
        .iter()
        .filter(|t| t.state == "merged")
        .flat_map(|t| t.statements.iter().map(move |s| format!("{s} ({})", t.id)))
        .collect();
    v.insert(
        "acceptance",
        statements
            .iter()
            .map(|s| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    v.insert(
        "task",
        format!(
            "Test the app deployed at {url} (cycle {cycle}).{}",
            if browser {
                " Fleet rendered it with headless chromium: the page as a browser shows it is \
                 below, and you may run `chromium --headless --dump-dom URL` yourself."
            } else {
                ""
            }
        ),
    );
    let prompt = render(p, "qa", &v, project.bible.as_deref())?;
    let check = format!(
        "{} artifact check qa {OUT}/qa.json",
        shell_quote(&p.fleet_exe.display().to_string())
    );
    let mut env = serde_json::Map::new();
    env.insert("FLEET_QA_URL".into(), json!(url));
    if let Some(r) = &rendered {
        env.insert("FLEET_QA_PAGE".into(), json!(r.dom_file));
    }
    let task = json!({"id": "qa", "role": "qa", "prompt": prompt, "checks": [check], "env": env});
    let rb = crate::stages::base_runbook(p, epic, project, name, vec![task]);
    let row = crate::stages::run(p, epic, name, rb, None).await?;
    let report: Option<QaReport> = if row.state == "passed" {
        fleet_git::Repo::open(Path::new(&project.path))?
            .read_file(&row.integration_branch, &format!("{OUT}/qa.json"))?
            .and_then(|t| serde_json::from_str(&t).ok())
    } else {
        None
    };
    let Some(report) = report else {
        return Ok(fail(
            format!("no valid QA report: {}", run_failure(p, &row)),
            &row,
        ));
    };
    let bugs: Vec<String> = report.bugs.iter().map(|b| b.line()).collect();
    let passed = report.verdict == QaVerdict::Pass;
    data.qa.push(QaRecord {
        cycle,
        url: url.clone(),
        verdict: if passed { "pass" } else { "fail" }.into(),
        summary: report.summary.clone(),
        bugs: bugs.clone(),
        dom: rendered.as_ref().map(|r| r.dom_file.display().to_string()),
        screenshot: rendered
            .as_ref()
            .and_then(|r| r.screenshot.as_ref())
            .map(|s| s.display().to_string()),
    });
    if passed {
        p.record_events(vec![p.emit(
            epic,
            "epic.qa_passed",
            json!({"cycle": cycle, "url": url, "summary": report.summary, "tested": report.tested}),
        )])?;
        return Ok((
            Outcome::Passed,
            format!("QA passed at {url}: {}", report.summary),
            Some(row.id),
        ));
    }
    data.feedback = format!(
        "QA tested the app deployed at {url} (cycle {cycle}) and found bugs. Plan fix tasks \
         (new ids) for this bug report:\n{}\n\nQA summary: {}",
        bugs.iter()
            .map(|b| format!("- {b}"))
            .collect::<Vec<_>>()
            .join("\n"),
        report.summary
    );
    p.record_events(vec![p.emit(
        epic,
        "task.qa_failed",
        json!({"cycle": cycle, "url": url, "bugs": bugs}),
    )])?;
    Ok((
        Outcome::Rejected,
        format!("QA found {} bug(s) at {url}", bugs.len()),
        Some(row.id),
    ))
}
