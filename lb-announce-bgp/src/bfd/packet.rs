//! The BFD Control packet (RFC 5880 §4.1), without authentication (a packet with the A bit is
//! refused: no BFDProfile field configures authentication).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```

use std::fmt;

/// The length of a Control packet without authentication.
pub const LEN: usize = 24;

/// A session state (RFC 5880 §4.1 "Sta").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Held down administratively.
    AdminDown,
    /// Down, or not yet up.
    Down,
    /// The remote side is heard and hears us, not yet confirmed.
    Init,
    /// Up.
    Up,
}

impl State {
    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// Why the session last left Up (RFC 5880 §4.1 "Diag").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    /// No diagnostic.
    None,
    /// Control Detection Time Expired.
    Expired,
    /// Echo Function Failed.
    EchoFailed,
    /// Neighbor Signaled Session Down.
    NeighborDown,
    /// Forwarding Plane Reset.
    ForwardingReset,
    /// Path Down.
    PathDown,
    /// Concatenated Path Down.
    ConcatenatedDown,
    /// Administratively Down.
    AdminDown,
    /// Reverse Concatenated Path Down.
    ReverseConcatenatedDown,
    /// A code RFC 5880 reserves.
    Reserved(u8),
}

impl Diag {
    fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::Expired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedDown => 8,
            Diag::Reserved(c) => c & 0x1f,
        }
    }

    fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::Expired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedDown,
            c => Diag::Reserved(c),
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diag::None => f.write_str("none"),
            Diag::Expired => f.write_str("control detection time expired"),
            Diag::EchoFailed => f.write_str("echo function failed"),
            Diag::NeighborDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedDown => f.write_str("concatenated path down"),
            Diag::AdminDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedDown => f.write_str("reverse concatenated path down"),
            Diag::Reserved(c) => write!(f, "reserved diagnostic {c}"),
        }
    }
}

/// A Control packet. Intervals are in microseconds, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    /// Why the sender's session last went down.
    pub diag: Diag,
    /// The sender's state.
    pub state: State,
    /// P: the sender asks for a Final (a parameter change).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_independent: bool,
    /// D: the sender wants demand mode.
    pub demand: bool,
    /// Detection time multiplier.
    pub detect_mult: u8,
    /// The sender's discriminator (never 0).
    pub my_discr: u32,
    /// The receiver's discriminator as the sender knows it (0 until it does).
    pub your_discr: u32,
    /// The least interval at which the sender wants to send.
    pub desired_min_tx: u32,
    /// The least interval at which the sender can receive.
    pub required_min_rx: u32,
    /// The least interval between echo packets the sender can take (0: no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received packet was dropped (RFC 5880 §6.8.6, the checks before any session is
/// looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a Control packet, or than its Length field says.
    #[error("BFD: truncated ({got} bytes, {need} needed)")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the packet needs.
        need: usize,
    },
    /// Not version 1.
    #[error("BFD: version {0}, only 1 exists")]
    Version(u8),
    /// The Length field is below 24 (26 with authentication).
    #[error("BFD: length field {0} is too small")]
    Length(u8),
    /// Detect Mult is zero.
    #[error("BFD: detect multiplier 0")]
    DetectMult,
    /// The Multipoint bit is set.
    #[error("BFD: multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("BFD: my discriminator 0")]
    MyDiscr,
    /// Authentication is present (not configured on any session).
    #[error("BFD: authenticated packet, no session uses authentication")]
    Authenticated,
}

