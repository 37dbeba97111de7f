//! Connecting to PostgreSQL the way the store does, for the store and for what shares its
//! database (memory): one URL form, one way to hide its password, one kind of connection
//! (`Conn`: statements prepared once, planned per run), one way off a Tokio runtime.

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

/// Fleet's own parameter of a `postgres://` store URL, never passed to the server: who sets
/// how a connection plans its prepared statements. `fleet` (the default): Fleet does, per call
/// (`SET plan_cache_mode`, see [`Planning`]). `server`: never set, the server's or the role's
/// setting holds — for a transaction pooler (PgBouncer), where a `SET` would stay on the server
/// connection for its next client.
pub const PLANNING_PARAM: &str = "fleet_planning";

/// `url` as the client library reads it (without [`PLANNING_PARAM`]) and whether Fleet sets
/// the planning; `Err` names a value that is neither `fleet` nor `server`.
pub fn split_url(url: &str) -> Result<(String, bool), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), true));
    };
    let (mut sets, mut kept) = (true, Vec::new());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != PLANNING_PARAM {
            kept.push(pair);
            continue;
        }
        sets = match value {
            "fleet" => true,
            "server" => false,
            other => {
                return Err(format!(
                    "{PLANNING_PARAM}={other}: expected `{PLANNING_PARAM}=fleet` (the default) \
                     or `{PLANNING_PARAM}=server`"
                ));
            }
        };
    }
    match kept.is_empty() {
        true => Ok((base.to_string(), sets)),
        false => Ok((format!("{base}?{}", kept.join("&")), sets)),
    }
}

thread_local! {
    /// On a thread of Tokio's blocking pool that [`spawn_blocking`] ran work on: the runtime
    /// whose pool it is. Such a thread is inside that runtime's context but never drives it,
    /// so the client may block on its own runtime there (as `Handle::block_on` may) with no
    /// thread of its own — unless a runtime started on it is running (another id then).
    static BLOCKING_POOL_OF: std::cell::Cell<Option<tokio::runtime::Id>> =
        const { std::cell::Cell::new(None) };
}

/// `tokio::task::spawn_blocking`, marking the pool's thread as one where a store call needs
/// no thread of its own ([`off_runtime`]): a runner or server doing store calls per task or
/// request would otherwise start and join an OS thread for each.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(move || {
        // A blocking-pool thread stays one, of one runtime, for its life: never undone.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            BLOCKING_POOL_OF.set(Some(h.id()));
        }
        f()
    })
}

/// Runs `f` off any Tokio runtime: the client's own runtime cannot start inside another.
/// Outside any runtime, or on a thread of its blocking pool ([`spawn_blocking`]), it runs
/// here; on a runtime's own thread, or under a runtime started on a pool thread, on a thread
/// started for it.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let here = match tokio::runtime::Handle::try_current() {
        Err(_) => true,
        Ok(h) => BLOCKING_POOL_OF.get() == Some(h.id()),
    };
    if !here {
        std::thread::scope(|s| s.spawn(f).join().expect("store call panicked"))
    } else {
        f()
    }
}

/// A connection to `url` (call it off any runtime, see [`off_runtime`]); unreachable:
/// [`StoreError::Unreachable`] naming the URL without its password.
pub fn connect(url: &str) -> Result<Conn, StoreError> {
    let (client_url, sets_planning) = split_url(url).map_err(StoreError::InvalidUrl)?;
    Conn::open(&client_url, sets_planning)
        .map_err(|e| StoreError::Unreachable(without_password(url), e.to_string()))
}

/// The most statements a [`Conn`] keeps prepared; past it, it forgets them all and starts
/// again (every statement Fleet sends is one of a few hundred fixed texts: a bound, not a
/// working size).
const MAX_PREPARED: usize = 512;

/// A connection that prepares each statement text once and reuses it: a statement sent as
/// text is parsed, planned and described by the server every time, and costs a second round
/// trip. Queries through [`Conn::query`] and its kin are cached; anything else reaches the
/// [`Client`] underneath (transactions, batches), uncached.
pub struct Conn {
    client: Client,
    prepared: std::collections::HashMap<String, postgres::Statement>,
    /// How its session plans prepared statements; `None`: as the server's settings say.
    planning: Option<Planning>,
    /// Whether [`Conn::plan`] sets it (not with `fleet_planning=server`, [`PLANNING_PARAM`]).
    sets_planning: bool,
}

/// How PostgreSQL plans a connection's prepared statements (its `plan_cache_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// For the parameters of each run (`force_custom_plan`). A plan made once for any
    /// parameters (what PostgreSQL settles on after five runs) reads a whole table backwards
    /// for a search whose terms the index finds in a few hundred rows (docs/BENCHMARKS.md M1):
    /// what depends on its parameters is planned for them.
    PerRun,
    /// Once for any parameters when that plan costs no more than planning each run
    /// (PostgreSQL's own rule, `auto`): for statements whose plan is the same whatever their
    /// parameters, like the queue's claims and ends by key, where planning each run cost more
    /// than running it (docs/BENCHMARKS.md, issue 19).
    Cached,
}

type Params<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

impl Conn {
    /// Connects to `client_url` (a store URL as the client reads it, [`split_url`]), planning
    /// [`Planning::PerRun`] if `sets_planning`. What preparing saves is the parse, the
    /// analysis and a round trip.
    pub fn open(client_url: &str, sets_planning: bool) -> Result<Conn, postgres::Error> {
        let mut conn = Conn::new(Client::connect(client_url, NoTls)?);
        conn.sets_planning = sets_planning;
        conn.plan(Planning::PerRun)?;
        Ok(conn)
    }

    /// A connection made elsewhere (planned as its session says).
    pub fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: std::collections::HashMap::new(),
            planning: None,
            sets_planning: true,
        }
    }

    /// How its statements are planned from now on (a round trip only when that changes).
    pub fn plan(&mut self, planning: Planning) -> Result<(), postgres::Error> {
        if self.sets_planning && self.planning != Some(planning) {
            self.planning = None;
            self.client.batch_execute(match planning {
                Planning::PerRun => "SET plan_cache_mode = force_custom_plan",
                Planning::Cached => "SET plan_cache_mode = auto",
            })?;
            self.planning = Some(planning);
        }
        Ok(())
    }

    /// How its statements are planned, if Fleet set it.
    pub fn planning(&self) -> Option<Planning> {
        self.planning
    }

    /// The statement of `sql`, prepared at its first use on this connection.
    pub fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        if self.prepared.len() >= MAX_PREPARED {
            self.prepared.clear();
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn query(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    pub fn query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<postgres::Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, params)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, params)
    }

    pub fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
