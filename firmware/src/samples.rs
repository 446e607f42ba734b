//! Camera samples kept in the store, and the store's last write failure, which the
//! station shows as an alarm (a full disk must be seen, and must not stop inspection).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::store::Store;

/// Keep a camera sample every this many frames (and the first of each run).
pub const SAMPLE_EVERY: u64 = 1000;

/// Why the store could not be written last time, if it could not: the sample keeper
/// sets it, the station shows it as an alarm. The line thread looks between parts
/// (about every millisecond when idle), so a change counter lets it skip the lock and
/// the copy while nothing changed.
#[derive(Debug, Default)]
pub struct StoreFault {
    why: std::sync::Mutex<Option<String>>,
    changes: std::sync::atomic::AtomicU64,
}

impl StoreFault {
    /// Record the outcome of the latest write.
    pub fn set(&self, why: Option<String>) {
        let Ok(mut f) = self.why.lock() else { return };
        if *f != why {
            *f = why;
            self.changes.fetch_add(1, Ordering::Release);
        }
    }

    /// The state, if it changed since `seen` (which then moves on). Never waits: while
    /// the keeper holds the lock, the change is picked up on a later look.
    pub fn changed_since(&self, seen: &mut u64) -> Option<Option<String>> {
        let now = self.changes.load(Ordering::Acquire);
        if now == *seen {
            return None;
        }
        let why = self.why.try_lock().ok()?;
        *seen = now;
        Some(why.clone())
    }
}

/// A thread writing camera samples into the store at `dir`; ends with the sender. A
/// write that fails (full disk) sets `fault`, one that succeeds clears it.
pub fn sample_keeper(
    dir: &std::path::Path,
    fault: Arc<StoreFault>,
) -> std::sync::mpsc::SyncSender<image::DynamicImage> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<image::DynamicImage>(1);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let Ok(store) = Store::open(&dir) else { return };
        let start = store.next_sample_index();
        for (i, frame) in rx.into_iter().enumerate() {
            let result = store.save_sample(start + i, &frame);
            if let Err(e) = &result {
                tracing::warn!("keeping a camera sample: {e}");
            }
            fault.set(result.err().map(|e| e.to_string()));
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::StoreFault;

    #[test]
    fn a_store_fault_is_seen_once_per_change() {
        let fault = StoreFault::default();
        let mut seen = 0;
        assert_eq!(fault.changed_since(&mut seen), None, "nothing happened yet");
        fault.set(Some("disk full".into()));
        assert_eq!(fault.changed_since(&mut seen), Some(Some("disk full".into())));
        fault.set(Some("disk full".into()));
        assert_eq!(fault.changed_since(&mut seen), None, "the same fault again is no change");
        fault.set(None);
        assert_eq!(fault.changed_since(&mut seen), Some(None), "a write that works clears it");
    }
}
