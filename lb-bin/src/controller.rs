//! `lb-bin controller`: lb-k8s's controller under a Lease, with the HTTP endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use kube::Client;
use lb_core::LeaderElector;
use lb_k8s::lease::{LeaseConfig, LeaseElector};
use lb_k8s::metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::standalone::{SharedMetrics, SharedStatus};

/// Everything `lb-bin controller` is told.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// `--lb-class`: only services of this class (none: services with no class).
    pub lb_class: Option<String>,
    /// Where the metallb.io objects live.
    pub namespace: String,
    /// This replica's identity in the Lease and in events (the pod name).
    pub identity: String,
    /// The Lease that elects the leader.
    pub lease_name: String,
    /// The Lease's duration (15 s as client-go's default).
    pub lease: Duration,
    /// Where `/metrics`, `/healthz` and `/status` are served.
    pub http: Option<SocketAddr>,
    /// The membership key Secret to create when it is missing (MetalLB's `--ml-secret-name`);
    /// `None` leaves it to the operator.
    pub ml_secret_name: Option<String>,
}

impl Options {
    /// The controller replica `identity` for the objects in `namespace`: services of no class,
    /// the Lease `lb-controller` of 15 s, no HTTP, the membership Secret left alone.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Options {
            lb_class: None,
            namespace: namespace.into(),
            identity: identity.into(),
            lease_name: "lb-controller".into(),
            lease: Duration::from_secs(15),
            http: None,
            ml_secret_name: None,
        }
    }
}

/// Creates the membership Secret if it is missing, retrying while the API server is away.
async fn ensure_memberlist(client: Client, namespace: String, name: String) {
    loop {
        match lb_k8s::memberlist::ensure_secret(client.clone(), &namespace, &name).await {
            Ok(true) => {
                info!("created Secret {namespace}/{name} with a random membership key");
                return;
            }
            Ok(false) => return,
            Err(e) => warn!("creating Secret {namespace}/{name}: {e}; retrying in 10 s"),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Runs until SIGTERM or SIGINT; then hands the Lease back so another replica takes over at
/// once.
pub async fn run(clients: lb_k8s::Clients, opts: Options) -> Result<()> {
    let client = clients.write.clone();
    let metrics = Metrics::default();
    let status = SharedStatus::default();
    let text = SharedMetrics::default();
    if let Some(addr) = opts.http {
        crate::http::spawn(addr, status.clone(), text.clone()).await?;
    }
    let memberlist = opts.ml_secret_name.clone().map(|name| {
        tokio::spawn(ensure_memberlist(
            client.clone(),
            opts.namespace.clone(),
            name,
        ))
    });
    let (elector, lease_task) = LeaseElector::spawn(
        client.clone(),
        LeaseConfig::new(&opts.lease_name, &opts.namespace, &opts.identity).timing(
            opts.lease,
            opts.lease * 2 / 3,
            opts.lease * 2 / 15,
        ),
    );
    let elector = std::sync::Arc::new(elector);
    let controller = tokio::spawn(lb_k8s::controller::run(
        clients,
        {
            let mut o = lb_k8s::controller::Options::new(&opts.namespace, &opts.identity);
            o.lb_class = opts.lb_class.clone();
            o
        },
        elector.clone(),
        metrics.clone(),
    ));
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                *text.lock().unwrap_or_else(|e| e.into_inner()) = metrics.render("controller");
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                st.node = opts.identity.clone();
                st.turned = Some(std::time::Instant::now());
                // Ready once the caches are listed: a follower is ready to take over.
                st.ready = metrics.is_ready();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("stopping: releasing the Lease");
    controller.abort();
    if let Some(m) = memberlist {
        m.abort();
    }
    let _ = elector.resign().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), lease_task).await;
    Ok(())
}
