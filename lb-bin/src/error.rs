//! What stops a mode of lb-bin: the binary prints it and exits non-zero. Problems a running
//! node can live with (a peer that will not connect, a write the API server refused) are not
//! here; they are logged, counted and shown in `/status`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::members::KeyFileError;

/// Why a mode could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file was found empty on a reload: taken as a write caught half way
    /// (a truncated file that is being written again), not as a configuration.
    #[error(
        "{} is empty: taken as a write in progress; a file that holds only a comment withdraws everything",
        path.display()
    )]
    EmptyConfig {
        /// The file.
        path: PathBuf,
    },
    /// The configuration file has errors (every finding is listed, warnings too).
    #[error("{} has errors:\n  {}", path.display(), lines(errors))]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// Its findings.
        errors: Vec<lb_core::ConfigError>,
    },
    /// A `--join` name could not be resolved.
    #[error("--join {name}: {source}")]
    Resolve {
        /// The name as given.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A socket could not be bound (the flag says which).
    #[error("{flag} {addr}: {source}")]
    Bind {
        /// The flag that chose the address (`--http`, `--bind`).
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The address towards the first `--join` seed could not be found.
    #[error("finding this node's address towards {seed}: {source}")]
    Advertise {
        /// The seed.
        seed: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("installing a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The membership key file is unusable.
    #[error("--secret-key-file {0}")]
    KeyFile(#[from] KeyFileError),
    /// Nodes would talk to each other with no key and `--insecure-membership` was not given.
    #[error(
        "--join needs a membership key, or anyone who reaches UDP port {port} could join and steer which node owns each address: pass --secret-key-file FILE (the same on every node; make one with `openssl rand -base64 128 > FILE`; MetalLB's memberlist secretkey works as is), or --insecure-membership to accept that risk"
    )]
    NeedKey {
        /// The membership port.
        port: u16,
    },
    /// The configuration needs a mode this build was compiled without.
    #[error("the configuration has {objects} but this build lacks the '{feature}' feature")]
    MissingFeature {
        /// What in the configuration needs it.
        objects: &'static str,
        /// The cargo feature.
        feature: &'static str,
    },
    /// The layer 2 announcer could not start.
    #[cfg(feature = "l2")]
    #[error("starting the layer 2 announcer: {0}")]
    L2(#[from] lb_announce_l2::announcer::StartError),
    /// Local delivery could not be set up.
    #[error(transparent)]
    Local(#[from] crate::local::Error),
    /// The speaker's Node has no address and none was given.
    #[error("Node {node} has no address; pass --advertise-address")]
    NoNodeAddress {
        /// The node.
        node: String,
    },
    /// The membership task ended (it runs for as long as the node does).
    #[error("the membership task has stopped")]
    MembershipStopped,
}

fn lines(errors: &[lb_core::ConfigError]) -> String {
    let words: Vec<String> = errors.iter().map(ToString::to_string).collect();
    words.join("\n  ")
}

/// lb-bin's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
