//! The message model every stage shares: envelope addresses, queue IDs, body types, replies,
//! and what counts as an internal name. It depends on nothing else in the crate, so every
//! stage may use it without an arrow running back up the pipeline.

mod address;
mod api_reply;
mod body_type;
mod internal_names;
mod queue_id;
mod reply;
mod tls_session;
mod upstream_reply;
mod upstream_sizes;

pub use address::{Address, AddressError, ReversePath, parse_forward_path, parse_reverse_path};
pub use api_reply::ApiReply;
pub use body_type::BodyType;
pub use internal_names::{DEFAULT_INTERNAL_SUFFIXES, InternalNames, is_private};
pub use queue_id::QueueId;
pub use reply::Reply;
pub use tls_session::TlsSession;
pub use upstream_reply::{EnhancedStatus, UpstreamReply};
pub use upstream_sizes::UpstreamSizes;
