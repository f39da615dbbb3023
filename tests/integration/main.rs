//! One integration binary (link once): the real `smarthost` binary, real clients, real sockets
//! on loopback, ports chosen by the OS.

mod cli;
mod delivery;
mod durability;
mod fair_capacity;
mod hardening;
mod identity;
mod inbound_auth;
mod inbound_tls;
mod intake;
mod metrics;
mod outbound;
mod postfix_upstream;
mod preflight;
mod queue;
mod relay_policy;
mod sendmail;
mod ses_api;
mod ses_credentials;
mod smtp_intake;
mod support;
mod upstream;
