//! Who else runs on this node: a lock file on a host path that every node-local instance
//! holds with a shared `flock(2)` for as long as it lives.
//!
//! - Start: take the shared lock. Instances share it, so a new one starts beside an old one.
//! - Exit: try to turn it exclusive without waiting. That succeeds only if no other instance
//!   holds the file, i.e. this is the last one: it tears down. If another instance (the newer
//!   pod of a rolling update) holds it, the interface and rules stay for that one.
//! - The kernel drops a lock when its holder dies, `kill -9` included, so a dead instance never
//!   counts as alive, and nothing needs cleaning up after it.
//! - While the last instance tears down it holds the lock exclusively, so an instance starting
//!   at that moment waits for the teardown to finish before it sets up again (no half-removed
//!   state under a fresh instance).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The shared lock, held until dropped (or the process dies).
#[derive(Debug)]
pub(crate) struct Lease {
    file: File,
    path: PathBuf,
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor this File owns.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Lease {
    /// Take the shared lock, waiting (polling) while an exiting instance tears down.
    pub(crate) async fn acquire(path: &Path) -> io::Result<Lease> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        // Opened close-on-exec (std's default): the iptables/nft children must not inherit it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !told && start.elapsed() > Duration::from_secs(1) {
                        tracing::info!(path = %path.display(), "waiting for an exiting node-local instance to finish its teardown");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Lease {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Whether this is the last instance on the node. On `true` the lock is now exclusive
    /// (held until drop), so no new instance sets up while this one tears down.
    pub(crate) fn is_last(&self) -> bool {
        // flock(2): converting a lock is not atomic (the shared lock may be released first);
        // on failure this instance no longer counts, which is right for one that is exiting.
        flock(&self.file, libc::LOCK_EX | libc::LOCK_NB).is_ok()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn last_instance_is_the_only_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lock");
        let old = Lease::acquire(&path).await.unwrap();
        let new = Lease::acquire(&path).await.unwrap();
        // The old one exits while the new one runs: not the last.
        assert!(!old.is_last());
        drop(old);
        // The new one exits alone: the last, and now exclusive.
        assert!(new.is_last());
        // A third starting now waits until the teardown (the exclusive holder) is done.
        let waiter = tokio::spawn({
            let path = path.clone();
            async move { Lease::acquire(&path).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "started during a teardown");
        drop(new);
        let third = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("acquired after the teardown")
            .unwrap();
        assert_eq!(third.path(), path);
    }
}
