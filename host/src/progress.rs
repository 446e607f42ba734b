//! The core's progress reports as a bar on stderr (hidden when stderr is not a terminal).

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// One bar, restarted for each step.
#[derive(Debug, Default)]
pub struct Bar(Mutex<Option<ProgressBar>>);

impl Bar {
    /// A bar of `total` units named `what`, for work outside the core (flashing).
    pub fn standalone(what: &str, total: usize) -> ProgressBar {
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        pb
    }

    fn with(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A panicking worker poisons the lock; the bar is cosmetic, keep going.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl kensa_core::Progress for Bar {
    fn begin(&self, what: &str, total: usize) {
        self.with(|b| *b = Some(Self::standalone(what, total)));
    }

    fn advance(&self, n: usize) {
        self.with(|b| {
            if let Some(b) = b {
                b.inc(n as u64);
            }
        });
    }

    fn end(&self) {
        self.with(|b| {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        });
    }
}
