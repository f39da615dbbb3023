//! Who may relay, and which addresses and senders are acceptable. Kept apart from the session
//! (as Postfix keeps `smtpd_relay_restrictions` apart from every other check), so that no other
//! rule can ever open the relay.

mod address;
mod event_window;
mod message_rates;
mod relay;
mod sender;

pub use address::{RoutingTrick, routing_trick};
pub use event_window::EventWindow;
pub use message_rates::MessageRates;
pub use relay::{RelayDecision, TrustedNetworks};
pub use sender::SenderDomains;
