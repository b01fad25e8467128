//! Dev tokens: JWTs signed with a dev key and checked the way API Gateway's
//! JWT authorizer checks them (signature, issuer, audience, expiry).

use anyhow::Result;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};

pub const DEV_ISSUER: &str = "https://dev-issuer.local/credit-ledger";
pub const DEV_AUDIENCE: &str = "credit-ledger-local";

#[derive(Clone)]
pub struct DevAuthority {
    key: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl DevAuthority {
    pub fn new(key: &[u8]) -> Self {
        DevAuthority {
            key: key.to_vec(),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
        }
    }

    /// Any claims, signed as the dev issuer signs: tests use it for tokens
    /// a real identity provider should never issue.
    pub fn sign(&self, mut claims: Map<String, Value>, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl_secs));
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )
        .expect("signing")
    }

    /// A user of an organization with a role (`admin` or `member`).
    pub fn user_token(&self, org: &str, user: &str, role: &str, ttl_secs: i64) -> String {
        let claims = json!({ "sub": user, "org": org, "role": role });
        self.sign(claims.as_object().cloned().unwrap_or_default(), ttl_secs)
    }

    /// The product's backend: the service scope, any organization.
    pub fn service_token(&self, client: &str, ttl_secs: i64) -> String {
        let claims = json!({ "sub": client, "client_id": client, "scope": crate::SERVICE_SCOPE });
        self.sign(claims.as_object().cloned().unwrap_or_default(), ttl_secs)
    }

    /// Verifies a token; the claims come back as strings, as API Gateway
    /// passes them to the function.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let data = decode::<Map<String, Value>>(token, &DecodingKey::from_secret(&self.key), &validation)?;
        Ok(data
            .claims
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, Value::String(s))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_signature_issuer_audience_and_expiry() {
        let a = DevAuthority::new(b"dev-key");
        let t = a.user_token("acme", "u1", "admin", 60);
        assert_eq!(a.verify(&t).unwrap()["org"], "acme");
        assert!(DevAuthority::new(b"other-key").verify(&t).is_err());
        let mut wrong_aud = a.clone();
        wrong_aud.audience = "else".into();
        assert!(wrong_aud.verify(&t).is_err());
        let mut wrong_iss = a.clone();
        wrong_iss.issuer = "else".into();
        assert!(wrong_iss.verify(&t).is_err());
        assert!(a.verify(&a.user_token("acme", "u1", "admin", -10)).is_err());
    }
}
