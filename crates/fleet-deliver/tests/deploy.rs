//! Deploy commands, run for real.

use std::time::{Duration, Instant};

use fleet_deliver::{DeployError, deploy};

/// What every deploy here sees: where programs are (the command sees nothing it is not given).
fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped: it runs no more).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_dead(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn returns_the_last_url_printed_on_either_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = r#"echo "Building in $(basename "$PWD") for $TARGET_ENV"
echo "Inspect: https://inspect.example.dev/abc" >&2
echo "Deployed to https://$TARGET_ENV.example.dev/app."
echo "done" >&2"#;
    let d = deploy(
        cmd,
        dir.path(),
        env(&[("TARGET_ENV", "staging")]),
        Duration::from_secs(20),
    )
    .await
    .expect("deployed");
    assert_eq!(d.url, "https://staging.example.dev/app");
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        d.output_tail
            .contains(&format!("Building in {name} for staging")),
        "{}",
        d.output_tail
    );
    // Both streams, in the order written.
    let inspect = d.output_tail.find("Inspect:").unwrap();
    let deployed = d.output_tail.find("Deployed to").unwrap();
    let done = d.output_tail.find("done").unwrap();
    assert!(inspect < deployed && deployed < done, "{}", d.output_tail);
}

#[tokio::test]
async fn a_url_on_stderr_last_wins() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(
        "echo http://first.example; echo 'live at https://second.example/x' >&2",
        dir.path(),
        env(&[]),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(d.url, "https://second.example/x");
}

#[tokio::test]
async fn no_url_is_an_error_with_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let err = deploy(
        "echo 'uploaded 3 files'; echo 'all good' >&2",
        dir.path(),
        env(&[]),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    match &err {
        DeployError::NoUrl { output_tail } => assert_eq!(output_tail, "uploaded 3 files\nall good"),
        other => panic!("expected NoUrl, got {other:?}"),
    }
    assert!(err.to_string().contains("printed no http(s) URL"), "{err}");
}

#[tokio::test]
async fn a_failing_command_is_an_error_even_with_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let err = deploy(
        "echo https://half.example; echo 'quota exceeded' >&2; exit 3",
        dir.path(),
        env(&[]),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    match &err {
        DeployError::Failed {
            code,
            output_tail,
            status,
        } => {
            assert_eq!(*code, Some(3));
            assert_eq!(status, "exit code 3");
            assert!(output_tail.contains("quota exceeded"), "{output_tail}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("exit code 3") && text.contains("quota exceeded"),
        "{text}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = deploy(
        "sleep 300 & echo $! > bg.pid; echo 'waiting for https://never.example'; sleep 300",
        dir.path(),
        env(&[]),
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        DeployError::TimedOut {
            timeout,
            output_tail,
        } => {
            assert_eq!(*timeout, Duration::from_millis(800));
            assert!(
                output_tail.contains("waiting for https://never.example"),
                "{output_tail}"
            );
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    let pid: u32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(pid),
        "the background sleep {pid} survived the timeout"
    );
}

#[tokio::test]
async fn what_a_successful_command_leaves_running_does_not_hold_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let d = deploy(
        "sleep 300 & echo $! > bg.pid; echo https://app.example",
        dir.path(),
        env(&[]),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(d.url, "https://app.example");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let pid: u32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_dead(pid), "the leftover sleep {pid} still runs");
}

#[tokio::test]
async fn secrets_from_the_environment_do_not_reach_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "vercel_Secret0Value0123";
    let err = deploy(
        "echo \"using token $DEPLOY_TOKEN\"; exit 1",
        dir.path(),
        env(&[("DEPLOY_TOKEN", secret)]),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("using token [REDACTED]"), "{text}");
    assert!(!text.contains(secret));
}

#[tokio::test]
async fn a_missing_directory_cannot_start() {
    let err = deploy(
        "echo https://x.example",
        std::path::Path::new("/nonexistent/fleet-deploy"),
        env(&[]),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeployError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/fleet-deploy"),
        "{err}"
    );
}

#[tokio::test]
async fn stdin_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    // `cat` would wait for ever on an inherited terminal or pipe.
    let d = deploy(
        "cat; echo https://app.example",
        dir.path(),
        env(&[]),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(d.url, "https://app.example");
}

#[tokio::test]
async fn dropping_the_deploy_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let fut = deploy(
        "sleep 300 & echo $! > bg.pid; sleep 300",
        dir.path(),
        env(&[]),
        Duration::from_secs(600),
    );
    // Abandon the deploy after a moment, as a cancelled caller would.
    let r = tokio::time::timeout(Duration::from_millis(500), fut).await;
    assert!(r.is_err(), "the deploy cannot have finished");
    let pid: u32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(pid),
        "the background sleep {pid} survived the cancelled deploy"
    );
}

#[tokio::test]
async fn the_command_sees_only_the_environment_it_is_given() {
    // Cargo sets CARGO_MANIFEST_DIR in this test's own environment; the deploy is not given it.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(
        "echo \"inherited=[$CARGO_MANIFEST_DIR] given=[$GIVEN]\"; echo https://ok.example/",
        dir.path(),
        env(&[("GIVEN", "yes")]),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(
        d.output_tail.contains("inherited=[] given=[yes]"),
        "{}",
        d.output_tail
    );
}
