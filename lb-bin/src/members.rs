//! Membership between standalone nodes: SWIM (foca) over UDP, published as lb-core's
//! [`LeaderElector`], so that every node derives each L2 address's owner from the same live set.
//!
//! ```text
//!  UDP socket ──datagram──► Swim (foca; pure: driven with `now`) ──► datagrams to send
//!        ▲                        │  timers (due times)                     │
//!        └────────────────────────┼──────────────────────────────────────────┘
//!                                 ▼ live member names, on every change
//!                       SwimElector (LeaderElector) ──watch──► plan / announcers
//! ```
//! [`Swim`] does no IO and reads no clock: tests run whole clusters on a simulated network with
//! simulated time. [`SwimElector::start`] is the tokio edge.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use async_trait::async_trait;
use foca::{AccumulatingRuntime, Config, Foca, Identity, NoCustomBroadcast, PostcardCodec, Timer};
use futures::stream::BoxStream;
use lb_core::elect::{ElectError, LeaderElector, Membership};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One run of one node. A node that restarts, or finds itself declared down, comes back as the
/// next generation: a new identity at the same address that wins over the old one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Timings for a LAN, chosen so that a crashed node is declared down well under a second:
/// every node probes one other every `probe_period`; one that answers neither directly (within
/// `probe_rtt`) nor through others by the end of the period is suspected, and declared down
/// when it has not refuted that within `suspect_to_down_after`. A live node that is merely slow
/// (both cores busy) refutes suspicion as soon as it hears of it, well within that time.
pub fn lan_config() -> Config {
    let mut c = Config::simple();
    c.probe_period = Duration::from_millis(80);
    c.probe_rtt = Duration::from_millis(30);
    c.num_indirect_probes = NonZeroUsize::MIN.saturating_add(1);
    c.suspect_to_down_after = Duration::from_millis(120);
    c.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
    c.remove_down_after = Duration::from_secs(15);
    c.notify_down_members = true;
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN,
    });
    // After a partition the sides were declared down to each other: this heals it.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(500),
        num_members: NonZeroUsize::MIN.saturating_add(1),
    });
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(50),
        num_members: NonZeroUsize::MIN.saturating_add(2),
    });
    c
}

/// While alone, the seeds (`--join`) are asked again this often: nodes may start in any order.
const SEED_RETRY: Duration = Duration::from_millis(500);

/// The SWIM state of this node; time is a `Duration` since an arbitrary start, given by the
/// caller.
pub struct Swim {
    foca: Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>,
    rt: AccumulatingRuntime<Member>,
    /// Due timers, earliest first; `seq` keeps equal times in submission order.
    timers: BinaryHeap<Reverse<(Duration, u64, TimerSlot)>>,
    seq: u64,
    seeds: Vec<SocketAddr>,
    next_seed_try: Duration,
    /// Malformed or misdirected datagrams, dropped.
    pub dropped: u64,
}

/// A foca timer in the heap (ordered by due time and sequence only).
struct TimerSlot(Timer<Member>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl std::fmt::Debug for Swim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swim")
            .field("identity", self.foca.identity())
            .field("members", &self.members())
            .finish()
    }
}

/// A datagram to send.
pub type Datagram = (SocketAddr, Vec<u8>);

impl Swim {
    /// This node, and the addresses of the nodes to join through.
    pub fn new(me: Member, config: Config, seeds: Vec<SocketAddr>, rng_seed: u64) -> Swim {
        let seeds = seeds.into_iter().filter(|s| *s != me.addr).collect();
        Swim {
            foca: Foca::new(me, config, SmallRng::seed_from_u64(rng_seed), PostcardCodec),
            rt: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            seeds,
            next_seed_try: Duration::ZERO,
            dropped: 0,
        }
    }

    pub fn identity(&self) -> &Member {
        self.foca.identity()
    }

    /// Live node names, this one included.
    pub fn members(&self) -> BTreeSet<String> {
        self.foca
            .iter_members()
            .map(|m| m.id().name.clone())
            .chain(std::iter::once(self.foca.identity().name.clone()))
            .collect()
    }

    /// A datagram arrived.
    pub fn handle_data(&mut self, now: Duration, data: &[u8]) -> Vec<Datagram> {
        if self.foca.handle_data(data, &mut self.rt).is_err() {
            self.dropped += 1;
        }
        self.drain(now)
    }

