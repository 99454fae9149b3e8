//! lb-bin's library side: the runtime pieces the binary's modes share, usable by operators that
//! embed them: [`members`] (SWIM membership, the L2 owner election), [`standalone`] (the
//! standalone node), [`local`] (local delivery on a dummy interface), [`http`] (metrics,
//! health and status endpoints).

pub mod http;
pub mod local;
pub mod members;
pub mod standalone;
