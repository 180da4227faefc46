//! Signed form tokens: spam defence (minimum fill time, expiry) and CSRF defence in one.
//!
//! `GET /` hands out a random `form_id` cookie (HttpOnly, SameSite=Strict) and puts a token in
//! the form: `<issued unix seconds>.<nonce>.<HMAC-SHA256(secret, "web-form", issued, nonce,
//! cookie)>`. A POST is accepted only with a token this gateway signed for the cookie the browser
//! sends back: another site can make a browser post the form but cannot read the cookie or the
//! token (double-submit cookie, signed so no server-side session is needed, and valid on every
//! node that shares `web.secret`). The issue time gives the minimum fill time (bots post within
//! milliseconds) and the expiry; the nonce makes every served form unique, so it doubles as the
//! idempotency key of the submission (a double click or a reload files one order).

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token, a malformed one, one signed with another key or for another cookie.
    Invalid,
    /// Sent back sooner than the minimum fill time.
    TooFast,
    Expired,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub issued: i64,
    pub nonce: String,
}

pub struct FormTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for FormTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormTokens { secret: <hidden> }")
    }
}

/// A fresh random value for the `form_id` cookie.
pub fn new_cookie() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// A cookie value we could have issued: 32 lowercase hex digits.
pub fn plausible_cookie(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FormTokens {
    pub fn new(secret: &[u8]) -> Self {
        FormTokens {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, issued: i64, nonce: &str, cookie: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for part in ["web-form", &issued.to_string(), nonce, cookie] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac.finalize().into_bytes().to_vec()
    }

    pub fn issue(&self, now: i64, cookie: &str) -> String {
        let nonce: [u8; 12] = rand::rng().random();
        let nonce = hex::encode(nonce);
        let sig = hex::encode(self.mac(now, &nonce, cookie));
        format!("{now}.{nonce}.{sig}")
    }

    pub fn verify(
        &self,
        token: &str,
        cookie: &str,
        now: i64,
        min_age_s: u64,
        max_age_s: u64,
    ) -> Result<Verified, TokenError> {
        let mut parts = token.trim().splitn(3, '.');
        let (Some(issued), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let issued: i64 = issued.parse().map_err(|_| TokenError::Invalid)?;
        let sig = hex::decode(sig).map_err(|_| TokenError::Invalid)?;
        if nonce.len() != 24 || !plausible_cookie(cookie) {
            return Err(TokenError::Invalid);
        }
        let expected = self.mac(issued, nonce, cookie);
        if !bool::from(expected.ct_eq(&sig)) {
            return Err(TokenError::Invalid);
        }
        let age = now.saturating_sub(issued);
        // A token from the future (clock step between nodes) is treated as just issued.
        if age < i64::try_from(min_age_s).unwrap_or(i64::MAX) {
            return Err(TokenError::TooFast);
        }
        if age > i64::try_from(max_age_s).unwrap_or(i64::MAX) {
            return Err(TokenError::Expired);
        }
        Ok(Verified {
            issued,
            nonce: nonce.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_time_and_cookie() {
        let t = FormTokens::new(b"secret");
        let cookie = new_cookie();
        let tok = t.issue(1_000, &cookie);
        assert!(t.verify(&tok, &cookie, 1_005, 3, 60).is_ok());
        assert_eq!(
            t.verify(&tok, &cookie, 1_001, 3, 60),
            Err(TokenError::TooFast)
        );
        assert_eq!(
            t.verify(&tok, &cookie, 2_000, 3, 60),
            Err(TokenError::Expired)
        );
        assert_eq!(
            t.verify(&tok, &new_cookie(), 1_005, 3, 60),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            FormTokens::new(b"other").verify(&tok, &cookie, 1_005, 3, 60),
            Err(TokenError::Invalid)
        );
        let forged = tok.replacen("1000", "900", 1);
        assert_eq!(
            t.verify(&forged, &cookie, 1_005, 3, 60),
            Err(TokenError::Invalid)
        );
        for junk in ["", "..", "1.2", "x.y.z", "1000.abc.zz"] {
            assert_eq!(
                t.verify(junk, &cookie, 1_005, 3, 60),
                Err(TokenError::Invalid)
            );
        }
    }
}