    /// When [`Swim::tick`] must run next.
    pub fn next_due(&self) -> Duration {
        let timer = self
            .timers
            .peek()
            .map_or(Duration::MAX, |Reverse((at, _, _))| *at);
        if self.alone() {
            timer.min(self.next_seed_try)
        } else {
            timer
        }
    }

    fn alone(&self) -> bool {
        !self.seeds.is_empty() && self.foca.num_members() == 0
    }

    /// Runs the timers due at `now`, and asks the seeds again while alone.
    pub fn tick(&mut self, now: Duration) -> Vec<Datagram> {
        while let Some(Reverse((at, _, _))) = self.timers.peek()
            && *at <= now
        {
            let Some(Reverse((_, _, TimerSlot(t)))) = self.timers.pop() else {
                break;
            };
            let _ = self.foca.handle_timer(t, &mut self.rt);
        }
        if self.alone() && now >= self.next_seed_try {
            self.next_seed_try = now + SEED_RETRY;
            for s in self.seeds.clone() {
                let seed = Member {
                    name: String::new(),
                    addr: s,
                    generation: 0,
                };
                let _ = self.foca.announce(seed, &mut self.rt);
            }
        }
        self.drain(now)
    }

    /// Leaves: tells others this node is down, so they take over at once.
    pub fn leave(&mut self, now: Duration) -> Vec<Datagram> {
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.drain(now)
    }

    fn drain(&mut self, now: Duration) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some((to, data)) = self.rt.to_send() {
            out.push((to.addr, data.to_vec()));
        }
        while let Some((after, t)) = self.rt.to_schedule() {
            self.seq += 1;
            self.timers
                .push(Reverse((now + after, self.seq, TimerSlot(t))));
        }
        // The member set is read from foca itself; notifications carry nothing more.
        while self.rt.to_notify().is_some() {}
        out
    }
}

/// The tokio edge: a UDP socket driving a [`Swim`]; the live set is published as lb-core's
/// [`LeaderElector`]. Dropping it stops the task without a word (as a crash would);
/// [`LeaderElector::resign`] leaves first.
#[derive(Debug)]
pub struct SwimElector {
    identity: String,
    view: watch::Receiver<Membership>,
    leave: mpsc::UnboundedSender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for SwimElector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SwimElector {
    /// Joins the cluster as `name`, listening on `bind` and known to others as `advertise`.
    pub async fn start(
        name: &str,
        bind: SocketAddr,
        advertise: SocketAddr,
        seeds: Vec<SocketAddr>,
    ) -> std::io::Result<SwimElector> {
        let socket = UdpSocket::bind(bind).await?;
        let me = Member {
            name: name.to_string(),
            addr: advertise,
            // A restarted node is a new generation, so others replace its old identity at once.
            generation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let seed = u64::from_le_bytes(*b"lbswim00") ^ me.generation;
        let mut swim = Swim::new(me, lan_config(), seeds, seed);
        let (tx, view) = watch::channel(Membership {
            members: swim.members(),
            epoch: 0,
        });
        let (leave, mut leave_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let now = start.elapsed();
                let due = start + swim.next_due().min(now + Duration::from_secs(3600));
                let out = tokio::select! {
                    r = socket.recv_from(&mut buf) => match r {
                        Ok((n, _)) => swim.handle_data(start.elapsed(), &buf[..n]),
                        Err(_) => Vec::new(),
                    },
                    _ = tokio::time::sleep_until(due) => swim.tick(start.elapsed()),
                    done = leave_rx.recv() => {
                        for (to, d) in swim.leave(start.elapsed()) {
                            let _ = socket.send_to(&d, to).await;
                        }
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                };
                for (to, d) in out {
                    let _ = socket.send_to(&d, to).await;
                }
                let members = swim.members();
                tx.send_if_modified(|m| {
                    if m.members == members {
                        return false;
                    }
                    m.members = members;
                    m.epoch += 1;
                    true
                });
            }
        });
        Ok(SwimElector {
            identity: name.to_string(),
            view,
            leave,
            task,
        })
    }
}

#[async_trait]
impl LeaderElector for SwimElector {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn current(&self) -> Membership {
        self.view.borrow().clone()
    }

    fn watch(&self) -> BoxStream<'static, Membership> {
        lb_core::elect::watch_stream(self.view.clone())
    }

