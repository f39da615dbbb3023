//! The largest message worth accepting: what the most generous upstream takes, from its
//! configured `max_message_size` and the SIZE it advertised (RFC 1870), learned by delivery on
//! each connection. Intake refuses bigger mail with 552 while the client is still connected,
//! instead of a bounce after the upload was refused.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct UpstreamSizes {
    limits: Mutex<Vec<Limit>>,
}

/// One upstream's limits in octets; `None` is no limit (or none known yet).
#[derive(Debug, Clone, Copy)]
struct Limit {
    configured: Option<u64>,
    advertised: Option<u64>,
}

impl UpstreamSizes {
    /// One entry per upstream, in configuration order.
    pub fn new(configured: &[Option<u64>]) -> UpstreamSizes {
        let sizes = UpstreamSizes::default();
        sizes.reconfigure(configured);
        sizes
    }

    /// A new configuration: what was learned belongs to the old upstreams.
    pub fn reconfigure(&self, configured: &[Option<u64>]) {
        *self.lock() = configured
            .iter()
            .map(|&configured| Limit {
                configured,
                advertised: None,
            })
            .collect();
    }

    /// What upstream `index` advertised on its last connection (`Some(0)`: SIZE without a
    /// limit, RFC 1870 4).
    pub fn learn(&self, index: usize, advertised: Option<u64>) {
        if let Some(limit) = self.lock().get_mut(index) {
            limit.advertised = advertised.filter(|&size| size > 0);
        }
    }

    /// The most any upstream takes, or `None` when some upstream has no known limit (or there
    /// are no upstreams: the mail waits in the queue for one).
    pub fn largest(&self) -> Option<u64> {
        let limits = self.lock();
        let mut largest = None;
        for limit in limits.iter() {
            let effective = match (limit.configured, limit.advertised) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return None,
            };
            largest = largest.max(Some(effective));
        }
        largest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Limit>> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_generous_upstream_decides_and_unknown_means_unlimited() {
        let sizes = UpstreamSizes::new(&[Some(40_000_000), None]);
        assert_eq!(
            sizes.largest(),
            None,
            "the second upstream has no known limit"
        );
        sizes.learn(1, Some(102_400));
        assert_eq!(sizes.largest(), Some(40_000_000));
        sizes.learn(0, Some(10_485_760));
        assert_eq!(sizes.largest(), Some(10_485_760));
        sizes.learn(1, Some(0));
        assert_eq!(sizes.largest(), None, "SIZE without a limit");
        sizes.reconfigure(&[Some(1000)]);
        assert_eq!(sizes.largest(), Some(1000));
        sizes.reconfigure(&[]);
        assert_eq!(sizes.largest(), None);
    }
}
