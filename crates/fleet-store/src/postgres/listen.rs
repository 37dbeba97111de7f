//! LISTEN/NOTIFY: one thread per store handle listens on its own connection and wakes every
//! waiter for events at each notification (commits of events notify `CHANNEL`).

use super::{CHANNEL, POLL_LISTENING};
use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the listener tells waiters: a count bumped at every notification, and whether it is
/// connected (else waiters poll faster).
#[derive(Default)]
pub(super) struct Wake {
    pub(super) count: Mutex<u64>,
    pub(super) cv: Condvar,
    pub(super) listening: AtomicBool,
}

impl Wake {
    pub(super) fn bump(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }
}

/// The thread that LISTENs on its own connection; stopped when dropped.
pub(super) struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Listener {
    pub(super) fn start(url: String, wake: Arc<Wake>) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-pg-listen".into())
            .spawn(move || listen(&url, &wake, &flag))
            .expect("spawn the listener thread");
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

/// LISTENs until stopped, reconnecting after a lost connection; every notification (and every
/// reconnection, which may have missed some) wakes the waiters.
fn listen(url: &str, wake: &Wake, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match Client::connect(url, NoTls)
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c))
        {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(POLL_LISTENING);
                continue;
            }
        };
        wake.listening.store(true, Ordering::Relaxed);
        wake.bump();
        'connected: while !stop.load(Ordering::Relaxed) {
            {
                let mut notes = client.notifications();
                let mut iter = notes.timeout_iter(Duration::from_millis(200));
                loop {
                    match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                        Ok(Some(_)) => wake.bump(),
                        Ok(None) => break,
                        Err(_) => break 'connected,
                    }
                }
            }
            if client.is_closed() {
                break;
            }
        }
        wake.listening.store(false, Ordering::Relaxed);
    }
}
