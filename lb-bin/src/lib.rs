//! lb-bin's library side: the runtime pieces the binary's modes share, usable by operators that
//! embed them: [`members`] (SWIM membership, the L2 owner election), [`standalone`] (the
//! standalone node), [`local`] (local delivery on a dummy interface), [`state`] (the allocations file), [`http`] (metrics,
//! health and status endpoints), [`announcers`] (the compiled announcers as one), and the
//! Kubernetes components [`controller`] and [`speaker`].
//!
//! ## Quick start
//!
//! Each mode is a function over options (what `lb-bin` parses from flags): for example a
//! standalone node is [`standalone::run`]; it drives lb-core's `Runtime` with the announcers
//! of [`announcers::Announcers`]. The pieces stand alone too, such as local delivery's check
//! of the ARP sysctls, read through a closure:
//!
//! ```
//! let host = |path: &str| Some(if path.ends_with("arp_ignore") { "1" } else { "2" }.to_string());
//! assert!(lb_bin::local::check_sysctls(host).is_empty());
//! ```

#![deny(missing_docs)]

pub mod announcers;
pub mod controller;
pub mod error;
pub mod http;
pub mod local;
pub mod members;
pub mod speaker;
pub mod standalone;
pub mod state;
mod stop;

pub use error::{Error, Result};
