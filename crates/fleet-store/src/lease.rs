//! A held lease: taken in the store, kept alive by a heartbeat thread, given up when dropped.
//!
//! Replaces the `flock` files that tied an epic's driver to one machine: every process that
//! shares the store (API replicas on PostgreSQL) agrees on who holds what. A `flock` goes away
//! the moment its process dies; a lease only when its TTL passes. So a holder on this machine
//! whose process is gone (a `kill -9`, then a restart) is recognised by its name and its lease
//! taken over at once, and only a holder on another machine costs the TTL.

use crate::{Result, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Who holds a lease: `host:pid:start:n`, unique per [`Lease`] (two leases taken by one
/// process exclude each other, as two `flock`s on separate opens did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder(String);

impl LeaseHolder {
    /// A new holder name for this process.
    pub fn this_process() -> LeaseHolder {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        LeaseHolder(format!(
            "{}:{pid}:{}:{}",
            host(),
            process_start(pid).unwrap_or_default(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `holder` names a process of this machine that no longer runs (the pid is gone
    /// or now belongs to a process started at another time).
    pub fn is_dead_here(holder: &str) -> bool {
        let mut parts = holder.split(':');
        let (Some(h), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        if h != host() {
            return false;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        process_start(pid).as_deref() != Some(start)
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(':', "_"))
        .unwrap_or_else(|_| "localhost".into())
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`): with the
/// pid, it names one process even after the pid is reused.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// A lease this process holds; renewed every third of its TTL, released when dropped.
pub struct Lease {
    watch: LeaseWatch,
    stop: Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// What a holder knows of its lease, shareable with the tasks that act under it (the epic
/// driver's stage runs): whether it may still act.
#[derive(Clone)]
pub struct LeaseWatch {
    store: Arc<dyn Store>,
    name: String,
    holder: LeaseHolder,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    /// When the last renewal that succeeded was asked for, in ms after `since`.
    renewed: Arc<AtomicU64>,
    since: Instant,
}

impl Lease {
    /// Takes the lease if it is free (or held by a dead process of this machine); `None` when
    /// someone else holds it.
    pub fn try_take(store: Arc<dyn Store>, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        let holder = LeaseHolder::this_process();
        let since = Instant::now();
        if !take(&*store, name, &holder, ttl)? {
            return Ok(None);
        }
        Ok(Some(Lease::held(store, name, holder, ttl, since)))
    }

    /// Takes the lease, waiting (polling every `poll`) while someone else holds it.
    pub fn take(store: Arc<dyn Store>, name: &str, ttl: Duration, poll: Duration) -> Result<Lease> {
        let holder = LeaseHolder::this_process();
        loop {
            let since = Instant::now();
            if take(&*store, name, &holder, ttl)? {
                return Ok(Lease::held(store, name, holder, ttl, since));
            }
            std::thread::sleep(poll);
        }
    }

    fn held(
        store: Arc<dyn Store>,
        name: &str,
        holder: LeaseHolder,
        ttl: Duration,
        since: Instant,
    ) -> Lease {
        let watch = LeaseWatch {
            store,
            name: name.to_string(),
            holder,
            ttl,
            lost: Arc::new(AtomicBool::new(false)),
            renewed: Arc::new(AtomicU64::new(0)),
            since,
        };
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let heartbeat = {
            let (watch, stop) = (watch.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fleet-lease".into())
                .spawn(move || heartbeat(&watch, &stop))
                .expect("spawn the lease heartbeat")
        };
        Lease {
            watch,
            stop,
            heartbeat: Some(heartbeat),
        }
    }

    /// Whether the lease is lost: someone else took it, or no renewal has succeeded for so
    /// long that it may have expired before the next one. The holder must stop acting on what
    /// it guards.
    pub fn is_lost(&self) -> bool {
        self.watch.is_lost()
    }

    pub fn holder(&self) -> &LeaseHolder {
        &self.watch.holder
    }

    /// A handle on this lease for the tasks acting under it.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }
}

impl LeaseWatch {
    /// See [`Lease::is_lost`]. Judged without asking the store: a holder whose renewals have
    /// failed for two thirds of the TTL (the store unreachable, say) gives the lease up while
    /// a third of it is left, time enough to stop before another process may take it over.
    pub fn is_lost(&self) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            return true;
        }
        let renewed = Duration::from_millis(self.renewed.load(Ordering::Relaxed));
        if self.since.elapsed().saturating_sub(renewed) >= self.ttl * 2 / 3 {
            self.lost.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether this process still holds the lease, asking the store: before a write that only
    /// the holder may make, and while acting under it. `false` once it is lost (it is never
    /// held again); a store that cannot answer leaves the judgement to [`LeaseWatch::is_lost`].
    pub fn still_held(&self) -> bool {
        if self.is_lost() {
            return false;
        }
        match self.store.lease(&self.name) {
            Ok(Some(row)) if row.holder == self.holder.as_str() => true,
            Ok(_) => {
                self.lost.store(true, Ordering::Relaxed);
                false
            }
            Err(_) => !self.is_lost(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder(&self) -> &LeaseHolder {
        &self.holder
    }
}

fn take(store: &dyn Store, name: &str, holder: &LeaseHolder, ttl: Duration) -> Result<bool> {
    if store.acquire_lease(name, holder.as_str(), ttl)? {
        return Ok(true);
    }
    match store.lease(name)? {
        Some(held) if LeaseHolder::is_dead_here(&held.holder) => {
            // Compare-and-delete: only that dead holder's row goes.
            store.release_lease(name, &held.holder)?;
            store.acquire_lease(name, holder.as_str(), ttl)
        }
        _ => Ok(false),
    }
}

fn heartbeat(w: &LeaseWatch, stop: &(Mutex<bool>, Condvar)) {
    let every = w.ttl / 3;
    let (flag, cv) = stop;
    let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stopped = cv
            .wait_timeout_while(stopped, every, |s| !*s)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stopped {
            return;
        }
        // Measured from before the call: the store's new expiry is at least a TTL after it.
        let asked = w.since.elapsed().as_millis() as u64;
        match w.store.renew_lease(&w.name, w.holder.as_str(), w.ttl) {
            Ok(true) => w.renewed.store(asked, Ordering::Relaxed),
            Ok(false) => {
                w.lost.store(true, Ordering::Relaxed);
                return;
            }
            // The store unreachable for a moment: tried again at the next beat; if that goes on,
            // `is_lost` gives the lease up by the time.
            Err(_) => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.heartbeat.take() {
            let _ = t.join();
        }
        let w = &self.watch;
        let _ = w.store.release_lease(&w.name, w.holder.as_str());
    }
}
