//! `fleet demo`: a throwaway repository with a tiny shell project and a ten-task runbook that
//! shows the engine's behaviours — parallel branches, a diamond, a flaky task that passes on
//! its retry, and a task whose checks fail so its dependent is skipped. No network, no keys.

use crate::exit;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub const RUNBOOK: &str = r#"# The fleet demo runbook: a tiny calculator built by ten tasks.
name: demo
concurrency: 4
report: docs/run-summary.md
defaults: { timeout: 1m, retries: 0 }
tasks:
  - id: scaffold
    command: "mkdir -p lib bin docs && touch lib/.keep bin/.keep docs/.keep && echo 0.1.0 > VERSION"
    checks: ["test -d lib", "test -s VERSION"]

  # Two parallel branches, joined again by `calc`: a diamond.
  - id: add
    depends_on: [scaffold]
    command: "printf 'echo $(( $1 + $2 ))\n' > lib/add.sh"
    checks: ["test \"$(sh lib/add.sh 2 3)\" = 5"]
  - id: mul
    depends_on: [scaffold]
    command: "printf 'echo $(( $1 * $2 ))\n' > lib/mul.sh"
    checks: ["test \"$(sh lib/mul.sh 4 5)\" = 20"]
  - id: calc
    depends_on: [add, mul]
    command: |
      cat > bin/calc <<'EOF'
      #!/bin/sh
      here=$(dirname "$0")/..
      case "$2" in
        +) sh "$here/lib/add.sh" "$1" "$3" ;;
        x) sh "$here/lib/mul.sh" "$1" "$3" ;;
        *) echo "usage: calc A +|x B" >&2; exit 2 ;;
      esac
      EOF
      chmod +x bin/calc
    checks: ["test \"$(bin/calc 6 x 7)\" = 42", "test \"$(bin/calc 1 + 1)\" = 2"]

  - id: docs
    depends_on: [scaffold]
    command: "printf '# calc\\n\\nUsage: bin/calc 6 x 7\\n' > docs/usage.md"

  # Fails on its first attempt (a simulated network error), passes on the retry.
  - id: fetch-rates
    depends_on: [scaffold]
    retries: 2
    retry_backoff: 200ms
    command: |
      if [ "$FLEET_ATTEMPT" -lt 2 ]; then echo "rates.example: connection reset (simulated)" >&2; exit 1; fi
      echo "EUR 1.00" > docs/rates.txt

  # Its code has a bug, so its acceptance check fails and everything after it is skipped.
  - id: div
    depends_on: [scaffold]
    command: "printf 'echo $(( $1 - $2 ))\n' > lib/div.sh"
    checks: ["test \"$(sh lib/div.sh 8 2)\" = 4"]
  - id: div-docs
    depends_on: [div]
    command: "echo 'division: calc 8 / 2' >> docs/usage.md"

  - id: release-notes
    depends_on: [calc, docs, fetch-rates]
    command: "printf 'calc %s: add, multiply\\n' \"$(cat VERSION)\" > docs/RELEASE.md"
    checks: ["grep -q multiply docs/RELEASE.md"]

  # Runs in the repository itself: no worktree, nothing to merge.
  - id: inventory
    depends_on: [release-notes]
    workspace: none
    command: "git ls-tree -r --name-only $FLEET_BRANCH | sort"
"#;

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
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Creates the demo repository: a README, the runbook, one commit on `main`.
pub fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    anyhow::ensure!(
        std::fs::read_dir(dir)?.next().is_none(),
        "{} is not empty; choose an empty or new directory",
        dir.display()
    );
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(
        dir.join("README.md"),
        "# calc\n\nA tiny calculator, built by `fleet demo`.\n",
    )?;
    std::fs::write(dir.join("fleet-demo.yaml"), RUNBOOK)?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "calc: empty project"])?;
    Ok(())
}

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<u8> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "fleet-demo-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        )),
    };
    create(&dir)?;
    println!("demo repository: {}", dir.display());
    let runbook = dir.join("fleet-demo.yaml");
    let flags = crate::RunFlags {
        quiet: false,
        fsync: false,
        kill_grace: std::time::Duration::from_secs(2),
        on_runners: false,
    };
    // The demo's state lives in the demo repository, whatever instance surrounds the caller.
    let code = crate::run_file(crate::StateChoice::RepoOnly, &runbook, flags)?;
    println!();
    println!(
        "The demo has one failure on purpose: `div` has a bug its check catches, so `div-docs`"
    );
    println!("is skipped; `fetch-rates` failed once and passed on its retry.");
    println!(
        "Look around:  cd {} && git log --graph --oneline --branches='fleet/runs/*'",
        dir.display()
    );
    // The demo succeeded if it ended exactly as designed.
    Ok(if code == exit::FAILED {
        exit::PASSED
    } else {
        exit::FAILED
    })
}
