//! Declared body type (RFC 6152): how the upstream must be told to expect the body.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

impl BodyType {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        }
    }

    /// The stored form back; anything unknown is treated as 7BIT (the schema allows no other).
    pub fn from_stored(value: &str) -> BodyType {
        if value == "8BITMIME" {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        }
    }
}
