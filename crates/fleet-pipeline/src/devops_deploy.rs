//! A deploy by a DevOps agent, for a project delivered by deploy without a deploy command
//! (`fleet project add --delivery deploy` and no `--deploy-command`): one agent task (role
//! `devops`) deploys the epic's branch to a test environment and reports the address in
//! `.fleet-out/deploy.json` (`{"url": "https://…"}`), which its check validates (`fleet
//! artifact check deploy`). Fleet then checks that the address answers before QA is sent
//! there. No report, a bad one, or an address that does not answer goes back to a new DevOps
//! run with what was wrong; after [`DEPLOY_RUNS`] the epic asks a person — never a dead end.

use crate::stages::{OUT, base_runbook, render, run, run_failure, shell_quote, vars};
use crate::{EpicData, Pipeline, Result};
use fleet_store::{EpicRow, ProjectRow};
use serde::Deserialize;
use serde_json::json;
use std::path::Path;

/// DevOps runs of one deploy before the epic asks a person.
pub(crate) const DEPLOY_RUNS: u32 = 2;

/// `.fleet-out/deploy.json`: where the app was deployed, and optionally how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployReport {
    pub url: String,
    #[serde(default)]
    pub notes: String,
}

/// Reads and validates a deploy report: JSON with an absolute `http(s)://` `url` naming a
/// host, without spaces or credentials.
pub fn parse_report(text: &str) -> std::result::Result<DeployReport, Vec<String>> {
    let r: DeployReport = serde_json::from_str(text).map_err(|e| {
        vec![format!(
            "deploy.json is not a valid deploy report ({{\"url\": \"https://…\"}}): {e}"
        )]
    })?;
    let rest = r
        .url
        .strip_prefix("https://")
        .or_else(|| r.url.strip_prefix("http://"));
    let authority = rest.map(|s| s.split(['/', '?', '#']).next().unwrap_or(""));
    let mut errors = Vec::new();
    match authority {
        None => errors.push(format!(
            "url {:?}: expected an http:// or https:// address",
            r.url
        )),
        Some(a) if a.is_empty() || a.starts_with(':') => {
            errors.push(format!("url {:?}: names no host", r.url))
        }
        Some(a) if a.contains('@') => errors.push(format!(
            "url {:?}: carries credentials; give the address only",
            r.url
        )),
        Some(_) => {}
    }
    if r.url.chars().any(char::is_whitespace) || r.url.len() > 2000 {
        errors.push("url: no spaces, at most 2000 characters".into());
    }
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(errors)
    }
}

/// Deploys with DevOps agents: `Ok(url)` once one reported an address that answers, else
/// `Err(what went wrong last)`.
pub(crate) async fn deploy(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    name: &str,
) -> Result<std::result::Result<String, String>> {
    let mut problem = String::new();
    for attempt in 1..=DEPLOY_RUNS {
        let mut v = vars(p, epic, data, project);
        v.insert(
            "task",
            format!(
                "Deploy this branch to a test environment (where the bible says, else one you \
                 can run from this machine) and make sure it is up. Then write \
                 `{OUT}/deploy.json` with the address people open: {{\"url\": \"https://…\", \
                 \"notes\": \"how it was deployed\"}}. Fleet checks that the address answers, \
                 then QA tests it."
            ),
        );
        v.insert("feedback", problem.clone());
        let prompt = render(p, "devops", &v, project.bible.as_deref())?;
        let check = format!(
            "{} artifact check deploy {OUT}/deploy.json",
            shell_quote(&p.fleet_exe.display().to_string())
        );
        let task = json!({"id": "deploy", "role": "devops", "prompt": prompt, "checks": [check]});
        let run_name = format!("{name}-devops-{attempt}");
        let rb = base_runbook(p, epic, project, &run_name, vec![task]);
        let row = run(p, epic, &run_name, rb, None).await?;
        let report = if row.state == "passed" {
            fleet_git::Repo::open(Path::new(&project.path))?
                .read_file(&row.integration_branch, &format!("{OUT}/deploy.json"))?
                .map(|t| parse_report(&t))
        } else {
            None
        };
        problem = match report {
            Some(Ok(r)) => match fleet_deliver::probe(&r.url).await {
                Ok(_) => {
                    p.record_events(vec![p.emit(
                        epic,
                        "epic.deployed_by_devops",
                        json!({"run": run_name, "url": r.url, "notes": r.notes}),
                    )])?;
                    return Ok(Ok(r.url));
                }
                Err(why) => format!(
                    "Your last deploy reported {}, and Fleet cannot reach it ({why}). Make it \
                     answer there (or report the address that does).",
                    r.url
                ),
            },
            Some(Err(errors)) => format!("Your deploy.json was not valid: {}", errors.join("; ")),
            None => format!(
                "Your last deploy gave no valid {OUT}/deploy.json: {}",
                run_failure(p, &row)
            ),
        };
        p.record_events(vec![p.emit(
            epic,
            "epic.deploy_retried",
            json!({"run": run_name, "try": attempt, "of": DEPLOY_RUNS, "problem": problem}),
        )])?;
    }
    Ok(Err(problem))
}

#[cfg(test)]
mod tests {
    use super::parse_report;

    #[test]
    fn a_deploy_report_needs_an_http_address_and_nothing_else() {
        let ok = parse_report(r#"{"url": "http://127.0.0.1:8080/shop", "notes": "docker"}"#);
        assert_eq!(ok.unwrap().url, "http://127.0.0.1:8080/shop");
        for bad in [
            r#"{"url": "ftp://x"}"#,
            r#"{"url": "https://"}"#,
            r#"{"url": "https://u:p@host/"}"#,
            r#"{"url": "https://a b"}"#,
            r#"{"address": "https://x"}"#,
            r#"{"url": "https://x", "extra": 1}"#,
            "URL: https://x",
        ] {
            assert!(parse_report(bad).is_err(), "{bad}");
        }
    }
}
