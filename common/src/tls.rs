//! Certificates the proxy terminates TLS with, checked without any crypto or I/O: PEM
//! parsing, "does this key belong to this certificate" (by comparing public keys, which
//! a private key's encoding carries), validity dates, and whether the certificate covers
//! the names it is declared to serve; plus the SNI selection rule shared by the proxy's
//! certificate resolver and its 421 check ([`select`]).
//!
//! The control plane and the CLI run [`check_pair`] on inline PEM at validation; the
//! proxy runs it on `cert_file`/`key_file` contents and NACKs naming the file.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::name::Name;
use crate::spec::CertificateSpec;
use crate::validate::{ObjectRef, ValidationError, ValidationErrors};

/// What [`check_pair`] learned: the DER chain and key, ready for a TLS library.
pub struct CheckedPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl fmt::Debug for CheckedPair {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedPair")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Why a certificate/key pair is refused: the field it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PairError {
    /// `cert_pem`, `key_pem` or `hosts` (the proxy renames the first two to the file's
    /// field when they were read from a file).
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> PairError {
    PairError {
        field,
        reason: reason.into(),
    }
}

/// Parses and checks a PEM certificate chain (leaf first) and its private key against
/// `hosts` at time `now`: the key must match the leaf's public key, the leaf must be
/// valid now, and every host must be covered by one of the leaf's DNS names.
pub fn check_pair(
    cert_pem: &str,
    key_pem: &str,
    hosts: &[String],
    now: SystemTime,
) -> Result<CheckedPair, PairError> {
    let mut chain = Vec::new();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        chain.push(c.map_err(|e| err("cert_pem", format!("is not valid PEM: {e}")))?);
    }
    let Some(leaf) = chain.first() else {
        return Err(err(
            "cert_pem",
            "holds no certificate (expected a `-----BEGIN CERTIFICATE-----` block)",
        ));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        err(
            "key_pem",
            format!("holds no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM expected): {e}"),
        )
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| err("cert_pem", format!("is not an X.509 certificate: {e}")))?;

