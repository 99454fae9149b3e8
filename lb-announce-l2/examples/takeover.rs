//! One node takes over many addresses at once, as after its peer died: prints the wall-clock
//! time of the decision (just before `set`) and of `set`'s return (the first gratuitous round
//! sent), in nanoseconds since the epoch, then keeps answering for a moment; then times one
//! more address coming and going among them, as a change and as a whole set (median of 20, in
//! microseconds), and withdraws.
//! `benches/l2-takeover.sh` runs it in a namespace and times the frames a capture sees.
//!
//! `sudo cargo run --release -p lb-announce-l2 --example takeover -- eth0 10000`
//!
//! The addresses: 192.0.2.1–254, 198.51.100.1–254 and 203.0.113.1–254 (ARP), then
//! 2001:db8:1::1 onwards (unsolicited NAs) up to the count: documentation prefixes only.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_announce_l2::L2Announcer;
use lb_announce_l2::announcer::Config;
use lb_core::plan::Interfaces;

fn addresses(n: usize) -> Vec<IpAddr> {
    let v4 = [[192u8, 0, 2], [198, 51, 100], [203, 0, 113]]
        .into_iter()
        .flat_map(|[a, b, c]| (1..=254u8).map(move |d| IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
    let v6 = (1..).map(|i: u128| {
        IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_0001_0000_0000_0000_0000_0000u128 + i,
        ))
    });
    v4.chain(v6).take(n).collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(interface), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: takeover INTERFACE COUNT".into());
    };
    let n: usize = n.parse()?;
    let mut config = Config::default();
    config.gratuitous_repeats = 0;
    let announcer = L2Announcer::start(config)?;
    let scope = Interfaces::Only([interface].into());
    let desired: BTreeMap<IpAddr, Interfaces> = addresses(n)
        .into_iter()
        .map(|ip| (ip, scope.clone()))
        .collect();
    // Let the announcer open the interface first, as a running node has.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handed = desired.clone();
    let decided = now_ns();
    announcer.set(handed).await?;
    let sent = now_ns();
    println!("decision {decided}");
    println!("first-round-sent {sent}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then one more address comes and goes among the N, as a change (`update`) and as a whole
    // set, in turn: the time each call takes to return (the address answered, its first
    // gratuitous frame sent; or no longer answered).
    println!("changes-start {}", now_ns());
    let extra = addresses(n + 1)[n];
    let mut plus = desired.clone();
    plus.insert(extra, scope.clone());
    let mut change = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        announcer.update(vec![(extra, Some(scope.clone()))]).await?;
        announcer.update(vec![(extra, None)]).await?;
        change.push(t.elapsed() / 2);
        let t = std::time::Instant::now();
        announcer.set(plus.clone()).await?;
        announcer.set(desired.clone()).await?;
        whole.push(t.elapsed() / 2);
    }
    change.sort();
    whole.sort();
    println!("change-one-us {}", change[change.len() / 2].as_micros());
    println!("whole-one-us {}", whole[whole.len() / 2].as_micros());
    announcer.shutdown().await;
    Ok(())
}
