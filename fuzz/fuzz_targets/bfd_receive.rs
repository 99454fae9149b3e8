//! Any bytes as a BFD Control packet, then fed to a session in every state: decoding never
//! panics and a decoded packet re-encodes to the same bytes' meaning; the state machine never
//! panics, never sends P and F together, and never advertises a zero discriminator.

#![no_main]

use std::time::Duration;

use lb_announce_bgp::bfd::fsm::{Config, Machine, Output};
use lb_announce_bgp::bfd::packet::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&clock, rest)) = data.split_first() else {
        return;
    };
    let Ok(p) = ControlPacket::decode(rest) else {
        return;
    };
    assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
    let ms = Duration::from_millis(1);
    let mut m = Machine::new(Config::new(50 * ms, 50 * ms, 3), 0x1111, Duration::ZERO);
    let mut now = Duration::ZERO;
    // The same packet, addressed to us, at the fuzzer's pace: through Down, Init and Up.
    let mut q = p;
    q.your_discr = if p.your_discr == 0 { 0 } else { 0x1111 };
    for step in 0..8u32 {
        now += ms * (u32::from(clock) + 1) * step;
        let mut out = m.receive(&q, now);
        out.extend(m.tick(now.max(m.deadline().min(now + Duration::from_secs(5)))));
        for o in out {
            if let Output::Send(s) = o {
                assert!(!(s.poll && s.final_));
                assert_ne!(s.my_discr, 0);
                assert!(ControlPacket::decode(&s.encode()).is_ok());
            }
        }
    }
});
