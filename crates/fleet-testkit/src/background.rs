//! Serving a double: an axum app on its own thread and tokio runtime, so tests (sync or
//! async) can start one anywhere and stop it by dropping the handle.

use axum::Router;
use std::net::SocketAddr;

/// A double's server thread: dropping this stops it and waits for the thread to end.
pub(crate) struct Served {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// For a double that runs its own loop: `thread` must end once `stop` fires (or drops).
    pub fn new(
        addr: SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    ) -> Served {
        Served {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `app` on `listener` (already bound) from a thread named `name`.
pub(crate) fn serve_on(
    name: &str,
    listener: std::net::TcpListener,
    app: Router,
) -> std::io::Result<Served> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let label = name.to_string();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{label}: {e}");
                        return;
                    }
                };
                tokio::select! {
                    r = axum::serve(listener, app) => {
                        if let Err(e) = r {
                            eprintln!("{label}: {e}");
                        }
                    }
                    _ = stop_rx => {}
                }
            });
            // Drops hanging connections instead of waiting for them.
            runtime.shutdown_background();
        })?;
    Ok(Served::new(addr, stop, thread))
}

/// Serves `app` on a free port of `127.0.0.1`; panics (a test cannot go on) if it cannot.
pub(crate) fn serve_local(name: &str, app: Router) -> Served {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| serve_on(name, l, app))
        .unwrap_or_else(|e| panic!("fleet-testkit: start the {name}: {e}"))
}
