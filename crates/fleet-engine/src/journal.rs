//! `events.jsonl`: a run's events as JSON lines, a projection of the store.
//!
//! The store is the source of truth; the file is appended after each commit. A crash between
//! the two is repaired when the journal is opened again: a torn last line is cut off and the
//! events the file is missing are copied from the store, so no event is ever lost or doubled.

use fleet_store::{Event, Store};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

pub struct Journal {
    out: BufWriter<File>,
    last_seq: u64,
}

/// The JSON form of an event, shared by events.jsonl and `--json` output.
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "at": crate::rfc3339(e.at),
        "run": e.run_id,
        "task": e.task,
        "attempt": e.attempt,
        "kind": e.kind,
        "data": e.data,
    })
}

impl Journal {
    /// Opens (or creates) the journal and brings it up to date with the store.
    pub fn open(path: &Path, store: &dyn Store, run_id: &str) -> std::io::Result<Journal> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let (last_seq, good_len) = scan(&file)?;
        if good_len < file.metadata()?.len() {
            file.set_len(good_len)?;
        }
        file.seek(SeekFrom::End(0))?;
        let mut journal = Journal {
            out: BufWriter::new(file),
            last_seq,
        };
        loop {
            let missing = store
                .events(Some(run_id), journal.last_seq, 10_000)
                .map_err(std::io::Error::other)?;
            if missing.is_empty() {
                break;
            }
            journal.append(&missing)?;
        }
        Ok(journal)
    }

    /// Appends events not yet in the file, and flushes.
    pub fn append(&mut self, events: &[Event]) -> std::io::Result<()> {
        for e in events {
            if e.seq <= self.last_seq {
                continue;
            }
            // The same object as `event_json`, written field by field (no intermediate copy).
            write!(
                self.out,
                "{{\"at\":\"{}\",\"attempt\":",
                crate::rfc3339(e.at)
            )?;
            serde_json::to_writer(&mut self.out, &e.attempt)?;
            self.out.write_all(b",\"data\":")?;
            serde_json::to_writer(&mut self.out, &e.data)?;
            self.out.write_all(b",\"kind\":")?;
            serde_json::to_writer(&mut self.out, &e.kind)?;
            self.out.write_all(b",\"run\":")?;
            serde_json::to_writer(&mut self.out, &e.run_id)?;
            write!(self.out, ",\"seq\":{},\"task\":", e.seq)?;
            serde_json::to_writer(&mut self.out, &e.task)?;
            self.out.write_all(b"}\n")?;
            self.last_seq = e.seq;
        }
        self.out.flush()
    }
}

/// The last complete line's seq and the length of the file up to the end of that line.
fn scan(file: &File) -> std::io::Result<(u64, u64)> {
    let mut reader = BufReader::new(file.try_clone()?);
    reader.seek(SeekFrom::Start(0))?;
    let mut last_seq = 0;
    let mut good_len = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(v) => {
                if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
                    last_seq = last_seq.max(seq);
                }
                good_len += n as u64;
            }
            Err(_) => break,
        }
    }
    Ok((last_seq, good_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_exactly_event_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = fleet_store::SqliteStore::in_memory().unwrap();
        let mut j = Journal::open(&dir.path().join("e.jsonl"), &store, "r").unwrap();
        let e = Event {
            seq: 7,
            at: 1_795_219_200_123,
            run_id: "r".into(),
            task: Some("t\"x".into()),
            attempt: Some(2),
            kind: "agent.message".into(),
            data: serde_json::json!({"text": "a\nb", "n": 1}),
        };
        j.append(std::slice::from_ref(&e)).unwrap();
        let line = std::fs::read_to_string(dir.path().join("e.jsonl")).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(parsed, event_json(&e));
        assert_eq!(parsed["at"], "2026-11-21T00:00:00.123Z");
    }
}
