//! Parsing requests at the edge: bodies, amounts, headers, path and query.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use ledger_domain::{Credits, IdempotencyKey};
use ledger_service::Idempotency;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{ApiError, Caller};

/// Bodies are small JSON documents; anything larger is refused unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The route API Gateway matched, e.g. `POST /v1/orgs/{org}/spend`.
pub fn route_key(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

pub fn path_param(req: &Request, name: &str) -> Result<String, ApiError> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
        .ok_or_else(|| ApiError::RouteNotFound(req.uri().path().to_string()))
}

/// Refuses query parameters a route does not read: a filter that would be
/// silently ignored gives a wrong answer that looks right.
pub fn only_query_params(req: &Request, known: &[&str]) -> Result<(), ApiError> {
    let unknown: Vec<&str> = req
        .query_string_parameters_ref()
        .map(|q| q.iter().map(|(k, _)| k).filter(|k| !known.contains(k)).collect())
        .unwrap_or_default();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(ApiError::BadRequest(format!(
            "query parameter {name:?} is not supported here (supported: {})",
            known.join(", ")
        ))),
    }
}

pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(str::to_string)
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => b"",
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => b"",
    }
}

/// A JSON body and its canonical form (keys sorted, no whitespace): the
/// same request however it is spelled gets the same fingerprint.
pub struct JsonBody<T> {
    pub value: T,
    /// The body as a tree; its text (a sorted map) is the canonical form.
    fields: serde_json::Map<String, Value>,
}

pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<JsonBody<T>, ApiError> {
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge(MAX_BODY_BYTES));
    }
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        // A body is read as JSON only when it says it is: one sent as a
        // form or as text is refused, not guessed at.
        let media = req
            .headers()
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
            .unwrap_or_default();
        let essence = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            let sent = if essence.is_empty() {
                "without a content type".to_string()
            } else {
                essence
            };
            return Err(ApiError::UnsupportedMediaType(sent));
        }
        bytes
    };
    // Parse once as a tree for the canonical form; amounts inside stay text
    // because the typed parse below reads them from the raw bytes.
    let tree: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(fields) = tree else {
        return Err(ApiError::MalformedJson("the body must be a JSON object".into()));
    };
    // No field takes null: leaving it out is how to ask for its default.
    if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_null()) {
        return Err(ApiError::BadRequest(format!(
            "`{name}` is null: leave it out for its default"
        )));
    }
    let value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(JsonBody { value, fields })
}

impl<T> JsonBody<T> {
    /// The same request whether a default is left out or written out: the
    /// fields equal to `defaults` leave the canonical form, so a retry that
    /// spells `"mode":"all"` replays the request that did not.
    pub fn with_defaults(mut self, defaults: &[(&str, Value)]) -> Self {
        for (name, default) in defaults {
            if self.fields.get(*name) == Some(default) {
                self.fields.remove(*name);
            }
        }
        self
    }

    /// The idempotency record of a mutation: key from the header, fingerprint
    /// of route, path, caller and body, so reusing a key elsewhere (or another
    /// user sending the same key) is caught, never replayed.
    pub fn idempotency(&self, req: &Request, caller: &Caller) -> Result<Idempotency, ApiError> {
        let key = idempotency_key(req)?;
        let mut hash = Sha256::new();
        hash.update(route_key(req).as_bytes());
        hash.update([0]);
        // The path names what the route acts on (a member, ...): the same
        // key on another member is another request.
        hash.update(req.uri().path().as_bytes());
        hash.update([0]);
        hash.update(caller.identity().as_bytes());
        hash.update([0]);
        hash.update(serde_json::to_string(&self.fields).expect("a JSON map").as_bytes());
        let fingerprint = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Idempotency { key, fingerprint })
    }
}

/// The request's Idempotency-Key header, parsed, if it has one.
pub fn optional_idempotency_key(req: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    match req.headers().contains_key("idempotency-key") {
        true => idempotency_key(req).map(Some),
        false => Ok(None),
    }
}

/// The request's Idempotency-Key header, parsed (required).
pub fn idempotency_key(req: &Request) -> Result<IdempotencyKey, ApiError> {
    let header = req
        .headers()
        .get("idempotency-key")
        .ok_or(ApiError::IdempotencyKeyMissing)?;
    Ok(header
        .to_str()
        .map_err(|_| ledger_domain::DomainError::InvalidIdempotencyKey)
        .and_then(IdempotencyKey::parse)?)
}

