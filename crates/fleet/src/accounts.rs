//! `fleet accounts ls | enable`: each account's live state (usable, cooling down, disabled,
//! over budget) with today's spend, and bringing a disabled or cooling-down account back by
//! hand. `fleet agents ls` and `doctor` show the same states.

use crate::{InvalidInput, exit};
use fleet_config::InstanceConfig;
use fleet_core::pool::{self, Blocked, Clock};
use fleet_engine::fix_loop::{self, AccountBook};
use fleet_engine::plan::AgentPool;
use fleet_store::{AccountRow, Batch, NewEvent, Store};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// The state directory's store, or `None` when nothing ran here yet (then every account is
/// usable). Any other failure to open it is an error.
pub fn store_if_any(home: Option<PathBuf>) -> anyhow::Result<Option<Arc<dyn Store>>> {
    match crate::open_existing_state(home) {
        Ok((_, store)) => Ok(Some(store)),
        Err(e) if e.downcast_ref::<InvalidInput>().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

fn clock() -> Clock {
    Clock {
        now: chrono::Utc::now().timestamp_millis().max(0) as u64,
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    }
}

/// Local wall time of a Unix-ms instant, as people read it.
fn local(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// Every configured account's state now, as JSON objects (the `--json` of `accounts ls`).
pub fn states(instance: &InstanceConfig, store: Option<&dyn Store>) -> anyhow::Result<Vec<Value>> {
    let pool = AgentPool::from_instance(instance);
    let clock = clock();
    let book = match store {
        Some(s) => Some(AccountBook::load(&pool, s, &clock)?),
        None => None,
    };
    let mut out = Vec::new();
    for (i, acc) in pool.accounts.iter().enumerate() {
        let st = book
            .as_ref()
            .map(|b| b.states[i].clone())
            .unwrap_or_default();
        let mut v = json!({
            "name": acc.name, "state": "usable", "spent_usd": st.spent_usd,
            "spent_tokens": st.spent_tokens, "budget_usd": acc.budget_usd,
            "budget_tokens": acc.budget_tokens,
        });
        match pool::blocked(acc, &st, &clock) {
            None => {}
            Some(Blocked::Disabled { reason }) => {
                v["state"] = json!("disabled");
                v["reason"] = json!(reason);
                // Disabled by an older fleet (no fingerprint kept): the row's last change.
                let since = match store {
                    Some(s) => match fix_loop::rejection(s, &acc.name)? {
                        Some((since, _)) => Some(since),
                        None => s
                            .accounts()?
                            .into_iter()
                            .find(|r| r.name == acc.name)
                            .map(|r| r.updated_at),
                    },
                    None => None,
                };
                v["since"] = json!(since.map(fleet_engine::rfc3339));
                // The same decision the engine makes before its next choice.
                let now = st
                    .rejected_secrets
                    .as_deref()
                    .and_then(|fp| fix_loop::secrets_now_like(&pool, i, fp));
                v["reprobe"] = json!(pool::reprobe(&st, now.as_deref()).is_some());
            }
            Some(Blocked::Cooldown { until }) => {
                v["state"] = json!("cooling_down");
                v["until"] = json!(fleet_engine::rfc3339(until as i64));
            }
            Some(Blocked::Budget { resets_at }) => {
                v["state"] = json!("over_budget");
                v["until"] = json!(fleet_engine::rfc3339(resets_at as i64));
            }
            Some(Blocked::Window { opens_at }) => {
                v["state"] = json!("outside_window");
                v["until"] = json!(fleet_engine::rfc3339(opens_at as i64));
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// One line of prose for an account's state, in local time.
pub fn describe(v: &Value) -> String {
    let at = |k: &str| {
        v[k].as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| local(t.timestamp_millis()))
            .unwrap_or_else(|| "an unknown time".into())
    };
    match v["state"].as_str().unwrap_or("") {
        "disabled" => {
            let mut s = format!(
                "disabled since {} because {}",
                at("since"),
                v["reason"].as_str().unwrap_or("?")
            );
            if v["reprobe"] == true {
                s.push_str("; its key changed since, so the next run tries it again");
            } else {
                s.push_str(&format!(
                    "; fix its key or run `fleet accounts enable {}`",
                    v["name"].as_str().unwrap_or("")
                ));
            }
            s
        }
        "cooling_down" => format!("cooling down until {}", at("until")),
        "over_budget" => format!("over budget until {}", at("until")),
        "outside_window" => format!("outside its window until {}", at("until")),
        _ => "usable".into(),
    }
}

pub fn ls(
    instance: &InstanceConfig,
    store: Option<&dyn Store>,
    json_out: bool,
) -> anyhow::Result<u8> {
    let states = states(instance, store)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(exit::PASSED);
    }
    if states.is_empty() {
        println!("no accounts in fleet.yaml");
        return Ok(exit::PASSED);
    }
    println!(
        "{:<20} {:>12} {:>10}  STATE",
        "ACCOUNT", "SPENT TODAY", "TOKENS"
    );
    for a in &states {
        println!(
            "{:<20} {:>12} {:>10}  {}",
            a["name"].as_str().unwrap_or(""),
            format!("${:.4}", a["spent_usd"].as_f64().unwrap_or(0.0)),
            a["spent_tokens"].as_u64().unwrap_or(0),
            describe(a)
        );
    }
    Ok(exit::PASSED)
}

/// Clears a disablement or a cooldown, recorded as an `account.enabled` event. An account that
/// is neither is left alone (nothing recorded).
pub fn enable(instance: &InstanceConfig, home: Option<PathBuf>, name: &str) -> anyhow::Result<u8> {
    let store = store_if_any(home)?;
    let rows = match &store {
        Some(s) => s.accounts()?,
        None => Vec::new(),
    };
    let configured = instance.accounts.iter().any(|a| a.name == name);
    let row = rows.iter().find(|r| r.name == name);
    if !configured && row.is_none() {
        let known: Vec<&str> = instance.accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(InvalidInput(format!(
            "no account named {name:?}; fleet.yaml has {}",
            if known.is_empty() {
                "no accounts".to_string()
            } else {
                known.join(", ")
            }
        ))
        .into());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let (Some(store), Some(row)) = (store, row) else {
        println!("account {name} is not disabled nor cooling down; nothing to do");
        return Ok(exit::PASSED);
    };
    let cooling = row.cooldown_until.filter(|u| *u > now);
    if row.disabled.is_none() && cooling.is_none() {
        println!("account {name} is not disabled nor cooling down; nothing to do");
        return Ok(exit::PASSED);
    }
    let batch = Batch {
        accounts: vec![AccountRow {
            name: name.to_string(),
            cooldown_until: None,
            backoff_level: 0,
            disabled: None,
            updated_at: now,
        }],
        events: vec![NewEvent {
            at: now,
            run_id: String::new(),
            task: None,
            attempt: None,
            kind: "account.enabled".into(),
            data: json!({"account": name, "reason": "enabled by hand (`fleet accounts enable`)",
                "was_disabled": row.disabled,
                "was_cooling_down_until": cooling.map(fleet_engine::rfc3339)}),
        }],
        ..Batch::default()
    };
    store.commit(&batch)?;
    match &row.disabled {
        Some(why) => println!("account {name} enabled (it was disabled: {why})"),
        None => println!(
            "account {name} enabled (it was cooling down until {})",
            local(cooling.unwrap_or(now))
        ),
    }
    Ok(exit::PASSED)
}
