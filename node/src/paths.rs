//! Where a node keeps its data, and its unix socket, when nothing else is said: read by the
//! node's configuration and by clients looking for the local node.

use std::path::{Path, PathBuf};

/// Where a node keeps its data when nothing else is said: `$XDG_DATA_HOME/ferry`, else
/// `~/.local/share/ferry`, else `./ferry-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("ferry");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/share/ferry");
    }
    PathBuf::from("ferry-data")
}

/// The unix socket of a node that keeps its data in `data_dir`.
pub fn socket_in(data_dir: &Path) -> PathBuf {
    data_dir.join("ferryd.sock")
}
