//! The `fleet` command line: parses arguments, finds the state directory, and hands work to
//! the engine. Rendering (progress, tables, JSON) lives here; decisions do not.

mod accounts;
mod agents;
mod audit;
mod demo;
mod demo_clis;
mod demo_story;
mod epics;
mod init;
mod local_time;
mod logs;
mod memory;
mod progress;
mod remote_logs;
mod review_run;
mod runner;
mod serve;
mod state_store;
mod stats;
mod views;

use clap::{Parser, Subcommand};
use fleet_engine::{EngineError, EngineOptions, RunEnd, StateDir};
use fleet_store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Exit codes: the contract scripts rely on.
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const ERROR: u8 = 3;
    /// The configured store cannot be opened (unreachable, unknown URL, newer schema).
    pub const STORE: u8 = 4;
    /// Something outside Fleet that the command needs is missing, refused or down, and
    /// nothing was done: an agent CLI with its key (`fleet demo --real`), the forge (`fleet
    /// project new`: a rejected token, a taken name, a forge that kept failing), a store
    /// shared by machines (`fleet runner` on SQLite, which has no task queue).
    pub const UNAVAILABLE: u8 = 5;
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "fleet",
    version,
    about = "Orchestrates a fleet of coding agents and commands over a task graph in git worktrees"
)]
struct Cli {
    /// Instance directory (holds fleet.yaml and .fleet/). Default: the nearest directory
    /// upward with a fleet.yaml, else the git repository's own .fleet/.
    #[arg(long, global = true, env = "FLEET_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an instance here: finds the agent CLIs installed and the keys set (names only),
    /// writes a commented fleet.yaml with a profile per CLI, and says what to run next.
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Point every profile at this endpoint instead of the vendors' own (a proxy, a
        /// gateway, a local model server).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Run a YAML runbook: one worktree and branch per task, merged into fleet/runs/<instance>/<run>.
    Run {
        /// The runbook file.
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        file: Option<PathBuf>,
        /// Continue an interrupted run instead.
        #[arg(long, value_name = "RUN")]
        resume: Option<String>,
        /// Print nothing but errors and the final lines.
        #[arg(long, short)]
        quiet: bool,
        /// fsync every commit of the store (survives power loss, slower).
        #[arg(long)]
        fsync: bool,
        /// Seconds between SIGTERM and SIGKILL when a task's processes are ended.
        #[arg(long, default_value_t = 5.0)]
        kill_grace: f64,
        /// Queue the tasks for `fleet runner` workers (which clone the repository's `origin`)
        /// instead of running them here; needs a PostgreSQL store.
        #[arg(long, conflicts_with = "resume")]
        on_runners: bool,
    },
    /// Claim and do tasks of runs queued with `fleet run --on-runners`, from the shared store
    /// (PostgreSQL), until SIGTERM; then finish or hand back running tasks within --grace.
    Runner(runner::RunnerArgs),
    /// List the live runners of the shared store (PostgreSQL) and what each offers.
    Runners {
        /// The shared store (`postgres://…`); default: the instance's fleet.yaml `store:`.
        #[arg(long, env = "FLEET_STORE")]
        store: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Show a run's tasks and where things are (default: the newest run).
    Status {
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Spend today per account, profile, role and task, against the daily budgets.
    Budget {
        #[arg(long)]
        json: bool,
    },
    /// Outcomes: per project and week, requests delivered, accepted, rejected and blocked,
    /// attempts per task, cost per accepted request, time to the pull request; per agent
    /// profile its pass rate, stalls, rate limits and cost per passed task.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Remove worktrees of runs that ended (kept for inspection after failures), and prune git.
    Gc {
        /// Also remove worktrees of interrupted runs (they can no longer be resumed as they were).
        #[arg(long)]
        interrupted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Agent CLIs: what is installed, whether profiles can run, how transcripts parse.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Accounts: each one's state (usable, cooling down, disabled, over budget) and today's
    /// spend; `enable NAME` brings a disabled or cooling-down account back.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Projects: the repositories requests are delivered into.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Requests (epics): planned, implemented, reviewed and delivered by the fleet.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Checks an artifact an agent wrote (the stages' acceptance checks run this).
    #[command(hide = true)]
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Serve the API, dashboard, live events and MCP on one port, and work on every submitted
    /// task around the clock (default bind: fleet.yaml's server.bind, 127.0.0.1:7420).
    Serve {
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long)]
        bind: Option<String>,
        /// Base URL of links sent to people (default: server.public_url, else http://<bind>).
        #[arg(long)]
        public_url: Option<String>,
        /// Epics worked on at once (0: serve only, work on nothing).
        #[arg(long, default_value_t = 2)]
        epics: usize,
        /// Seconds between checks of delivered pull requests for review comments.
        #[arg(long, default_value_t = 60)]
        pr_poll: u64,
        #[arg(long, short)]
        quiet: bool,
    },
    /// API tokens for `fleet serve` (bearer tokens with a scope; stored hashed).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Memory: lessons learned, knowledge search, the task graph as JSONL.
    Memory {
        #[command(subcommand)]
        command: memory::MemoryCommand,
    },
    /// Fleet's MCP server on stdin/stdout (agents launched by Fleet get it in their MCP config).
    Mcp,
    /// Run the audits of `audits:` in fleet.yaml now: an agent studies each project without
    /// changing it, and each finding becomes a request unless a like one is open or was
    /// rejected recently.
    Audit {
        /// Only this project's audits.
        #[arg(long)]
        project: Option<String>,
        /// Only audits of this kind (or name).
        #[arg(long)]
        kind: Option<String>,
        /// Run only the audits due at this local time, `YYYY-MM-DD HH:MM` (what `fleet serve`
        /// does every minute; for testing schedules).
        #[arg(long, value_name = "TIME")]
        due_at: Option<String>,
        /// Show what earlier audits found instead of running any.
        #[arg(long)]
        history: bool,
        #[arg(long)]
        json: bool,
    },
    /// Have an agent (role framework-reviewer) analyse how Fleet ran RUN, or every run of EPIC:
    /// a log analysis, a framework bug report and a fix plan in .fleet/reviews/<target>/.
    /// Refused while the run is live.
    ReviewRun {
        /// A run id (see `fleet runs`) or an epic id (see `fleet task ls`).
        target: String,
    },
    /// A task's log (`fleet status` names runs and tasks); `-f` streams it as it grows and
    /// ends when the task ends.
    Logs {
        run: String,
        task: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// See the fleet at work, no key needed: one sentence becomes a plan, parallel tasks, a
    /// rate limit moved to another account, a failing check fixed, a review rejection fixed and
    /// a branch on a local remote (Fleet's `http` agent against a scripted model on loopback,
    /// and an installed agent CLI beside it, with a dummy key). `--real`: your CLIs and keys.
    Demo {
        #[command(subcommand)]
        command: Option<DemoCommand>,
        /// Where to create the demo (default: a new directory under the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Open the dashboard (`fleet serve`) on the demo instance and watch it work live.
        #[arg(long)]
        serve: bool,
        /// With --serve: where the dashboard listens.
        #[arg(long, default_value = "127.0.0.1:7420")]
        bind: String,
        /// Use the installed agent CLIs with your keys (as `fleet init` finds them) instead of
        /// the scripted model; exit 5 when no CLI has its key set.
        #[arg(long)]
        real: bool,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// The runbook demo: a throwaway repository with a small shell project and a ten-task
    /// runbook (parallel branches, a diamond, a flaky retry, a failing check).
    Runbook {
        /// Where to create the demo repository (default: a new directory under the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ProjectCommand {
    /// Register a project: a git repository (path or URL), its checks and its delivery.
    Add {
        name: String,
        /// A local repository, or a URL to clone into .fleet/repos/<name>.
        #[arg(long)]
        repo: String,
        /// The branch results build on and are delivered into (default: the checked-out one).
        #[arg(long)]
        branch: Option<String>,
        /// A command that defines "green" for every task (repeatable).
        #[arg(long = "check", value_name = "COMMAND")]
        checks: Vec<String>,
        /// branch | pull_request | deploy.
        #[arg(long, default_value = "branch")]
        delivery: String,
        /// Pull requests: github | gitlab.
        #[arg(long)]
        forge: Option<String>,
        /// The forge's API (default: api.github.com / gitlab.com/api/v4).
        #[arg(long)]
        api_url: Option<String>,
        /// OWNER/NAME on GitHub, the project path on GitLab.
        #[arg(long)]
        forge_repo: Option<String>,
        /// Name of the env var holding the forge token (default GITHUB_TOKEN / GITLAB_TOKEN).
        #[arg(long)]
        token_env: Option<String>,
        /// The git remote the branch is pushed to (default origin).
        #[arg(long)]
        remote: Option<String>,
        /// Deploys: the command; the last URL it prints is the result. Without one, a DevOps
        /// agent deploys to a test environment and reports the URL (.fleet-out/deploy.json).
        #[arg(long)]
        deploy_command: Option<String>,
        /// Deploys: an environment variable of Fleet's the deploy command may see (repeat for
        /// more; e.g. the deploy tool's token). It sees nothing else of Fleet's secrets.
        #[arg(long = "deploy-pass-env", value_name = "NAME")]
        deploy_pass_env: Vec<String>,
        /// The bible (bibles/<name>.md) the project follows.
        #[arg(long)]
        bible: Option<String>,
        /// Deploys: a QA agent tests the deployed app before a person is asked to accept.
        #[arg(long)]
        qa: bool,
        /// Deploys: QA with a headless browser (Fleet renders the deployed page; implies --qa).
        #[arg(long)]
        qa_browser: bool,
    },
    /// Create a project from nothing: a new repository with a README from the bible,
    /// registered to follow it.
    New {
        name: String,
        /// The bible (bibles/<name>.md) whose stack, design, tone and deploy target drive it.
        #[arg(long)]
        bible: String,
        /// Where the repository is made (default .fleet/repos/<name>).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// List projects.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Submit a request to a project; works on it until it awaits acceptance.
    Add {
        request: String,
        #[arg(long)]
        project: String,
        /// standard, or migrate: the read-only legacy contour (eight documents under
        /// docs/migration/<epic>/, no code changed until `fleet task accept` approves them).
        #[arg(long, default_value = "standard", value_parser = parse_mode)]
        mode: fleet_core::epic::Mode,
        /// Only record the request (a server or `fleet task resume` works on it).
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// List epics.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// The whole story of an epic: stages, agents, cycles, reviews, spend.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Every log of an epic's stage runs, oldest first; `-f` streams them as they grow and
    /// ends when the epic stops working (awaiting acceptance, blocked, done).
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Accept the delivered result (migration mode: approve the documents; the implementation
    /// is planned and worked on).
    Accept {
        id: String,
        /// Migration mode: only approve (a server or `fleet task resume` works on it).
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Reject the delivered result: the comment becomes fix tasks of the next cycle.
    Reject {
        id: String,
        #[arg(long)]
        comment: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Cancel an epic.
    Cancel { id: String },
    /// Answer a blocked epic's question: the answer joins the request; it continues.
    Answer {
        id: String,
        answer: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Continue a blocked epic after fixing what it asked about (checked again first).
    Retry {
        id: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Continue working on an epic (after a stop, or one submitted with --no-wait).
    Resume {
        id: String,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Read new review comments on the epic's pull request; they become rework.
    Sync {
        id: String,
        #[arg(long)]
        no_wait: bool,
        /// Keep polling every N seconds while the epic awaits acceptance (ends when it is
        /// accepted, cancelled or fails).
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints it as the last line (shown once: only its hash is kept).
    Create {
        /// admin | submit | read (each includes the ones after it).
        #[arg(long)]
        scope: String,
        /// A name to list and revoke it by (default: <scope>-<n>).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (names and scopes, never the tokens).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// Validate a plan.json or review.json; exit 1 with the errors.
    Check {
        /// plan | review
        kind: String,
        file: PathBuf,
        /// Roles tasks may have (comma-separated).
        #[arg(long, default_value = "")]
        roles: String,
        /// Task ids that exist already (comma-separated).
        #[arg(long, default_value = "")]
        existing: String,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Every account of fleet.yaml: state and today's spend.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Clears a disablement or a cooldown (recorded as an `account.enabled` event).
    Enable { name: String },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Installed CLIs and versions, profiles, accounts and which secrets are set (never values).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Checks every profile; `--smoke PROFILE` also runs one short real turn of it.
    Doctor {
        #[arg(long, value_name = "PROFILE")]
        smoke: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Parses a recorded stdout transcript and prints `{"outcome": …, "events": […], …}`.
    Replay {
        #[arg(long)]
        cli: String,
        file: PathBuf,
        /// The CLI's stderr of the same run, if recorded.
        #[arg(long)]
        stderr: Option<PathBuf>,
        /// The exit status the CLI ended with (137/143 = killed).
        #[arg(long, allow_negative_numbers = true)]
        exit_code: Option<i32>,
    },
}

fn main() -> ExitCode {
    // Before anything else: a stop signal waits until the command knows what it means (see
    // `fleet_engine::signals`). Commands that start or serve runs listen for it; every other
    // command lets it act as usual.
    fleet_engine::signals::hold();
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    if !drives_runs(&cli.command) {
        fleet_engine::signals::release();
    }
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`fleet task logs e1 | head`), met by a write that returned
        // the error instead of panicking: the same quiet end as `quiet_on_closed_stdout`.
        Err(err) if closed_pipe(&err) => ExitCode::from(exit::PASSED),
        Err(err) => {
            let code = classify(&err);
            eprintln!("fleet: error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A reader that went away (`fleet status --json | head`) ends the command quietly with
/// exit 0, as `git log | head` ends. Rust ignores SIGPIPE, so `println!` panics on EPIPE
/// (exit 101); this hook, the one place every command prints through, turns exactly that
/// panic into a quiet exit, from any thread. SIGPIPE stays ignored rather than reset to its
/// default: `fleet run` and `fleet serve` write to agents' stdin pipes and to sockets, where
/// a peer going away is an error to handle, not a reason for the whole fleet to die (the
/// engine's children get the default SIGPIPE back before `execve`).
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's words: "failed printing to stdout: Broken pipe (os error 32)".
        if message.starts_with("failed printing to stdout: ")
            && message.to_ascii_lowercase().contains("broken pipe")
        {
            std::process::exit(exit::PASSED.into());
        }
        report(info)
    }));
}

fn parse_mode(s: &str) -> Result<fleet_core::epic::Mode, String> {
    fleet_core::epic::Mode::parse(s).ok_or_else(|| format!("{s:?}: expected standard or migrate"))
}

/// Whether the command starts or drives runs: those listen for stop signals themselves.
fn drives_runs(command: &Command) -> bool {
    match command {
        Command::Run { .. } | Command::Serve { .. } | Command::Runner(_) => true,
        Command::Task { command } => matches!(
            command,
            TaskCommand::Add { .. }
                | TaskCommand::Accept { .. }
                | TaskCommand::Reject { .. }
                | TaskCommand::Answer { .. }
                | TaskCommand::Retry { .. }
                | TaskCommand::Resume { .. }
                | TaskCommand::Sync { .. }
        ),
        _ => false,
    }
}

/// Bad input is 2; anything else that stops fleet is 3.
fn classify(err: &anyhow::Error) -> u8 {
    if state_store::is_store_failure(err) {
        return exit::STORE;
    }
    if err.downcast_ref::<InvalidInput>().is_some() {
        return exit::INVALID;
    }
    if err.downcast_ref::<ForgeFailure>().is_some() {
        return exit::UNAVAILABLE;
    }
    if let Some(e) = err.downcast_ref::<EngineError>() {
        return match e {
            EngineError::Invalid(_)
            | EngineError::NoSuchRun(_)
            | EngineError::AlreadyFinished(..)
            | EngineError::Locked(..)
            | EngineError::Git(fleet_git::GitError::NotARepo(_)) => exit::INVALID,
            _ => exit::ERROR,
        };
    }
    exit::ERROR
}

/// An error in what the user gave us (arguments, files); exit code 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

/// A forge refused or kept failing; exit code 5.
#[derive(Debug)]
pub struct ForgeFailure(pub String);

impl std::fmt::Display for ForgeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ForgeFailure {}

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

fn real_main(mut cli: Cli) -> anyhow::Result<u8> {
    // Agents run in their worktrees: every path made from the home (MCP config, CODEX_HOME,
    // prompt files) must mean the same there, so a relative --home / FLEET_HOME is made
    // absolute once, here.
    if let Some(home) = cli.home.take() {
        let abs = std::path::absolute(&home)
            .map_err(|e| InvalidInput(format!("--home {}: {e}", home.display())))?;
        cli.home = Some(abs);
    }
    match cli.command {
        Command::Init { dir, base_url } => init::run(&dir, base_url.as_deref()),
        Command::Run {
            file,
            resume,
            quiet,
            fsync,
            kill_grace,
            on_runners,
        } => {
            let opts = RunFlags {
                quiet,
                fsync,
                kill_grace: std::time::Duration::from_secs_f64(kill_grace.max(0.0)),
                on_runners,
            };
            match (file, resume) {
                (Some(file), None) => run_file(StateChoice::Discover(cli.home), &file, opts),
                (None, Some(run)) => resume_run(cli.home, &run, opts),
                _ => unreachable!("clap enforces exactly one"),
            }
        }
        Command::Runner(args) => runner::runner(cli.home, args),
        Command::Runners { store, json } => runner::list(cli.home, store.as_deref(), json),
        Command::Runs { json } => {
            let (_, store) = open_existing_state(cli.home)?;
            views::runs(&*store, json)?;
            Ok(exit::PASSED)
        }
        Command::Status { run, json } => {
            let (layout, store) = open_existing_state(cli.home)?;
            views::status(&layout, &*store, run.as_deref(), json)
        }
        Command::Budget { json } => {
            let instance =
                load_instance(find_home(cli.home.clone(), &std::env::current_dir()?).as_deref())?;
            let (_, store) = open_existing_state(cli.home)?;
            views::budget(&instance, &*store, json)?;
            Ok(exit::PASSED)
        }
        Command::Stats { json } => {
            let (_, store) = open_existing_state(cli.home)?;
            stats::stats(&*store, json)
        }
        Command::Gc { interrupted, json } => {
            let (layout, store) = open_existing_state(cli.home)?;
            views::gc(&layout, &*store, interrupted, json)?;
            Ok(exit::PASSED)
        }
        Command::Logs { run, task, follow } => {
            let (layout, store) = open_existing_state(cli.home)?;
            logs::task_log(&layout, &*store, &run, &task, follow)
        }
        Command::Demo {
            command: Some(DemoCommand::Runbook { dir }),
            ..
        } => demo::run(dir),
        Command::Demo {
            command: None,
            dir,
            serve,
            bind,
            real,
        } => demo_story::run(demo_story::DemoFlags {
            dir,
            serve,
            bind,
            real,
        }),
        Command::Serve {
            bind,
            public_url,
            epics,
            pr_poll,
            quiet,
        } => serve::serve(
            &epics::instance_home(cli.home)?,
            serve::ServeFlags {
                bind,
                public_url,
                epics,
                pr_poll,
                quiet,
            },
        ),
        Command::Token { command } => {
            let home = epics::instance_home(cli.home)?;
            match command {
                TokenCommand::Create { scope, name } => serve::token_create(&home, &scope, name),
                TokenCommand::Ls { json } => serve::token_ls(&home, json),
                TokenCommand::Revoke { name } => serve::token_revoke(&home, &name),
            }
        }
        Command::Memory { command } => memory::run(cli.home, command),
        Command::Mcp => serve::mcp(&epics::instance_home(cli.home)?),
        Command::Audit {
            project,
            kind,
            due_at,
            history,
            json,
        } => audit::run(
            cli.home,
            audit::AuditArgs {
                project,
                kind,
                due_at,
                history,
                json,
            },
        ),
        Command::ReviewRun { target } => review_run::run(cli.home, &target),
        Command::Artifact {
            command:
                ArtifactCommand::Check {
                    kind,
                    file,
                    roles,
                    existing,
                },
        } => epics::artifact_check(&kind, &file, &roles, &existing),
        Command::Project { command } => {
            let home = epics::instance_home(cli.home)?;
            match command {
                ProjectCommand::Add {
                    name,
                    repo,
                    branch,
                    checks,
                    delivery,
                    forge,
                    api_url,
                    forge_repo,
                    token_env,
                    remote,
                    deploy_command,
                    deploy_pass_env,
                    bible,
                    qa,
                    qa_browser,
                } => epics::project_add(
                    &home,
                    epics::NewProject {
                        name,
                        repo,
                        branch,
                        checks,
                        delivery,
                        forge,
                        api_url,
                        forge_repo,
                        token_env,
                        remote,
                        deploy_command,
                        deploy_pass_env,
                        bible,
                        qa: (qa || qa_browser).then_some(fleet_pipeline::QaSpec {
                            browser: qa_browser,
                        }),
                    },
                ),
                ProjectCommand::New { name, bible, dir } => {
                    epics::project_new(&home, &name, &bible, dir)
                }
                ProjectCommand::Ls { json } => epics::project_ls(&home, json),
            }
        }
        Command::Task { command } => {
            let home = epics::instance_home(cli.home)?;
            match command {
                TaskCommand::Add {
                    request,
                    project,
                    mode,
                    no_wait,
                    quiet,
                } => epics::add_as(&home, &project, &request, mode, !no_wait, quiet),
                TaskCommand::Ls { json } => epics::ls(&home, json),
                TaskCommand::Show { id, json } => epics::show(&home, &id, json),
                TaskCommand::Logs { id, follow } => logs::epic_log(
                    &StateDir::new(home.join(".fleet")),
                    &*epics::store(&home)?,
                    &id,
                    follow,
                ),
                TaskCommand::Accept { id, no_wait, quiet } => {
                    epics::accept(&home, &id, !no_wait, quiet)
                }
                TaskCommand::Reject {
                    id,
                    comment,
                    no_wait,
                    quiet,
                } => epics::reject(&home, &id, &comment, !no_wait, quiet),
                TaskCommand::Cancel { id } => epics::cancel(&home, &id),
                TaskCommand::Resume { id, quiet } => epics::resume(&home, &id, quiet),
                TaskCommand::Answer {
                    id,
                    answer,
                    no_wait,
                    quiet,
                } => epics::answer(&home, &id, &answer, !no_wait, quiet),
                TaskCommand::Retry { id, no_wait, quiet } => {
                    epics::retry(&home, &id, !no_wait, quiet)
                }
                TaskCommand::Sync {
                    id,
                    no_wait,
                    every,
                    quiet,
                } => epics::sync(&home, &id, !no_wait, every, quiet),
            }
        }
        Command::Accounts { command } => {
            let instance =
                load_instance(find_home(cli.home.clone(), &std::env::current_dir()?).as_deref())?;
            match command {
                AccountsCommand::Ls { json } => {
                    let store = accounts::store_if_any(cli.home)?;
                    accounts::ls(&instance, store.as_deref(), json)
                }
                AccountsCommand::Enable { name } => accounts::enable(&instance, cli.home, &name),
            }
        }
        Command::Agents { command } => {
            let instance =
                load_instance(find_home(cli.home.clone(), &std::env::current_dir()?).as_deref())?;
            let store = || accounts::store_if_any(cli.home.clone());
            match command {
                AgentsCommand::Ls { json } => agents::ls(&instance, store()?.as_deref(), json),
                AgentsCommand::Doctor { smoke, json } => {
                    agents::doctor(&instance, store()?.as_deref(), smoke.as_deref(), json)
                }
                AgentsCommand::Replay {
                    cli,
                    file,
                    stderr,
                    exit_code,
                } => agents::replay(&cli, &file, stderr.as_deref(), exit_code),
            }
        }
    }
}

pub struct RunFlags {
    pub quiet: bool,
    pub fsync: bool,
    pub kill_grace: std::time::Duration,
    /// Queue the tasks for runners instead (`fleet_engine::remote`).
    pub on_runners: bool,
}

/// The instance directory: explicit, or the nearest ancestor of `start` holding fleet.yaml.
fn find_home(explicit: Option<PathBuf>, start: &Path) -> Option<PathBuf> {
    if explicit.is_some() {
        return explicit;
    }
    start
        .ancestors()
        // Anything named fleet.yaml counts (a FIFO or a device is refused when read, not
        // silently skipped).
        .find(|d| d.join("fleet.yaml").symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

fn open_store(layout: &StateDir, fsync: bool) -> anyhow::Result<Arc<dyn Store>> {
    state_store::open(layout, fsync)
}

/// State for commands that read existing runs: the instance, else the current repository.
fn open_existing_state(home: Option<PathBuf>) -> anyhow::Result<(StateDir, Arc<dyn Store>)> {
    let cwd = std::env::current_dir()?;
    let root = match find_home(home, &cwd) {
        Some(home) => home.join(".fleet"),
        None => {
            let repo = fleet_git::Repo::open(&cwd).map_err(|_| {
                InvalidInput(format!(
                    "no fleet state here: {} is not in a fleet instance (fleet.yaml) nor a git repository",
                    cwd.display()
                ))
            })?;
            repo.root().join(".fleet")
        }
    };
    if !state_store::exists(&StateDir::new(&root))? {
        return Err(
            InvalidInput(format!("no runs yet: {} has no fleet.db", root.display())).into(),
        );
    }
    let layout = StateDir::new(root);
    let store = open_store(&layout, false)?;
    Ok((layout, store))
}

/// The instance's `fleet.yaml`, or an empty configuration when there is no instance.
fn load_instance(home: Option<&Path>) -> anyhow::Result<fleet_config::InstanceConfig> {
    match home
        .map(|h| h.join("fleet.yaml"))
        .filter(|p| p.symlink_metadata().is_ok())
    {
        Some(path) => fleet_config::load_instance(&path).map_err(|e| {
            let text = e
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            InvalidInput(format!(
                "{text}\n{} error(s) in the instance configuration",
                e.len()
            ))
            .into()
        }),
        None => Ok(fleet_config::InstanceConfig::empty()),
    }
}

fn config_errors(errors: &[fleet_config::ConfigError]) -> anyhow::Error {
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let n = errors.len();
    InvalidInput(format!(
        "{text}\n{n} error{} in the runbook; nothing was started",
        if n == 1 { "" } else { "s" }
    ))
    .into()
}

/// Where a new run keeps its state.
pub enum StateChoice {
    /// The instance (`--home`, or a fleet.yaml above the current directory), else the repository.
    Discover(Option<PathBuf>),
    /// The runbook's repository, always.
    RepoOnly,
}

fn run_file(state: StateChoice, file: &Path, flags: RunFlags) -> anyhow::Result<u8> {
    // From here a stop signal waits for the run's loop (see `fleet_engine::signals`).
    fleet_engine::signals::hold();
    // Everything is checked before anything is created: bad input leaves no trace.
    let cwd = std::env::current_dir()?;
    let home = match state {
        StateChoice::Discover(home) => find_home(home, &cwd),
        StateChoice::RepoOnly => None,
    };
    // Most runbooks run in their own directory's repository at HEAD: git (read-only, nothing
    // created) finds them while the runbook is parsed, and the plan uses them if it agrees.
    let guessed_dir = fleet_engine::runbook_dir(file);
    let guess = std::thread::spawn({
        let dir = guessed_dir.clone();
        move || {
            let repo = fleet_git::Repo::open(&dir).ok()?;
            let head = repo.resolve("HEAD").ok()?;
            Some((repo, head))
        }
    });
    let planned = load_instance(home.as_deref()).and_then(|instance| {
        let rb = fleet_config::load_runbook(file).map_err(|e| config_errors(&e))?;
        let plan =
            fleet_engine::plan_from_runbook(&rb, &instance).map_err(|e| config_errors(&e))?;
        Ok((
            plan,
            instance.secret_names(),
            instance.memory,
            instance.review_runs,
        ))
    });
    let guessed = guess.join().ok().flatten();
    let (plan, secret_names, memory, review_runs) = planned?;
    let base = plan.base.as_deref().unwrap_or("HEAD");
    let (repo, base_sha) = match guessed {
        Some(found) if plan.repo == guessed_dir && base == "HEAD" => found,
        _ => {
            let repo = fleet_git::Repo::open(&plan.repo).map_err(|e| {
                InvalidInput(format!(
                    "{}: repository {}: {e}",
                    file.display(),
                    plan.repo.display()
                ))
            })?;
            let base_sha = repo.resolve(base).map_err(|e| {
                InvalidInput(format!(
                    "{}: base {base:?} does not name a commit in {}: {e}",
                    file.display(),
                    repo.root().display()
                ))
            })?;
            (repo, base_sha)
        }
    };
    let mcp = home.as_deref().and_then(|h| mcp_server(h).ok());
    let instance_home = home.clone();
    let root = match home {
        Some(home) => home.join(".fleet"),
        None => repo.root().join(".fleet"),
    };
    let layout = StateDir::new(root);
    let store = open_store(&layout, flags.fsync)?;
    if flags.on_runners {
        let redactor = fleet_secrets::Redactor::from_process_env(&secret_names);
        return runner::run_on_runners(
            store,
            &plan,
            repo.root(),
            &base_sha,
            flags.quiet,
            &redactor,
        );
    }
    let rt = runtime()?;
    let progress = progress::Progress::new(flags.quiet, plan.tasks.len());
    let opts = EngineOptions {
        kill_grace: flags.kill_grace,
        observer: Some(progress.observer()),
        mcp,
        stop: None,
        redactor: fleet_secrets::Redactor::from_process_env(&secret_names),
        memory: fleet_engine::lessons::MemorySettings::from_config(&memory),
    };
    let report = rt.block_on(async {
        let ticker = progress.ticker();
        let r = fleet_engine::start_in(repo, base_sha, layout, store, plan, opts).await;
        ticker.abort();
        r
    });
    let ended = report.as_ref().ok().map(|r| (r.run_id.clone(), r.end));
    let code = finish(report, &progress)?;
    // `review_runs:`: the framework review, once the run has ended and let go of its lock.
    if let (Some(home), Some(cfg), Some((run, end))) = (instance_home, review_runs, ended)
        && end != RunEnd::Interrupted
        && cfg.wants(end == RunEnd::Passed)
    {
        review_run::after_run(&home, &run);
    }
    Ok(code)
}

/// Fleet's MCP server of the instance at `home`, for the agents a run launches: `fleet mcp`
/// needs an instance (fleet.yaml) to find its store.
pub(crate) fn mcp_server(home: &Path) -> anyhow::Result<fleet_agents::McpServer> {
    Ok(fleet_pipeline::mcp_server(&std::env::current_exe()?, home))
}

fn resume_run(home: Option<PathBuf>, run: &str, flags: RunFlags) -> anyhow::Result<u8> {
    fleet_engine::signals::hold();
    let found = find_home(home.clone(), &std::env::current_dir()?);
    let mcp = found.as_deref().and_then(|h| mcp_server(h).ok());
    let instance = load_instance(found.as_deref())?;
    let (layout, store) = open_existing_state(home)?;
    if runner::is_on_runners(&*store, run) {
        return runner::resume_on_runners(&*store, run);
    }
    let total = store.tasks(run)?.len();
    let rt = runtime()?;
    let progress = progress::Progress::new(flags.quiet, total);
    progress.seed(&*store, run)?;
    let opts = EngineOptions {
        kill_grace: flags.kill_grace,
        observer: Some(progress.observer()),
        mcp,
        stop: None,
        redactor: fleet_secrets::Redactor::from_process_env(&instance.secret_names()),
        memory: fleet_engine::lessons::MemorySettings::from_config(&instance.memory),
    };
    let report = rt.block_on(async {
        let ticker = progress.ticker();
        let r = fleet_engine::resume(layout, store, run, &instance, opts).await;
        ticker.abort();
        r
    });
    finish(report, &progress)
}

fn finish(
    report: Result<fleet_engine::RunReport, EngineError>,
    progress: &progress::Progress,
) -> anyhow::Result<u8> {
    progress.clear();
    let report = report?;
    let verdict = match report.end {
        RunEnd::Passed => "passed",
        RunEnd::Failed => "failed",
        RunEnd::Interrupted => "interrupted",
    };
    let mut text = format!(
        "run {} {verdict}\nsummary: {}\nlogs:    {}\nbranch:  {}\n",
        report.run_id,
        report.summary.display(),
        report.logs.display(),
        report.integration_branch
    );
    if report.end == RunEnd::Interrupted {
        text.push_str(&format!("resume:  fleet run --resume {}\n", report.run_id));
    }
    // A reader that went away does not change how the run ended: the exit code says it.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(match report.end {
        RunEnd::Passed => exit::PASSED,
        RunEnd::Failed => exit::FAILED,
        RunEnd::Interrupted => exit::INTERRUPTED,
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread runs the coordinator, the supervisors, the spawns and the agents' stream
    // readers (fewer cross-thread wake-ups); git work and file creation go to tokio's
    // blocking pool.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
