//! Verification of connection and subscription JWTs.
//!
//! HS256/384/512 with the configured secret; RS* and ES* with configured public keys.
//! `alg: none` and any algorithm without a configured key are refused.

use crate::config::TokenConfig;
use ferrocast_protocol::Payload;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token is expired (the client should fetch a new one).
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, or uses an algorithm without a key.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Claims of a connection token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectClaims {
    /// User id (empty: anonymous).
    #[serde(default)]
    pub sub: String,
    /// Expiry (Unix seconds).
    #[serde(default)]
    pub exp: Option<i64>,
    /// Connection info exposed to other clients.
    #[serde(default)]
    pub info: Option<Payload>,
    /// Channels to subscribe on the server side.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Claims of a subscription token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscribeClaims {
    /// User id the token was issued for.
    #[serde(default)]
    pub sub: String,
    /// Channel the token grants.
    #[serde(default)]
    pub channel: String,
    /// Expiry (Unix seconds).
    #[serde(default)]
    pub exp: Option<i64>,
    /// Channel info exposed to other clients.
    #[serde(default)]
    pub info: Option<Payload>,
}

/// Verifies tokens with the configured keys.
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
}

impl TokenVerifier {
    /// Builds a verifier; fails when a configured PEM key cannot be parsed.
    pub fn new(cfg: &TokenConfig) -> Result<Self, String> {
        let hmac = (!cfg.hmac_secret_key.is_empty())
            .then(|| DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes()));
        let rsa = if cfg.rsa_public_key.is_empty() {
            None
        } else {
            Some(
                DecodingKey::from_rsa_pem(cfg.rsa_public_key.as_bytes())
                    .map_err(|e| format!("client.token.rsa_public_key: {e}"))?,
            )
        };
        let ecdsa = if cfg.ecdsa_public_key.is_empty() {
            None
        } else {
            Some(
                DecodingKey::from_ec_pem(cfg.ecdsa_public_key.as_bytes())
                    .map_err(|e| format!("client.token.ecdsa_public_key: {e}"))?,
            )
        };
        Ok(TokenVerifier { hmac, rsa, ecdsa })
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ecdsa.is_some()
    }

    /// Verifies a connection token.
    pub fn verify_connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        self.verify(token)
    }

    /// Verifies a subscription token.
    pub fn verify_subscribe(&self, token: &str) -> Result<SubscribeClaims, TokenError> {
        self.verify(token)
    }

    fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let (key, family): (&Option<DecodingKey>, &[Algorithm]) = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (
                &self.hmac,
                &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => (
                &self.rsa,
                &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            ),
            Algorithm::ES256 | Algorithm::ES384 => {
                (&self.ecdsa, &[Algorithm::ES256, Algorithm::ES384])
            }
            other => {
                return Err(TokenError::Invalid(format!(
                    "algorithm {other:?} not allowed"
                )));
            }
        };
        let Some(key) = key else {
            return Err(TokenError::Invalid(format!(
                "no key configured for algorithm {:?}",
                header.alg
            )));
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = family
            .iter()
            .copied()
            .filter(|a| *a == header.alg)
            .collect();
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.leeway = 0;
        match jsonwebtoken::decode::<T>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(e) => Err(TokenError::Invalid(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&TokenConfig {
            hmac_secret_key: "secret".into(),
            ..Default::default()
        })
        .unwrap()
    }

    use ferrocast_engine::clock::unix_secs as now;

    #[test]
    fn accepts_valid_hs256() {
        let t = encode(
            &Header::default(),
            &serde_json::json!({"sub": "42", "exp": now() + 60, "info": {"name": "a"}}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let c = verifier().verify_connect(&t).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(&c.info.unwrap().as_bytes()[..], br#"{"name":"a"}"#);
    }

    #[test]
    fn rejects_expired_wrong_key_and_none() {
        let v = verifier();
        let expired = encode(
            &Header::default(),
            &serde_json::json!({"sub": "1", "exp": now() - 10}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(v.verify_connect(&expired).unwrap_err(), TokenError::Expired);
        let other = encode(
            &Header::default(),
            &serde_json::json!({"sub": "1"}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert!(matches!(
            v.verify_connect(&other),
            Err(TokenError::Invalid(_))
        ));
        // alg: none, unsigned.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
        assert!(matches!(
            v.verify_connect(none),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            v.verify_connect("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }
}
