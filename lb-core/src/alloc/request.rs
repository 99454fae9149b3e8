//! What the allocator needs of a service, read from its spec and its annotations under both
//! prefixes (`metallb.io/` and the legacy `metallb.universe.tf/`).

use std::net::IpAddr;

use crate::ip::Family;
use crate::objects::{FamilyPolicy, Port, Service, ServiceKey};
use crate::selector::Labels;

/// The annotation names MetalLB reads, without prefix.
pub mod annotation {
    /// Addresses the service asks for, comma-separated.
    pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
    /// The pool the service asks for.
    pub const ADDRESS_POOL: &str = "address-pool";
    /// Services with the same value may share an address.
    pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
    /// Written by the controller with the pool an allocation came from.
    pub const IP_ALLOCATED_FROM_POOL: &str = "ip-allocated-from-pool";
    /// The annotations read from services (the fourth, `ip-allocated-from-pool`, is written).
    pub const READ: [&str; 3] = [LOAD_BALANCER_IPS, ADDRESS_POOL, ALLOW_SHARED_IP];
    /// The current prefix of MetalLB's annotations.
    pub const PREFIX: &str = "metallb.io/";
    /// The older prefix, still read (and reported as deprecated).
    pub const LEGACY_PREFIX: &str = "metallb.universe.tf/";
}

/// A service request that cannot be served as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Both the annotation and `spec.loadBalancerIP` are set.
    #[error("set metallb.io/loadBalancerIPs or spec.loadBalancerIP, not both")]
    BothIpFields,
    /// A requested address does not parse.
    #[error("{field}: {value:?} is not an IP address")]
    BadIp {
        /// Where it was written.
        field: String,
        /// What was written.
        value: String,
    },
    /// More than one address of a family was requested.
    #[error("{field}: at most one address per family may be requested")]
    TooManyIps {
        /// Where they were written.
        field: String,
    },
    /// A requested address is of a family the service does not have.
    #[error("{field}: {ip} is {got}, but the service is single-stack {want}")]
    WrongFamily {
        /// Where it was written.
        field: String,
        /// The address.
        ip: IpAddr,
        /// Its family.
        got: Family,
        /// The service's family.
        want: Family,
    },
    /// A dual-stack request lacks one of the families.
    #[error("{field}: a dual-stack service needs one IPv4 and one IPv6 address")]
    NeedBothFamilies {
        /// Where the addresses were written.
        field: String,
    },
}

/// Everything the allocator decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// The service.
    pub key: ServiceKey,
    /// Its namespace's labels (for `serviceAllocation.namespaceSelectors`). The name label
    /// (`kubernetes.io/metadata.name`) is implied and need not be here.
    pub namespace_labels: Labels,
    /// The service's labels (for `serviceAllocation.serviceSelectors`).
    pub labels: Labels,
    /// The families to allocate, primary first: one for SingleStack, both otherwise.
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub policy: FamilyPolicy,
    /// Addresses asked for by annotation or `spec.loadBalancerIP`.
    pub requested_ips: Vec<IpAddr>,
    /// The pool asked for by annotation.
    pub pool: Option<String>,
    /// The `allow-shared-ip` annotation.
    pub sharing_key: Option<String>,
    /// Services may share an IP only with equal backend keys: empty for
    /// `externalTrafficPolicy: Cluster`, the rendered pod selector for `Local`.
    pub backend_key: String,
    /// The service's ports (services sharing an address may not share a port).
    pub ports: Vec<Port>,
    /// Legacy-prefixed annotations in use (MetalLB emits `deprecatedAnnotation` for them).
    pub deprecated_annotations: Vec<String>,
}

impl Request {
    /// A single-stack IPv4 request with no annotations: the base tests and benches build on.
    pub fn simple(key: ServiceKey) -> Self {
        Request {
            key,
            namespace_labels: Labels::new(),
            labels: Labels::new(),
            families: vec![Family::V4],
            policy: FamilyPolicy::SingleStack,
            requested_ips: Vec::new(),
            pool: None,
            sharing_key: None,
            backend_key: String::new(),
            ports: Vec::new(),
            deprecated_annotations: Vec::new(),
        }
    }

