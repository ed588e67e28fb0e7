//! Where each file of the store lives (the layout on disk is in the crate's documentation).

use std::path::{Path, PathBuf};

/// Where each file of the store lives.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub volumes: PathBuf,
    pub meta: PathBuf,
    pub partial: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            volumes: root.join("volumes"),
            meta: root.join("meta"),
            partial: root.join("partial"),
        }
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }

    pub fn meta(&self, name: &str) -> PathBuf {
        self.meta.join(format!("{name}.json"))
    }

    pub fn part(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.part"))
    }

    pub fn partial_json(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.json"))
    }

    pub fn commit_record(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.commit"))
    }

    /// A committed volume's block hashes.
    pub fn blocks(&self, name: &str) -> PathBuf {
        self.meta.join(format!("{name}.blocks"))
    }

    /// The block hashes an upload in progress writes.
    pub fn partial_blocks(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.blocks"))
    }
}
