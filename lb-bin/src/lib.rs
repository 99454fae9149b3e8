//! lb-bin's library side: the runtime pieces the binary's modes share, usable by operators that
//! embed them. So far: [`members`], the SWIM membership that standalone mode (and later the
//! Kubernetes speaker) elects L2 owners with.

pub mod members;
