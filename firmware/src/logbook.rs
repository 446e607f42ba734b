//! The daemon's recent log lines, kept in memory for the diagnostics link while they
//! also go to stderr (the journal on the board).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Lines kept.
pub const LINES: usize = 200;

/// A shared ring of the most recent log lines.
#[derive(Debug, Clone, Default)]
pub struct Logbook(Arc<Mutex<VecDeque<String>>>);

impl Logbook {
    /// Record one line (terminal colour codes removed).
    pub fn push(&self, line: &str) {
        let line = strip_ansi(line.trim_end());
        if line.is_empty() {
            return;
        }
        if let Ok(mut ring) = self.0.lock() {
            if ring.len() == LINES {
                ring.pop_front();
            }
            ring.push_back(line);
        }
    }

    /// The newest lines, oldest first, fitting in `budget` bytes.
    pub fn tail(&self, budget: usize) -> Vec<String> {
        let ring = self.0.lock().map(|r| r.clone()).unwrap_or_default();
        let mut used = 0;
        let mut out: Vec<String> = ring
            .into_iter()
            .rev()
            .take_while(|l| {
                used += l.len() + 2;
                used <= budget
            })
            .collect();
        out.reverse();
        out
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer for `tracing_subscriber`: each event goes to stderr and into the logbook.
#[derive(Debug)]
pub struct Tee {
    book: Logbook,
    buf: Vec<u8>,
}

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        std::io::stderr().write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.buf).lines() {
            self.book.push(line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logbook {
    type Writer = Tee;

    fn make_writer(&'a self) -> Tee {
        Tee { book: self.clone(), buf: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_a_budget_without_colour_codes() {
        let book = Logbook::default();
        for i in 0..LINES + 5 {
            book.push(&format!("\u{1b}[33m WARN\u{1b}[0m line {i}\n"));
        }
        let all = book.tail(usize::MAX);
        assert_eq!(all.len(), LINES);
        assert_eq!(all.last().unwrap(), &format!(" WARN line {}", LINES + 4));
        let few = book.tail(40);
        assert!(few.len() >= 2 && few.iter().map(|l| l.len() + 2).sum::<usize>() <= 40, "{few:?}");
        assert_eq!(few.last(), all.last());
    }
}
