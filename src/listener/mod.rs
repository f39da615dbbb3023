//! The listeners: the SMTP accept loop, session state machine, DATA framing and replies, and
//! the local hand-off socket that unprivileged `sendmail` callers submit through.

mod command;
mod connection;
mod data;
mod pickup;
pub mod reply;
mod server;
mod session;

pub use connection::{SessionContext, SessionEnd, run as run_connection};
pub use pickup::{bind_maildrop, serve_maildrop};
pub use server::{ConnectionLimits, serve};
pub use session::{Peer, SessionPolicy};

/// Runs the DATA receiver over a complete framed body (for round-trip tests elsewhere).
#[cfg(test)]
pub fn receive_data_for_tests(framed: &[u8]) -> Vec<u8> {
    let mut receiver = data::DataReceiver::new(u64::MAX);
    assert_eq!(receiver.feed(framed), Some(framed.len()));
    match receiver.finish() {
        data::DataOutcome::Complete { body, .. } => body,
        other => panic!("{other:?}"),
    }
}
