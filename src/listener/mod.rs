//! The listeners: the SMTP accept loop, session state machine, DATA framing and replies, and
//! the local hand-off socket that unprivileged `sendmail` callers submit through.

pub(crate) mod command;
mod connection;
pub(crate) mod data;
mod pickup;
pub mod reply;
mod server;
pub(crate) mod session;
mod tls;

pub use connection::{SessionContext, SessionEnd, run as run_connection};
pub use pickup::{bind_maildrop, serve_maildrop};
pub use server::{ConnectionLimits, Listeners, serve};
pub use session::{Peer, SessionPolicy};
pub use tls::ServerTls;
