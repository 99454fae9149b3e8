//! l2-announce: runs the layer 2 announcer by hand (until `lb-bin standalone` exists).
//!
//!   l2-announce --ip 192.0.2.100 --ip 2001:db8::100 [--interface eth0] [--probe]
//!
//! Needs CAP_NET_RAW. Prints one line per event (`announcing IP`, `probing IP`,
//! `conflict IP MAC`, `withdrawn IP`, `interface-up NAME`, `interface-down NAME`). Reads commands
//! on standard input, one per line: `set IP[,IP...]` (an empty list withdraws everything; with
//! `--probe` new addresses are probed first), `add IP[,IP...]` and `del IP[,IP...]` (a change
//! of those addresses alone, as `L2Announcer::update` makes it), `status`, `counters`. SIGTERM
//! or SIGINT withdraws and exits.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lb_announce_l2::L2Announcer;
use lb_announce_l2::announcer::{Config, Event, ProbeConfig};
use lb_core::plan::Interfaces;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Answer ARP and NDP for addresses, as the layer 2 announcer does"
)]
struct Args {
    /// An address to announce (repeat for more).
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// Announce only on these interfaces (default: every usable interface).
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Probe the addresses before the first announcement (RFC 5227 / DAD).
    #[arg(long)]
    probe: bool,
    /// Re-send gratuitous ARP / unsolicited NA every this many seconds.
    #[arg(long)]
    refresh: Option<f64>,
    /// Gratuitous rounds after the first one, one second apart.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Seconds before re-probing an address that met a conflict.
    #[arg(long, default_value_t = 30.0)]
    conflict_retry: f64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let mut config = Config::default();
    config.refresh = args.refresh.map(Duration::from_secs_f64);
    config.gratuitous_repeats = args.repeats;
    config.probe = args.probe.then(ProbeConfig::default);
    config.conflict_retry = Duration::from_secs_f64(args.conflict_retry);
    let announcer = match L2Announcer::start(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("l2-announce: {e}");
            return ExitCode::from(2);
        }
    };
    let scope = if args.interfaces.is_empty() {
        Interfaces::All
    } else {
        Interfaces::Only(args.interfaces.iter().cloned().collect())
    };
    let mut events = announcer.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            say(&match e {
                Event::Announcing(ip) => format!("announcing {ip}"),
                Event::Probing(ip) => format!("probing {ip}"),
                Event::Conflict { ip, mac } => format!("conflict {ip} {mac}"),
                Event::Withdrawn(ip) => format!("withdrawn {ip}"),
                Event::InterfaceUp(n) => format!("interface-up {n}"),
                Event::InterfaceDown(n) => format!("interface-down {n}"),
                other => format!("event {other:?}"),
            });
        }
    });
    let desired = |ips: &[IpAddr]| -> BTreeMap<IpAddr, Interfaces> {
        ips.iter().map(|ip| (*ip, scope.clone())).collect()
    };
    if args.probe {
        announcer.note_new_addresses(args.ips.iter().copied());
    }
    if let Err(e) = announcer.set(desired(&args.ips)).await {
        eprintln!("l2-announce: {e}");
        return ExitCode::FAILURE;
    }
    say("ready");
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("l2-announce: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let line = line.trim();
                    let change = line
                        .strip_prefix("add ")
                        .map(|l| (l, true))
                        .or_else(|| line.strip_prefix("del ").map(|l| (l, false)));
                    if let Some((list, add)) = change {
                        let parsed: Result<Vec<IpAddr>, _> =
                            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect();
                        match parsed {
                            Ok(ips) => {
                                if args.probe && add {
                                    announcer.note_new_addresses(ips.iter().copied());
                                }
                                let changes = ips.iter().map(|ip| (*ip, add.then(|| scope.clone()))).collect();
                                if let Err(e) = announcer.update(changes).await {
                                    say(&format!("error {e}"));
                                }
                                say("ok");
                            }
                            Err(e) => say(&format!("error {e}")),
                        }
                    } else if let Some(list) = line.strip_prefix("set") {
                        let parsed: Result<Vec<IpAddr>, _> =
                            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect();
                        match parsed {
                            Ok(ips) => {
                                if args.probe {
                                    announcer.note_new_addresses(ips.iter().copied());
                                }
                                if let Err(e) = announcer.set(desired(&ips)).await {
                                    say(&format!("error {e}"));
                                }
                                say("ok");
                            }
                            Err(e) => say(&format!("error {e}")),
                        }
                    } else if line == "status" {
                        for s in announcer.status() {
                            say(&format!("status {} {:?} {}", s.ip, s.state, s.interfaces.join(",")));
                        }
                        say("ok");
                    } else if line == "counters" {
                        let text = lb_core::metrics::render(vec![Box::new(announcer.counters())]);
                        for l in text.lines().filter(|l| !l.starts_with('#')) {
                            say(&format!("counter {l}"));
                        }
                        say("ok");
                    } else if !line.is_empty() {
                        say(&format!("error unknown command {line:?}"));
                    }
                }
                // Standard input closed: keep running until a signal.
                _ => stdin_open = false,
            },
        }
    }
    announcer.shutdown().await;
    say("stopped");
    ExitCode::SUCCESS
}
