//! `fleet_server::serve` over real HTTP on loopback, spoken by hand on a TCP socket: unknown
//! routes are 404 (auth guards real routes only), a `Last-Event-ID` past the newest event
//! replays nothing, and a client that sends half a request head is cut off.

use fleet_server::Fleet;
use fleet_store::{Batch, NewEvent, SqliteStore, Store};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

struct Server {
    addr: SocketAddr,
    fleet: Fleet,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &dir.path().join("fleet.db"),
                fleet_store::Durability::Process,
            )
            .unwrap(),
        );
        let pipeline = fleet_pipeline::Pipeline {
            layout: fleet_pipeline::StateDir::new(dir.path().join(".fleet")),
            store,
            instance: fleet_config::InstanceConfig::empty(),
            library: fleet_config::Library::load(None).unwrap(),
            fleet_exe: "fleet".into(),
            limits: fleet_core::epic::Limits::default(),
            concurrency: 1,
            observer: None,
            shutdown: None,
        };
        let (events, _) = fleet_server::event_channel();
        let fleet = Fleet::new(Arc::new(pipeline), events, "http://fleet.test".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(fleet_server::serve(fleet.clone(), listener));
        Server {
            addr,
            fleet,
            _rt: rt,
            _dir: dir,
        }
    }

    /// Sends `head` (request line and headers, without the blank line) and returns the
    /// status line and the open connection.
    fn request(&self, head: &str) -> (String, BufReader<TcpStream>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "{head}\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        (status.trim().to_string(), r)
    }

    fn status(&self, head: &str) -> String {
        self.request(&format!("{head}\r\nConnection: close")).0
    }

    /// Commits events for run `r`; their sequence numbers.
    fn commit(&self, n: usize) -> Vec<u64> {
        let events = (0..n)
            .map(|_| NewEvent {
                at: 1,
                run_id: "r".into(),
                task: None,
                attempt: None,
                kind: "run.started".into(),
                data: serde_json::json!({}),
            })
            .collect();
        let store = self.fleet.store().clone();
        store
            .commit(&Batch {
                events,
                ..Batch::default()
            })
            .unwrap();
        let seqs: Vec<u64> = store
            .events(None, 0, 10_000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let seqs = seqs[seqs.len() - n..].to_vec();
        self.fleet.published(*seqs.last().unwrap());
        seqs
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.fleet.stop.send(true);
    }
}

#[test]
fn unknown_routes_are_404_and_real_routes_keep_their_auth() {
    let server = Server::start();
    for path in ["/nope", "/api/v1/nope", "/api/v2/tasks", "/mcpx"] {
        let status = server.status(&format!("GET {path} HTTP/1.1"));
        assert!(status.contains(" 404 "), "GET {path}: {status}");
    }
    // A token that is no token is still refused on a real route, and /mcp still needs one.
    let bad = "Authorization: Bearer fleet_nope";
    let status = server.status(&format!("GET /api/v1/tasks HTTP/1.1\r\n{bad}"));
    assert!(status.contains(" 401 "), "{status}");
    let status = server.status("POST /mcp HTTP/1.1\r\nContent-Length: 0");
    assert!(status.contains(" 401 "), "{status}");
    // Reads from loopback without a token work as before.
    let status = server.status("GET /api/v1/runs HTTP/1.1");
    assert!(status.contains(" 200 "), "{status}");
}

/// The `id:` of the first event the stream sends.
fn first_event_id(r: &mut BufReader<TcpStream>) -> u64 {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(id) = line.trim().strip_prefix("id:") {
            return id.trim().parse().unwrap();
        }
    }
}

#[test]
fn a_last_event_id_past_the_newest_replays_nothing_and_streams_what_comes_next() {
    let server = Server::start();
    server.commit(3);
    for seen in [
        (1u64 << 63).to_string(),
        u64::MAX.to_string(),
        "1000000".to_string(),
    ] {
        let (status, mut stream) = server.request(&format!(
            "GET /api/v1/events HTTP/1.1\r\nLast-Event-ID: {seen}"
        ));
        assert!(status.contains(" 200 "), "{seen}: {status}");
        let next = server.commit(1)[0];
        assert_eq!(first_event_id(&mut stream), next, "Last-Event-ID {seen}");
    }
    // An id within the log still resumes right after it.
    let (_, mut stream) = server.request("GET /api/v1/events HTTP/1.1\r\nLast-Event-ID: 1");
    assert_eq!(first_event_id(&mut stream), 2);
    // Text that is no sequence number is refused.
    for garbage in ["-1", "abc", "18446744073709551616"] {
        let status = server.status(&format!(
            "GET /api/v1/events HTTP/1.1\r\nLast-Event-ID: {garbage}"
        ));
        assert!(status.contains(" 400 "), "{garbage}: {status}");
    }
}

#[test]
fn a_client_that_sends_half_a_request_head_is_cut_off() {
    let server = Server::start();
    let mut s = TcpStream::connect(server.addr).unwrap();
    // Six times the server's limit (10 s): a connection still open then is held forever.
    let patience = Duration::from_secs(60);
    s.set_read_timeout(Some(patience)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {} // closed by the server (perhaps after a 408)
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the half-sent request was still open after {patience:?}: {e}"),
    }
    // The server still serves everyone else.
    let status = server.status("GET /healthz HTTP/1.1");
    assert!(status.contains(" 200 "), "{status}");
}
