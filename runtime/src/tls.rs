//! The workspace's one rustls crypto provider. Every TLS user in Routemaster — the proxy's
//! HTTPS listener and its TLS connections to upstreams — builds its configs from
//! [`provider()`], so the provider is chosen in exactly one place (the `rustls` features in
//! the workspace `Cargo.toml` and this function). The choice (aws-lc-rs) and the
//! handshake numbers behind it are in the README's TLS section.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider every rustls config in the workspace is built with (aws-lc-rs), shared:
/// built once, then cloned as an `Arc`.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The protocol versions Routemaster speaks: TLS 1.2 and TLS 1.3, nothing older.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_built_once_and_offers_tls12_and_tls13_suites() {
        let a = provider();
        let b = provider();
        assert!(Arc::ptr_eq(&a, &b));
        let versions: Vec<_> = a
            .cipher_suites
            .iter()
            .map(|s| s.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
    }
}
