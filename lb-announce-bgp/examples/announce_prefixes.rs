//! Announces prefixes to one BGP peer with `BgpAnnouncer`, the way an operator embedding this
//! crate would: the peer is described as a MetalLB `BGPPeer` (here built in code), the routes
//! as lb-core announcements. Prints `established` when the session is up, withdraws with a
//! Cease on SIGTERM or Ctrl-C.
//!
//! `cargo run -p lb-announce-bgp --example announce_prefixes -- 192.0.2.1 64512 64500 203.0.113.7/32`
//!
//! A namespace test (tests/interop.rs) runs it against BIRD.

use std::net::Ipv4Addr;
use std::time::Duration;

use lb_announce_bgp::BgpAnnouncer;
use lb_announce_bgp::announcer::peer_config;
use lb_core::Announcer;
use lb_core::objects::ServiceKey;
use lb_core::plan::{Announcement, BgpRoute, How};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [peer, my_as, peer_as, prefixes @ ..] = args.as_slice() else {
        return Err("usage: announce_prefixes PEER_ADDRESS MY_AS PEER_AS PREFIX...".into());
    };
    let loaded = lb_core::config::load_values([json!({
        "apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
        "metadata": {"name": "router", "namespace": "metallb-system"},
        "spec": {"myASN": my_as.parse::<u32>()?, "peerASN": peer_as.parse::<u32>()?,
                 "peerAddress": peer, "holdTime": "9s"}})]);
    if !loaded.is_valid() {
        return Err(format!("{:?}", loaded.errors).into());
    }
    let router_id = Ipv4Addr::new(192, 0, 2, 10);
    let session = peer_config(&loaded.config.peers["router"], router_id, None)?;
    let announcer = BgpAnnouncer::start([("router".to_string(), session)]);
    let announcements = prefixes
        .iter()
        .map(|p| -> Result<Announcement, Box<dyn std::error::Error>> {
            let prefix: ipnetwork::IpNetwork = p.parse()?;
            Ok(Announcement {
                service: ServiceKey::new("example", p.replace('/', "-")),
                ip: prefix.ip(),
                how: How::Bgp {
                    routes: vec![BgpRoute {
                        prefix,
                        peers: vec!["router".into()],
                        local_pref: None,
                        communities: Vec::new(),
                    }],
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    announcer.announce(&announcements).await?;
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let mut said = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let up = announcer.statuses().get("router").is_some_and(|s| s.established_since.is_some());
                if up && !said {
                    println!("established: {} prefix(es) to {peer}", prefixes.len());
                    said = true;
                }
            }
        }
    }
    announcer.stop(Duration::from_secs(2)).await;
    println!("withdrawn");
    Ok(())
}
