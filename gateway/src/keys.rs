//! Tenant identity and the hashes that address cache entries: the exact-match key, the entry id
//! derived from it, and the partition that confines semantic search to one tenant, context and
//! set of output-affecting parameters.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::request::{CacheRequest, write_canonical};

/// Who a cache entry belongs to. Derived from the API key, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant of a request: a hash of its bearer key, or `None` without one.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .filter(|k| !k.is_empty())
            .map(Self::from_api_key)
    }

    /// The one tenant of every request without a key, when `[cache] anonymous = "tenant"`.
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }

    /// The tenant of an API key.
    pub fn from_api_key(key: &str) -> Self {
        let digest = digest(b"cachet-tenant", &[key.trim()]);
        Self(hex::encode(&digest[..12]))
    }

    /// The tenant that entries of shared categories belong to.
    pub fn shared() -> Self {
        Self("shared".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The index's quota owner for the tenant recorded with an entry: its hash, as a number.
pub fn quota_owner(tenant: &str) -> u64 {
    let digest = digest(b"cachet-owner-v1", &[tenant]);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

/// SHA-256 of a domain tag and NUL-separated parts.
fn digest(domain: &[u8], parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new().chain_update(domain);
    for part in parts {
        hasher.update(b"\0");
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// The exact-match key of a request: everything that changes its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactKey([u8; 32]);

impl ExactKey {
    pub fn new(tenant: &Tenant, category: &str, request: &CacheRequest) -> Self {
        let fields = request.canonical_output_fields();
        Self(digest(
            b"cachet-exact-v1",
            &[tenant.as_str(), category, request.route.path(), &fields],
        ))
    }

    /// The id of the entry stored under this key.
    pub fn entry_id(&self) -> u64 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(head)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The partition a request's semantic neighbours must share: same tenant, category, route,
/// model, system prompt and every output-affecting parameter the exact key has (`max_tokens`,
/// `temperature`, `stop`, `logit_bias`, `response_format`, `seed`, tools, ...), so that an
/// answer cut short or skewed by its parameters is never served to a request without them.
/// The rest of the conversation is compared per candidate (`policies::judge`), so that
/// reworded history can still match.
pub fn partition(tenant: &Tenant, category: &str, request: &CacheRequest) -> u64 {
    let mut system = String::new();
    for message in &request.system {
        write_canonical(message, &mut system);
        system.push('\n');
    }
    let digest = digest(
        b"cachet-partition-v2",
        &[
            tenant.as_str(),
            category,
            request.route.path(),
            &request.model,
            &system,
            &request.canonical_parameters(),
        ],
    );
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::request::Route;

    fn tenant(auth: Option<&str>) -> Tenant {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(
                "authorization",
                HeaderValue::from_str(auth).expect("header"),
            );
        }
        Tenant::from_headers(&headers).unwrap_or_else(Tenant::anonymous)
    }

    #[test]
    fn tenants_are_key_hashes() {
        assert_eq!(tenant(Some("Bearer sk-a")), tenant(Some("Bearer sk-a")));
        assert_ne!(tenant(Some("Bearer sk-a")), tenant(Some("Bearer sk-b")));
        assert_eq!(Tenant::from_headers(&HeaderMap::new()), None);
        assert_eq!(tenant(Some("Bearer ")), Tenant::anonymous());
        assert!(!tenant(Some("Bearer sk-a")).as_str().contains("sk-a"));
        assert_ne!(quota_owner("a"), quota_owner("b"));
    }

    #[test]
    fn output_affecting_parameters_separate_partitions() {
        let req = |body: &str| CacheRequest::parse(Route::Chat, body.as_bytes()).expect("valid");
        let base = r#""model":"m","messages":[{"role":"user","content":"q"}]"#;
        let t = tenant(Some("Bearer 1"));
        let plain = partition(&t, "c", &req(&format!("{{{base}}}")));
        for extra in [
            r#""max_tokens":1"#,
            r#""max_completion_tokens":1"#,
            r#""temperature":0"#,
            r#""stop":["."]"#,
            r#""logit_bias":{"1":100}"#,
            r#""response_format":{"type":"json_object"}"#,
            r#""seed":7"#,
            r#""top_p":0.5"#,
            r#""presence_penalty":1"#,
        ] {
            let other = partition(&t, "c", &req(&format!("{{{base},{extra}}}")));
            assert_ne!(plain, other, "{extra} must change the partition");
        }
        // What does not change the answer does not split partitions.
        for transport in [
            r#""stream":true"#,
            r#""user":"u1""#,
            r#""metadata":{"a":"b"}"#,
        ] {
            let same = partition(&t, "c", &req(&format!("{{{base},{transport}}}")));
            assert_eq!(plain, same, "{transport}");
        }
        // Nor does the question: that is what the semantic search compares.
        let other_question = req(r#"{"model":"m","messages":[{"role":"user","content":"p"}]}"#);
        assert_eq!(plain, partition(&t, "c", &other_question));
    }

    #[test]
    fn keys_separate_tenants_and_system_prompts() {
        let req = |body: &str| CacheRequest::parse(Route::Chat, body.as_bytes()).expect("valid");
        let a = req(r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#);
        let b = req(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}]}"#,
        );
        let (t1, t2) = (tenant(Some("Bearer 1")), tenant(Some("Bearer 2")));
        assert_ne!(ExactKey::new(&t1, "c", &a), ExactKey::new(&t2, "c", &a));
        assert_ne!(ExactKey::new(&t1, "c", &a), ExactKey::new(&t1, "c", &b));
        assert_eq!(partition(&t1, "c", &a), partition(&t1, "c", &a));
        assert_ne!(partition(&t1, "c", &a), partition(&t2, "c", &a));
        assert_ne!(partition(&t1, "c", &a), partition(&t1, "c", &b));
    }
}
