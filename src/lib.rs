//! smarthost: a hardened outbound mail relay for cloud VMs.
//!
//! Mail flows one way through stages, each a module with one job:
//!
//! ```text
//!  SMTP client ─┐
//!  sendmail CLI ┴─> listener ─> policy ─> spool (SQLite) ─> delivery ─> upstream
//!                   (session)   (who may   (durable,        (later)
//!                               relay)      group commit)
//!  mailq ─────────────────────────────────> spool (read)
//! ```
//!
//! - [`listener`]: accept loop, the SMTP session state machine, DATA framing, replies.
//! - [`policy`]: relay access, address tricks, allowed sender domains.
//! - [`spool`]: open/migrate, group-committed enqueue, queue queries.
//! - [`envelope`]: validated envelope addresses.
//! - [`received`], [`wire`]: the Received header we add; outgoing DATA framing.
//! - [`cli`]: one file per subcommand; [`config`]: validated configuration.
//!
//! Dependency rule: the listener may call policy and spool; the spool knows nothing of the
//! listener; the CLI composes.

mod atomic_file;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod intake;
pub mod listener;
pub mod model;
pub mod policy;
pub mod preflight;
pub mod rewrite;
pub mod spool;
pub mod sysexits;
pub mod telemetry;
pub mod wire;
