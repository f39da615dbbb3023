//! Address forms that other MTAs have historically *routed* and that a relay must not: the
//! `%` hack (`user%other@relay`), UUCP bang paths (`host!user@relay`) and quoted local parts
//! hiding an `@` (`"user@other"@relay`). Source routes and multiple `@` are already refused by
//! the envelope parser. We refuse these too, instead of passing them on for an upstream to
//! interpret.

use crate::model::Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingTrick {
    PercentHack,
    BangPath,
    QuotedAt,
}

impl RoutingTrick {
    pub fn describe(self) -> &'static str {
        match self {
            RoutingTrick::PercentHack => "'%' routing is not accepted",
            RoutingTrick::BangPath => "'!' (UUCP) routing is not accepted",
            RoutingTrick::QuotedAt => "quoted '@' in local part is not accepted",
        }
    }
}

pub fn routing_trick(address: &Address) -> Option<RoutingTrick> {
    let local = address.local_part();
    if address.is_quoted() && local.contains('@') {
        Some(RoutingTrick::QuotedAt)
    } else if local.contains('%') {
        Some(RoutingTrick::PercentHack)
    } else if local.contains('!') {
        Some(RoutingTrick::BangPath)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trick_is_named() {
        let cases = [
            (
                "user%evil.example@relay.example",
                Some(RoutingTrick::PercentHack),
            ),
            ("evil!user@relay.example", Some(RoutingTrick::BangPath)),
            (
                "\"user@evil.example\"@relay.example",
                Some(RoutingTrick::QuotedAt),
            ),
            ("\"john smith\"@example.com", None),
            ("ops+cron@example.com", None),
        ];
        for (text, expected) in cases {
            let address = Address::parse(text, false).unwrap();
            assert_eq!(routing_trick(&address), expected, "{text}");
        }
    }
}
