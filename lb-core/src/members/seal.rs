//! Sealed membership datagrams: every datagram between nodes is authenticated and encrypted
//! with a shared key (ChaCha20-Poly1305), names its sender, and carries a counter that only
//! grows, so that a stranger can neither forge nor replay one.
//!
//! ```text
//!  0       4         8              16               24     25
//!  +-------+---------+--------------+----------------+------+-----------+--------------------+
//!  | "LBm" | key id  | epoch (u64)  | counter (u64)  | nlen | name      | ciphertext ‖ tag16 |
//!  |  1    | 4 bytes | sender's run | per run, grows |  u8  | nlen bytes|                    |
//!  +-------+---------+--------------+----------------+------+-----------+--------------------+
//!  └──────────────── additional authenticated data (the whole header) ─┘
//! ```
//!
//! - **Keys.** A key is text, as in MetalLB's `memberlist` Secret (`secretkey`). The cipher key
//!   of one sender's run is HKDF-SHA256(key text) expanded with (name, epoch), so the nonce (the
//!   counter) is never reused under one cipher key, whatever the number of nodes. The key id
//!   (4 bytes of a hash of the key) lets a receiver pick the key at once and say which key a
//!   stranger's datagram was sealed with; it reveals nothing about the key.
//! - **Rotation.** A [`Keyring`] holds several keys: the first seals, every one opens.
//! - **Replay.** A receiver remembers, per sender name, the newest run (epoch) and a 64-entry
//!   window below the highest counter. A datagram of an older run, below the window, or seen
//!   already is refused. State changes only after a datagram opened, so forged headers move
//!   nothing.
//!
//! Pure: no IO, no clock; the epoch is the caller's.

use std::collections::HashMap;
use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hkdf};

/// The first bytes of a sealed membership (SWIM) datagram (format version 1).
pub const MAGIC: [u8; 4] = *b"LBm\x01";
/// The first bytes of a sealed data datagram (what the nodes tell each other beside SWIM,
/// such as the allocation ledger); sealed and checked the same way.
pub const DATA_MAGIC: [u8; 4] = *b"LBd\x01";

/// What a sealed datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A SWIM message.
    Membership,
    /// Data for the layer above the membership.
    Data,
}

impl Kind {
    fn magic(self) -> [u8; 4] {
        match self {
            Kind::Membership => MAGIC,
            Kind::Data => DATA_MAGIC,
        }
    }
}
/// The first bytes of a key hint: "I could not open your datagram; these are my key ids".
pub const HINT_MAGIC: [u8; 4] = *b"LBk\x01";
/// The shortest key accepted, in bytes of text.
pub const KEY_MIN_LEN: usize = 16;
/// Bytes a sealed datagram adds to its payload, besides the sender's name.
pub const OVERHEAD: usize = 25 + TAG_LEN;
const TAG_LEN: usize = 16;
const HEADER_FIXED: usize = 25;
/// Counters at most this far below a sender's highest are still accepted once (reordering).
const WINDOW: u64 = 64;
/// Senders remembered for replay protection (and cipher keys cached); the least recently heard
/// is forgotten past this.
const MAX_SENDERS: usize = 4096;

