//! How long steps (feature extraction, coreset selection, scoring) report how far they
//! are. The core never draws anything: the command line shows a bar, tests and
//! libraries pass [`Silent`].

/// Told about one step at a time: [`Progress::begin`], any number of
/// [`Progress::advance`], then [`Progress::end`]. Called from worker threads.
pub trait Progress: Sync {
    /// A step named `what` of `total` units starts.
    fn begin(&self, what: &str, total: usize);
    /// `n` more units of the current step are done.
    fn advance(&self, n: usize);
    /// The current step is over.
    fn end(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: usize) {}
    fn advance(&self, _: usize) {}
    fn end(&self) {}
}
