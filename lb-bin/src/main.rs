//! lb-bin: the load balancer's one binary: `check`, `plan`, `standalone`, `controller`,
//! `speaker`, `crds`, `version` (the README describes each). This file parses the flags and
//! wires the library's parts together.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod report;

/// mimalloc serves the process's allocations (the `mimalloc` feature, on by default). A whole
/// pass at 100,000 services frees and allocates millions of small objects in a heap of 200 MB;
/// glibc's malloc spent a growing share of it consolidating and unlinking free chunks, so that
/// ten times the services cost 11 to 12 times the time. With mimalloc the same pass is faster at
/// every size and grows by 9 to 10 times (BENCHMARKS.md, "Item 1").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for huge pages where the
/// kernel allows them on request (`madvise`, Debian's default), and a fault on one may stall
/// while the kernel compacts and clears 2 MB: a pass that takes 0.6 s took 1.1 s in about one run
/// in four, 0.4 s of it in the kernel clearing pages. A node that must take over addresses within
/// a second wants no such stall, which is why databases and proxies ask for huge pages off too.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn huge_pages_off() {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointer; it changes only how the
    // kernel backs this process's future page faults. It cannot fail on a kernel that has it
    // (3.15 and later), and a failure elsewhere leaves huge pages as they were, which is safe.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[derive(Parser, Debug)]
#[command(
    name = "lb-bin",
    version,
    about = "Bare-metal load balancer, MetalLB-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// /healthz fails when the main loop of a running node (standalone, speaker, controller)
    /// has not turned for this many seconds; it turns at least every second when healthy.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    stall_limit: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file; print every finding, exit 1 when any is an error.
    Check {
        /// Multi-document YAML: metallb.io kinds and v1 Service/Node/EndpointSlice objects.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the allocations (and, with --node, a node's announcements) without announcing.
    Plan {
        #[arg(long)]
        config: PathBuf,
        /// Plan the announcements of this node; every Node in the file and this one are live.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// How fresh addresses are picked: lowest free (MetalLB's controller) or hashed
        /// (standalone mode; use it to preview a standalone cluster from an empty state).
        #[arg(long, value_enum, default_value_t = PlacementArg::Lowest)]
        placement: PlacementArg,
    },
    /// Run a node without Kubernetes: allocate, elect L2 owners with the other nodes, announce.
    Standalone {
        /// The same multi-document YAML as `check` and `plan`; reloaded on SIGHUP and when it
        /// changes (a file with errors is refused and the running configuration stays).
        #[arg(long)]
        config: PathBuf,
        /// This node's name, as Node objects and advertisements' node selectors name it.
        #[arg(long)]
        node_name: String,
        /// Another node's membership address; repeat for several.
        #[arg(long = "join", value_name = "HOST:PORT")]
        join: Vec<String>,
        /// Membership address (UDP). With 0.0.0.0, the address towards the first --join is
        /// the one other nodes are told.
        #[arg(long, default_value = "0.0.0.0:7946")]
        bind: std::net::SocketAddr,
        /// Keep allocations here, so that a restart changes no address.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Serve /metrics, /healthz, /readyz and /status here.
        #[arg(long, value_name = "ADDR:PORT")]
        http: Option<std::net::SocketAddr>,
        /// Put announced addresses on a dummy interface so that local sockets get their traffic
        /// (needs net.ipv4.conf.all.arp_ignore=1 and arp_announce=2).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        local_delivery: bool,
        /// The dummy interface for local delivery.
        #[arg(long, default_value = "lb0")]
        dummy_interface: String,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Decide everything and print what would be announced; announce nothing (no root).
        #[arg(long)]
        dry_run: bool,
        /// Seal membership datagrams with this key (as MetalLB's memberlist Secret's
        /// `secretkey`; several keys apart by an empty line, the first sends). Reloaded when it
        /// changes. Needed with --join unless --insecure-membership.
        #[arg(long, value_name = "FILE")]
        secret_key_file: Option<PathBuf>,
        /// Let nodes talk with plain datagrams: anyone who reaches the membership port can join
        /// and steer which node owns each address.
        #[arg(long)]
        insecure_membership: bool,
    },
    /// In a cluster: allocate addresses to LoadBalancer Services (Lease-elected; run several).
    Controller {
        /// Serve only Services of this loadBalancerClass (default: only Services with none).
        #[arg(long, env = "LB_CLASS")]
        lb_class: Option<String>,
        /// Where the metallb.io objects live.
        #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
        namespace: String,
        /// This replica's identity in the Lease and in events (default: the host name with a
        /// random suffix, unique per run).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// The Lease (coordination.k8s.io/v1) the replicas elect a leader with.
        #[arg(long, default_value = "lb-controller")]
        lease_name: String,
        /// The Lease's duration: how long the others wait before taking over from a silent
        /// leader. The leader renews every duration/7.5 and stops writing after 2/3 of it.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// Create this Secret in --namespace with a random membership key when it is missing
        /// (MetalLB's memberlist Secret, read by the speakers); "" turns it off.
        #[arg(long, env = "METALLB_ML_SECRET_NAME", default_value = "memberlist")]
        ml_secret_name: String,
        /// Serve /metrics, /healthz, /readyz and /status here.
        #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7472")]
        http: std::net::SocketAddr,
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
    },
    /// In a cluster, on every node: announce the addresses this node is elected for.
    Speaker {
        /// This node's name (the Node object's name).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        #[arg(long, env = "LB_CLASS")]
        lb_class: Option<String>,
        #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
        namespace: String,
        /// Announce from nodes labelled node.kubernetes.io/exclude-from-external-load-balancers.
        #[arg(long)]
        ignore_exclude_lb: bool,
        /// Membership address (UDP), shared with the other speakers.
        #[arg(long, default_value = "0.0.0.0:7946")]
        bind: std::net::SocketAddr,
        /// The address other speakers reach this one at (default: the Node's InternalIP).
        #[arg(long, env = "POD_IP")]
        advertise_address: Option<std::net::IpAddr>,
        /// The Secret in --namespace whose `secretkey` seals the membership (MetalLB's
        /// memberlist Secret; the controller creates it). Reloaded when it changes.
        #[arg(long, env = "METALLB_ML_SECRET_NAME", default_value = "memberlist")]
        ml_secret_name: String,
        /// Let speakers talk with plain datagrams: anyone who reaches the membership port can
        /// join and steer which node owns each address.
        #[arg(long)]
        insecure_membership: bool,
        #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7472")]
        http: std::net::SocketAddr,
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
    },
    /// Print every metallb.io CustomResourceDefinition as YAML (what deploy/crds.yaml holds).
    Crds,
    /// Print the version and the compiled announcement modes.
    Version,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlacementArg {
    Lowest,
    Hashed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Announcement modes compiled into this binary.
fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "l2") {
        f.push("l2");
    }
    if cfg!(feature = "bgp") {
        f.push("bgp");
    }
    f
}

