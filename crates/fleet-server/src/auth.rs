//! Bearer tokens with scopes. A token is `fleet_` + 32 random bytes in hex; only its SHA-256 is
//! stored, so a leaked database does not leak tokens, and the secret is shown once.
//!
//! The rule: a request with a token needs a live token whose scope covers the route (401 for an
//! unknown token, 403 for a too-small scope). A request without a token is allowed only to read,
//! and only from loopback; anything else is 401.

use fleet_store::{Store, StoreError, TokenRow};
use std::net::SocketAddr;

/// What a token may do; each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Look: lists, details, events, metrics.
    Read,
    /// Also submit, accept, reject, cancel; MCP tools.
    Submit,
    /// Also manage projects.
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hex(d.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a token named `name` and returns its secret (the only time it exists in clear).
pub fn create_token(store: &dyn Store, name: &str, scope: Scope) -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("the system's random source failed".into()))?;
    let secret = format!("fleet_{}", hex(&bytes));
    store.add_token(&TokenRow {
        name: name.to_string(),
        scope: scope.as_str().to_string(),
        hash: hash(&secret),
        created_at: fleet_core::clock::now_ms(),
        revoked_at: None,
    })?;
    Ok(secret)
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No usable credentials (401).
    Unauthenticated(&'static str),
    /// Credentials fine, scope too small (403).
    Forbidden(String),
}

/// Whether a request without a token may read: it comes from this machine — a loopback
/// peer, addressed to a loopback name (not a DNS-rebound one), and not relayed by a proxy on
/// this machine on behalf of someone else.
pub fn is_local(peer: Option<SocketAddr>, host: Option<&str>, forwarded: bool) -> bool {
    let host = host.unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    peer.is_some_and(|p| p.ip().is_loopback())
        && !forwarded
        && (name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// Decides whether a request may do something needing `need`; `local` as [`is_local`].
pub fn check(
    store: &dyn Store,
    token: Option<&str>,
    local: bool,
    need: Scope,
) -> Result<Option<TokenRow>, Denied> {
    let Some(token) = token else {
        let loopback = local;
        return if need == Scope::Read && loopback {
            Ok(None)
        } else if loopback {
            Err(Denied::Unauthenticated(
                "this needs a bearer token (fleet token create --scope submit)",
            ))
        } else {
            Err(Denied::Unauthenticated(
                "a bearer token is required from outside this machine",
            ))
        };
    };
    let row = store
        .token_by_hash(&hash(token))
        .map_err(|_| Denied::Unauthenticated("the token could not be checked"))?
        .ok_or(Denied::Unauthenticated("unknown or revoked token"))?;
    let have = Scope::parse(&row.scope).unwrap_or(Scope::Read);
    if have < need {
        return Err(Denied::Forbidden(format!(
            "token {:?} has scope {}; this needs {}",
            row.name,
            have.as_str(),
            need.as_str()
        )));
    }
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_store::SqliteStore;

    fn addr(s: &str) -> bool {
        let peer: SocketAddr = s.parse().unwrap();
        is_local(Some(peer), Some("127.0.0.1:7420"), false)
    }

    #[test]
    fn local_means_loopback_peer_loopback_host_and_no_proxy() {
        let lo: Option<SocketAddr> = Some("127.0.0.1:5000".parse().unwrap());
        assert!(is_local(lo, Some("localhost:7420"), false));
        assert!(is_local(lo, Some("[::1]:7420"), false));
        assert!(is_local(lo, Some("127.0.0.1"), false));
        assert!(
            !is_local(lo, Some("evil.example:7420"), false),
            "DNS rebinding"
        );
        assert!(!is_local(lo, None, false));
        assert!(!is_local(lo, Some("localhost"), true), "relayed by a proxy");
        assert!(!is_local(
            Some("10.0.0.5:1".parse().unwrap()),
            Some("localhost"),
            false
        ));
    }

    #[test]
    fn scopes_nest_and_tokens_are_stored_hashed() {
        let store = SqliteStore::in_memory().unwrap();
        let submit = create_token(&store, "ci", Scope::Submit).unwrap();
        assert!(submit.starts_with("fleet_") && submit.len() == 6 + 64);
        let rows = store.tokens().unwrap();
        assert_eq!(rows[0].hash, hash(&submit));
        assert!(!rows[0].hash.contains(&submit[6..]));
        let local = addr("127.0.0.1:5000");
        let remote = addr("10.1.2.3:5000");
        assert!(check(&store, Some(&submit), remote, Scope::Read).is_ok());
        assert!(check(&store, Some(&submit), remote, Scope::Submit).is_ok());
        assert!(matches!(
            check(&store, Some(&submit), local, Scope::Admin),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            check(&store, Some("fleet_nope"), local, Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        // No token: reading from loopback only.
        assert!(check(&store, None, local, Scope::Read).is_ok());
        assert!(check(&store, None, addr("[::1]:9"), Scope::Read).is_ok());
        assert!(check(&store, None, remote, Scope::Read).is_err());
        assert!(check(&store, None, local, Scope::Submit).is_err());
        assert!(check(&store, None, false, Scope::Read).is_err());
        // Revoked tokens stop working.
        store.revoke_token("ci", 1).unwrap();
        assert!(check(&store, Some(&submit), local, Scope::Read).is_err());
        // Names are unique.
        create_token(&store, "x", Scope::Read).unwrap();
        assert!(create_token(&store, "x", Scope::Read).is_err());
    }
}