/// A key id: the first 4 bytes of SHA-256("lb membership key id" ‖ key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One shared key.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    prk: hkdf::Prk,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    /// A key from its text (at least [`KEY_MIN_LEN`] bytes).
    pub fn new(text: &str) -> Result<Key, KeyError> {
        if text.len() < KEY_MIN_LEN {
            return Err(KeyError::TooShort {
                index: 0,
                len: text.len(),
            });
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"lb membership key id");
        ctx.update(text.as_bytes());
        let d = ctx.finish();
        let mut id = [0u8; 4];
        id.copy_from_slice(&d.as_ref()[..4]);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"lb membership v1").extract(text.as_bytes());
        Ok(Key { id: KeyId(id), prk })
    }

    /// The key's id (a hash of it, safe to show).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The cipher key of one sender's run.
    fn cipher(&self, name: &[u8], epoch: u64) -> Option<LessSafeKey> {
        let epoch = epoch.to_be_bytes();
        let info = [b"datagram".as_slice(), name, &epoch];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

/// Why a key file or Secret was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file or Secret holds no key.
    #[error("it holds no key")]
    Empty,
    /// A key is too short to be safe.
    #[error(
        "key {} is {len} bytes long; at least {KEY_MIN_LEN} are needed (make one with `openssl rand -base64 128`)",
        index + 1
    )]
    TooShort {
        /// Its position, from 0.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// The keys a node holds: the first seals, every one opens.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// Keys from text in MetalLB's format: each key as in the `memberlist` Secret's `secretkey`
    /// field (`openssl rand -base64 128` spans several lines, which stay part of the key);
    /// several keys are separated by an empty line, the sending key first.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                if !current.is_empty() {
                    blocks.push(current.join("\n"));
                    current.clear();
                }
            } else {
                current.push(line);
            }
        }
        if !current.is_empty() {
            blocks.push(current.join("\n"));
        }
        let keys = blocks
            .iter()
            .enumerate()
            .map(|(index, b)| {
                Key::new(b.trim()).map_err(|e| match e {
                    KeyError::TooShort { len, .. } => KeyError::TooShort { index, len },
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(keys)
    }

    /// A keyring of `keys`, the first sealing.
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The ids of the keys, the sending key first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(Key::id).collect()
    }

    fn sending(&self) -> &Key {
        // `new` refuses an empty ring.
        &self.keys[0]
    }

    /// Whether the ring holds key `id`.
    pub fn holds(&self, id: KeyId) -> bool {
        self.find(id).is_some()
    }

    fn find(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// Why a datagram was dropped; `label` is the metric's `reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// Too short, or not a sealed datagram at all (random bytes, another protocol).
    #[error("not a sealed membership datagram")]
    Malformed,
    /// A plain (unsealed) membership datagram, from a node run with `--insecure-membership`.
    #[error("an unsealed datagram (the sender runs without a key)")]
    Unsealed,
    /// Sealed with a key this node does not hold.
    #[error("sealed with key {0}, which this node does not hold")]
    UnknownKey(KeyId),
    /// The key id is ours but the datagram does not open: forged or damaged.
    #[error("does not open with key {0}: forged or damaged")]
    Unauthentic(KeyId),
    /// Opened, but seen before or older than what the sender sent since.
    #[error("replayed or stale (sender {name}, run {epoch}, counter {counter})")]
    Replay {
        /// The sender.
        name: String,
        /// The sender's run.
        epoch: u64,
        /// The datagram's counter.
        counter: u64,
    },
    /// Opened, but the sender is not a known node.
    #[error("sender {0:?} is not a known node")]
    UnknownNode(String),
    /// Opened, but the sender speaks from an address that is not its own, or claims another
    /// member's name or address.
    #[error("{0}")]
    Identity(String),
    /// A datagram of ours reflected back (a loop, or a replay of our own).
    #[error("a datagram from this node itself")]
    Ourselves,
    /// A well-formed plain datagram the membership could not use.
    #[error("undecodable membership message")]
    Undecodable,
}

impl Reject {
    /// The `reason` label of `lb_members_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Unsealed => "unsealed",
            Reject::UnknownKey(_) => "unknown_key",
            Reject::Unauthentic(_) => "unauthentic",
            Reject::Replay { .. } => "replay",
            Reject::UnknownNode(_) => "unknown_node",
            Reject::Identity(_) => "identity",
            Reject::Ourselves => "ourselves",
            Reject::Undecodable => "undecodable",
        }
    }

    /// Every label, for metrics that show zeros too.
    pub const LABELS: [&'static str; 9] = [
        "malformed",
        "unsealed",
        "unknown_key",
        "unauthentic",
        "replay",
        "unknown_node",
        "identity",
        "ourselves",
        "undecodable",
    ];
}