    // The key belongs to the certificate.
    let spki = cert.public_key();
    let cert_key = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => PublicKey::Rsa {
            n: strip_zeros(rsa.modulus).to_vec(),
            e: strip_zeros(rsa.exponent).to_vec(),
        },
        _ => PublicKey::Raw(spki.subject_public_key.data.to_vec()),
    };
    let key_public = public_key_of(&key).map_err(|reason| err("key_pem", reason))?;
    if key_public != cert_key {
        return Err(err(
            "key_pem",
            "does not match the certificate (its public key is not the certificate's)",
        ));
    }

    // Valid now.
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    let not_after = validity.not_after.timestamp();
    if now_s > not_after {
        return Err(err(
            "cert_pem",
            format!(
                "the certificate expired at {}",
                crate::time::rfc3339(
                    UNIX_EPOCH + std::time::Duration::from_secs(not_after.max(0) as u64)
                )
            ),
        ));
    }
    let not_before = validity.not_before.timestamp();
    if now_s < not_before {
        return Err(err(
            "cert_pem",
            format!(
                "the certificate is not valid before {}",
                crate::time::rfc3339(
                    UNIX_EPOCH + std::time::Duration::from_secs(not_before.max(0) as u64)
                )
            ),
        ));
    }

    // Covers its hosts.
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // No DNS subjectAltName: the subject's common name, as older certificates have.
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let uncovered: Vec<&str> = hosts
        .iter()
        .filter(|h| !names.iter().any(|n| cert_name_covers(n, h)))
        .map(String::as_str)
        .collect();
    if !uncovered.is_empty() {
        return Err(err(
            "hosts",
            format!(
                "{} not covered by the certificate, which names {}",
                uncovered
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if uncovered.len() == 1 { " is" } else { " are" },
                if names.is_empty() {
                    "no DNS name".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
    Ok(CheckedPair {
        chain,
        key,
        not_after,
    })
}

/// The leaf's `notAfter` (Unix seconds) of a PEM chain, without the key: what `get
/// certificates` shows. `None` when the PEM holds no parsable certificate.
pub fn not_after(cert_pem: &str) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Does a certificate's DNS name `cert_name` cover the declared host `host`? Exact
/// (case-insensitive); a wildcard `*.b.c` covers `a.b.c` (exactly one label) and the
/// declared wildcard `*.b.c` itself.
pub fn cert_name_covers(cert_name: &str, host: &str) -> bool {
    if cert_name.eq_ignore_ascii_case(host) {
        return true;
    }
    match cert_name.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((label, rest)) => {
                !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
            }
            None => false,
        },
        None => false,
    }
}

/// The certificate an SNI name (or a request's Host, for the 421 rule) selects among
/// `certs`, each given as its declared hosts, in name order: an exact host first, then a
/// one-label wildcard (`*.example.org` for `a.example.org`, not `a.b.example.org`). None
/// when no certificate lists the name (the caller then falls back to the default).
/// `name` must be lowercase and without a port or trailing dot.
pub fn select<'a, I, H>(certs: I, name: &str) -> Option<usize>
where
    I: IntoIterator<Item = H> + Clone,
    H: IntoIterator<Item = &'a str>,
{
    if let Some(i) = certs
        .clone()
        .into_iter()
        .position(|hosts| hosts.into_iter().any(|h| h == name))
    {
        return Some(i);
    }
    let (_, parent) = name.split_once('.')?;
    certs.into_iter().position(|hosts| {
        hosts
            .into_iter()
            .any(|h| h.strip_prefix("*.") == Some(parent))
    })
}

#[derive(Debug, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The subjectPublicKey bit string's bytes (EC point, Ed25519 key).
    Raw(Vec<u8>),
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const NO_PUBLIC: &str = "carries no public key to check against the certificate \
                         (write the key with its public part, e.g. `openssl pkey -in key.pem`)";

/// The public key a private key's encoding carries.
fn public_key_of(key: &PrivateKeyDer<'_>) -> Result<PublicKey, String> {
    let bad = |what: &str| format!("is not a well-formed {what} private key");
    match key {
        PrivateKeyDer::Pkcs1(k) => rsa_public(k.secret_pkcs1_der()).ok_or_else(|| bad("RSA")),
        PrivateKeyDer::Sec1(k) => ec_public(k.secret_sec1_der())?.ok_or_else(|| bad("EC")),
        PrivateKeyDer::Pkcs8(k) => {
            let (seq, _) = Der::read(k.secret_pkcs8_der(), 0x30).ok_or_else(|| bad("PKCS#8"))?;
            let (_version, rest) = Der::read(seq, 0x02).ok_or_else(|| bad("PKCS#8"))?;
            let (alg, rest) = Der::read(rest, 0x30).ok_or_else(|| bad("PKCS#8"))?;
            let (oid, _) = Der::read(alg, 0x06).ok_or_else(|| bad("PKCS#8"))?;
            let (private, mut rest) = Der::read(rest, 0x04).ok_or_else(|| bad("PKCS#8"))?;
            match oid {
                OID_RSA => rsa_public(private).ok_or_else(|| bad("RSA")),
                OID_EC => ec_public(private)?.ok_or_else(|| bad("EC")),
                OID_ED25519 => {
                    // OneAsymmetricKey (PKCS#8 v2): [0] attributes, [1] publicKey.
                    while let Some((tag, content, next)) = Der::any(rest) {
                        if tag == 0x81 {
                            return content
                                .split_first()
                                .map(|(_, k)| PublicKey::Raw(k.to_vec()))
                                .ok_or_else(|| bad("Ed25519"));
                        }
                        rest = next;
                    }
                    Err(format!("is an Ed25519 key that {NO_PUBLIC}"))
                }
                _ => Err("uses a key algorithm other than RSA, ECDSA or Ed25519".to_owned()),
            }
        }
        _ => Err("is of an unsupported private key format".to_owned()),
    }
}

/// RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }
fn rsa_public(der: &[u8]) -> Option<PublicKey> {
    let (seq, _) = Der::read(der, 0x30)?;
    let (_version, rest) = Der::read(seq, 0x02)?;
    let (n, rest) = Der::read(rest, 0x02)?;
    let (e, _) = Der::read(rest, 0x02)?;
    Some(PublicKey::Rsa {
        n: strip_zeros(n).to_vec(),
        e: strip_zeros(e).to_vec(),
    })
}

/// ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters OPTIONAL,
/// [1] publicKey BIT STRING OPTIONAL }. Ok(None): malformed.
fn ec_public(der: &[u8]) -> Result<Option<PublicKey>, String> {
    let Some((seq, _)) = Der::read(der, 0x30) else {
        return Ok(None);
    };
    let Some((_version, rest)) = Der::read(seq, 0x02) else {
        return Ok(None);
    };
    let Some((_private, mut rest)) = Der::read(rest, 0x04) else {
        return Ok(None);
    };
    while let Some((tag, content, next)) = Der::any(rest) {
        if tag == 0xa1 {
            let Some((bits, _)) = Der::read(content, 0x03) else {
                return Ok(None);
            };
            return Ok(bits.split_first().map(|(_, k)| PublicKey::Raw(k.to_vec())));
        }
        rest = next;
    }
    Err(format!("is an EC key that {NO_PUBLIC}"))
}

/// Just enough DER to walk private-key structures.
struct Der;

impl Der {
    /// One TLV: (tag, content, rest).
    fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// One TLV of the expected tag: (content, rest).
    fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        match Self::any(input)? {
            (t, content, rest) if t == tag => Some((content, rest)),
            _ => None,
        }
    }
}

// ---- the validated model of `tls.certificates[]` ----

/// The text a redacted private key reads as wherever the configuration is shown.
pub const REDACTED: &str = "<redacted>";

/// Where a certificate's or key's PEM comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// Inline PEM (`cert_pem` / `key_pem`), checked at validation.
    Inline(Arc<str>),
    /// A file the proxy reads (`cert_file` / `key_file`), checked by the proxy.
    File(String),
}

