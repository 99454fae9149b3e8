//! Announces one address on one interface with the layer 2 announcer, the way an operator
//! embedding this crate would: the kernel of this host must deliver the address (put it on
//! `lo`, with `net.ipv4.conf.all.arp_ignore=1` so that only the announcer answers ARP for it).
//! Runs until SIGTERM or Ctrl-C, then withdraws.
//!
//! `sudo cargo run -p lb-announce-l2 --example announce_vip -- eth0 192.0.2.100`
//!
//! Needs CAP_NET_RAW. A namespace test (tests/netns.rs) runs it and pings the address.

use std::net::IpAddr;

use lb_announce_l2::L2Announcer;
use lb_announce_l2::announcer::Config;
use lb_core::Announcer;
use lb_core::objects::ServiceKey;
use lb_core::plan::{Announcement, How, Interfaces};
use tokio::signal::unix::{SignalKind, signal};

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(interface), Some(ip)) = (args.next(), args.next()) else {
        return Err("usage: announce_vip INTERFACE ADDRESS".into());
    };
    let ip: IpAddr = ip.parse()?;
    let announcer = L2Announcer::start(Config::default())?;
    let vip = Announcement {
        service: ServiceKey::new("example", "vip"),
        ip,
        how: How::Layer2 {
            interfaces: Interfaces::Only([interface.clone()].into()),
        },
    };
    // The desired set: the announcer answers ARP/NDP for it and sends gratuitous frames.
    announcer.announce(&[vip]).await?;
    println!("announcing {ip} on {interface}");
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Withdrawn: no more answers.
    announcer.shutdown().await;
    println!("withdrawn");
    Ok(())
}