/// Seals this node's datagrams: one run (epoch) of one node name.
#[derive(Debug)]
pub struct Sealer {
    name: String,
    epoch: u64,
    counter: u64,
    /// The cipher keys of this run, per key id.
    ciphers: Vec<(KeyId, LessSafeKey)>,
}

impl Sealer {
    /// `epoch` must grow from one run of `name` to the next (the start time in milliseconds).
    /// Names are at most 253 bytes (a DNS name), as Kubernetes node names.
    pub fn new(name: &str, epoch: u64) -> Sealer {
        let mut name = name.to_string();
        while name.len() > 253 {
            name.pop();
        }
        Sealer {
            name,
            epoch,
            counter: 0,
            ciphers: Vec::new(),
        }
    }

    /// `payload`, sealed with the keyring's sending key.
    pub fn seal(&mut self, keys: &Keyring, payload: &[u8]) -> Vec<u8> {
        self.seal_with(keys, None, Kind::Membership, payload)
    }

    /// `payload`, sealed with key `prefer` if the ring holds it (the key a peer that has not
    /// rotated yet can open), else with the sending key.
    pub fn seal_with(
        &mut self,
        keys: &Keyring,
        prefer: Option<KeyId>,
        kind: Kind,
        payload: &[u8],
    ) -> Vec<u8> {
        let key = prefer
            .and_then(|id| keys.find(id))
            .unwrap_or_else(|| keys.sending());
        if !self.ciphers.iter().any(|(id, _)| *id == key.id) {
            let Some(c) = key.cipher(self.name.as_bytes(), self.epoch) else {
                return Vec::new();
            };
            // A ring holds a few keys; a run sees few rings.
            if self.ciphers.len() >= 8 {
                self.ciphers.remove(0);
            }
            self.ciphers.push((key.id, c));
        }
        self.counter = self.counter.saturating_add(1);
        let mut out = Vec::with_capacity(HEADER_FIXED + self.name.len() + payload.len() + TAG_LEN);
        out.extend_from_slice(&kind.magic());
        out.extend_from_slice(&key.id.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        let header_len = out.len();
        out.extend_from_slice(payload);
        let Some((_, cipher)) = self.ciphers.iter().find(|(id, _)| *id == key.id) else {
            return Vec::new();
        };
        let (header, body) = out.split_at_mut(header_len);
        match cipher.seal_in_place_separate_tag(nonce(self.counter), Aad::from(&*header), body) {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            // Only for payloads over 256 GiB.
            Err(_) => out.clear(),
        }
        out
    }

    /// The name this sealer sends as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run this sealer sends as.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A datagram that opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// What the datagram carries.
    pub kind: Kind,
    /// The sender's name.
    pub sender: String,
    /// The key it was sealed with.
    pub key: KeyId,
    /// The sender's run.
    pub epoch: u64,
    /// The sender's counter (grows with each datagram of the run).
    pub counter: u64,
    /// The opened contents.
    pub payload: Vec<u8>,
}

/// The newest run of one sender and which of its recent counters were seen.
#[derive(Clone, Debug)]
struct Window {
    epoch: u64,
    highest: u64,
    /// Bit i: counter `highest - i` was seen.
    seen: u64,
    /// When this sender was last heard (an `open` sequence number), for forgetting.
    heard: u64,
}

impl Window {
    fn admits(&self, epoch: u64, counter: u64) -> bool {
        if epoch != self.epoch {
            return epoch > self.epoch;
        }
        if counter > self.highest {
            return true;
        }
        let back = self.highest - counter;
        back < WINDOW && self.seen & (1u64 << back) == 0
    }

    fn record(&mut self, epoch: u64, counter: u64) {
        if epoch > self.epoch {
            *self = Window {
                epoch,
                highest: counter,
                seen: 1,
                heard: self.heard,
            };
        } else if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.highest = counter;
        } else if let Some(bit) = u32::try_from(self.highest - counter)
            .ok()
            .and_then(|back| 1u64.checked_shl(back))
        {
            // Below the window (impossible after `admits`): nothing to remember.
            self.seen |= bit;
        }
    }
}

