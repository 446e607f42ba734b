//! The outage queue: every telemetry record is written here before it is sent, and
//! leaves only when the broker has acknowledged it.
//!
//! Layout, in `<store>/telemetry/`: segment files `<first record number>.seg`, each a
//! run of entries `len: u32 LE | crc32: u32 LE | postcard(Record)`, and `acked`, the
//! highest record number the broker acknowledged, replaced atomically. A daemon kill
//! loses nothing written; a power cut loses at most the batch being written, and a torn
//! tail entry is cut off on the next open. The queue is bounded: when it outgrows its
//! limit the oldest segment goes, and the records in it that never reached the broker
//! are counted as dropped (every later record carries the count).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use kensa_shared::telemetry::{Record, RecordBody};

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file of the queue could not be read or written.
    #[error("telemetry queue {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// Records kept in memory after they are written, so a connected box sends from memory.
const RECENT: usize = 4096;

/// Entry header: length and CRC-32.
const HEADER: usize = 8;

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    last: u64,
}

/// The on-disk queue.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// By first record number.
    segments: BTreeMap<u64, Segment>,
    /// Open for appending: the newest segment.
    tail: Option<File>,
    segment_bytes: u64,
    max_bytes: u64,
    next: u64,
    acked: u64,
    dropped: u64,
    recent: VecDeque<Record>,
}

impl Spool {
    /// Open (or create) the queue in `dir`, at most `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let acked_path = dir.join("acked");
        let acked = match fs::read_to_string(&acked_path) {
            Ok(t) => t.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_at(&acked_path)(e)),
        };
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let path = entry.map_err(io_at(dir))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.insert(first, Segment { path, bytes: 0, last: first.saturating_sub(1) });
            }
        }
        let max_bytes = max_bytes.max(64 * 1024);
        let mut spool = Self {
            dir: dir.to_path_buf(),
            segments,
            tail: None,
            segment_bytes: (max_bytes / 16).clamp(16 * 1024, 4 << 20),
            max_bytes,
            next: acked + 1,
            acked,
            dropped: 0,
            recent: VecDeque::new(),
        };
        spool.recover()?;
        Ok(spool)
    }

    /// Measure every segment, cut a torn tail, and take the numbering and the drop count
    /// from the last record written.
    fn recover(&mut self) -> Result<(), SpoolError> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for first in firsts {
            let path = self.segments[&first].path.clone();
            let (records, good_bytes, torn) = read_segment(&path)?;
            if torn {
                tracing::warn!("telemetry queue {}: cut a torn entry at byte {good_bytes}", path.display());
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good_bytes))
                    .map_err(io_at(&path))?;
            }
            let seg = self.segments.get_mut(&first).expect("listed above");
            seg.bytes = good_bytes;
            if let Some(last) = records.last() {
                seg.last = last.number;
                self.next = self.next.max(last.number + 1);
                self.dropped = self.dropped.max(last.dropped);
            }
        }
        // Empty segments hold nothing to send.
        let empty: Vec<u64> = self.segments.iter().filter(|(_, s)| s.bytes == 0).map(|(&k, _)| k).collect();
        for first in empty {
            let seg = self.segments.remove(&first).expect("listed above");
            fs::remove_file(&seg.path).map_err(io_at(&seg.path))?;
        }
        Ok(())
    }

    /// The queue's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number the next record will get.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Records lost so far (queue full, or a write that failed).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Count records lost before they reached the queue.
    pub fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Highest record number the broker acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Records written and not yet acknowledged (drops excluded).
    pub fn backlog(&self) -> u64 {
        let oldest = self.segments.keys().next().copied().unwrap_or(self.next);
        self.next - self.acked.max(oldest.saturating_sub(1)) - 1
    }

    /// Write `bodies` as numbered records made at `unix_ms`, flushed to the medium in one
    /// `fsync`. On a write failure (full disk) the records are counted as dropped and
    /// the error is returned; the queue stays usable.
    pub fn append(&mut self, bodies: Vec<RecordBody>, unix_ms: u64) -> Result<(), SpoolError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let count = bodies.len() as u64;
        let records: Vec<Record> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record { number: self.next + i as u64, unix_ms, dropped: self.dropped, body })
            .collect();
        let mut bytes = Vec::new();
        for r in &records {
            let payload = postcard::to_stdvec(r).expect("records serialise");
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        if let Err(e) = self.write(&bytes, records[0].number, records[records.len() - 1].number) {
            // The numbers are spent: a subscriber sees the gap, and the count explains it.
            self.next += count;
            self.dropped += count;
            self.tail = None;
            // `recent` holds contiguous numbers only.
            self.recent.clear();
            return Err(e);
        }
        self.next += count;
        for r in records {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(r);
        }
        self.enforce_limit()
    }

    fn write(&mut self, bytes: &[u8], first: u64, last: u64) -> Result<(), SpoolError> {
        let rotate = match self.segments.last_key_value() {
            None => true,
            Some((_, s)) => s.bytes >= self.segment_bytes || self.tail.is_none() && s.last + 1 != first,
        };
        if rotate || self.tail.is_none() {
            let (key, path) = if rotate {
                (first, self.dir.join(format!("{first:020}.seg")))
            } else {
                let (&k, s) = self.segments.last_key_value().expect("checked above");
                (k, s.path.clone())
            };
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_at(&path))?;
            self.segments.entry(key).or_insert(Segment { path, bytes: 0, last: first - 1 });
            self.tail = Some(file);
        }
        let seg = self.segments.values_mut().next_back().expect("opened above");
        let file = self.tail.as_mut().expect("opened above");
        file.write_all(bytes).and_then(|()| file.sync_data()).map_err(io_at(&seg.path))?;
        seg.bytes += bytes.len() as u64;
        seg.last = last;
        Ok(())
    }

    /// Drop the oldest segments while the queue is over its limit, counting what they
    /// held that the broker never had.
    fn enforce_limit(&mut self) -> Result<(), SpoolError> {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let (first, seg) = self.segments.pop_first().expect("more than one");
            let unsent = (seg.last + 1).saturating_sub(first.max(self.acked + 1));
            if unsent > 0 {
                tracing::warn!(
                    "telemetry queue full ({} MiB): {unsent} records that never reached the broker dropped",
                    self.max_bytes >> 20
                );
                self.dropped += unsent;
            }
            while self.recent.front().is_some_and(|r| r.number <= seg.last) {
                self.recent.pop_front();
            }
            fs::remove_file(&seg.path).map_err(io_at(&seg.path))?;
        }
        Ok(())
    }

    /// Up to `max` records from number `from` on, oldest first (from memory when
    /// recent, else from disk). Records dropped from a full queue are skipped.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, SpoolError> {
        if let Some(front) = self.recent.front()
            && front.number <= from
        {
            let skip = (from - front.number) as usize;
            return Ok(self.recent.iter().skip(skip).take(max).cloned().collect());
        }
        let mut out = Vec::new();
        let start = self.segments.range(..=from).next_back().map_or(0, |(&k, _)| k);
        for seg in self.segments.range(start..).map(|(_, s)| s) {
            if seg.last < from {
                continue;
            }
            let (records, _, _) = read_segment(&seg.path)?;
            out.extend(records.into_iter().filter(|r| r.number >= from).take(max - out.len()));
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// The broker has every record up to `number`: remember that, and free the
    /// segments it finishes.
    pub fn ack(&mut self, number: u64) -> Result<(), SpoolError> {
        if number <= self.acked {
            return Ok(());
        }
        self.acked = number;
        let path = self.dir.join("acked");
        let tmp = self.dir.join("acked.tmp");
        fs::write(&tmp, format!("{number}\n")).map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        while self.segments.len() > 1
            && self.segments.first_key_value().is_some_and(|(_, s)| s.last <= number)
        {
            let (_, seg) = self.segments.pop_first().expect("checked");
            fs::remove_file(&seg.path).map_err(io_at(&seg.path))?;
        }
        Ok(())
    }
}

