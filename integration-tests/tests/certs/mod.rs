//! Test certificates made at test time (rcgen), shared by the TLS tests.
#![allow(dead_code)]

use rcgen::{CertificateParams, KeyPair};

pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A self-signed ECDSA P-256 certificate for `names`, with its key.
pub fn ecdsa(names: &[&str]) -> Pem {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    Pem {
        cert: params.self_signed(&key).unwrap().pem(),
        key: key.serialize_pem(),
    }
}
