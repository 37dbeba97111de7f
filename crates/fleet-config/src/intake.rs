//! `fleet.yaml`'s `intake:` section: requests that arrive from trackers by webhook.
//!
//! ```yaml
//! intake:
//!   secret_env: FLEET_INTAKE_SECRET   # the HMAC-SHA256 key senders sign bodies with
//!   label: fleet                      # a GitHub issue with this label becomes a request
//! ```
//!
//! The secret is never written here: the file names the environment variable that holds it.

use crate::Location;
use crate::decode::Decoder;
use crate::yaml::Node;

/// The label an issue needs when `label:` is not given.
pub const DEFAULT_INTAKE_LABEL: &str = "fleet";

pub(crate) const INTAKE_KEYS: &[&str] = &["secret_env", "label"];

/// The webhook intake, when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeSpec {
    /// The environment variable holding the shared HMAC key.
    pub secret_env: String,
    /// GitHub issues carrying this label (case-insensitive) become requests.
    pub label: String,
    pub location: Location,
}

pub(crate) fn intake(d: &mut Decoder<'_>, node: &Node) -> Option<IntakeSpec> {
    let fields = d.fields(
        node,
        INTAKE_KEYS,
        "in `intake`",
        "a mapping with `secret_env` (and optionally `label`)",
    )?;
    let before = d.errors.len();
    let mut secret_env = None;
    let mut label = DEFAULT_INTAKE_LABEL.to_string();
    for f in &fields.list {
        match f.key {
            "secret_env" => {
                secret_env = crate::notify::env_name(
                    d,
                    f.value,
                    "secret_env",
                    "FLEET_INTAKE_SECRET",
                    "webhook signing secret",
                )
            }
            "label" => {
                if let Some(text) = d.text(f.value, "label") {
                    if text.value.trim().is_empty() {
                        d.error(text.at, "`label` is empty; name the issue label to take");
                    } else {
                        label = text.value.trim().to_string();
                    }
                }
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    if !fields.has("secret_env") {
        d.error(
            fields.start,
            "`intake` needs `secret_env` (the variable that holds the key webhook senders sign with)",
        );
    }
    if d.errors.len() > before {
        return None;
    }
    Some(IntakeSpec {
        secret_env: secret_env?,
        label,
        location: fields.start,
    })
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use std::path::Path;

    #[test]
    fn decodes_intake_and_its_secret_is_redactable() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "intake:\n  secret_env: HOOK_KEY\n  label: Fleet-Work\n",
        )
        .unwrap();
        let intake = cfg.intake.clone().unwrap();
        assert_eq!(
            (intake.secret_env.as_str(), intake.label.as_str()),
            ("HOOK_KEY", "Fleet-Work")
        );
        assert!(cfg.secret_names().contains(&"HOOK_KEY".to_string()));
        let cfg = parse_instance(Path::new("fleet.yaml"), "intake: { secret_env: K }\n").unwrap();
        assert_eq!(cfg.intake.unwrap().label, super::DEFAULT_INTAKE_LABEL);
    }

    #[test]
    fn bad_intake_is_located_and_never_echoes_a_secret() {
        let errors = parse_instance(
            Path::new("fleet.yaml"),
            "intake:\n  secret_env: s3cr3t-value!\n  colour: red\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.starts_with("fleet.yaml:2:15")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("fleet.yaml:3:3")),
            "{text:?}"
        );
        assert!(text.iter().all(|e| !e.contains("s3cr3t")), "{text:?}");
        let errors = parse_instance(Path::new("fleet.yaml"), "intake:\n  label: x\n").unwrap_err();
        assert!(
            errors[0].to_string().contains("needs `secret_env`"),
            "{errors:?}"
        );
    }
}