impl fmt::Debug for PemSource {
    /// Never prints PEM text (it may be a key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::Inline(t) => write!(f, "Inline({} bytes)", t.len()),
            PemSource::File(p) => write!(f, "File({p:?})"),
        }
    }
}

impl PemSource {
    pub fn file(&self) -> Option<&str> {
        match self {
            PemSource::File(f) => Some(f),
            PemSource::Inline(_) => None,
        }
    }
}

/// One `tls.certificates[]` entry: a certificate chain and key the proxy terminates
/// TLS with for its `hosts`. Its `Debug` never prints key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    pub(crate) name: Name,
    /// Lowercase DNS names or one-label wildcards (`*.example.org`).
    pub(crate) hosts: Vec<String>,
    pub(crate) cert: PemSource,
    pub(crate) key: PemSource,
    pub(crate) default: bool,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |s: &PemSource, secret: bool| match s {
            PemSource::File(p) => format!("file:{p}"),
            PemSource::Inline(_) if secret => REDACTED.to_owned(),
            PemSource::Inline(t) => format!("inline ({} bytes)", t.len()),
        };
        f.debug_struct("Certificate")
            .field("name", &self.name.as_str())
            .field("hosts", &self.hosts)
            .field("cert", &show(&self.cert, false))
            .field("key", &show(&self.key, true))
            .field("default", &self.default)
            .finish()
    }
}

impl Certificate {
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
    pub fn cert(&self) -> &PemSource {
        &self.cert
    }
    pub fn key(&self) -> &PemSource {
        &self.key
    }
    pub fn is_default(&self) -> bool {
        self.default
    }
}

impl From<&Certificate> for CertificateSpec {
    /// With the key: this is also the wire form. Shown to people only through
    /// [`CertificateSpec::redacted`].
    fn from(c: &Certificate) -> Self {
        let (cert_pem, cert_file) = split(&c.cert);
        let (key_pem, key_file) = split(&c.key);
        CertificateSpec {
            name: c.name.to_string(),
            hosts: c.hosts.clone(),
            cert_pem,
            cert_file,
            key_pem,
            key_file,
            default: c.default.then_some(true),
        }
    }
}

