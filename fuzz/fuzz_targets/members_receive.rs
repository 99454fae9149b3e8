//! The membership receive path: any datagram, raw or sealed with the cluster's key around any
//! payload, is opened, checked and handed to SWIM without a panic; only what opens and checks
//! out is accepted.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::members::seal::{Key, Keyring, Sealer};
use lb_core::members::{Member, Swim, lan_config};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "the fuzzed cluster's key, long enough";

fn keys() -> Keyring {
    Keyring::new(vec![Key::new(KEY).expect("key")]).expect("ring")
}

fn node(name: &str, last: u8) -> Member {
    Member {
        name: name.into(),
        addr: SocketAddr::from(([192, 0, 2, last], 7946)),
        generation: 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let me = node("node1", 11);
    let mut swim = Swim::new(me, lan_config(), vec![], 1, Some(keys()));
    let from = SocketAddr::from(([192, 0, 2, 12], 7946));
    let now = Duration::from_millis(u64::from(mode));
    let before = swim.stats().accepted;
    if mode & 1 == 0 {
        // Raw bytes off the wire: nothing opens without the key.
        let _ = swim.handle_data(now, from, rest);
        assert_eq!(swim.stats().accepted, before, "raw bytes were accepted");
    } else {
        // A genuine seal around a fuzzed payload: reaches SWIM's decoder.
        let mut sealer = Sealer::new("node2", 5);
        let d = sealer.seal(&keys(), rest);
        let _ = swim.handle_data(now, from, &d);
        // The same datagram again is a replay.
        let accepted = swim.stats().accepted;
        let _ = swim.handle_data(now, from, &d);
        assert_eq!(swim.stats().accepted, accepted, "a replay was accepted");
    }
    let _ = swim.tick(now + Duration::from_secs(1));
    // No seed and no roster: no datagram can keep this node out of its own membership.
    assert!(swim.members().contains("node1"));
});
