//! Connecting to PostgreSQL the way the store does, for the store and for what shares its
//! database (memory): one URL form, one way to hide its password, one way off a Tokio runtime.

use crate::StoreError;
use postgres::{Client, NoTls};

/// `postgres://user:secret@host/db` shown as `postgres://user@host/db`.
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Runs `f` off any Tokio runtime: the client's own runtime cannot start inside another.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(f).join().expect("store call panicked"))
    } else {
        f()
    }
}

/// A connection to `url` (call it off any runtime, see [`off_runtime`]); unreachable:
/// [`StoreError::Unreachable`] naming the URL without its password.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls)
        .map_err(|e| StoreError::Unreachable(without_password(url), e.to_string()))
}