/// The records of a segment, the bytes they span, and whether a torn or corrupt entry
/// follows them.
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64, bool), SpoolError> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path).map_err(io_at(path))?).read_to_end(&mut bytes).map_err(io_at(path))?;
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(r) = postcard::from_bytes::<Record>(payload) else { break };
        records.push(r);
        at += HEADER + len;
    }
    Ok((records, at as u64, at != bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kensa_shared::telemetry::StatusRecord;
    use kensa_shared::wire::Counters;

    fn status(parts: u64) -> RecordBody {
        RecordBody::Status(StatusRecord {
            counters: Counters { parts, ..Counters::default() },
            alarms: vec!["x".repeat(100)],
        })
    }

    fn parts_of(records: &[Record]) -> Vec<u64> {
        records
            .iter()
            .map(|r| match &r.body {
                RecordBody::Status(s) => s.counters.parts,
                RecordBody::Part(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_and_leave_only_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append((1..=5).map(status).collect(), 10).unwrap();
        s.ack(2).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((s.acked(), s.next_number(), s.backlog()), (2, 6, 3));
        assert_eq!(parts_of(&s.read_from(3, 10).unwrap()), [3, 4, 5]);
        s.append(vec![status(6)], 11).unwrap();
        assert_eq!(s.read_from(3, 10).unwrap().iter().map(|r| r.number).collect::<Vec<_>>(), [3, 4, 5, 6]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_numbering_goes_on_after_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append((1..=3).map(status).collect(), 10).unwrap();
        drop(s);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 7).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.next_number(), 3, "record 3 was torn");
        s.append(vec![status(30)], 11).unwrap();
        assert_eq!(parts_of(&s.read_from(1, 10).unwrap()), [1, 2, 30]);
        drop(s);
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(parts_of(&s.read_from(1, 10).unwrap()), [1, 2, 30], "the cut left a clean file");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_unsent_records_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..2000 {
            s.append(vec![status(i)], i).unwrap();
        }
        assert!(s.bytes() <= 64 * 1024, "{} bytes on disk", s.bytes());
        assert!(s.dropped() > 0);
        let left = {
            let reopened = Spool::open(dir.path(), 64 * 1024).unwrap();
            reopened.read_from(0, usize::MAX).unwrap()
        };
        // What is left is the newest records, contiguous, and the count accounts for
        // every number missing before them.
        let first = left[0].number;
        assert!(left.windows(2).all(|w| w[1].number == w[0].number + 1));
        assert_eq!(left.last().unwrap().number, 2000);
        assert_eq!(first - 1, s.dropped(), "dropped records are exactly those before the oldest kept");
        assert!(left.last().unwrap().dropped <= s.dropped());
    }

    #[test]
    fn acknowledged_segments_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..500 {
            s.append(vec![status(i)], i).unwrap();
        }
        let before = s.bytes();
        s.ack(490).unwrap();
        assert!(s.bytes() < before / 2, "{} of {before} bytes left", s.bytes());
        assert_eq!(s.dropped(), 0);
        assert_eq!(s.backlog(), 10);
    }
}
