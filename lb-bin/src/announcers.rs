//! The announcers this build has (by cargo feature), driven as one: standalone mode and the
//! Kubernetes speaker hand them a plan's announcements.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
#[cfg(feature = "bgp")]
use std::time::Duration;

use anyhow::Result;
#[cfg(not(all(feature = "l2", feature = "bgp")))]
use anyhow::bail;
#[cfg(any(feature = "l2", feature = "bgp"))]
use lb_core::Announcer;
use lb_core::Protocol;
use lb_core::config::Config;
use lb_core::plan::Announcement;

/// The announcers this build has.
#[derive(Debug)]
pub struct Announcers {
    #[cfg(feature = "l2")]
    l2: Option<lb_announce_l2::L2Announcer>,
    #[cfg(feature = "bgp")]
    bgp: Option<(lb_announce_bgp::BgpAnnouncer, Vec<String>)>,
    /// Peers valid for MetalLB that this build cannot serve, with why: skipped alone.
    skipped: Vec<(String, String)>,
}

/// Which modes `config` needs (layer 2, BGP); an error if this build lacks one.
fn wanted(config: &Config, dry_run: bool) -> Result<(bool, bool)> {
    let wants_l2 = !dry_run && !config.l2_advertisements.is_empty();
    let wants_bgp = !dry_run && (!config.bgp_advertisements.is_empty() || !config.peers.is_empty());
    #[cfg(not(feature = "l2"))]
    if wants_l2 {
        bail!("the configuration has L2Advertisements but this build lacks the 'l2' feature");
    }
    #[cfg(not(feature = "bgp"))]
    if wants_bgp {
        bail!("the configuration has BGP objects but this build lacks the 'bgp' feature");
    }
    Ok((wants_l2, wants_bgp))
}

#[cfg(feature = "l2")]
fn start_l2() -> Result<lb_announce_l2::L2Announcer> {
    lb_announce_l2::L2Announcer::start(lb_announce_l2::announcer::Config::default())
        .map_err(|e| anyhow::anyhow!("starting the layer 2 announcer: {e}"))
}

impl Announcers {
    pub fn start(
        config: &Config,
        node: &str,
        router_id: Ipv4Addr,
        dry_run: bool,
    ) -> Result<Announcers> {
        let (wants_l2, wants_bgp) = wanted(config, dry_run)?;
        let _ = (node, router_id, wants_bgp, wants_l2);
        #[allow(unused_mut)]
        let mut skipped = Vec::new();
        Ok(Announcers {
            #[cfg(feature = "l2")]
            l2: if wants_l2 { Some(start_l2()?) } else { None },
            #[cfg(feature = "bgp")]
            bgp: if wants_bgp {
                let (sessions, names) = bgp_sessions(config, node, router_id, &mut skipped);
                Some((lb_announce_bgp::BgpAnnouncer::start(sessions), names))
            } else {
                None
            },
            skipped,
        })
    }

    /// Moves the announcers to `config`, touching only what changed: a mode turned on or off
    /// starts or stops its announcer alone, and BGP peers are reconciled one by one (a new
    /// peer starts, a removed one gets a Cease, an edited one, a rotated password included,
    /// re-establishes; every other session and all of layer 2 keep running). Call
    /// [`Announcers::announce`] after: new sessions start with no routes.
    pub async fn update(
        &mut self,
        config: &Config,
        node: &str,
        router_id: Ipv4Addr,
        dry_run: bool,
    ) -> Result<()> {
        let (wants_l2, wants_bgp) = wanted(config, dry_run)?;
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
        {
            let mut skipped = Vec::new();
            let (sessions, names) = bgp_sessions(config, node, router_id, &mut skipped);
            match (wants_bgp, self.bgp.take()) {
                (true, Some((a, _))) => {
                    let r = a.reconcile(sessions, Duration::from_secs(2)).await;
                    if r != lb_announce_bgp::announcer::Reconciled::default() {
                        tracing::info!(
                            started = ?r.started,
                            stopped = ?r.stopped,
                            restarted = ?r.restarted,
                            "BGP peers changed; the others keep their sessions"
                        );
                    }
                    self.bgp = Some((a, names));
                }
                (true, None) => {
                    self.bgp = Some((lb_announce_bgp::BgpAnnouncer::start(sessions), names));
                }
                (false, Some((a, _))) => a.stop(Duration::from_secs(2)).await,
                (false, None) => {}
            }
            self.skipped = skipped;
        }
        Ok(())
    }

