//! `fleet demo`: the product at work in one command, with no key and no network beyond
//! loopback. A throwaway project (`calc`, a git repository with a local bare remote), an
//! instance whose profiles play every role with Fleet's own `http` agent against a scripted
//! model server embedded in this process, and one sentence submitted through the real
//! pipeline: research, a plan of parallel tasks, a rate limit moved to another account, a
//! failing check fixed, a review rejection fixed, and the branch pushed to the remote,
//! awaiting acceptance.
//!
//! The model is scripted, the rest is real: the adapters, the engine, the worktrees, the
//! checks, the merge queue, the store. The scripted replies call the agent's own tools
//! (a shell command that writes the task's files), so what lands is what the tools did.

use crate::{demo_clis, epics, exit};
use anyhow::Context;
use fleet_testkit::{Fault, ModelServer, Scenario, Usage};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The sentence the demo submits.
pub const REQUEST: &str = "Build a tiny calculator: add and multiply two numbers";

pub struct DemoFlags {
    pub dir: Option<PathBuf>,
    /// Open the dashboard on the demo instance and let `fleet serve` drive the request.
    pub serve: bool,
    pub bind: String,
    /// The installed agent CLIs with the user's keys, instead of the embedded model.
    pub real: bool,
}

/// Where the demo's parts live, all under one throwaway directory.
struct Layout {
    root: PathBuf,
    repo: PathBuf,
    remote: PathBuf,
    home: PathBuf,
    script: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Layout {
        Layout {
            repo: root.join("calc"),
            remote: root.join("origin.git"),
            home: root.join("instance"),
            script: root.join("script"),
            root,
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = fleet_git::command(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Fleet demo")
        .env("GIT_AUTHOR_EMAIL", "demo@fleet.local")
        .env("GIT_COMMITTER_NAME", "Fleet demo")
        .env("GIT_COMMITTER_EMAIL", "demo@fleet.local")
        .output()
        .context("cannot run git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A path as one shell word.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn task(id: &str, title: &str, description: &str, deps: &[&str], check: &str) -> serde_json::Value {
    json!({"id": id, "title": title, "role": "developer", "description": description,
           "depends_on": deps,
           "acceptance": {"commands": [check], "statements": [description]}})
}

/// The planner's two plans: the first request, then what the review asked for.
fn plans() -> (serde_json::Value, serde_json::Value) {
    let first = json!({
        "summary": "A calculator in three small parts: add and multiply in parallel, then the command that uses both",
        "phases": [{"id": "build", "title": "Build the calculator", "tasks": [
            task("add", "Add two numbers", "lib/add.sh A B prints A+B", &[], "test \"$(sh lib/add.sh 2 3)\" = 5"),
            task("mul", "Multiply two numbers", "lib/mul.sh A B prints A*B", &[], "test \"$(sh lib/mul.sh 4 5)\" = 20"),
            task("calc", "The calc command", "bin/calc A +|x B uses lib/add.sh and lib/mul.sh", &["add", "mul"],
                 "test \"$(sh bin/calc 6 x 7)\" = 42"),
        ]}]
    });
    let fixes = json!({
        "summary": "What the review asked for: a usage message for an unknown operator",
        "phases": [{"id": "review-fixes", "title": "Review fixes", "tasks": [
            task("usage", "Usage message", "bin/calc prints a usage line and exits 2 for an unknown operator", &[],
                 "sh bin/calc 1 / 2 2>&1 | grep -q usage"),
        ]}]
    });
    (first, fixes)
}

const CALC: &str = "#!/bin/sh\nhere=$(dirname \"$0\")/..\ncase \"$2\" in\n  +) sh \"$here/lib/add.sh\" \"$1\" \"$3\" ;;\n  x) sh \"$here/lib/mul.sh\" \"$1\" \"$3\" ;;\n";

/// Writes the files the scripted agents copy into their worktrees, and returns the scenarios.
/// `mul` is written with a bug the first time its developer runs (its check fails), fixed the
/// next time: the marker that says "tried" lives outside every worktree.
fn scenarios(script: &Path) -> anyhow::Result<Vec<(&'static str, Scenario)>> {
    std::fs::create_dir_all(script)?;
    let (first, fixes) = plans();
    let files: [(&str, String); 9] = [
        ("plan-1.json", first.to_string()),
        ("plan-2.json", fixes.to_string()),
        ("review-reject.json", json!({"verdict": "reject", "summary": "bin/calc says nothing for an unknown operator",
            "bugs": [{"title": "no usage message", "file": "bin/calc",
                      "details": "`bin/calc 1 / 2` prints nothing and exits 0; it should print a usage line and exit 2"}]}).to_string()),
        ("review-approve.json", json!({"verdict": "approve", "summary": "every criterion holds"}).to_string()),
        ("add.sh", "echo $(( $1 + $2 ))\n".into()),
        ("mul.sh", "echo $(( $1 * $2 ))\n".into()),
        ("mul-buggy.sh", "echo $(( $1 + $2 ))\n".into()),
        ("calc", format!("{CALC}esac\n")),
        ("calc-usage", format!("{CALC}  *) echo \"usage: calc A +|x B\" >&2; exit 2 ;;\nesac\n")),
    ];
    for (name, text) in &files {
        std::fs::write(script.join(name), text)?;
    }
    let s = sh_quote(script);
    let planner = format!(
        "mkdir -p .fleet-out && if [ -f bin/calc ]; then cp {s}/plan-2.json .fleet-out/plan.json; \
         else cp {s}/plan-1.json .fleet-out/plan.json; fi"
    );
    let reviewer = format!(
        "mkdir -p .fleet-out && if grep -q usage bin/calc; then cp {s}/review-approve.json .fleet-out/review.json; \
         else cp {s}/review-reject.json .fleet-out/review.json; fi"
    );
    let developer = format!(
        "mkdir -p lib bin; case \"$FLEET_TASK\" in \
         add) cp {s}/add.sh lib/add.sh ;; \
         mul) if [ -e {s}/mul.tried ]; then cp {s}/mul.sh lib/mul.sh; else touch {s}/mul.tried; cp {s}/mul-buggy.sh lib/mul.sh; fi ;; \
         calc) cp {s}/calc bin/calc; chmod +x bin/calc ;; \
         usage) cp {s}/calc-usage bin/calc; chmod +x bin/calc ;; \
         esac; git status --short"
    );
    let dev = |model: &str| {
        Scenario::new()
            .shell(developer.clone())
            .text("Done: the task's files are written.")
            .usage(Usage::new(1800, 150))
            .model(model)
    };
    Ok(vec![
        (
            "researcher",
            Scenario::new()
                .write_file(
                    ".fleet-out/context.md",
                    "# calc\n\nLayout: README.md only so far; shell scripts go in lib/ and bin/.\n\
                     Build: none. Test: each task's acceptance commands.\n",
                )
                .text("The context is written.")
                .usage(Usage::new(1200, 80)),
        ),
        (
            "planner",
            Scenario::new()
                .shell(planner)
                .text("The plan is in .fleet-out/plan.json.")
                .usage(Usage::new(2400, 300)),
        ),
        // The first developer's account is limited for an hour: every request to it is refused
        // with 429 (not only the first: add and mul start on it together, and whichever reached
        // it second would otherwise pass there), and each task moves at once to the other
        // account's developer.
        (
            "dev-fast",
            dev("scripted-fast").fault(Fault::status(429).retry_after(3600)),
        ),
        ("dev-steady", dev("scripted-steady")),
        (
            "reviewer",
            Scenario::new()
                .shell(reviewer)
                .text("The review is in .fleet-out/review.json.")
                .usage(Usage::new(3000, 120)),
        ),
    ])
}

/// The demo instance's `fleet.yaml`: five `http` profiles over two accounts, and a profile
/// for each installed real CLI that joins (`demo_clis`).
fn fleet_yaml(server: &ModelServer, real_clis: &str, real_account: &str) -> String {
    let profile = |name: &str, model: &str, role: &str, account: &str, priority: u32| {
        format!(
            "  {name}:\n    cli: http\n    model: {model}\n    roles: [{role}]\n    account: {account}\n    priority: {priority}\n    base_url: \"{}\"\n    stall_timeout: 30s\n",
            server.base_url(name)
        )
    };
    format!(
        "# The `fleet demo` instance: Fleet's own `http` agent plays every role against a scripted\n\
         # model server on loopback ({}). See docs/CONFIG.md for every key.\n\
         agents:\n{}{}{}{}{}{}\
         accounts:\n  account-a: {{ daily_budget_tokens: 1000000 }}\n  account-b: {{ daily_budget_tokens: 1000000 }}\n{}",
        server.url(),
        real_clis,
        profile("researcher", "scripted-small", "researcher", "account-b", 0),
        profile("planner", "scripted-large", "planner", "account-b", 0),
        profile("dev-fast", "scripted-fast", "developer", "account-a", 10),
        profile("dev-steady", "scripted-steady", "developer", "account-b", 5),
        profile("reviewer", "scripted-large", "reviewer", "account-b", 0),
        real_account,
    )
}

/// Makes the project, its bare remote and the instance.
fn create(l: &Layout, fleet_yaml: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(&l.repo)?;
    git(&l.repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(
        l.repo.join("README.md"),
        "# calc\n\nA tiny calculator, built by `fleet demo`.\n",
    )?;
    git(&l.repo, &["add", "-A"])?;
    git(&l.repo, &["commit", "-q", "-m", "calc: empty project"])?;
    git(
        &l.root,
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    )?;
    git(
        &l.repo,
        &["remote", "add", "origin", &l.remote.display().to_string()],
    )?;
    git(&l.repo, &["push", "-q", "origin", "main"])?;
    std::fs::create_dir_all(&l.home)?;
    std::fs::write(l.home.join("fleet.yaml"), fleet_yaml)?;
    epics::project_add(
        &l.home,
        epics::NewProject {
            name: "calc".into(),
            repo: l.repo.display().to_string(),
            branch: None,
            checks: vec!["test -s README.md".into()],
            delivery: "branch".into(),
            forge: None,
            api_url: None,
            forge_repo: None,
            token_env: None,
            remote: Some("origin".into()),
            deploy_command: None,
            deploy_pass_env: Vec::new(),
            bible: None,
            qa: None,
        },
    )?;
    Ok(())
}

pub fn run(flags: DemoFlags) -> anyhow::Result<u8> {
    // `--real` without a CLI and its key is refused before anything is created.
    let real = if flags.real {
        match demo_clis::usable(crate::init::detect()) {
            Ok(usable) => Some(usable),
            Err(why) => {
                eprintln!("{why}");
                return Ok(exit::UNAVAILABLE);
            }
        }
    } else {
        None
    };
    let root = match flags.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "fleet-demo-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        )),
    };
    std::fs::create_dir_all(&root)?;
    if std::fs::read_dir(&root)?.next().is_some() {
        return Err(crate::InvalidInput(format!(
            "{} is not empty; choose an empty or new directory",
            root.display()
        ))
        .into());
    }
    let l = Layout::new(root);
    println!(
        "fleet demo: a throwaway project and instance in {}",
        l.root.display()
    );
    println!(
        "  project  {} (remote {})",
        l.repo.display(),
        l.remote.display()
    );
    // The embedded model lives as long as the demo.
    let mut _server = None;
    let yaml = match &real {
        Some(usable) => {
            let names: Vec<&str> = usable.iter().map(|f| f.cli).collect();
            println!(
                "  agents   {}: the real CLIs, with your keys, against their vendors",
                names.join(", ")
            );
            demo_clis::real_yaml(usable)
        }
        None => {
            let server = ModelServer::start();
            let scenarios = scenarios(&l.script)?;
            for (name, scenario) in &scenarios {
                server.add_scenario(name, scenario.clone());
            }
            let clis = demo_clis::loopback_clis();
            let of_role = |role: &str| {
                scenarios
                    .iter()
                    .find(|(name, _)| *name == role)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default()
            };
            let profiles = demo_clis::loopback_profiles(&clis, &server, of_role);
            println!(
                "  agents   researcher, planner, dev-fast, dev-steady, reviewer: Fleet's `http` agent against a scripted model on {}",
                server.url()
            );
            for c in &clis {
                println!(
                    "           {}: the real `{}` CLI as the {}, against the same model (a dummy key, none of yours)",
                    c.cli, c.cli, c.role
                );
            }
            let yaml = fleet_yaml(&server, &profiles, demo_clis::loopback_account(&clis));
            _server = Some(server);
            yaml
        }
    };
    println!("  request  \"{REQUEST}\"");
    create(&l, &yaml)?;
    println!();
    let home = &l.home;
    if flags.serve {
        let p = epics::pipeline(home, true)?;
        let epic = p.submit("calc", REQUEST).map_err(anyhow::Error::from)?;
        println!(
            "epic {} submitted; the dashboard shows it at work (Ctrl-C ends the demo).",
            epic.id
        );
        return crate::serve::serve(
            home,
            crate::serve::ServeFlags {
                bind: Some(flags.bind),
                public_url: None,
                epics: 2,
                pr_poll: 60,
                quiet: false,
            },
        );
    }
    let code = epics::add(home, "calc", REQUEST, true, false)?;
    println!();
    epics::show(home, "e1", false)?;
    println!();
    if code != exit::PASSED {
        println!("The demo did not reach acceptance; the story above says where it stopped.");
        return Ok(code);
    }
    if real.is_some() {
        println!(
            "Real agents took the sentence to a branch on the demo's remote, awaiting acceptance."
        );
        println!("  FLEET_HOME={} fleet task show e1", home.display());
        return Ok(exit::PASSED);
    }
    println!(
        "What you just saw: one sentence became a plan of parallel tasks (add and mul, then calc);"
    );
    println!(
        "dev-fast was rate-limited and the tasks moved to dev-steady on another account; mul's first"
    );
    println!(
        "version failed its check and the next attempt fixed it; the reviewer sent the work back"
    );
    println!("(no usage message), a fix task was planned and landed, and the branch was pushed.");
    println!();
    println!("Look around (FLEET_HOME={}):", home.display());
    println!(
        "  cd {} && git log --oneline --graph origin/HEAD 'refs/remotes/origin/fleet/*' 2>/dev/null || git -C {} log --oneline --all",
        l.repo.display(),
        l.remote.display()
    );
    println!("  FLEET_HOME={} fleet task show e1 --json", home.display());
    println!(
        "  FLEET_HOME={} fleet serve          # the dashboard on this instance",
        home.display()
    );
    println!("  fleet demo --serve                     # watch a fresh demo live on the dashboard");
    Ok(exit::PASSED)
}
