//! Amazon SES's SMTP password, derived from an IAM secret access key for one region: SigV4's
//! signing-key chain with a fixed date, then the message "SendRawEmail" (AWS, "Obtaining Amazon
//! SES SMTP credentials"). One IAM key thus yields a password per region, so failover across
//! regions needs one secret on the VM, not one per region.

use aws_lc_rs::hmac;
use base64::Engine as _;

/// The date SES fixes for the derivation, and the version byte it prepends.
const DATE: &str = "11111111";
const SERVICE: &str = "ses";
const TERMINAL: &str = "aws4_request";
const MESSAGE: &str = "SendRawEmail";
const VERSION: u8 = 0x04;

/// The SMTP password for `region` (such as `eu-west-1`).
pub fn smtp_password(secret_access_key: &str, region: &str) -> String {
    let mut key = format!("AWS4{secret_access_key}").into_bytes();
    for part in [DATE, region, SERVICE, TERMINAL, MESSAGE] {
        let signing = hmac::Key::new(hmac::HMAC_SHA256, &key);
        key = hmac::sign(&signing, part.as_bytes()).as_ref().to_vec();
    }
    let mut password = Vec::with_capacity(1 + key.len());
    password.push(VERSION);
    password.extend_from_slice(&key);
    base64::engine::general_purpose::STANDARD.encode(password)
}

/// Region names as AWS spells them: `us-east-1`, `eu-central-2`, `us-gov-west-1`.
pub fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example key: its us-east-1 password from the SES guide, the others
    /// from an independent implementation (tests/peers/ses_smtp_password.py).
    #[test]
    fn known_vectors() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for (region, password) in [
            ("us-east-1", "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"),
            ("us-west-2", "BF2PynzbSCAjX08zhZZnP/kW+T9P5zs/1Er0pi5vTEmd"),
            ("eu-west-1", "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk"),
        ] {
            assert_eq!(smtp_password(secret, region), password, "{region}");
        }
    }

    #[test]
    fn region_names() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            assert!(is_region(good), "{good}");
        }
        for bad in ["", "useast1", "US-EAST-1", "eu-west", "eu west 1", "eu--1"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
