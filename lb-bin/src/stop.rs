//! SIGTERM and SIGINT as one thing to wait for: each mode runs until one arrives.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{Error, Result};

/// The signals that stop a node.
#[derive(Debug)]
pub(crate) struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    /// Installs the handlers (before anything could be left half done by a signal).
    pub(crate) fn new() -> Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate()).map_err(Error::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
        })
    }

    /// Returns when SIGTERM or SIGINT arrives.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