/// Opens other nodes' datagrams and refuses replays.
#[derive(Default)]
pub struct Opener {
    windows: HashMap<String, Window>,
    ciphers: HashMap<(KeyId, String, u64), LessSafeKey>,
    opened: u64,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("senders", &self.windows.len())
            .finish()
    }
}

/// The header fields of a sealed datagram.
struct Header<'a> {
    kind: Kind,
    key: KeyId,
    epoch: u64,
    counter: u64,
    name: &'a str,
    len: usize,
}

fn header(data: &[u8]) -> Result<Header<'_>, Reject> {
    if data.len() < HEADER_FIXED + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let kind = if data[..4] == MAGIC {
        Kind::Membership
    } else if data[..4] == DATA_MAGIC {
        Kind::Data
    } else {
        return Err(Reject::Malformed);
    };
    let be = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[r]);
        u64::from_be_bytes(b)
    };
    let nlen = usize::from(data[24]);
    let len = HEADER_FIXED + nlen;
    if nlen == 0 || data.len() < len + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let name = std::str::from_utf8(&data[HEADER_FIXED..len]).map_err(|_| Reject::Malformed)?;
    Ok(Header {
        kind,
        key: KeyId([data[4], data[5], data[6], data[7]]),
        epoch: be(8..16),
        counter: be(16..24),
        name,
        len,
    })
}

impl Opener {
    /// An opener that has seen nothing yet.
    pub fn new() -> Opener {
        Opener::default()
    }

    /// Opens `data` with `keys` and checks it against the replay window; nothing is remembered
    /// until [`Opener::record`].
    pub fn open(&mut self, keys: &Keyring, data: &[u8]) -> Result<Opened, Reject> {
        let h = header(data)?;
        let key = keys.find(h.key).ok_or(Reject::UnknownKey(h.key))?;
        let replay = || Reject::Replay {
            name: h.name.to_string(),
            epoch: h.epoch,
            counter: h.counter,
        };
        if self
            .windows
            .get(h.name)
            .is_some_and(|w| !w.admits(h.epoch, h.counter))
        {
            return Err(replay());
        }
        let slot = (h.key, h.name.to_string(), h.epoch);
        let derived;
        let cipher = match self.ciphers.get(&slot) {
            Some(c) => c,
            None => {
                derived = key
                    .cipher(h.name.as_bytes(), h.epoch)
                    .ok_or(Reject::Unauthentic(h.key))?;
                &derived
            }
        };
        let (aad, body) = data.split_at(h.len);
        let mut buf = body.to_vec();
        let plain_len = cipher
            .open_in_place(nonce(h.counter), Aad::from(aad), &mut buf)
            .map_err(|_| Reject::Unauthentic(h.key))?
            .len();
        buf.truncate(plain_len);
        if !self.ciphers.contains_key(&slot) {
            if self.ciphers.len() >= MAX_SENDERS {
                self.ciphers.clear();
            }
            if let Some(c) = key.cipher(h.name.as_bytes(), h.epoch) {
                self.ciphers.insert(slot, c);
            }
        }
        Ok(Opened {
            kind: h.kind,
            sender: h.name.to_string(),
            key: h.key,
            epoch: h.epoch,
            counter: h.counter,
            payload: buf,
        })
    }

    /// Remembers a datagram that opened and that the caller accepted (its sender checked), so
    /// that the same datagram, or an older one, is refused from now on.
    pub fn record(&mut self, o: &Opened) {
        self.opened += 1;
        if !self.windows.contains_key(&o.sender) && self.windows.len() >= MAX_SENDERS {
            self.forget_least_recent();
        }
        let heard = self.opened;
        let w = self
            .windows
            .entry(o.sender.clone())
            .or_insert_with(|| Window {
                epoch: o.epoch,
                highest: o.counter,
                seen: 0,
                heard,
            });
        w.record(o.epoch, o.counter);
        w.heard = heard;
    }

