//! An operator that hands out addresses for a resource type of its own (say, a `Tunnel`
//! custom resource), from pools it builds in code: no YAML, no Kubernetes Service. It uses
//! lb-core's allocator alone, with MetalLB's rules (lowest free address first, requested
//! addresses, sharing by key, pools chosen by name).
//!
//! Run it: `cargo run -p lb-core --example allocate`. `cargo test -p lb-core` runs its test.

use std::net::IpAddr;

use lb_core::alloc::{AllocError, Request};
use lb_core::config::Pool;
use lb_core::ip::IpRange;
use lb_core::objects::ServiceKey;
use lb_core::{Allocator, PoolAllocator};

/// What the operator decided, for printing and for the test.
#[derive(Debug, PartialEq, Eq)]
struct Decided {
    /// (tenant/tunnel, address, pool)
    given: Vec<(String, IpAddr, String)>,
    /// Why the last tunnel got nothing.
    refused: String,
    /// Addresses in use in "edge" after one tunnel was deleted.
    edge_in_use: u128,
}

fn run() -> Result<Decided, Box<dyn std::error::Error>> {
    let edge = Pool::new("edge", vec![IpRange::parse("192.0.2.8/30")?]);
    // "core" is handed out only to tunnels that ask for it by name.
    let mut core = Pool::new("core", vec![IpRange::parse("198.51.100.1-198.51.100.1")?]);
    core.auto_assign = false;
    let mut alloc = PoolAllocator::new(&[edge, core]);

    // Each tunnel is keyed like a Service: (namespace, name). The request says what it
    // wants; `simple` is one IPv4 address from any pool that admits it.
    let tunnel = |tenant: &str, name: &str| Request::simple(ServiceKey::new(tenant, name));
    let mut given = Vec::new();
    let mut give = |req: Request| -> Result<(), AllocError> {
        let a = alloc.allocate(&req)?;
        given.push((req.key.to_string(), a.ips[0], a.pool));
        Ok(())
    };
    give(tunnel("tenant-a", "north"))?;
    give(tunnel("tenant-a", "south"))?;
    // A tunnel that must come from a given pool.
    let mut pinned = tunnel("tenant-b", "backbone");
    pinned.pool = Some("core".into());
    give(pinned)?;
    // A tunnel that asks for an exact address.
    let mut exact = tunnel("tenant-b", "fixed");
    exact.requested_ips = vec!["192.0.2.11".parse()?];
    give(exact)?;
    // Two tunnels that agree to share one address (different ports, same sharing key).
    let mut web = tunnel("tenant-c", "web");
    web.sharing_key = Some("c-shared".into());
    web.ports = vec![lb_core::objects::Port::tcp(443)];
    give(web)?;
    let mut mail = tunnel("tenant-c", "mail");
    mail.sharing_key = Some("c-shared".into());
    mail.ports = vec![lb_core::objects::Port::tcp(25)];
    give(mail)?;

    // The core pool is full: the next pinned tunnel is refused, and says why.
    let mut full = tunnel("tenant-d", "backbone");
    full.pool = Some("core".into());
    let refused = match alloc.allocate(&full) {
        Ok(a) => format!("unexpectedly got {:?}", a.ips),
        Err(e) => e.to_string(),
    };

    // A tunnel is deleted: its address is free again.
    alloc.release(&ServiceKey::new("tenant-a", "north"));
    let edge_in_use = alloc.usage("edge").map_or(0, |u| u.ipv4_in_use);
    Ok(Decided {
        given,
        refused,
        edge_in_use,
    })
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d = run()?;
    for (tunnel, ip, pool) in &d.given {
        println!("{tunnel:<20} {ip:<16} from {pool}");
    }
    println!("tenant-d/backbone    refused: {}", d.refused);
    println!(
        "edge addresses in use after deleting tenant-a/north: {}",
        d.edge_in_use
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_gets_what_metallbs_rules_give() {
        let d = run().expect("the example runs");
        let ips: Vec<String> = d.given.iter().map(|(_, ip, _)| ip.to_string()).collect();
        // Lowest free first; the exact request; the pinned pool; sharing by key.
        assert_eq!(
            ips,
            [
                "192.0.2.8",
                "192.0.2.9",
                "198.51.100.1",
                "192.0.2.11",
                "192.0.2.10",
                "192.0.2.10"
            ]
        );
        assert!(d.refused.contains("core"), "{}", d.refused);
        // 192.0.2.9, .10 (shared), .11 remain.
        assert_eq!(d.edge_in_use, 3);
    }
}
