//! Why the spool could not do something, in words an operator can act on.

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "{path} is not a smarthost spool: it is a database with other tables ({tables}); point spool.path at a new file, or move this one away"
    )]
    Foreign { path: String, tables: String },
    #[error("cannot migrate spool {path}: {reason}")]
    Migrate { path: String, reason: String },
    #[error(
        "spool {path} has schema version {found}, newer than this smarthost knows ({known}); use a newer smarthost"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "spool {path} has an older schema ({found} < {known}); run `smarthost serve` once to upgrade it"
    )]
    OlderSchema {
        path: String,
        found: i64,
        known: i64,
    },
    /// A write failed (disk full, database locked past busy_timeout, I/O error). Nothing of
    /// the failed batch was committed.
    #[error("spool write failed: {0}")]
    Write(String),
    /// The file system holding the spool has no room for the write (SQLITE_FULL).
    #[error(
        "the file system holding the spool is full ({0}): free space there, or delete mail with `smarthost queue delete`, which works on a full disk"
    )]
    NoSpace(String),
    /// The shared store could not be reached (down, failing over, cut off): nothing of the
    /// batch was committed, and trying its jobs one by one would only wait longer.
    #[error("the shared spool is unreachable ({0}); mail is accepted again as soon as it is back")]
    Unavailable(String),
    #[error("spool query failed: {0}")]
    Read(String),
    #[error("spool writer has stopped")]
    Closed,
}

impl SpoolError {
    /// Commands that do not migrate refuse a spool whose schema version is not exactly ours.
    pub(super) fn unless_schema_matches(
        path: &str,
        found: i64,
        known: i64,
    ) -> Result<(), SpoolError> {
        match found.cmp(&known) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(SpoolError::NewerSchema {
                path: path.to_string(),
                found,
                known,
            }),
            std::cmp::Ordering::Less => Err(SpoolError::OlderSchema {
                path: path.to_string(),
                found,
                known,
            }),
        }
    }
}
