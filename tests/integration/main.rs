//! One integration binary (link once): the real `smarthost` binary, real clients, real sockets
//! on loopback, ports chosen by the OS.

/// Runs each scenario `fn name(store: Store)` against both stores, as the tests
/// `name::sqlite` and `name::postgres` (a PostgreSQL server of its own for each).
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn sqlite() {
                    super::$scenario(crate::support::Store::Sqlite)
                }

                #[test]
                fn postgres() {
                    let pg = crate::postgres::Postgres::start();
                    super::$scenario(crate::support::Store::Postgres(&pg))
                }
            }
        )*
    };
}

mod cli;
mod delivery;
mod durability;
mod fair_capacity;
mod fleet;
mod hardening;
mod identity;
mod inbound_auth;
mod inbound_tls;
mod intake;
mod metrics;
mod outbound;
mod packaging;
mod postfix_upstream;
mod postgres;
mod preflight;
mod preflight_daemon;
mod queue;
mod relay_policy;
mod sendmail;
mod ses_api;
mod ses_credentials;
mod smtp_intake;
mod spf_reference;
mod support;
mod upstream;