fn split(s: &PemSource) -> (Option<String>, Option<String>) {
    match s {
        PemSource::Inline(t) => (Some(t.to_string()), None),
        PemSource::File(f) => (None, Some(f.clone())),
    }
}

impl CertificateSpec {
    /// The same entry with `key_pem` replaced by [`REDACTED`]: what `get`, the status
    /// API, `/config` and logs show.
    pub fn redacted(mut self) -> Self {
        if self.key_pem.is_some() {
            self.key_pem = Some(REDACTED.to_owned());
        }
        self
    }
}

impl TryFrom<CertificateSpec> for Certificate {
    type Error = ValidationErrors;
    fn try_from(spec: CertificateSpec) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        certificate(&spec, SystemTime::now(), &mut errors).ok_or(ValidationErrors(errors))
    }
}

/// Validates one entry at time `now`; inline PEM is fully checked ([`check_pair`]).
pub(crate) fn certificate(
    spec: &CertificateSpec,
    now: SystemTime,
    errors: &mut Vec<ValidationError>,
) -> Option<Certificate> {
    let before = errors.len();
    let object = ObjectRef::Certificate(spec.name.clone());
    let mut add = |field: &str, reason: String| {
        errors.push(ValidationError {
            object: object.clone(),
            field: field.to_owned(),
            reason,
        })
    };
    let name = Name::new(&spec.name)
        .map_err(|e| add("name", format!("{:?} {e}", spec.name)))
        .ok();
    if spec.hosts.is_empty() {
        add(
            "hosts",
            "must list at least one name the certificate serves".to_owned(),
        );
    }
    let mut hosts: Vec<String> = Vec::with_capacity(spec.hosts.len());
    for (i, h) in spec.hosts.iter().enumerate() {
        match cert_host(h) {
            Ok(h) if hosts.contains(&h) => {
                add(&format!("hosts[{i}]"), format!("{h:?} is listed twice"))
            }
            Ok(h) => hosts.push(h),
            Err(reason) => add(&format!("hosts[{i}]"), format!("{h:?} {reason}")),
        }
    }
    let mut source = |pem: &Option<String>, file: &Option<String>, what: &str| match (pem, file) {
        (Some(p), None) => Some(PemSource::Inline(p.as_str().into())),
        (None, Some(f)) if f.trim().is_empty() => {
            add(&format!("{what}_file"), "must not be empty".to_owned());
            None
        }
        (None, Some(f)) => Some(PemSource::File(f.clone())),
        (Some(_), Some(_)) => {
            add(
                &format!("{what}_pem"),
                format!("give either {what}_pem or {what}_file, not both"),
            );
            None
        }
        (None, None) => {
            add(
                &format!("{what}_pem"),
                format!("is required (or {what}_file)"),
            );
            None
        }
    };
    let cert = source(&spec.cert_pem, &spec.cert_file, "cert");
    let key = source(&spec.key_pem, &spec.key_file, "key");
    if let (Some(PemSource::Inline(c)), Some(PemSource::Inline(k))) = (&cert, &key)
        && let Err(e) = check_pair(c, k, &hosts, now)
    {
        add(e.field, e.reason);
    }
    if errors.len() != before {
        return None;
    }
    Some(Certificate {
        name: name?,
        hosts,
        cert: cert?,
        key: key?,
        default: spec.default.unwrap_or(false),
    })
}

/// A declared certificate host: a lowercase DNS name, or `*.` and one (a one-label
/// wildcard); no port, no trailing dot.
fn cert_host(h: &str) -> Result<String, &'static str> {
    let lower = h.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err("is not a DNS name");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("is not a DNS name (empty or over-long label)");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(
                "is not a DNS name: only letters, digits, '-' and '.' (and a leading '*.') are allowed",
            );
        }
    }
    Ok(lower)
}