    /// Hands each announcer its share; returns the errors.
    pub async fn announce(&self, anns: &[Announcement], fresh: &BTreeSet<IpAddr>) -> Vec<String> {
        #[allow(unused_mut)]
        let mut errors = Vec::new();
        let (l2, bgp): (Vec<Announcement>, Vec<Announcement>) = anns
            .iter()
            .cloned()
            .partition(|a| Protocol::of(a) == Protocol::Layer2);
        #[cfg(feature = "l2")]
        if let Some(a) = &self.l2 {
            a.note_new_addresses(fresh.iter().copied());
            if let Err(e) = a.announce(&l2).await {
                errors.push(e.to_string());
            }
        }
        #[cfg(feature = "bgp")]
        if let Some((a, _)) = &self.bgp {
            // A skipped peer has no session: its routes wait for it, they are no error.
            let mut bgp = bgp;
            if !self.skipped.is_empty() {
                for ann in &mut bgp {
                    if let lb_core::plan::How::Bgp { routes } = &mut ann.how {
                        for r in routes.iter_mut() {
                            r.peers
                                .retain(|p| !self.skipped.iter().any(|(s, _)| s == p));
                        }
                    }
                }
            }
            if let Err(e) = a.announce(&bgp).await {
                errors.push(e.to_string());
            }
        }
        #[cfg(not(feature = "bgp"))]
        let _ = bgp;
        let _ = (l2, fresh);
        errors
    }

    /// After members appeared (a partition healed, a node joined): this node's clients may
    /// have learned another node's MAC meanwhile, so say again what it answers for.
    pub fn reannounce(&self) {
        #[cfg(feature = "l2")]
        if let Some(a) = &self.l2 {
            a.reannounce();
        }
    }

    /// The peers skipped because this build cannot serve them, with why.
    pub fn skipped(&self) -> &[(String, String)] {
        &self.skipped
    }

    pub fn metrics(&self) -> String {
        #[allow(unused_mut)]
        let mut out = String::new();
        if !self.skipped.is_empty() {
            out.push_str("# HELP lb_bgp_peer_skipped A BGPPeer this build cannot serve (see /status and the log).\n# TYPE lb_bgp_peer_skipped gauge\n");
            for (p, _) in &self.skipped {
                out.push_str(&format!("lb_bgp_peer_skipped{{peer=\"{p}\"}} 1\n"));
            }
        }
        #[cfg(feature = "l2")]
        if let Some(a) = &self.l2 {
            out.push_str(&a.counters().render());
        }
        #[cfg(feature = "bgp")]
        if let Some((a, _)) = &self.bgp {
            out.push_str(&a.render_metrics());
        }
        out
    }

    pub async fn stop(self) {
        #[cfg(feature = "bgp")]
        if let Some((a, _)) = self.bgp {
            a.stop(Duration::from_secs(2)).await;
        }
        #[cfg(feature = "l2")]
        if let Some(a) = self.l2 {
            a.shutdown().await;
        }
    }
}

/// The sessions `config` asks of `node`: (name, configuration) for each peer this build can
/// serve, and their names; the others go to `skipped` with why (that peer alone waits).
#[cfg(feature = "bgp")]
fn bgp_sessions(
    config: &Config,
    node: &str,
    router_id: Ipv4Addr,
    skipped: &mut Vec<(String, String)>,
) -> (
    Vec<(String, lb_announce_bgp::session::PeerConfig)>,
    Vec<String>,
) {
    let me = config.node(node);
    let mut sessions = Vec::new();
    let mut names = Vec::new();
    for p in lb_core::plan::peers_of(config, &me) {
        match lb_announce_bgp::announcer::peer_config(p, router_id, config.password_for(p)) {
            Ok(c) => {
                names.push(p.name.clone());
                sessions.push((p.name.clone(), c));
            }
            Err(why) => {
                tracing::warn!(peer = %p.name, "skipped: {why}");
                skipped.push((p.name.clone(), why));
            }
        }
    }
    (sessions, names)
}
