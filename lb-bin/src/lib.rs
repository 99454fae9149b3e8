//! lb-bin's library side: the runtime pieces the binary's modes share, usable by operators that
//! embed them: [`members`] (SWIM membership, the L2 owner election), [`standalone`] (the
//! standalone node), [`local`] (local delivery on a dummy interface), [`state`] (the allocations file), [`http`] (metrics,
//! health and status endpoints), [`announcers`] (the compiled announcers as one), and the
//! Kubernetes components [`controller`] and [`speaker`].

pub mod announcers;
pub mod controller;
pub mod http;
pub mod local;
pub mod members;
pub mod speaker;
pub mod standalone;
pub mod state;
