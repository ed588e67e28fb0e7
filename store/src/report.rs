//! What recovery found and did when the store was opened ([`RecoveryReport`]).

use std::fmt;

/// What recovery found and did when the store was opened; `Display` gives a one-line summary
/// for the daemon's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Committed volumes found.
    pub volumes: usize,
    /// Partial uploads kept for resuming.
    pub partials_kept: usize,
    /// Temporary files (`.<name>.<n>.tmp`) of interrupted operations, deleted.
    pub temp_files_removed: usize,
    /// Sidecars in `meta/` whose volume does not exist (a delete interrupted between its two
    /// steps), deleted.
    pub orphan_meta_removed: usize,
    /// Sidecars that do not parse. Left in place for an operator to look at; their volumes
    /// are served without a checksum.
    pub unreadable_meta: usize,
    /// Commits interrupted after the data was published, completed by installing their
    /// sidecar.
    pub commits_completed: usize,
    /// Commits interrupted before the data was published; the uploads are partial again and
    /// can be resumed and committed anew.
    pub commits_rolled_back: usize,
    /// Partial uploads idle for at least `resume_ttl`, deleted.
    pub expired_partials_removed: usize,
    /// Partial uploads begun as not resumable (replicas of a replicated upload) that the
    /// process did not get to discard because it died, deleted whatever their age.
    pub unresumable_partials_removed: usize,
    /// Partial uploads that were half made (data without its JSON or the reverse) or whose
    /// JSON does not parse, deleted: they cannot be resumed safely.
    pub broken_partials_removed: usize,
    /// Entries the store did not make (invalid names, directories, symlinks), left alone.
    pub ignored_entries: usize,
}

impl RecoveryReport {
    /// Whether recovery had to change anything (or found something to warn about), i.e.
    /// whether the last shutdown was not clean.
    pub fn found_debris(&self) -> bool {
        self.temp_files_removed
            + self.orphan_meta_removed
            + self.unreadable_meta
            + self.commits_completed
            + self.commits_rolled_back
            + self.broken_partials_removed
            + self.unresumable_partials_removed
            > 0
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} volumes, {} partial uploads kept",
            self.volumes, self.partials_kept
        )?;
        let items = [
            (self.temp_files_removed, "temporary files removed"),
            (self.orphan_meta_removed, "orphan sidecars removed"),
            (self.unreadable_meta, "unreadable sidecars left in place"),
            (self.commits_completed, "interrupted commits completed"),
            (self.commits_rolled_back, "interrupted commits rolled back"),
            (
                self.expired_partials_removed,
                "expired partial uploads removed",
            ),
            (
                self.broken_partials_removed,
                "broken partial uploads removed",
            ),
            (
                self.unresumable_partials_removed,
                "non-resumable partial uploads removed",
            ),
            (self.ignored_entries, "foreign entries ignored"),
        ];
        for (count, what) in items {
            if count > 0 {
                write!(f, ", {count} {what}")?;
            }
        }
        Ok(())
    }
}
