//! `[delivery]`: how mail is retried, timed and bounced, and the upstreams it goes to
//! (`[[upstream]]`, in upstream.rs).

use std::time::Duration;

use serde::Deserialize;

use super::upstream::{RawUpstream, Upstream, validate_upstream};
use super::{ConfigError, count_within, duration, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDelivery {
    retry_initial: String,
    retry_max: String,
    queue_lifetime: String,
    delay_warning: Option<String>,
    bounce_address: Option<String>,
    connect_timeout: String,
    command_timeout: String,
    data_timeout: String,
    upstream_cooldown: String,
    throttle_period: String,
    delivered_retention: String,
    poll_interval: String,
    lease: String,
    connections: usize,
    hold_on: Vec<String>,
}

impl Default for RawDelivery {
    fn default() -> RawDelivery {
        RawDelivery {
            retry_initial: "5m".into(),
            retry_max: "70m".into(),
            queue_lifetime: "5d".into(),
            // Off, as Postfix's delay_warning_time.
            delay_warning: None,
            bounce_address: None,
            connect_timeout: "30s".into(),
            command_timeout: "5m".into(),
            data_timeout: "10m".into(),
            upstream_cooldown: "60s".into(),
            throttle_period: "60s".into(),
            delivered_retention: "1d".into(),
            poll_interval: "1s".into(),
            lease: "15m".into(),
            connections: 20,
            // The known provider replies are built in (delivery/classify.rs); these are the
            // operator's own additions.
            hold_on: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry: RetryPolicy,
    /// Messages older than this bounce instead of being deferred again.
    pub queue_lifetime: Duration,
    /// A recipient still deferred after this long gets one "delayed" DSN; `None` is off.
    pub delay_warning: Option<Duration>,
    /// Where bounces go instead of the envelope sender (cron senders cannot read mail).
    pub bounce_address: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// How long an upstream that failed is skipped before it is tried again.
    pub upstream_cooldown: Duration,
    /// How long a `454` throttling reply halves an upstream's send rate.
    pub throttle_period: Duration,
    /// How long finished messages keep their envelope and history for inspection.
    pub delivered_retention: Duration,
    /// Fallback check for mail written by another process (`sendmail`) or made due by the CLI.
    pub poll_interval: Duration,
    /// How long a delivery claim lasts before another round may take the recipient.
    pub lease: Duration,
    /// Parallel deliveries; each keeps at most one connection open to each upstream.
    pub connections: usize,
    /// Reply codes (three digits) or texts that hold mail as a configuration error.
    pub hold_on: Vec<String>,
    pub upstreams: Vec<Upstream>,
}

impl DeliveryConfig {
    /// Each upstream's configured `max_message_size`, in order.
    pub fn upstream_size_limits(&self) -> Vec<Option<u64>> {
        self.upstreams.iter().map(|u| u.max_message_size).collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

pub(super) fn validate(
    raw: RawDelivery,
    upstreams: Vec<RawUpstream>,
) -> Result<DeliveryConfig, ConfigError> {
    let retry = RetryPolicy {
        initial: duration("delivery.retry_initial", &raw.retry_initial)?,
        max: duration("delivery.retry_max", &raw.retry_max)?,
    };
    if retry.max < retry.initial {
        return Err(invalid(
            "delivery.retry_max",
            "must not be shorter than delivery.retry_initial",
        ));
    }
    if let Some(address) = &raw.bounce_address
        && crate::model::Address::parse(address, true)
            .ok()
            .and_then(|a| a.domain().map(str::to_owned))
            .is_none()
    {
        return Err(invalid(
            "delivery.bounce_address",
            format!("'{address}' is not a full address such as ops@example.com"),
        ));
    }
    for (index, pattern) in raw.hold_on.iter().enumerate() {
        if pattern.trim().is_empty() {
            return Err(invalid(
                format!("delivery.hold_on[{index}]"),
                "must not be empty",
            ));
        }
    }
    let upstreams = upstreams
        .into_iter()
        .enumerate()
        .map(|(index, upstream)| validate_upstream(index, upstream))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeliveryConfig {
        retry,
        queue_lifetime: duration("delivery.queue_lifetime", &raw.queue_lifetime)?,
        delay_warning: raw
            .delay_warning
            .map(|text| duration("delivery.delay_warning", &text))
            .transpose()?,
        bounce_address: raw.bounce_address,
        connect_timeout: duration("delivery.connect_timeout", &raw.connect_timeout)?,
        command_timeout: duration("delivery.command_timeout", &raw.command_timeout)?,
        data_timeout: duration("delivery.data_timeout", &raw.data_timeout)?,
        upstream_cooldown: duration("delivery.upstream_cooldown", &raw.upstream_cooldown)?,
        throttle_period: duration("delivery.throttle_period", &raw.throttle_period)?,
        delivered_retention: duration("delivery.delivered_retention", &raw.delivered_retention)?,
        poll_interval: duration("delivery.poll_interval", &raw.poll_interval)?,
        lease: duration("delivery.lease", &raw.lease)?,
        connections: count_within("delivery.connections", raw.connections as u64, 10_000)? as usize,
        hold_on: raw.hold_on,
        upstreams,
    })
}
