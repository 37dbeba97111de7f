//! The board's budget in a real browser (Debian's chromium, headless): an account whose daily
//! token budget the real claude CLI spent (against the scripted model server) shows a full red
//! bar, and the heartbeat's line for the exhausted budget states the spend in USD and tokens —
//! the figures the store holds.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served};

use fleet_store::Store;
use fleet_testkit::webdriver::Browser;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(180);

/// The dashboard's `money()`.
fn money(v: f64) -> String {
    format!("${v:.2}")
}

/// The dashboard's `tokens()` below a million.
fn tokens(v: u64) -> String {
    if v < 1000 {
        v.to_string()
    } else {
        format!("{:.1}", v as f64 / 1000.0)
            .trim_end_matches(".0")
            .to_string()
            + "k"
    }
}

#[test]
fn a_spent_budget_is_a_full_red_bar_and_its_alert_states_the_spend_in_usd_and_tokens() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    let config = inst.home.join("fleet.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let limited = yaml.replace(
        "daily_budget_usd: 100 }",
        "daily_budget_usd: 100, daily_budget_tokens: 1000 }",
    );
    assert_ne!(yaml, limited);
    std::fs::write(&config, limited).unwrap();
    inst.add_shop();
    let token = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let (s, _) = http.post(
        &format!("{}/api/v1/tasks", served.url),
        Some(&token),
        json!({"project": "shop", "request": "Add the a file to the shop"}),
    );
    assert_eq!(s, 201);
    http.rt.block_on(async {
        let b = Browser::launch().await.unwrap();
        b.goto(&format!("{}/", served.url)).await.unwrap();
        b.wait_present("#heartbeat li[data-kind='budget.exhausted']", WAIT)
            .await
            .unwrap();
        // What the engine recorded, and what the store's attempts of the account add up to
        // (nothing runs on the account once its budget is spent).
        let store = inst.store();
        let event = store
            .events(None, 0, 100_000)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == "budget.exhausted")
            .unwrap();
        let spent_usd = event.data["spent_usd"].as_f64().unwrap();
        let spent_tokens = event.data["spent_tokens"].as_u64().unwrap();
        let ended: Vec<_> = store
            .attempts_since(i64::MIN)
            .unwrap()
            .into_iter()
            .filter(|a| a.account.as_deref() == Some("anthropic") && a.outcome != "running")
            .collect();
        let store_tokens: u64 = ended
            .iter()
            .map(|a| a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens)
            .sum();
        let store_usd: f64 = ended.iter().map(|a| a.cost_usd).sum();
        assert!(spent_tokens >= 1000, "{event:?}");
        assert!(spent_usd > 0.0, "claude reports its cost: {event:?}");
        assert_eq!(spent_tokens, store_tokens);
        assert!((spent_usd - store_usd).abs() < 1e-9, "{spent_usd} vs {store_usd}");
        let said = format!(
            "spent {} and {} tokens today",
            money(spent_usd),
            tokens(spent_tokens)
        );
        b.wait_text(
            "#heartbeat li[data-kind='budget.exhausted']",
            |t| t.contains("anthropic") && t.contains(&said),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        // The account's bar: spent, the whole bar red.
        let bar = "[data-metric=budget_left] [data-account=anthropic] .bar.spent > span";
        b.wait_present(bar, WAIT).await.unwrap();
        let style = b.attr(bar, "style").await.unwrap().unwrap_or_default();
        assert!(style.contains("width: 100%") || style.contains("width:100%"), "{style}");
        let color = b
            .execute(
                "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor",
                vec![json!(bar)],
            )
            .await
            .unwrap();
        let bad = b
            .execute(
                "const s = document.createElement('span'); s.style.background = 'var(--bad)'; document.body.append(s); \
                 const c = getComputedStyle(s).backgroundColor; s.remove(); return c;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(color, bad, "the spent bar is the alarm colour");
        b.wait_text(
            "[data-metric=budget_left] [data-account=anthropic]",
            |t| t.contains(&format!("{} tokens spent", tokens(spent_tokens))),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        b.screenshot_png(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board-budget.png"))
            .await
            .unwrap();
    });
}