impl ControlPacket {
    /// The packet on the wire.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | self.diag.code();
        b[1] = (self.state.bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.control_independent) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }

    /// Reads a packet, with the checks RFC 5880 §6.8.6 makes before a session is selected.
    pub fn decode(b: &[u8]) -> Result<ControlPacket, DecodeError> {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b.len() < LEN {
            return Err(DecodeError::Truncated {
                got: b.len(),
                need: LEN,
            });
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(DecodeError::Version(version));
        }
        let auth = b[1] & 0x04 != 0;
        let length = b[3];
        if usize::from(length) < LEN + if auth { 2 } else { 0 } {
            return Err(DecodeError::Length(length));
        }
        if usize::from(length) > b.len() {
            return Err(DecodeError::Truncated {
                got: b.len(),
                need: usize::from(length),
            });
        }
        if b[2] == 0 {
            return Err(DecodeError::DetectMult);
        }
        if b[1] & 0x01 != 0 {
            return Err(DecodeError::Multipoint);
        }
        if word(4) == 0 {
            return Err(DecodeError::MyDiscr);
        }
        if auth {
            return Err(DecodeError::Authenticated);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(b[0]),
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            final_: b[1] & 0x10 != 0,
            control_independent: b[1] & 0x08 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_discr: word(4),
            your_discr: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from FRR 8.4 bfdd (`tcpdump -x` in a namespace, TTL 255, from port 49152):
    /// Down, diag 0, multiplier 3, my discriminator 0xaf17f2de, yours 0, both intervals one
    /// second (as RFC 5880 §6.8.3 asks while not Up), echo 50 ms.
    const FRR_DOWN: [u8; 24] = [
        0x20, 0x40, 0x03, 0x18, 0xaf, 0x17, 0xf2, 0xde, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42,
        0x40, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0xc3, 0x50,
    ];

    #[test]
    fn a_packet_from_frr_reads_and_writes_back_the_same() {
        let p = ControlPacket::decode(&FRR_DOWN).unwrap();
        assert_eq!(p.state, State::Down);
        assert_eq!(p.diag, Diag::None);
        assert_eq!(p.detect_mult, 3);
        assert_eq!(p.my_discr, 0xaf17_f2de);
        assert_eq!(p.your_discr, 0);
        assert_eq!(p.desired_min_tx, 1_000_000);
        assert_eq!(p.required_min_rx, 1_000_000);
        assert_eq!(p.required_min_echo_rx, 50_000);
        assert_eq!(p.encode(), FRR_DOWN);
    }

    #[test]
    fn every_flag_and_state_survives_a_round_trip() {
        for state in [State::AdminDown, State::Down, State::Init, State::Up] {
            for bits in 0..16u8 {
                let p = ControlPacket {
                    diag: Diag::PathDown,
                    state,
                    poll: bits & 1 != 0,
                    final_: bits & 2 != 0,
                    control_independent: bits & 4 != 0,
                    demand: bits & 8 != 0,
                    detect_mult: 5,
                    my_discr: 7,
                    your_discr: 9,
                    desired_min_tx: 50_000,
                    required_min_rx: 60_000,
                    required_min_echo_rx: 0,
                };
                assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
            }
        }
    }

    #[test]
    fn the_rfc_5880_reception_checks_drop_bad_packets() {
        let bad = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = FRR_DOWN;
            f(&mut b);
            ControlPacket::decode(&b).unwrap_err()
        };
        assert_eq!(bad(&|b| b[0] = 0x40), DecodeError::Version(2));
        assert_eq!(bad(&|b| b[3] = 20), DecodeError::Length(20));
        assert_eq!(
            bad(&|b| b[3] = 30),
            DecodeError::Truncated { got: 24, need: 30 }
        );
        assert_eq!(bad(&|b| b[2] = 0), DecodeError::DetectMult);
        assert_eq!(bad(&|b| b[1] |= 1), DecodeError::Multipoint);
        assert_eq!(bad(&|b| b[4..8].fill(0)), DecodeError::MyDiscr);
        assert_eq!(
            bad(&|b| {
                b[1] |= 4;
                b[3] = 24;
            }),
            DecodeError::Length(24)
        );
        assert_eq!(
            ControlPacket::decode(&FRR_DOWN[..10]),
            Err(DecodeError::Truncated { got: 10, need: 24 })
        );
    }
}
