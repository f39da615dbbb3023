//! Queue IDs: 15 characters of Crockford base32 that sort by arrival time. The first 11 encode
//! the arrival in microseconds (strictly increasing within a process), the last 4 are random,
//! so that the daemon and a `sendmail` writing to the same spool at the same microsecond still
//! get distinct IDs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS: usize = 11;
const RANDOM_CHARS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

impl QueueId {
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        // Strictly increasing even when the clock stands still or steps back.
        let micros = LAST_MICROS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .map(|last| now.max(last + 1))
            .unwrap_or(now);
        let random: u32 = rand::random();
        let mut text = String::with_capacity(TIME_CHARS + RANDOM_CHARS);
        push_base32(&mut text, micros, TIME_CHARS);
        push_base32(&mut text, u64::from(random), RANDOM_CHARS);
        QueueId(text)
    }

    /// A queue ID read back from elsewhere (the daemon's hand-off answer, the spool): 15
    /// characters of the alphabet, or None.
    pub fn parse(text: &str) -> Option<QueueId> {
        let valid =
            text.len() == TIME_CHARS + RANDOM_CHARS && text.bytes().all(|b| ALPHABET.contains(&b));
        valid.then(|| QueueId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_base32(out: &mut String, value: u64, chars: usize) {
    for index in (0..chars).rev() {
        let digit = (value >> (5 * index)) & 31;
        out.push(ALPHABET[digit as usize] as char);
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_generation_order_and_are_unique() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        assert!(ids.iter().all(|id| id.as_str().len() == 15));
        assert!(
            ids.iter()
                .all(|id| QueueId::parse(id.as_str()).as_ref() == Some(id))
        );
        assert_eq!(QueueId::parse("not-an-id"), None);
        assert_eq!(
            QueueId::parse("0123456789ABCDI"),
            None,
            "I is not in the alphabet"
        );
    }
}