/// Ends a one-shot command (`check`, `plan`) with `code`, leaving what it read to the OS: freeing
/// 100,000 services' objects one by one took a tenth of `plan --node`'s time.
fn exit_leaving<T>(code: i32, read: T) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::mem::forget(read);
    std::process::exit(code)
}

/// Writes `text` to standard output. A reader that has gone (`lb-bin plan | head`) is no
/// error: the rest is not wanted.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to standard output"))
        }
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    lb_bin::http::set_stall_limit(std::time::Duration::from_secs(cli.stall_limit.max(1)));
    match cli.command {
        Command::Check { config } => {
            let (r, read) = report::check_parts(read(&config)?);
            emit(&r.render())?;
            exit_leaving(i32::from(r.errors() != 0), (r, read))
        }
        Command::Plan {
            config,
            node,
            output,
            placement,
        } => {
            let placement = match placement {
                PlacementArg::Lowest => lb_core::alloc::Placement::Lowest,
                PlacementArg::Hashed => lb_core::alloc::Placement::Hashed,
            };
            let (r, read) = report::plan_parts(read(&config)?, node.as_deref(), placement);
            for f in &r.findings {
                eprintln!("config: {f}");
            }
            warn_uncompiled_modes(&r);
            match output {
                Output::Json => emit(&(serde_json::to_string_pretty(&r)? + "\n"))?,
                Output::Table => emit(&r.render_table())?,
            }
            exit_leaving(0, (r, read))
        }
        Command::Standalone {
            config,
            node_name,
            join,
            bind,
            state_dir,
            http,
            local_delivery,
            dummy_interface,
            log_format,
            dry_run,
            secret_key_file,
            insecure_membership,
        } => {
            init_logs(log_format);
            let mut opts = lb_bin::standalone::Options::new(config, node_name);
            opts.join = join;
            opts.bind = bind;
            opts.state_dir = state_dir;
            opts.http = http;
            opts.local_delivery = local_delivery.then_some(dummy_interface);
            opts.dry_run = dry_run;
            opts.secret_key_file = secret_key_file;
            opts.insecure_membership = insecure_membership;
            runtime()?.block_on(async {
                let status = lb_bin::standalone::SharedStatus::default();
                let metrics = lb_bin::standalone::SharedMetrics::default();
                if let Some(addr) = opts.http {
                    lb_bin::http::spawn(addr, status.clone(), metrics.clone()).await?;
                }
                lb_bin::standalone::run(opts, status, metrics).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Controller {
            lb_class,
            namespace,
            identity,
            lease_name,
            lease_seconds,
            ml_secret_name,
            http,
            log_format,
        } => {
            init_logs(log_format);
            let identity = identity.unwrap_or_else(default_identity);
            let mut opts = lb_bin::controller::Options::new(namespace, identity);
            opts.lb_class = lb_class;
            opts.lease_name = lease_name;
            opts.lease = std::time::Duration::from_secs(lease_seconds.max(1));
            opts.http = Some(http);
            opts.ml_secret_name = (!ml_secret_name.is_empty()).then_some(ml_secret_name);
            runtime()?.block_on(async {
                let clients = clients().await?;
                lb_bin::controller::run(clients, opts).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Speaker {
            node_name,
            lb_class,
            namespace,
            ignore_exclude_lb,
            bind,
            advertise_address,
            http,
            log_format,
            ml_secret_name,
            insecure_membership,
        } => {
            init_logs(log_format);
            let mut k8s = lb_k8s::speaker::Options::new(node_name, namespace);
            k8s.lb_class = lb_class;
            k8s.ignore_exclude_label = ignore_exclude_lb;
            let mut opts = lb_bin::speaker::Options::new(k8s);
            opts.bind = bind;
            opts.advertise = advertise_address;
            opts.http = Some(http);
            opts.secret_name = ml_secret_name;
            opts.insecure_membership = insecure_membership;
            runtime()?.block_on(async {
                let clients = clients().await?;
                lb_bin::speaker::run(clients, opts).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            emit(&lb_k8s::crds::yaml().map_err(|e| anyhow::anyhow!("rendering the CRDs: {e}"))?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            emit(&format!(
                "lb-bin {}\nfeatures: {}\n",
                env!("CARGO_PKG_VERSION"),
                features().join(" ")
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
}

/// The in-cluster service account, or the kubeconfig (KUBECONFIG, ~/.kube/config): one client
/// for watches (long reads, guarded by the watcher's idle timeout) and one for writes, which
/// gets connect, read and write timeouts and no retries inside the client (the callers retry,
/// on their own tasks).
async fn clients() -> Result<lb_k8s::Clients> {
    let config = kube::Config::infer()
        .await
        .context("connecting to the Kubernetes API (in-cluster or kubeconfig)")?;
    let watch =
        kube::Client::try_from(config.clone()).context("connecting to the Kubernetes API")?;
    let mut w = config;
    w.connect_timeout = Some(lb_k8s::CONNECT_TIMEOUT);
    w.read_timeout = Some(lb_k8s::READ_TIMEOUT);
    w.write_timeout = Some(lb_k8s::READ_TIMEOUT);
    w.reset_reader_on_write = true;
    w.default_retry = false;
    let write = kube::Client::try_from(w).context("connecting to the Kubernetes API")?;
    Ok(lb_k8s::Clients { watch, write })
}

/// The host name with a random suffix: two replicas never share it, even on one host.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lb-controller".into());
    lb_k8s::lease::unique_identity(&host)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A plan may hold announcements this build could not make; say so.
fn warn_uncompiled_modes(r: &report::PlanReport) {
    let Some(anns) = &r.announcements else {
        return;
    };
    let compiled = features();
    for (mode, protocol) in [
        ("l2", lb_core::Protocol::Layer2),
        ("bgp", lb_core::Protocol::Bgp),
    ] {
        if !compiled.contains(&mode) && anns.iter().any(|a| lb_core::Protocol::of(a) == protocol) {
            eprintln!(
                "warning: the plan has {protocol} announcements but this build lacks the '{mode}' feature"
            );
        }
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    huge_pages_off();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb-bin: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: the library's errors already name their cause in
/// their message, the contexts added here do not.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
