//! Stripe webhook signature verification, exactly as Stripe specifies it.
//!
//! Stripe signs `"{t}.{raw body}"` with HMAC-SHA256 keyed by the endpoint's
//! signing secret (the whole `whsec_…` string) and sends
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`. While a secret is being
//! rolled it sends one `v1` per active secret; other schemes (`v0`) are
//! ignored. This crate is the one place that rule lives.
//!
//! Architecture invariant: this crate does no I/O, reads no clock (the caller
//! passes `now`) and cannot panic on any input; every failure is a
//! [`SignatureError`]. Comparisons of the MAC run in constant time.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// Why a `Stripe-Signature` header did not verify.
///
/// The ingress answers every variant with the same 400 body; the variants
/// exist for logs and metrics, never for the caller of the webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("Stripe-Signature header has no valid timestamp")]
    MissingTimestamp,
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("signature timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("no v1 signature matches any configured secret")]
    NoMatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

impl SignatureError {
    /// A short label of the failure, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MissingTimestamp => "missing_timestamp",
            Self::NoV1Signature => "no_v1_signature",
            Self::OutsideTolerance => "outside_tolerance",
            Self::NoMatch => "no_match",
            Self::NoSecret => "no_secret",
        }
    }
}

/// The parts of a `Stripe-Signature` header that matter for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The `t=` value, Unix seconds.
    pub timestamp: i64,
    /// Every well-formed `v1=` value, decoded. Malformed ones are dropped:
    /// they could never match, and dropping them keeps the others usable.
    pub v1: Vec<[u8; TAG_LEN]>,
}

/// Parses a `Stripe-Signature` header.
///
/// Items are `key=value` separated by commas; the first `t` wins; `v1` values
/// must be 64 lowercase hex digits (Stripe's libraries compare the lowercase
/// hex string exactly, so uppercase never matches).
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut saw_v1 = false;
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.is_none() => timestamp = value.trim().parse::<i64>().ok(),
            "v1" => {
                saw_v1 = true;
                if let Some(tag) = decode_lower_hex(value.trim()) {
                    v1.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if !saw_v1 {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

fn decode_lower_hex(s: &str) -> Option<[u8; TAG_LEN]> {
    let bytes = s.as_bytes();
    if bytes.len() != TAG_LEN * 2 {
        return None;
    }
    let mut out = [0u8; TAG_LEN];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A set of webhook signing secrets, keyed once.
///
/// Holds one pre-keyed HMAC state per secret, so verifying an event costs one
/// HMAC over the payload per secret and nothing for the key schedule. Its
/// `Debug` shows how many secrets it holds, never their values.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacSha256>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl Verifier {
    /// Keys a verifier with one or more secrets (rotation). An empty list is
    /// allowed but verifies nothing.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let keys = secrets
            .into_iter()
            .filter_map(|s| HmacSha256::new_from_slice(s.as_ref()).ok())
            .collect();
        Self { keys }
    }

    /// How many secrets are configured.
    pub fn secret_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `header` for the raw `payload` at `now` (Unix seconds): the
    /// timestamp must be within `tolerance_secs` of `now` in either direction
    /// and any `v1` must match the HMAC under any secret.
    ///
    /// Returns the verified timestamp.
    pub fn verify(
        &self,
        header: &str,
        payload: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<i64, SignatureError> {
        if self.keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        if header.is_empty() {
            return Err(SignatureError::MissingHeader);
        }
        let parsed = parse_header(header)?;
        let skew = now.abs_diff(parsed.timestamp);
        if skew > tolerance_secs {
            return Err(SignatureError::OutsideTolerance);
        }
        if parsed.v1.is_empty() {
            return Err(SignatureError::NoMatch);
        }
        let t = parsed.timestamp.to_string();
        let mut matched = subtle::Choice::from(0u8);
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(payload);
            let expected = mac.finalize().into_bytes();
            for candidate in &parsed.v1 {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(parsed.timestamp)
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

/// Computes the `v1` signature for `payload` at `timestamp`, lowercase hex.
pub fn sign_v1(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    to_lower_hex(&mac.finalize().into_bytes())
}

/// Builds a whole `Stripe-Signature` header value, as Stripe would send it
/// for one secret. Used by tests and by the developer `send` command.
pub fn header_for(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign_v1(secret, timestamp, payload))
}

fn to_lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests;