    /// The primary family: the first of `spec.ipFamilies`, IPv4 by default.
    pub fn primary(&self) -> Family {
        self.families.first().copied().unwrap_or(Family::V4)
    }

    /// The request of `svc`, whose namespace has `namespace_labels`.
    pub fn from_service(svc: &Service, namespace_labels: Labels) -> Result<Self, RequestError> {
        let mut deprecated = Vec::new();
        // One buffer for the names looked up (most services have no annotation at all, and
        // a pass reads every service's).
        let mut name_buf = String::new();
        let mut get = |name: &str| -> Option<String> {
            if svc.annotations.is_empty() {
                return None;
            }
            let mut lookup = |prefix: &str| {
                name_buf.clear();
                name_buf.push_str(prefix);
                name_buf.push_str(name);
                svc.annotations.get(name_buf.as_str())
            };
            let new = lookup(annotation::PREFIX);
            let old = lookup(annotation::LEGACY_PREFIX);
            if new.is_none() && old.is_some() {
                deprecated.push(format!("{}{name}", annotation::LEGACY_PREFIX));
            }
            new.or(old).cloned().filter(|v| !v.trim().is_empty())
        };
        let ips_annotation = get(annotation::LOAD_BALANCER_IPS);
        let pool = get(annotation::ADDRESS_POOL).map(|p| p.trim().to_string());
        let sharing_key = get(annotation::ALLOW_SHARED_IP);

        let primary = svc.ip_families.first().copied().unwrap_or(Family::V4);
        // PreferDualStack takes its families from the Service as the API server stored them
        // (MetalLB's ipfamily.ForService): on a single-stack cluster, one. A file that names
        // no family asks for both.
        let families = match svc.family_policy {
            FamilyPolicy::SingleStack => vec![primary],
            FamilyPolicy::PreferDualStack if svc.ip_families.len() == 1 => vec![primary],
            _ => vec![primary, primary.other()],
        };

        let (field, texts): (&str, Vec<String>) = match (&ips_annotation, &svc.load_balancer_ip) {
            (Some(_), Some(_)) => return Err(RequestError::BothIpFields),
            (Some(a), None) => (
                "metallb.io/loadBalancerIPs",
                a.split(',').map(|s| s.trim().to_string()).collect(),
            ),
            (None, Some(ip)) => ("spec.loadBalancerIP", vec![ip.trim().to_string()]),
            (None, None) => ("", Vec::new()),
        };
        let mut requested_ips = Vec::new();
        for t in texts {
            let ip: IpAddr = t.parse().map_err(|_| RequestError::BadIp {
                field: field.into(),
                value: t.clone(),
            })?;
            requested_ips.push(ip);
        }
        check_requested(field, &requested_ips, svc.family_policy, primary)?;
        // A dual-stack service that requests addresses requests one per family, whatever its
        // policy (MetalLB's controller compares the families; controller/service.go).
        if requested_ips.len() == 1 && families.len() == 2 {
            return Err(RequestError::NeedBothFamilies {
                field: field.into(),
            });
        }

        let backend_key = svc.backend_key.clone();
        Ok(Request {
            key: svc.key.clone(),
            namespace_labels,
            labels: svc.labels.clone(),
            families,
            policy: svc.family_policy,
            requested_ips,
            pool,
            sharing_key,
            backend_key,
            ports: svc.ports.clone(),
            deprecated_annotations: deprecated,
        })
    }

    /// Whether these addresses fit the request's family policy and explicit IPs.
    pub(crate) fn check_ips(&self, ips: &[IpAddr]) -> Result<(), RequestError> {
        check_requested("addresses", ips, self.policy, self.primary())
    }
}

