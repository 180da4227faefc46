//! WeChat message signatures and the "safe mode" message encryption.
//!
//! WeChat authenticates its pushes with a SHA-1 over the sorted concatenation of the account's
//! token, the query's timestamp and nonce (and, in safe mode, the encrypted payload). The payload
//! itself is AES-256-CBC with the key `base64(EncodingAESKey + "=")`, the IV its first 16 bytes and
//! PKCS#7 padding to a 32-byte block (not the cipher's 16), over `16 random bytes + 4-byte
//! big-endian length + message + appid`. The block cipher and mode come from RustCrypto (`aes`,
//! `cbc`); only the 32-byte padding, which is WeChat's own, is done here.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha1::{Digest, Sha1};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// WeChat's block for PKCS#7 padding.
const PAD_BLOCK: usize = 32;

/// Base64 as WeChat's own SDKs read it: the 43-character EncodingAESKey has non-zero trailing
/// bits (the spec's example key does), which a strict decoder refuses.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const STRICT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a WeChat payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 base64 characters")]
    BadKey,
    #[error("Encrypt is not valid base64")]
    Base64,
    #[error("Encrypt has a length that is not a whole number of blocks")]
    Length,
    #[error("Encrypt does not decrypt to a well-formed message (wrong key?)")]
    Padding,
    #[error("the decrypted message is truncated")]
    Truncated,
    #[error("the decrypted message is not UTF-8")]
    Utf8,
    #[error("the message was encrypted for another appid")]
    AppId,
}

/// `hex(SHA1(sorted(parts).concat()))`: the `signature` (token, timestamp, nonce) and the
/// `msg_signature` (token, timestamp, nonce, Encrypt) of WeChat pushes.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut h = Sha1::new();
    for p in sorted {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Compare a signature from a query with the expected one, ignoring hex case, in constant time
/// over the expected length.
pub fn signature_matches(expected: &str, given: &str) -> bool {
    let given = given.trim().to_ascii_lowercase();
    if given.len() != expected.len() {
        return false;
    }
    expected
        .bytes()
        .zip(given.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The AES key and appid of one account.
#[derive(Clone)]
pub struct MessageCipher {
    key: [u8; 32],
    appid: String,
}

impl std::fmt::Debug for MessageCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCipher")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl MessageCipher {
    /// `encoding_aes_key` is the 43-character key from the WeChat console.
    pub fn new(encoding_aes_key: &str, appid: &str) -> Result<Self, CryptoError> {
        let k = encoding_aes_key.trim();
        if k.len() != 43 {
            return Err(CryptoError::BadKey);
        }
        let bytes = LENIENT
            .decode(format!("{k}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(MessageCipher {
            key,
            appid: appid.to_owned(),
        })
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// Decrypt an `Encrypt` value; the message must carry this account's appid.
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CryptoError> {
        let data = LENIENT
            .decode(encrypted.trim())
            .map_err(|_| CryptoError::Base64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(CryptoError::Length);
        }
        let dec = Dec::new((&self.key).into(), (&self.key[..16]).into());
        let plain = dec
            .decrypt_padded_vec_mut::<NoPadding>(&data)
            .map_err(|_| CryptoError::Padding)?;
        let pad = usize::from(*plain.last().ok_or(CryptoError::Padding)?);
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptoError::Padding);
        }
        if !plain[plain.len() - pad..]
            .iter()
            .all(|b| usize::from(*b) == pad)
        {
            return Err(CryptoError::Padding);
        }
        let plain = &plain[..plain.len() - pad];
        if plain.len() < 20 {
            return Err(CryptoError::Truncated);
        }
        let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let rest = &plain[20..];
        if len > rest.len() {
            return Err(CryptoError::Truncated);
        }
        let (msg, appid) = rest.split_at(len);
        if appid != self.appid.as_bytes() {
            return Err(CryptoError::AppId);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypt a reply; `random` are the 16 leading random bytes (the caller's RNG, so this
    /// stays deterministic under test).
    pub fn encrypt(&self, msg: &str, random: [u8; 16]) -> String {
        let mut plain = Vec::with_capacity(20 + msg.len() + self.appid.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let enc = Enc::new((&self.key).into(), (&self.key[..16]).into());
        let data = enc.encrypt_padded_vec_mut::<NoPadding>(&plain);
        STRICT.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example key and appid; the ciphertext was computed independently (Python
    /// `cryptography`) with random bytes `0123456789abcdef`.
    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx2c2769f8efd9abc2";
    const MSG: &str = "<xml><Content><![CDATA[你好]]></Content></xml>";
    const CT: &str = "Q3stYC6hdFzMh9T8HCvyDMwQK6xyeRZ7UnuZsYfP7/6Yf0piNuk7kxZYuxJFeZQQ6WWSSAGv9ZFJIKURndrGs04tT7bozPdeSeegbucsnMuTzpshAQs12PeOdtrm0+yH";

    #[test]
    fn the_example_key_decodes_to_32_bytes() {
        let c = MessageCipher::new(KEY, APPID).expect("valid key");
        assert_eq!(
            hex::encode(c.key),
            "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
        );
        assert_eq!(
            MessageCipher::new("short", APPID).err(),
            Some(CryptoError::BadKey)
        );
    }

    #[test]
    fn known_answer_encrypt_and_decrypt() {
        let c = MessageCipher::new(KEY, APPID).expect("valid key");
        assert_eq!(c.encrypt(MSG, *b"0123456789abcdef"), CT);
        assert_eq!(c.decrypt(CT).as_deref(), Ok(MSG));
    }

    #[test]
    fn wrong_appid_key_or_data_is_refused() {
        let other = MessageCipher::new(KEY, "wxother").expect("valid key");
        assert_eq!(other.decrypt(CT), Err(CryptoError::AppId));
        let wrong_key =
            MessageCipher::new("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg", APPID).expect("key");
        assert!(wrong_key.decrypt(CT).is_err());
        let c = MessageCipher::new(KEY, APPID).expect("valid key");
        assert_eq!(c.decrypt("!!!"), Err(CryptoError::Base64));
        assert_eq!(c.decrypt("AAAA"), Err(CryptoError::Length));
        assert!(c.decrypt("").is_err());
    }

    #[test]
    fn signatures_match_independent_values() {
        // Computed with Python hashlib.
        assert_eq!(
            signature(&["spamtest", "1409735669", "1320562132"]),
            "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"
        );
        assert_eq!(
            signature(&["spamtest", "1409735669", "1320562132", "ENCRYPTED"]),
            "bc26e9a534d5dc16dd50e5e2ddab1a5a4c7ec681"
        );
        assert!(signature_matches(
            "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a",
            "16120EC1B8DBB870F510D87CE6BC2463EAE6CA1A"
        ));
        assert!(!signature_matches("abc", "abd"));
        assert!(!signature_matches("abc", "ab"));
    }
}
