//! Server-side TLS handshake cost with one rustls provider (in memory, no sockets):
//! full handshakes, no resumption; ECDSA P-256 and RSA-2048 certificates, TLS 1.3 and 1.2.
//! Usage: see Cargo.toml. N=handshakes per case (default 3000).
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

#[cfg(feature = "ring")]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
#[cfg(feature = "aws")]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Moves `from`'s pending TLS bytes into `to` and lets `to` process them (timed into `t`).
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection, t: &mut Duration) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    let s0 = Instant::now();
    while !rd.is_empty() {
        if to.read_tls(&mut rd).unwrap() == 0 {
            to.process_new_packets().unwrap();
        }
    }
    to.process_new_packets().unwrap();
    *t += s0.elapsed();
}

/// Server side: its writing is timed too.
fn pump_timed(server: &mut rustls::Connection, client: &mut rustls::Connection, t: &mut Duration) {
    let s0 = Instant::now();
    let mut buf = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut buf).unwrap();
    }
    *t += s0.elapsed();
    let mut rd = &buf[..];
    while !rd.is_empty() {
        if client.read_tls(&mut rd).unwrap() == 0 {
            client.process_new_packets().unwrap();
        }
    }
    client.process_new_packets().unwrap();
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn run(label: &str, cert: &str, key: &str, version: &'static rustls::SupportedProtocolVersion) {
    let p = Arc::new(provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut server = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let server = Arc::new(server);
    let mut client = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p.clone())))
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let mut server_time = Duration::ZERO;
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let t0 = Instant::now();
    for _ in 0..n {
        let mut c = rustls::Connection::Client(
            ClientConnection::new(client.clone(), "bench.test".try_into().unwrap()).unwrap(),
        );
        let s0 = Instant::now();
        let mut s = rustls::Connection::Server(ServerConnection::new(server.clone()).unwrap());
        server_time += s0.elapsed();
        let mut rounds = 0;
        while c.is_handshaking() || s.is_handshaking() {
            rounds += 1;
            assert!(rounds < 20, "stuck");
            pump(&mut c, &mut s, &mut server_time);
            pump_timed(&mut s, &mut c, &mut server_time);
        }
    }
    let total = t0.elapsed();
    println!(
        "{label:<22} server-side {:>7.0} handshakes/s of one core ({:>6.1} us each); client+server loop {:>6.0}/s",
        f64::from(n) / server_time.as_secs_f64(),
        server_time.as_secs_f64() * 1e6 / f64::from(n),
        f64::from(n) / total.as_secs_f64()
    );
}

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let name = if cfg!(feature = "ring") {
        "ring"
    } else {
        "aws-lc-rs"
    };
    for (kind, v, vn) in [
        ("ecdsa", &rustls::version::TLS13, "1.3"),
        ("ecdsa", &rustls::version::TLS12, "1.2"),
        ("rsa", &rustls::version::TLS13, "1.3"),
        ("rsa", &rustls::version::TLS12, "1.2"),
    ] {
        run(
            &format!("{name} {kind} TLS{vn}"),
            &format!("{dir}/{kind}.pem"),
            &format!("{dir}/{kind}.key"),
            v,
        );
    }
}