/// A JSON integer as JSON Schema counts one: `19`, `19.0` and `1.9e1` are
/// the same integer (a client holding its numbers as floats sends `19.0`).
/// Read exactly from the number's text; a fraction, a sign or a value past
/// `u64` is `None`.
pub fn whole_number(text: &str) -> Option<u64> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.strip_prefix('+').unwrap_or(e).parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_only(int) || !digits_only(frac) || (mantissa.contains('.') && frac.is_empty()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let scale = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    if scale >= 0 {
        let factor = 10_u64.checked_pow(u32::try_from(scale).ok()?)?;
        return digits.parse::<u64>().ok()?.checked_mul(factor);
    }
    // A negative scale drops digits: only zeros may go.
    let cut = usize::try_from(scale.unsigned_abs()).ok()?;
    let (kept, dropped) = digits.split_at(digits.len().saturating_sub(cut));
    if !dropped.bytes().all(|b| b == b'0') {
        return None;
    }
    if kept.is_empty() {
        return Some(0);
    }
    kept.parse().ok()
}

/// `#[serde(deserialize_with)]` for an integer field: see [`whole_number`].
pub fn integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(d)?;
    whole_number(raw.get())
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            let shown: String = raw.get().chars().take(40).collect();
            serde::de::Error::custom(format!("expected a whole number in range, found {shown}"))
        })
}

/// [`integer`] for an optional field (with `#[serde(default)]`).
pub fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    integer(d).map(Some)
}

/// An amount as a request spells it: a decimal string or a JSON number,
/// kept as text and parsed exactly (never through a float) by [`AmountInput::credits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmountInput(String);

impl AmountInput {
    pub fn credits(&self) -> Result<Credits, ledger_domain::DomainError> {
        Credits::parse_decimal(&self.0)
    }
}

impl<'de> Deserialize<'de> for AmountInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(d)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text)
                .map(AmountInput)
                .map_err(serde::de::Error::custom),
            Some(b'-' | b'0'..=b'9') => Ok(AmountInput(text.to_string())),
            _ => Err(serde::de::Error::custom("an amount is a decimal string or a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Req {
        credits: AmountInput,
    }

    fn parse(json: &str) -> Result<Credits, String> {
        let r: Req = serde_json::from_str(json).map_err(|e| e.to_string())?;
        r.credits.credits().map_err(|e| e.to_string())
    }

    #[test]
    fn integers_are_read_as_json_schema_counts_them() {
        for (text, n) in [
            ("19", 19),
            ("19.0", 19),
            ("1.9e1", 19),
            ("190E-1", 19),
            ("0", 0),
            ("2e0", 2),
            ("0.0", 0),
        ] {
            assert_eq!(whole_number(text), Some(n), "{text}");
        }
        for bad in [
            "-1",
            "1.5",
            "1e-1",
            "\"1\"",
            "1.",
            ".5",
            "",
            "1e",
            "18446744073709551616",
            "1e20",
        ] {
            assert_eq!(whole_number(bad), None, "{bad}");
        }
        #[derive(Deserialize)]
        struct Small {
            #[serde(deserialize_with = "integer")]
            n: u8,
        }
        assert!(serde_json::from_str::<Small>(r#"{"n": 78.0}"#).is_ok_and(|s| s.n == 78));
        assert!(serde_json::from_str::<Small>(r#"{"n": 256}"#).is_err());
    }

    #[test]
    fn amounts_parse_exactly_from_numbers_and_strings() {
        assert_eq!(parse(r#"{"credits": 0.1}"#), Ok(Credits::from_thousandths(100)));
        assert_eq!(parse(r#"{"credits": "12.5"}"#), Ok(Credits::from_thousandths(12_500)));
        assert!(parse(r#"{"credits": 0.30000000000000004}"#).is_err());
        for bad in [
            r#"{"credits": -1}"#,
            r#"{"credits": 1e2}"#,
            r#"{"credits": 0.0001}"#,
            r#"{"credits": true}"#,
            r#"{"credits": null}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