/// Cross-certificate checks, certificates sorted by name: unique names, at most one
/// `default`, no host listed by two certificates.
pub(crate) fn check_set(certs: &mut [Certificate], errors: &mut Vec<ValidationError>) {
    certs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut defaults = 0;
    for (i, c) in certs.iter().enumerate() {
        let mut add = |field: &str, reason: String| {
            errors.push(ValidationError {
                object: ObjectRef::Certificate(c.name.to_string()),
                field: field.to_owned(),
                reason,
            })
        };
        if i > 0 && certs[i - 1].name == c.name {
            add("name", "is declared more than once".to_owned());
        }
        if c.default {
            defaults += 1;
            if defaults > 1 {
                add(
                    "default",
                    "another certificate is already the default; at most one may be".to_owned(),
                );
            }
        }
        for h in &c.hosts {
            if let Some(other) = certs[..i]
                .iter()
                .find(|o| o.name != c.name && o.hosts.contains(h))
            {
                add(
                    "hosts",
                    format!("{h:?} is also listed by certificate {:?}", other.name()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_label_wildcards_for_certificate_names() {
        let cases = [
            ("www.example.com", "www.example.com", true),
            ("WWW.example.com", "www.example.com", true),
            ("*.example.org", "a.example.org", true),
            ("*.example.org", "a.b.example.org", false),
            ("*.example.org", "example.org", false),
            ("*.example.org", "*.example.org", true),
            ("*.example.org", "*.b.example.org", false),
            ("www.example.com", "example.com", false),
            ("example.com", "www.example.com", false),
        ];
        for (cert, host, want) in cases {
            assert_eq!(cert_name_covers(cert, host), want, "{cert} covers {host}");
        }
    }

    #[test]
    fn selection_is_exact_then_one_label_wildcard() {
        let certs: Vec<Vec<&str>> = vec![
            vec!["*.example.org"],
            vec!["www.example.org", "api.example.com"],
            vec!["*.b.example.org"],
        ];
        let pick = |name: &str| select(certs.iter().map(|h| h.iter().copied()), name);
        let cases = [
            ("www.example.org", Some(1)),
            ("a.example.org", Some(0)),
            ("a.b.example.org", Some(2)),
            ("x.a.b.example.org", None),
            ("example.org", None),
            ("api.example.com", Some(1)),
            ("other.example.com", None),
            ("localhost", None),
        ];
        for (name, want) in cases {
            assert_eq!(pick(name), want, "{name}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever bytes a key file holds, reading its public key never panics (and a
        /// DER length never reads past the input).
        #[test]
        fn arbitrary_key_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
            if let Some((_, content, rest)) = Der::any(&bytes) {
                proptest::prop_assert!(content.len() + rest.len() < bytes.len());
            }
            let _ = public_key_of(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes.clone())));
            let _ = public_key_of(&PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(bytes.clone())));
            let _ = public_key_of(&PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(bytes)));
        }

        /// Arbitrary text as certificate and key is an error naming a field, never a panic.
        #[test]
        fn arbitrary_pem_text_is_an_error(cert in ".{0,200}", key in ".{0,200}") {
            let wrapped = format!("-----BEGIN CERTIFICATE-----\n{cert}\n-----END CERTIFICATE-----\n");
            for c in [cert.as_str(), wrapped.as_str()] {
                let e = check_pair(c, &key, &[], SystemTime::now()).expect_err("not a certificate");
                proptest::prop_assert!(["cert_pem", "key_pem"].contains(&e.field), "{e}");
            }
        }
    }

    #[test]
    fn der_lengths_short_long_and_truncated() {
        assert_eq!(
            Der::any(&[0x04, 0x01, 0xaa]),
            Some((0x04, &[0xaa][..], &[][..]))
        );
        let long = [&[0x04, 0x81, 0x02][..], &[1, 2, 9]].concat();
        assert_eq!(Der::any(&long), Some((0x04, &[1, 2][..], &[9][..])));
        assert_eq!(Der::any(&[0x04, 0x05, 0x01]), None);
        assert_eq!(Der::any(&[0x04, 0x80]), None);
        assert_eq!(Der::any(&[0x04]), None);
        assert_eq!(Der::read(&[0x02, 0x00], 0x04), None);
    }
}
