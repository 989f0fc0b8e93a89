//! Has a file changed since it was last looked at? The one answer to that question, for every
//! file clusterdns re-reads while it runs: the config file (`reload`), the hosts file
//! (`resolve::hosts`) and the cluster-objects file (`source::file`).
//!
//! A version of a file is told apart by its device, inode, size and modification time, read
//! through symlinks. That catches every way the files get replaced in practice:
//!
//! - written in place: the size or the modification time (nanoseconds) moves;
//! - an editor's write-and-rename, `mv` over it: a new inode, even with the same size and time;
//! - a Kubernetes ConfigMap or Secret volume update: the kubelet writes the new files into a
//!   new timestamped directory and swaps the `..data` symlink that the file's own symlink goes
//!   through, so the path resolves to another inode (inotify on the old file would see
//!   nothing: the file it watched was never written);
//! - removed (or unreadable): reported once, as [`Change::Removed`].
//!
//! Polling, not inotify, for that last reason; the callers poll at their own pace (the config
//! every second, the hosts file every `hosts.reload`, the objects file every half second).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What [`FileWatch::check`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The file is there, and it is not the version seen last (or none was seen yet): read it.
    Updated,
    /// The file is gone (or cannot be looked at), and it was there, or never looked at, before.
    Removed,
}

/// One file, and the version of it seen last.
#[derive(Debug, Clone)]
pub(crate) struct FileWatch {
    path: PathBuf,
    seen: Seen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Never,
    Missing,
    Present(Version),
}

/// What identifies a version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Version {
    fn of(path: &Path) -> Option<Version> {
        use std::os::unix::fs::MetadataExt;
        // `metadata` follows symlinks: a swapped symlink shows as another inode.
        let m = std::fs::metadata(path).ok()?;
        Some(Version {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.modified().ok(),
        })
    }
}

impl FileWatch {
    /// Watch `path`. The first [`check`](Self::check) reports the file as it is then.
    pub(crate) fn new(path: impl Into<PathBuf>) -> FileWatch {
        FileWatch {
            path: path.into(),
            seen: Seen::Never,
        }
    }

    /// The file watched.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Look at the file now: `None` when it is the version seen last (or still missing).
    pub(crate) fn check(&mut self) -> Option<Change> {
        let now = match Version::of(&self.path) {
            Some(v) => Seen::Present(v),
            None => Seen::Missing,
        };
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(match now {
            Seen::Present(_) => Change::Updated,
            _ => Change::Removed,
        })
    }

    /// Reading the version just reported failed: report the file again at the next
    /// [`check`](Self::check), so the read is retried rather than skipped until it changes.
    pub(crate) fn retry(&mut self) {
        self.seen = Seen::Never;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn in_place_writes_renames_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        let mut w = FileWatch::new(&f);
        assert_eq!(w.check(), Some(Change::Removed), "missing at first look");
        assert_eq!(w.check(), None, "still missing");
        std::fs::write(&f, "a").unwrap();
        assert_eq!(w.check(), Some(Change::Updated));
        assert_eq!(w.check(), None);
        std::fs::write(&f, "ab").unwrap();
        assert_eq!(w.check(), Some(Change::Updated), "written in place");
        // Replaced by a rename: same size, possibly the same time, another inode.
        let tmp = dir.path().join("hosts.new");
        std::fs::write(&tmp, "cd").unwrap();
        let held = std::fs::File::open(&f).unwrap(); // keep the old inode from being reused
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(w.check(), Some(Change::Updated), "renamed over");
        drop(held);
        std::fs::remove_file(&f).unwrap();
        assert_eq!(w.check(), Some(Change::Removed));
        assert_eq!(w.check(), None);
        // A failed read is retried.
        std::fs::write(&f, "x").unwrap();
        assert_eq!(w.check(), Some(Change::Updated));
        w.retry();
        assert_eq!(w.check(), Some(Change::Updated));
    }

    /// A ConfigMap volume: `config.yaml -> ..data/config.yaml`, `..data -> ..2024_01`; an
    /// update writes `..2024_02` and swaps `..data` with a rename.
    #[test]
    fn configmap_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("..2024_01"), dir.path().join("..2024_02"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("config.yaml"), "a: 1\n").unwrap();
        std::fs::write(v2.join("config.yaml"), "a: 2\n").unwrap();
        // Same size and modification time in both versions: only the inode tells them apart.
        let t = std::fs::metadata(v1.join("config.yaml"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(v2.join("config.yaml"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        symlink("..2024_01", dir.path().join("..data")).unwrap();
        let f = dir.path().join("config.yaml");
        symlink("..data/config.yaml", &f).unwrap();
        let mut w = FileWatch::new(&f);
        assert_eq!(w.check(), Some(Change::Updated));
        assert_eq!(w.check(), None);
        symlink("..2024_02", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(
            w.check(),
            Some(Change::Updated),
            "the swap is a new version"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a: 2\n");
        assert_eq!(w.check(), None);
    }
}
