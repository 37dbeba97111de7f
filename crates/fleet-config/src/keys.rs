//! Every key the decoders accept, by section: the very lists the decoders check keys against
//! (a key missing from its list is refused as unknown), so `docs/CONFIG.md` can be kept equal
//! to what is really read (`tests/config_doc.rs`).

use crate::{
    audits, decode, forge, instance, intake, knowledge, memory, notify, policies, project_limits,
    review_runs, routing,
};

/// A section of a user-written file and the keys it accepts. `section` is the heading that
/// documents it in docs/CONFIG.md.
pub struct Section {
    pub section: &'static str,
    pub keys: &'static [&'static str],
}

/// All sections of `fleet.yaml`, runbooks, and the front matter of roles, bibles and skills.
pub fn sections() -> Vec<Section> {
    let s = |section, keys| Section { section, keys };
    vec![
        s("fleet.yaml", instance::TOP_KEYS),
        s("fleet.yaml: server", instance::SERVER_KEYS),
        s("fleet.yaml: agents.NAME", instance::PROFILE_KEYS),
        s("fleet.yaml: accounts.NAME", instance::ACCOUNT_KEYS),
        s("fleet.yaml: routing", routing::ROUTING_KEYS),
        s("fleet.yaml: routing.rules[]", routing::RULE_KEYS),
        s(
            "fleet.yaml: notifications[] (every kind)",
            notify::COMMON_KEYS,
        ),
        s(
            "fleet.yaml: notifications[] kind: webhook",
            notify::WEBHOOK_KEYS,
        ),
        s(
            "fleet.yaml: notifications[] kind: slack",
            notify::SLACK_KEYS,
        ),
        s(
            "fleet.yaml: notifications[] kind: telegram",
            notify::TELEGRAM_KEYS,
        ),
        s(
            "fleet.yaml: notifications[] kind: email",
            notify::EMAIL_KEYS,
        ),
        s("fleet.yaml: notify_retry", notify::RETRY_KEYS),
        s("fleet.yaml: telegram", notify::BOT_KEYS),
        s("fleet.yaml: intake", intake::INTAKE_KEYS),
        s("fleet.yaml: audits[]", audits::AUDIT_KEYS),
        s("fleet.yaml: projects.NAME", project_limits::KEYS),
        s("fleet.yaml: policies[]", policies::POLICY_KEYS),
        s("fleet.yaml: forge", forge::FORGE_KEYS),
        s("fleet.yaml: memory", memory::MEMORY_KEYS),
        s("fleet.yaml: memory.embeddings", memory::EMBEDDINGS_KEYS),
        s("fleet.yaml: review_runs", review_runs::REVIEW_RUNS_KEYS),
        s("runbook", decode::TOP_KEYS),
        s("runbook: defaults", decode::DEFAULTS_KEYS),
        s("runbook: tasks[]", decode::TASK_KEYS),
        s("roles/NAME.md", knowledge::ROLE_KEYS),
        s("bibles/NAME.md", knowledge::BIBLE_KEYS),
        s("skills/NAME.md", knowledge::SKILL_KEYS),
    ]
}
