//! A high-water mark beside the spool file (`<spool>.commits`): how many enqueue commits the
//! spool had acknowledged, written after commits (at most once a second, and when the writer
//! stops). A spool that holds fewer commits than its mark has lost mail it acknowledged — its
//! `-wal` file deleted after a crash, or the file restored from an older copy — and opening it
//! says so loudly instead of carrying on as if nothing happened.
//!
//! The mark is written without fsync, after the commit it counts was fsync'd: it can lag
//! behind the spool (a power cut loses its last write), never run ahead of it, so it never
//! cries wolf.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::SqliteConnection;

/// How often the mark follows the commits.
const EVERY: Duration = Duration::from_secs(1);

pub(super) struct Watermark {
    path: PathBuf,
    /// Enqueue commits in the spool, as this writer counts them.
    commits: i64,
    written: i64,
    last_write: Instant,
}

impl Watermark {
    /// Reads the spool's own count and the mark; reports a spool that is behind its mark, then
    /// starts the mark afresh from what the spool holds.
    pub async fn open(spool: &Path, conn: &mut SqliteConnection) -> Watermark {
        let mut path = spool.as_os_str().to_owned();
        path.push(".commits");
        let path = PathBuf::from(path);
        let commits: i64 =
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'enqueue_commits'")
                .fetch_optional(&mut *conn)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
        let mark = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok());
        if let Some(mark) = mark
            && mark > commits
        {
            tracing::error!(
                spool = %spool.display(),
                commits_in_spool = commits,
                commits_acknowledged = mark,
                "the spool is missing {} commits of mail it acknowledged: was its -wal file deleted, or the file restored from an older copy? Mail accepted in that time is lost; check the clients' logs",
                mark - commits
            );
        }
        // A mark ahead of the spool was reported: start it afresh, so it is said once.
        let behind = mark.is_some_and(|mark| mark > commits);
        let mut watermark = Watermark {
            path,
            commits,
            written: if behind {
                i64::MIN
            } else {
                mark.unwrap_or(i64::MIN)
            },
            last_write: Instant::now(),
        };
        watermark.flush();
        watermark
    }

    /// One more enqueue commit reached the disk.
    pub fn committed(&mut self) {
        self.commits += 1;
        if self.last_write.elapsed() >= EVERY {
            self.flush();
        }
    }

    /// Writes the mark if it moved: in place, one fixed-width record in one write (a rename
    /// over the old file would make ext4 start writeback of it, milliseconds a `sendmail`
    /// caller would wait for).
    pub fn flush(&mut self) {
        if self.written == self.commits {
            return;
        }
        use std::os::unix::fs::FileExt;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .and_then(|file| file.write_all_at(format!("{:020}\n", self.commits).as_bytes(), 0));
        match written {
            Ok(()) => self.written = self.commits,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot write the spool's commit mark")
            }
        }
        self.last_write = Instant::now();
    }
}