fn check_requested(
    field: &str,
    ips: &[IpAddr],
    policy: FamilyPolicy,
    primary: Family,
) -> Result<(), RequestError> {
    if ips.is_empty() {
        return Ok(());
    }
    let field = field.to_string();
    if ips.len() > 2 || (ips.len() == 2 && Family::of(ips[0]) == Family::of(ips[1])) {
        return Err(RequestError::TooManyIps { field });
    }
    match policy {
        FamilyPolicy::SingleStack => {
            if ips.len() > 1 {
                return Err(RequestError::TooManyIps { field });
            }
            let got = Family::of(ips[0]);
            if got != primary {
                return Err(RequestError::WrongFamily {
                    field,
                    ip: ips[0],
                    got,
                    want: primary,
                });
            }
        }
        FamilyPolicy::RequireDualStack if ips.len() != 2 => {
            return Err(RequestError::NeedBothFamilies { field });
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{ServiceKey, TrafficPolicy, backend_key};

    fn svc() -> Service {
        Service {
            key: ServiceKey::new("default", "web"),
            labels: Labels::new(),
            annotations: Default::default(),
            load_balancer: true,
            load_balancer_class: None,
            load_balancer_ip: None,
            ports: vec![],
            backend_key: String::new(),
            traffic_policy: TrafficPolicy::Cluster,
            ip_families: vec![],
            family_policy: FamilyPolicy::SingleStack,
            status_ips: vec![],
        }
    }

    #[test]
    fn both_annotation_prefixes_are_read_and_legacy_is_flagged() {
        let mut s = svc();
        s.annotations
            .insert("metallb.universe.tf/address-pool".into(), "blue".into());
        let r = Request::from_service(&s, Labels::new()).unwrap();
        assert_eq!(r.pool.as_deref(), Some("blue"));
        assert_eq!(
            r.deprecated_annotations,
            ["metallb.universe.tf/address-pool"]
        );
        s.annotations
            .insert("metallb.io/address-pool".into(), "red".into());
        let r = Request::from_service(&s, Labels::new()).unwrap();
        assert_eq!(r.pool.as_deref(), Some("red"));
        assert!(r.deprecated_annotations.is_empty());
    }

    #[test]
    fn load_balancer_ips_annotation_and_spec_field_conflict() {
        let mut s = svc();
        s.annotations
            .insert("metallb.io/loadBalancerIPs".into(), "192.0.2.1".into());
        s.load_balancer_ip = Some("192.0.2.2".into());
        assert_eq!(
            Request::from_service(&s, Labels::new()),
            Err(RequestError::BothIpFields)
        );
    }

    #[test]
    fn requested_ip_family_must_match_single_stack_family() {
        let mut s = svc();
        s.load_balancer_ip = Some("2001:db8::1".into());
        assert!(matches!(
            Request::from_service(&s, Labels::new()),
            Err(RequestError::WrongFamily { .. })
        ));
    }

    #[test]
    fn require_dual_stack_needs_two_requested_families() {
        let mut s = svc();
        s.family_policy = FamilyPolicy::RequireDualStack;
        s.annotations
            .insert("metallb.io/loadBalancerIPs".into(), "192.0.2.1".into());
        assert!(matches!(
            Request::from_service(&s, Labels::new()),
            Err(RequestError::NeedBothFamilies { .. })
        ));
        s.annotations.insert(
            "metallb.io/loadBalancerIPs".into(),
            "192.0.2.1, 2001:db8::1".into(),
        );
        let r = Request::from_service(&s, Labels::new()).unwrap();
        assert_eq!(r.requested_ips.len(), 2);
        assert_eq!(r.families, [Family::V4, Family::V6]);
    }

    #[test]
    fn backend_key_is_the_selector_only_for_local_policy() {
        let selector: Labels = [("app", "web"), ("tier", "db")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(backend_key(TrafficPolicy::Cluster, &selector), "");
        assert_eq!(
            backend_key(TrafficPolicy::Local, &selector),
            "app=web,tier=db"
        );
        let mut s = svc();
        s.backend_key = backend_key(TrafficPolicy::Local, &selector);
        assert_eq!(
            Request::from_service(&s, Labels::new())
                .unwrap()
                .backend_key,
            "app=web,tier=db"
        );
    }
}
