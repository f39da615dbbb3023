//! The spool's reserve: a file of preallocated blocks beside the spool (`<spool>.reserve`),
//! kept so that an operator can delete mail when the file system is full. Deleting is how an
//! operator frees space, and on SQLite deleting is itself a write: the WAL must grow by the
//! pages the delete changes. With the disk full, `queue delete` gives the reserve up, deletes,
//! hands the freed pages back to the file system, and takes the reserve again.
//!
//! Only the admin path ever gives it up; intake never does, so mail cannot eat it.

use std::path::{Path, PathBuf};

/// Enough for the WAL of deleting a large queue and of compacting it step by step
/// (`sqlite::compact` moves at most 256 pages between checkpoints).
const RESERVE_BYTES: i64 = 8 * 1024 * 1024;

pub(super) fn path_of(spool: &Path) -> PathBuf {
    let mut path = spool.as_os_str().to_owned();
    path.push(".reserve");
    PathBuf::from(path)
}

/// Makes sure the reserve exists; says why when it cannot (the disk is already full, or the
/// directory is not writable) and carries on: the spool works without it.
pub(super) fn keep(spool: &Path) {
    let path = path_of(spool);
    if path.exists() {
        return;
    }
    if let Err(error) = create(&path) {
        tracing::warn!(
            reserve = %path.display(),
            %error,
            "cannot set aside the spool's reserve; with the disk full, `queue delete` may fail until space is freed by other means"
        );
    }
}

/// Below this much free space, a command that steers the queue gives the reserve up before
/// it even opens the spool: opening needs room too (SQLite sizes the `-shm` index and, after a
/// clean close, creates the `-wal` anew).
const FULL_BELOW_BYTES: u64 = 1024 * 1024;

/// Gives the reserve up; true when there was one to give.
pub(super) fn release(spool: &Path) -> bool {
    let released = std::fs::remove_file(path_of(spool)).is_ok();
    if released {
        tracing::warn!(
            spool = %spool.display(),
            "the file system holding the spool is full: gave up the spool's reserve to make room"
        );
    }
    released
}

/// Gives the reserve up when the file system holding the spool is (nearly) full.
pub(super) fn release_if_full(spool: &Path) {
    let dir = spool
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(stats) = nix::sys::statvfs::statvfs(dir) else {
        return;
    };
    let free = stats.blocks_available() * stats.fragment_size();
    if free < FULL_BELOW_BYTES {
        release(spool);
    }
}

/// Writes the reserve under a temporary name and renames it into place, so a half-made file
/// (the disk filled up meanwhile) is never taken for a reserve.
fn create(path: &Path) -> std::io::Result<()> {
    crate::atomic_file::write(path, allocate)
}

/// Real blocks, not a sparse file: a sparse reserve would free nothing when removed.
fn allocate(file: &std::fs::File) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, RESERVE_BYTES) {
        Ok(()) => Ok(()),
        // File systems without fallocate get zeros written.
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            use std::io::Write;
            let zeros = vec![0u8; 64 * 1024];
            let mut writer = std::io::BufWriter::new(file);
            for _ in 0..RESERVE_BYTES / zeros.len() as i64 {
                writer.write_all(&zeros)?;
            }
            writer.flush()
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_sets_aside_real_blocks_once_and_release_gives_them_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool.db");
        keep(&spool);
        let meta = std::fs::metadata(path_of(&spool)).unwrap();
        assert_eq!(meta.len(), RESERVE_BYTES as u64);
        // st_blocks counts 512-byte units actually allocated.
        assert!(
            meta.blocks() * 512 >= RESERVE_BYTES as u64,
            "reserve is sparse"
        );
        keep(&spool);
        assert!(release(&spool));
        assert!(!path_of(&spool).exists());
        assert!(!release(&spool), "nothing left to release");
    }
}
