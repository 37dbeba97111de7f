//! A writer that keeps the head and the tail of what passes through it and drops the middle:
//! an agent may print without end (a gigabyte has been seen), and the start (what it set out
//! to do) and the end (how it finished or failed) are what a person and the next agent read.

use std::collections::VecDeque;
use std::io::{self, Write};

/// Writes the first `head` bytes through at once; keeps the last `tail` bytes of the rest in
/// memory and writes them, after a line saying how much was cut, on [`HeadTail::finish`].
pub(crate) struct HeadTail<W: Write> {
    inner: W,
    head_left: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    cut: u64,
}

impl<W: Write> HeadTail<W> {
    pub(crate) fn new(inner: W, head: usize, tail: usize) -> HeadTail<W> {
        HeadTail {
            inner,
            head_left: head,
            tail: VecDeque::new(),
            tail_cap: tail,
            cut: 0,
        }
    }

    /// Writes what was kept of the tail (saying what was cut) and hands back the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.cut > 0 {
            writeln!(
                self.inner,
                "[… {} bytes cut here; the first and the last of the output are kept …]",
                self.cut
            )?;
        }
        let (a, b) = self.tail.as_slices();
        self.inner.write_all(a)?;
        self.inner.write_all(b)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for HeadTail<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let through = buf.len().min(self.head_left);
        if through > 0 {
            self.inner.write_all(&buf[..through])?;
            self.head_left -= through;
        }
        let rest = &buf[through..];
        if !rest.is_empty() {
            self.tail.extend(rest);
            let over = self.tail.len().saturating_sub(self.tail_cap);
            if over > 0 {
                self.tail.drain(..over);
                self.cut += over as u64;
            }
        }
        Ok(buf.len())
    }

    /// Flushes what went through; the tail waits for [`HeadTail::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_passes_whole_and_long_output_keeps_head_and_tail() {
        let mut w = HeadTail::new(Vec::new(), 10, 5);
        w.write_all(b"0123").unwrap();
        assert_eq!(w.finish().unwrap(), b"0123");

        let mut w = HeadTail::new(Vec::new(), 4, 3);
        for chunk in [&b"abcdef"[..], b"ghijkl", b"mn"] {
            w.write_all(chunk).unwrap();
        }
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        // 14 bytes: 4 through, the last 3 kept, 7 cut.
        assert!(out.starts_with("abcd[… 7 bytes cut here"), "{out}");
        assert!(out.ends_with("…]\nlmn"), "{out}");
    }
}
