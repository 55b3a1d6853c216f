//! Connection token generation for `ferrocast gentoken`.

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

/// Signs an HS256 connection token.
pub fn generate(
    secret: &str,
    user: &str,
    ttl_secs: u64,
    info: Option<&str>,
    channels: &[String],
) -> anyhow::Result<String> {
    if secret.is_empty() {
        anyhow::bail!(
            "client.token.hmac_secret_key is not set (config file or FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY)"
        );
    }
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user));
    let now = ferrocast_engine::clock::since_epoch().as_secs();
    claims.insert("iat".into(), json!(now));
    if ttl_secs > 0 {
        claims.insert("exp".into(), json!(now + ttl_secs));
    }
    if let Some(info) = info {
        let v: Value = serde_json::from_str(info).context("--info must be JSON")?;
        claims.insert("info".into(), v);
    }
    if !channels.is_empty() {
        claims.insert("channels".into(), json!(channels));
    }
    encode(
        &Header::default(),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign token")
}