    async fn resign(&self) -> Result<(), ElectError> {
        let (done, wait) = oneshot::channel();
        self.leave
            .send(done)
            .map_err(|_| ElectError::Failed("membership task has stopped".into()))?;
        wait.await
            .map_err(|_| ElectError::Failed("membership task has stopped".into()))
    }
}

/// How long a node that has seeds waits for the others before its first plan.
pub const JOIN_GRACE: Duration = Duration::from_secs(2);

/// Waits (up to [`JOIN_GRACE`]) until `members` shows another node. A node that starts, or
/// restarts, alone would otherwise elect itself owner of every address for a moment and claim
/// them all. Returns false if nobody answered in time.
pub async fn wait_for_others(members: &mut BoxStream<'static, Membership>) -> bool {
    let joined = async {
        while let Some(m) = futures::StreamExt::next(members).await {
            if m.members.len() > 1 {
                return;
            }
        }
    };
    tokio::time::timeout(JOIN_GRACE, joined).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A datagram on the simulated wire: (arrival, sequence, destination node, bytes).
    type InFlight = (Duration, u64, usize, Vec<u8>);

    /// A simulated LAN: datagrams arrive after a latency drawn from `[base, base + jitter)`;
    /// nodes can crash (stop processing) and links can be cut.
    struct Net {
        nodes: Vec<Swim>,
        crashed: BTreeSet<usize>,
        cut: BTreeSet<(usize, usize)>,
        queue: BinaryHeap<Reverse<InFlight>>,
        seq: u64,
        now: Duration,
        base: Duration,
        jitter_us: u64,
        rng: SmallRng,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 10 + i as u8], 7946))
    }

    impl Net {
        /// `n` nodes; every one joins through node 0.
        fn new(n: usize, seed: u64, jitter: Duration) -> Net {
            let nodes = (0..n)
                .map(|i| {
                    let me = Member {
                        name: format!("node{i}"),
                        addr: addr(i),
                        generation: 0,
                    };
                    Swim::new(me, lan_config(), vec![addr(0)], seed * 100 + i as u64)
                })
                .collect();
            Net {
                nodes,
                crashed: BTreeSet::new(),
                cut: BTreeSet::new(),
                queue: BinaryHeap::new(),
                seq: 0,
                now: Duration::ZERO,
                base: Duration::from_micros(200),
                jitter_us: jitter.as_micros() as u64,
                rng: SmallRng::seed_from_u64(seed),
            }
        }

        fn send(&mut self, from: usize, out: Vec<Datagram>) {
            use rand::Rng;
            for (to, data) in out {
                let Some(to) = (0..self.nodes.len()).find(|i| addr(*i) == to) else {
                    continue;
                };
                if self.cut.contains(&(from.min(to), from.max(to))) {
                    continue;
                }
                let delay =
                    self.base + Duration::from_micros(self.rng.random_range(0..=self.jitter_us));
                self.seq += 1;
                self.queue
                    .push(Reverse((self.now + delay, self.seq, to, data)));
            }
        }

        /// Runs until `until`, calling `watch` after every event.
        fn run(&mut self, until: Duration, mut watch: impl FnMut(&Net)) {
            for _ in 0..50_000_000 {
                let next_msg = self.queue.peek().map(|Reverse((at, ..))| *at);
                let next_timer = (0..self.nodes.len())
                    .filter(|i| !self.crashed.contains(i))
                    .map(|i| (self.nodes[i].next_due(), i))
                    .min();
                let t_msg = next_msg.unwrap_or(Duration::MAX);
                let t_tmr = next_timer.map(|(t, _)| t).unwrap_or(Duration::MAX);
                let at = t_msg.min(t_tmr);
                if at > until {
                    self.now = until;
                    return;
                }
                self.now = self.now.max(at);
                if t_msg <= t_tmr {
                    let Some(Reverse((_, _, to, data))) = self.queue.pop() else {
                        continue;
                    };
                    if !self.crashed.contains(&to) {
                        let out = self.nodes[to].handle_data(self.now, &data);
                        self.send(to, out);
                    }
                } else if let Some((_, i)) = next_timer {
                    let out = self.nodes[i].tick(self.now);
                    self.send(i, out);
                }
                watch(self);
            }
            panic!(
                "the simulation did not reach {until:?} (stuck at {:?})",
                self.now
            );
        }

        fn views(&self) -> BTreeMap<usize, BTreeSet<String>> {
            (0..self.nodes.len())
                .filter(|i| !self.crashed.contains(i))
                .map(|i| (i, self.nodes[i].members()))
                .collect()
        }
    }

    fn names(ids: &[usize]) -> BTreeSet<String> {
        ids.iter().map(|i| format!("node{i}")).collect()
    }

    fn joined(seed: u64, jitter: Duration) -> Net {
        let mut net = Net::new(3, seed, jitter);
        net.run(Duration::from_secs(2), |_| {});
        for (i, v) in net.views() {
            assert_eq!(v, names(&[0, 1, 2]), "node{i} (seed {seed})");
        }
        net
    }

    #[test]
    fn nodes_join_through_a_seed_whatever_order_they_start_in() {
        for seed in 0..10 {
            joined(seed, Duration::from_millis(1));
        }
    }

    /// From the crash to the moment every survivor has dropped the node.
    fn detection(net: &mut Net, victim: usize) -> Duration {
        let t0 = net.now;
        net.crashed.insert(victim);
        let victim_name = format!("node{victim}");
        let mut done = None;
        net.run(t0 + Duration::from_secs(5), |n| {
            if done.is_none() && n.views().values().all(|v| !v.contains(&victim_name)) {
                done = Some(n.now);
            }
        });
        done.expect("the crashed node is declared down") - t0
    }

    #[test]
    fn a_crashed_node_is_declared_down_everywhere_well_under_a_second() {
        let mut times: Vec<Duration> = (0..40)
            .map(|seed| {
                let mut net = joined(seed, Duration::from_millis(1));
                detection(&mut net, (seed % 3) as usize)
            })
            .collect();
        times.sort();
        let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
        assert!(median < Duration::from_millis(400), "median {median:?}");
        assert!(max < Duration::from_millis(800), "max {max:?}: {times:?}");
    }

    #[test]
    fn no_false_suspicion_when_replies_are_slow_as_on_busy_cores() {
        // Every datagram is late by up to 30 ms, a minute long: nobody is ever dropped.
        for seed in 0..5 {
            let mut net = joined(seed, Duration::from_millis(30));
            let all = names(&[0, 1, 2]);
            let mut lost = None;
            net.run(Duration::from_secs(60), |n| {
                if lost.is_none() {
                    lost = n.views().into_iter().find(|(_, v)| *v != all);
                }
            });
            assert_eq!(lost, None, "seed {seed}");
        }
    }

    #[test]
    fn a_node_that_leaves_is_dropped_at_once() {
        let mut net = joined(1, Duration::from_millis(1));
        let t0 = net.now;
        let out = net.nodes[2].leave(t0);
        net.send(2, out);
        net.crashed.insert(2);
        let mut done = None;
        net.run(t0 + Duration::from_secs(2), |n| {
            if done.is_none() && n.views().values().all(|v| *v == names(&[0, 1])) {
                done = Some(n.now - t0);
            }
        });
        let d = done.expect("the others drop the node that left");
        assert!(d < Duration::from_millis(20), "{d:?}");
    }

    #[test]
    fn after_a_partition_heals_the_nodes_find_each_other_again() {
        let mut net = joined(2, Duration::from_millis(1));
        net.cut.extend([(0, 2), (1, 2)]);
        let t = net.now + Duration::from_secs(3);
        net.run(t, |_| {});
        let v = net.views();
        assert_eq!(
            (v[&0].clone(), v[&2].clone()),
            (names(&[0, 1]), names(&[2]))
        );
        net.cut.clear();
        let t0 = net.now;
        let mut healed = None;
        net.run(t0 + Duration::from_secs(5), |n| {
            if healed.is_none() && n.views().values().all(|v| *v == names(&[0, 1, 2])) {
                healed = Some(n.now - t0);
            }
        });
        let d = healed.expect("the partition heals");
        assert!(d < Duration::from_secs(2), "{d:?}");
    }

    #[test]
    fn garbage_datagrams_are_dropped_and_counted() {
        let mut net = joined(3, Duration::from_millis(1));
        let now = net.now;
        for junk in [&b""[..], b"\x00\x01\x02", &[0xff; 300]] {
            assert!(net.nodes[0].handle_data(now, junk).is_empty());
        }
        assert_eq!(net.nodes[0].dropped, 3);
        assert_eq!(net.nodes[0].members(), names(&[0, 1, 2]));
    }
}
