//! `list_rows` (`fleet task ls`) reads the store's epic summaries: its reasons equal what is
//! said for the whole epics (`fleet_views::reason`) — a blocked epic's question, a
//! failed epic's last stage detail, nothing for the others.

use fleet_core::epic::{Blocked, EpicState, Stage};
use fleet_store::{EpicRow, SqliteStore, StageRow, Store};

fn epic(id: &str, state: &str, created_at: i64) -> EpicRow {
    EpicRow {
        id: id.into(),
        project: "web".into(),
        request: format!("request {id}"),
        state: state.into(),
        cycle: 1,
        branch: format!("fleet/epics/{id}"),
        created_at,
        updated_at: created_at,
        ..EpicRow::default()
    }
}

#[test]
fn list_rows_from_summaries_say_what_the_whole_epics_say() {
    let store = SqliteStore::in_memory().unwrap();
    let mut blocked = epic("e1", "blocked", 1);
    let mut machine = EpicState::new(false, false);
    machine.blocked = Some(Blocked {
        at: Stage::Plan,
        question: "Which database should the login use?".into(),
    });
    let data = fleet_core::epic_data::EpicData {
        machine: Some(machine),
        ..Default::default()
    };
    blocked.data = serde_json::to_value(&data).unwrap();
    let mut failed = epic("e2", "failed", 2);
    failed.stages = vec![
        StageRow {
            stage: "plan".into(),
            state: "passed".into(),
            detail: Some("add, mul".into()),
            ..StageRow::default()
        },
        StageRow {
            stage: "implement".into(),
            state: "failed".into(),
            detail: Some("the budget is spent".into()),
            ..StageRow::default()
        },
    ];
    failed.data = serde_json::to_value(fleet_core::epic_data::EpicData::default()).unwrap();
    let mut done = failed.clone();
    done.id = "e3".into();
    done.state = "done".into();
    done.request = "request e3".into();
    done.created_at = 3;
    for e in [&blocked, &failed, &done] {
        store.save_epic(e, &[]).unwrap();
    }
    let rows = fleet_views::list_rows(&store).unwrap();
    let expected: Vec<(String, Option<String>)> = store
        .epics()
        .unwrap()
        .iter()
        .map(|e| {
            let data = fleet_core::epic_data::decode(&e.id, &e.data).unwrap();
            (e.id.clone(), fleet_views::reason(e, &data))
        })
        .collect();
    let got: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.id.clone(), r.reason.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        got[0].1.as_deref(),
        Some("Which database should the login use?")
    );
    assert_eq!(got[1].1.as_deref(), Some("the budget is spent"));
    assert_eq!(got[2].1, None);
    assert_eq!(rows[0].branch, "fleet/epics/e1");
    assert_eq!(rows[2].request, "request e3");
}
