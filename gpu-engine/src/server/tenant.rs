//! Which tenant a request belongs to, for salting the prefix cache.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::kv::TenantSalt;

/// The header a trusted gateway uses to name the tenant it forwards for.
pub const TENANT_HEADER: &str = "x-cachet-tenant";

/// How the engine derives a request's tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantPolicy {
    /// Honour `x-cachet-tenant`. Only safe when every client reaches the engine through
    /// a gateway that sets (or strips) this header; otherwise a client could name any
    /// tenant and probe its cached prefixes.
    pub trust_gateway_header: bool,
}

impl TenantPolicy {
    /// The salt for a request: the trusted tenant header if enabled and present, else
    /// the bearer credential, else the shared anonymous tenant.
    pub fn salt(&self, headers: &HeaderMap) -> TenantSalt {
        if self.trust_gateway_header
            && let Some(tenant) = headers.get(TENANT_HEADER)
        {
            return TenantSalt::derive(&[b"tenant:", tenant.as_bytes()].concat());
        }
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match bearer {
            Some(key) if !key.is_empty() => TenantSalt::derive(&[b"key:", key.as_bytes()].concat()),
            _ => TenantSalt::derive(b"anonymous"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_keys_separate_tenants() {
        let p = TenantPolicy::default();
        let a = p.salt(&headers(&[("authorization", "Bearer a")]));
        let b = p.salt(&headers(&[("authorization", "Bearer b")]));
        assert_ne!(a, b);
        assert_eq!(a, p.salt(&headers(&[("authorization", "Bearer a")])));
        assert_ne!(a, p.salt(&HeaderMap::new()));
    }

    #[test]
    fn tenant_header_is_ignored_unless_trusted() {
        let h = headers(&[("authorization", "Bearer a"), (TENANT_HEADER, "acme")]);
        let untrusted = TenantPolicy::default();
        assert_eq!(
            untrusted.salt(&h),
            untrusted.salt(&headers(&[("authorization", "Bearer a")]))
        );
        let trusted = TenantPolicy {
            trust_gateway_header: true,
        };
        assert_ne!(trusted.salt(&h), untrusted.salt(&h));
        // Two different keys behind the gateway, same tenant: same salt.
        let other = headers(&[("authorization", "Bearer z"), (TENANT_HEADER, "acme")]);
        assert_eq!(trusted.salt(&h), trusted.salt(&other));
    }
}
