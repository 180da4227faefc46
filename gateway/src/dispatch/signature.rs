//! The delivery signature: `X-Gateway-Signature: sha256=<hex HMAC-SHA256(secret, ts + "." + body)>`
//! with `X-Gateway-Timestamp: <unix seconds>`. The same scheme authenticates status events the
//! dispatch backend sends back, so one shared secret covers both directions. Putting the
//! timestamp under the MAC lets receivers refuse replays outside a window.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const TIMESTAMP_HEADER: &str = "x-gateway-timestamp";
pub const SIGNATURE_HEADER: &str = "x-gateway-signature";

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Gateway-Timestamp or X-Gateway-Signature header")]
    Missing,
    #[error("X-Gateway-Timestamp must be Unix seconds")]
    BadTimestamp,
    #[error("X-Gateway-Timestamp is more than {0} s from now; sign each request afresh")]
    Stale(i64),
    #[error("X-Gateway-Signature does not match the body")]
    Mismatch,
}

/// Check a signed request; `now` and `max_skew_s` bound the timestamp.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    max_skew_s: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - at).abs() > max_skew_s {
        return Err(SignatureError::Stale(max_skew_s));
    }
    let expected = sign(secret, ts.trim(), body);
    if expected.as_bytes().ct_eq(sig.trim().as_bytes()).into() {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac() {
        // What a receiver computes with Python's standard library:
        // hmac.new(b"secret", b'1700000000.{"id":"1"}', hashlib.sha256).hexdigest()
        let s = sign(b"secret", "1700000000", br#"{"id":"1"}"#);
        assert_eq!(
            s,
            "sha256=086f6aff7bd084c98679825129c5a64dbad88c760016d6d2c0fb123f27951d54"
        );
    }

    #[test]
    fn verify_accepts_its_own_and_refuses_the_rest() {
        let sig = sign(b"k", "1000", b"{}");
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{}", 1010, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{ }", 1010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"x", Some("1000"), Some(&sig), b"{}", 1010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{}", 2000, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"k", Some("soon"), Some(&sig), b"{}", 1000, 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", None, Some(&sig), b"{}", 1000, 300),
            Err(SignatureError::Missing)
        );
    }
}
