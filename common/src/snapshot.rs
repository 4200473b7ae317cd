//! A snapshot: one immutable, versioned, validated configuration, the unit a proxy
//! applies. The file loader and the control-plane stream both produce these; the proxy
//! has a single `apply(Arc<Snapshot>)` for either.

use std::fmt;

use crate::model::Config;

#[derive(Debug, Clone)]
pub struct Snapshot {
    version: u64,
    source: Source,
    config: Config,
}

/// Where a snapshot came from, for `/config` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(String),
    ControlPlane(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file:{p}"),
            Source::ControlPlane(u) => write!(f, "control-plane:{u}"),
        }
    }
}

impl Snapshot {
    pub fn new(version: u64, source: Source, config: Config) -> Self {
        Self {
            version,
            source,
            config,
        }
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn source(&self) -> &Source {
        &self.source
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
}
