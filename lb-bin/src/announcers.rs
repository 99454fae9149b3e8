//! The announcers this build has (by cargo feature), made from a configuration and kept in
//! step with it: standalone mode and the Kubernetes speaker hand [`Announcers::list`] to
//! lb-core's [`Runtime`](lb_core::Runtime), which drives them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
#[cfg(feature = "bgp")]
use std::time::Duration;

#[cfg(not(all(feature = "l2", feature = "bgp")))]
use crate::error::Error;
use crate::error::Result;
use lb_core::config::Config;
use lb_core::{Announcer, Protocol, RecordingAnnouncer};

/// The BGP router id of `node` whose address is `ip`: the address itself when it is IPv4,
/// else one derived from the node's name (the same on every run).
pub fn router_id(node: &str, ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => Ipv4Addr::from(u32::from_be_bytes(
            lb_core::plan::election_hash(node, "router-id")[..4]
                .try_into()
                .unwrap_or([192, 0, 2, 1]),
        )),
    }
}

/// The announcers this build has, for one node.
#[derive(Debug)]
pub struct Announcers {
    #[cfg(feature = "l2")]
    l2: Option<Arc<lb_announce_l2::L2Announcer>>,
    #[cfg(feature = "bgp")]
    bgp: Option<Arc<lb_announce_bgp::BgpAnnouncer>>,
    /// A dry run: announcers that only remember what they were given.
    dry: Option<[Arc<RecordingAnnouncer>; 2]>,
}

/// Which modes `config` needs (layer 2, BGP); an error if this build lacks one.
fn wanted(config: &Config) -> Result<(bool, bool)> {
    let wants_l2 = !config.l2_advertisements.is_empty();
    let wants_bgp = !config.bgp_advertisements.is_empty() || !config.peers.is_empty();
    #[cfg(not(feature = "l2"))]
    if wants_l2 {
        return Err(Error::MissingFeature {
            objects: "L2Advertisements",
            feature: "l2",
        });
    }
    #[cfg(not(feature = "bgp"))]
    if wants_bgp {
        return Err(Error::MissingFeature {
            objects: "BGP objects",
            feature: "bgp",
        });
    }
    Ok((wants_l2, wants_bgp))
}

#[cfg(feature = "l2")]
fn start_l2() -> Result<Arc<lb_announce_l2::L2Announcer>> {
    let a = lb_announce_l2::L2Announcer::start(lb_announce_l2::announcer::Config::default())?;
    Ok(Arc::new(a))
}

impl Announcers {
    /// The announcers `config` needs on `node` (none of them real in a dry run).
    pub fn start(
        config: &Config,
        node: &str,
        router_id: Ipv4Addr,
        dry_run: bool,
    ) -> Result<Announcers> {
        if dry_run {
            return Ok(Announcers::dry());
        }
        let (wants_l2, wants_bgp) = wanted(config)?;
        let _ = (node, router_id, wants_bgp, wants_l2);
        Ok(Announcers {
            #[cfg(feature = "l2")]
            l2: if wants_l2 { Some(start_l2()?) } else { None },
            #[cfg(feature = "bgp")]
            bgp: wants_bgp.then(|| {
                Arc::new(lb_announce_bgp::BgpAnnouncer::for_node(
                    config, node, router_id,
                ))
            }),
            dry: None,
        })
    }

    fn dry() -> Announcers {
        Announcers {
            #[cfg(feature = "l2")]
            l2: None,
            #[cfg(feature = "bgp")]
            bgp: None,
            dry: Some([
                Arc::new(RecordingAnnouncer::new(Protocol::Layer2)),
                Arc::new(RecordingAnnouncer::new(Protocol::Bgp)),
            ]),
        }
    }

    /// The announcers, as lb-core's runtime takes them.
    pub fn list(&self) -> Vec<Arc<dyn Announcer>> {
        #[allow(unused_mut)]
        let mut out: Vec<Arc<dyn Announcer>> = Vec::new();
        if let Some(dry) = &self.dry {
            out.extend(dry.iter().map(|a| a.clone() as Arc<dyn Announcer>));
        }
        #[cfg(feature = "l2")]
        if let Some(a) = &self.l2 {
            out.push(a.clone());
        }
        #[cfg(feature = "bgp")]
        if let Some(a) = &self.bgp {
            out.push(a.clone());
        }
        out
    }