    fn forget_least_recent(&mut self) {
        if let Some(name) = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.heard)
            .map(|(n, _)| n.clone())
        {
            self.windows.remove(&name);
        }
    }
}

/// A key hint: sent (rate-limited by the caller) to a node whose datagram was sealed with a key
/// we do not hold, so that it can say why it is kept out. It changes no state anywhere.
/// A node without keys sends a hint with no key id.
pub fn hint(keys: Option<&Keyring>) -> Vec<u8> {
    let mut out = HINT_MAGIC.to_vec();
    let ids = keys.map(Keyring::ids).unwrap_or_default();
    out.push(ids.len().min(255) as u8);
    for id in ids.iter().take(255) {
        out.extend_from_slice(&id.0);
    }
    out
}

/// The key ids in a hint, if `data` is one.
pub fn read_hint(data: &[u8]) -> Option<Vec<KeyId>> {
    let rest = data.strip_prefix(&HINT_MAGIC)?;
    let (&n, ids) = rest.split_first()?;
    if ids.len() != usize::from(n) * 4 {
        return None;
    }
    Some(
        ids.chunks_exact(4)
            .map(|c| KeyId([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "first key, long enough to be a key";
    const K2: &str = "second key, also long enough";

    /// Opens and, if it opened, records.
    fn open(o: &mut Opener, keys: &Keyring, d: &[u8]) -> Result<Opened, Reject> {
        let r = o.open(keys, d)?;
        o.record(&r);
        Ok(r)
    }

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::new(keys.iter().map(|k| Key::new(k).expect("key")).collect()).expect("ring")
    }

    #[test]
    fn a_sealed_datagram_opens_with_the_same_key_and_names_its_sender() {
        let keys = ring(&[K1]);
        let mut s = Sealer::new("node1", 7);
        let d = s.seal(&keys, b"hello");
        let o = Opener::new().open(&keys, &d).expect("opens");
        assert_eq!(
            o,
            Opened {
                kind: Kind::Membership,
                sender: "node1".into(),
                key: keys.ids()[0],
                epoch: 7,
                counter: 1,
                payload: b"hello".to_vec()
            }
        );
        assert!(
            !d.windows(5).any(|w| w == b"hello"),
            "the payload is encrypted"
        );
    }

    #[test]
    fn a_datagram_sealed_with_another_key_is_refused_naming_the_key() {
        let mut s = Sealer::new("node1", 7);
        let d = s.seal(&ring(&[K2]), b"hello");
        let theirs = ring(&[K2]).ids()[0];
        assert_eq!(
            Opener::new().open(&ring(&[K1]), &d),
            Err(Reject::UnknownKey(theirs))
        );
    }

    #[test]
    fn every_key_of_the_ring_opens_and_the_first_seals() {
        let mut s = Sealer::new("node1", 7);
        let new_old = ring(&[K2, K1]);
        let d = s.seal(&new_old, b"x");
        assert!(Opener::new().open(&ring(&[K2]), &d).is_ok());
        assert!(Opener::new().open(&ring(&[K1]), &d).is_err());
        let d = Sealer::new("node2", 1).seal(&ring(&[K1]), b"y");
        assert!(Opener::new().open(&new_old, &d).is_ok());
    }

    #[test]
    fn any_changed_byte_makes_the_datagram_unauthentic_or_malformed() {
        let keys = ring(&[K1]);
        let d = Sealer::new("node1", 7).seal(&keys, b"payload bytes");
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x01;
            let r = Opener::new().open(&keys, &bad);
            assert!(r.is_err(), "byte {i} flipped still opens");
        }
    }

    #[test]
    fn a_replayed_datagram_is_refused_and_reordering_within_the_window_is_not() {
        let keys = ring(&[K1]);
        let mut s = Sealer::new("node1", 7);
        let ds: Vec<Vec<u8>> = (0..100).map(|i| s.seal(&keys, &[i])).collect();
        let mut o = Opener::new();
        // 0..90 arrive, then 95, then the late 90..95 (within the window), then 95..100.
        for d in &ds[..90] {
            open(&mut o, &keys, d).expect("fresh");
        }
        open(&mut o, &keys, &ds[95]).expect("fresh");
        for d in &ds[90..95] {
            open(&mut o, &keys, d).expect("late but unseen");
        }
        for d in &ds[96..] {
            open(&mut o, &keys, d).expect("fresh");
        }
        for i in [0, 10, 50, 90, 95, 99] {
            assert!(
                matches!(open(&mut o, &keys, &ds[i]), Err(Reject::Replay { .. })),
                "replay of {i} accepted"
            );
        }
    }

    #[test]
    fn a_datagram_of_an_older_run_is_refused_once_a_newer_run_was_heard() {
        let keys = ring(&[K1]);
        let old = Sealer::new("node1", 7).seal(&keys, b"old run");
        let new = Sealer::new("node1", 8).seal(&keys, b"new run");
        let mut o = Opener::new();
        open(&mut o, &keys, &new).expect("new run");
        assert!(matches!(
            open(&mut o, &keys, &old),
            Err(Reject::Replay { .. })
        ));
    }

    #[test]
    fn a_forged_header_moves_no_replay_state() {
        let keys = ring(&[K1]);
        let mut s = Sealer::new("node1", 7);
        let d1 = s.seal(&keys, b"1");
        // A forged datagram claiming a far newer run of node1 does not open...
        let mut forged = Sealer::new("node1", 9_999).seal(&ring(&[K2]), b"x");
        forged[4..8].copy_from_slice(&keys.ids()[0].0);
        let mut o = Opener::new();
        assert!(matches!(
            open(&mut o, &keys, &forged),
            Err(Reject::Unauthentic(_))
        ));
        // ...and node1's genuine datagrams still do.
        open(&mut o, &keys, &d1).expect("genuine");
    }

    #[test]
    fn random_bytes_are_malformed() {
        let keys = ring(&[K1]);
        for junk in [&b""[..], b"LBm\x01", &[0u8; 100], &[0xff; 1400]] {
            assert_eq!(Opener::new().open(&keys, junk), Err(Reject::Malformed));
        }
    }

    #[test]
    fn key_text_parses_as_metallb_writes_it_with_several_keys_apart_by_an_empty_line() {
        // `openssl rand -base64 128` spans three lines: one key.
        let metallb = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
                       BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n\
                       CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC\n";
        assert_eq!(Keyring::parse(metallb).expect("one key").ids().len(), 1);
        assert_eq!(
            Keyring::parse(metallb).expect("key").ids(),
            Keyring::parse(metallb.trim_end()).expect("key").ids(),
            "a trailing newline is not part of the key"
        );
        let two = format!("{K2}\n\n{K1}\n");
        assert_eq!(
            Keyring::parse(&two).expect("two").ids(),
            ring(&[K2, K1]).ids()
        );
        assert_eq!(Keyring::parse(" \n\n").map(|_| ()), Err(KeyError::Empty));
        assert_eq!(
            Keyring::parse(&format!("{K1}\n\nshort")).map(|_| ()),
            Err(KeyError::TooShort { index: 1, len: 5 })
        );
    }

    #[test]
    fn a_hint_carries_the_key_ids_and_nothing_else_reads_as_one() {
        let keys = ring(&[K2, K1]);
        assert_eq!(read_hint(&hint(Some(&keys))), Some(keys.ids()));
        assert_eq!(read_hint(&hint(None)), Some(vec![]));
        assert_eq!(read_hint(b"LBk\x01\x02abcd"), None);
        assert_eq!(read_hint(&Sealer::new("n", 1).seal(&keys, b"x")), None);
    }
}
