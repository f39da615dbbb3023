//! Writing a file whole or not at all: under `<path>.partial` (mode 0600), synced, then renamed
//! into place, so a reader — or a later run after the disk filled up halfway — sees the old
//! file or the new one, never half of one.

use std::fs::File;
use std::path::{Path, PathBuf};

pub fn write(path: &Path, fill: impl FnOnce(&File) -> std::io::Result<()>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        fill(&file)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