    /// Moves the announcers to `config`, touching only what changed: a mode turned on or off
    /// starts or stops its announcer alone, and BGP peers are reconciled one by one (a new
    /// peer starts, a removed one gets a Cease, an edited one, a rotated password included,
    /// re-establishes; every other session and all of layer 2 keep running). Hand the runtime
    /// [`Announcers::list`] and apply the plan after: new sessions start with no routes.
    pub async fn update(&mut self, config: &Config, node: &str, router_id: Ipv4Addr) -> Result<()> {
        if self.dry.is_some() {
            return Ok(());
        }
        let (wants_l2, wants_bgp) = wanted(config)?;
        let _ = (node, router_id, wants_bgp, wants_l2);
        #[cfg(feature = "l2")]
        match (wants_l2, self.l2.is_some()) {
            (true, false) => self.l2 = Some(start_l2()?),
            (false, true) => {
                if let Some(a) = self.l2.take() {
                    a.shutdown().await;
                }
            }
            _ => {}
        }
        #[cfg(feature = "bgp")]
        match (wants_bgp, self.bgp.take()) {
            (true, Some(a)) => {
                let r = a
                    .reconfigure(config, node, router_id, Duration::from_secs(2))
                    .await;
                if r != lb_announce_bgp::announcer::Reconciled::default() {
                    tracing::info!(
                        started = ?r.started,
                        stopped = ?r.stopped,
                        restarted = ?r.restarted,
                        "BGP peers changed; the others keep their sessions"
                    );
                }
                self.bgp = Some(a);
            }
            (true, None) => {
                self.bgp = Some(Arc::new(lb_announce_bgp::BgpAnnouncer::for_node(
                    config, node, router_id,
                )));
            }
            (false, Some(a)) => a.stop(Duration::from_secs(2)).await,
            (false, None) => {}
        }
        Ok(())
    }

    /// The peers skipped because this build cannot serve them, with why.
    pub fn skipped(&self) -> Vec<(String, String)> {
        #[cfg(feature = "bgp")]
        if let Some(a) = &self.bgp {
            return a.skipped();
        }
        Vec::new()
    }

    /// Each BFD session, by BGP peer name, as `/status` shows it.
    pub fn bfd(&self) -> BTreeMap<String, BfdView> {
        #[cfg(feature = "bgp")]
        if let Some(a) = &self.bgp {
            return a
                .bfd_statuses()
                .into_iter()
                .map(|(name, s)| {
                    let view = BfdView {
                        peer: s.peer,
                        state: s.state.to_string(),
                        diagnostic: s.diag.to_string(),
                        local_discriminator: s.local_discr,
                        remote_discriminator: s.remote_discr,
                        transmit_interval_ms: s.tx_interval.as_millis() as u64,
                        detection_time_ms: s.detection_time.as_millis() as u64,
                        up_events: s.counters.up_events,
                        down_events: s.counters.down_events,
                        error: s.error,
                    };
                    (name, view)
                })
                .collect();
        }
        BTreeMap::new()
    }
}

/// A BFD session in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BfdView {
    /// The peer's address.
    pub peer: std::net::IpAddr,
    /// `Up`, `Init`, `Down` or `AdminDown`.
    pub state: String,
    /// Why it last left Up.
    pub diagnostic: String,
    /// Our discriminator.
    pub local_discriminator: u32,
    /// The peer's (0 while unknown).
    pub remote_discriminator: u32,
    /// The interval packets go out at now (before jitter), as RFC 5880 §6.8.7 negotiates it.
    pub transmit_interval_ms: u64,
    /// The silence after which the session goes down (§6.8.4).
    pub detection_time_ms: u64,
    /// Times it came Up.
    pub up_events: u64,
    /// Times it went from Up to Down.
    pub down_events: u64,
    /// Why it cannot run, if so (its sockets could not be opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
