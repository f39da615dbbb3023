//! The SESv2 API upstream: one `SendEmail` call per transaction, with the message as spooled
//! (raw content) and the envelope's recipients as destinations, over HTTPS with credentials from
//! the standard AWS chain — so a VM with an instance role holds no long-lived secret (SES's SMTP
//! interface cannot take temporary credentials).
//!
//! The SDK's own retries are off: the queue retries, and every attempt is recorded.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

use super::outbound::Capabilities;
use super::upstream::{Timeouts, Unusable};
use crate::config::SesApi;
use crate::model::ApiReply;

/// What `SendEmail` takes: 8-bit raw content, no SMTPUTF8 (SES does not offer it), 40 MB.
pub const CAPABILITIES: Capabilities = Capabilities {
    eight_bit_mime: true,
    smtputf8: false,
    size: Some(40 * 1024 * 1024),
};

#[derive(Clone)]
pub struct SesApiClient {
    client: Client,
}

/// What a call came to: the service's answer, or no answer at all.
pub enum Called {
    Answered(ApiReply),
    Unusable(Unusable),
}

impl SesApiClient {
    /// Builds the client once per configuration; credentials are resolved on first use (and
    /// refreshed by the SDK as instance-role credentials rotate).
    pub async fn new(api: &SesApi, timeouts: Timeouts) -> SesApiClient {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(api.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .operation_timeout(timeouts.data)
                    .build(),
            );
        if let Some(url) = &api.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        SesApiClient {
            client: Client::new(&loader.load().await),
        }
    }

    /// Sends `body` to `recipients`; `sender` is the envelope sender (empty for a bounce, when
    /// SES takes the From header instead).
    pub async fn send(&self, sender: &str, recipients: &[&str], body: &[u8]) -> Called {
        let content = match RawMessage::builder().data(Blob::new(body)).build() {
            Ok(raw) => EmailContent::builder().raw(raw).build(),
            Err(error) => return Called::Unusable(Unusable::Misconfigured(error.to_string())),
        };
        let destination = Destination::builder()
            .set_to_addresses(Some(recipients.iter().map(|r| r.to_string()).collect()))
            .build();
        let mut request = self
            .client
            .send_email()
            .destination(destination)
            .content(content);
        if !sender.is_empty() {
            request = request.from_email_address(sender);
        }
        match request.send().await {
            Ok(output) => Called::Answered(ApiReply::accepted(output.message_id().unwrap_or("-"))),
            Err(error) => called_of(error),
        }
    }

    /// Preflight: credentials resolve and the sender domain's identity is verified.
    pub async fn identity_verified(&self, identity: &str) -> Result<bool, String> {
        let output = self
            .client
            .get_email_identity()
            .email_identity(identity)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(output
            .verification_status()
            .is_some_and(|s| s.as_str() == "SUCCESS"))
    }

    /// Preflight: the account's 24-hour quota and how much of it is used.
    pub async fn quota(&self) -> Result<(f64, f64), String> {
        let output = self
            .client
            .get_account()
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let quota = output.send_quota().ok_or("no quota in the answer")?;
        Ok((quota.max24_hour_send(), quota.sent_last24_hours()))
    }
}

/// An error the service returned is an answer; one it could not return is not.
fn called_of<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>,
) -> Called {
    match &error {
        SdkError::ServiceError(service) => Called::Answered(ApiReply {
            error_code: Some(service.err().code().unwrap_or("Unknown").to_string()),
            message: service.err().message().unwrap_or_default().to_string(),
        }),
        // A request that cannot be built, or no credentials in the chain: our setup.
        SdkError::ConstructionFailure(_) => {
            Called::Unusable(Unusable::Misconfigured(describe(&error)))
        }
        _ if lacks_credentials(&error) => {
            Called::Unusable(Unusable::Misconfigured(describe(&error)))
        }
        _ => Called::Unusable(Unusable::Unreachable(describe(&error))),
    }
}

/// The SDK reports an empty credential chain as a dispatch failure; its cause says so.
fn lacks_credentials(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<CredentialsError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The error with its causes, which is where the SDK says what actually went wrong.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
