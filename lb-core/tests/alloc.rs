//! One test per allocation rule (MetalLB's pools and its allocator: sharing, requested addresses, lowest free first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lb_core::alloc::converge::{Input, inputs_from};
use lb_core::alloc::{AllocError, Allocator, Outcome, PoolAllocator, Request, converge};
use lb_core::config::{Config, load_str};
use lb_core::objects::ServiceKey;

fn config(yaml: &str) -> Config {
    let l = load_str(yaml);
    assert!(l.is_valid(), "{:?}", l.errors);
    l.config
}

fn run(yaml: &str) -> Outcome {
    let c = config(yaml);
    let pools: Vec<_> = c.pools.values().cloned().collect();
    let mut a = PoolAllocator::new(&pools);
    converge(&mut a, inputs_from(&c, None))
}

fn ips(o: &Outcome, svc: &str) -> Vec<String> {
    let (ns, name) = svc.split_once('/').unwrap();
    o.allocated
        .get(&ServiceKey::new(ns, name))
        .unwrap_or_else(|| panic!("{svc} not allocated: {:?}", o.pending))
        .ips
        .iter()
        .map(|i| i.to_string())
        .collect()
}

fn pending(o: &Outcome, svc: &str) -> String {
    let (ns, name) = svc.split_once('/').unwrap();
    o.pending
        .get(&ServiceKey::new(ns, name))
        .map(ToString::to_string)
        .unwrap_or_else(|| panic!("{svc} is not pending: {:?}", o.allocated))
}

fn pool(name: &str, extra: &str, addresses: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{addresses}]\n{extra}---\n"
    )
}

/// A LoadBalancer service; `extra` is YAML under `spec:` (two-space indent) and `ann` the
/// annotations map body.
fn svc(ns: &str, name: &str, ann: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{{ann}}}}}\nspec:\n  type: LoadBalancer\n{extra}---\n"
    )
}

#[test]
fn first_fit_takes_the_lowest_free_address_including_network_address() {
    let o =
        run(&(pool("p", "", "192.0.2.0/30") + &svc("a", "s1", "", "") + &svc("a", "s2", "", "")));
    assert_eq!(ips(&o, "a/s1"), ["192.0.2.0"]);
    assert_eq!(ips(&o, "a/s2"), ["192.0.2.1"]);
}

#[test]
fn a_released_address_is_reused_by_the_next_allocation() {
    let c = config(&pool("p", "", "192.0.2.0/30"));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let r = |n: &str| Request::simple(ServiceKey::new("a", n));
    a.allocate(&r("x")).unwrap();
    a.allocate(&r("y")).unwrap();
    a.release(&ServiceKey::new("a", "x"));
    assert_eq!(a.allocate(&r("z")).unwrap().ips[0].to_string(), "192.0.2.0");
}

#[test]
fn exhausted_pool_leaves_the_service_pending_with_a_reason() {
    let o =
        run(&(pool("p", "", "192.0.2.0/32") + &svc("a", "s1", "", "") + &svc("a", "s2", "", "")));
    assert!(pending(&o, "a/s2").contains("no free IPv4 address in IPAddressPool p"));
}

#[test]
fn avoid_buggy_ips_skips_dot_0_and_dot_255_at_every_24_boundary() {
    let c = config(&pool(
        "p",
        "  avoidBuggyIPs: true\n",
        "192.0.2.254-192.0.3.1",
    ));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let got: Vec<String> = ["x", "y"]
        .iter()
        .map(|n| {
            a.allocate(&Request::simple(ServiceKey::new("a", *n)))
                .unwrap()
                .ips[0]
                .to_string()
        })
        .collect();
    assert_eq!(got, ["192.0.2.254", "192.0.3.1"]);
    assert!(
        a.allocate(&Request::simple(ServiceKey::new("a", "z")))
            .is_err()
    );
    let usage = a.usage("p").unwrap();
    assert_eq!((usage.ipv4_in_use, usage.ipv4_total), (2, 2));
}

#[test]
fn avoid_buggy_ips_refuses_an_explicit_dot_0_request() {
    let o = run(&(pool("p", "  avoidBuggyIPs: true\n", "192.0.2.0/24")
        + &svc("a", "s", "", "  loadBalancerIP: 192.0.2.0\n")));
    assert!(pending(&o, "a/s").contains("avoidBuggyIPs"));
}

#[test]
fn auto_assign_false_pool_serves_only_explicit_requests() {
    let y = pool("manual", "  autoAssign: false\n", "192.0.2.0/24")
        + &svc("a", "auto", "", "")
        + &svc("a", "by-pool", "metallb.io/address-pool: manual", "")
        + &svc("a", "by-ip", "", "  loadBalancerIP: 192.0.2.77\n");
    let o = run(&y);
    assert!(pending(&o, "a/auto").contains("no IPAddressPool admits"));
    assert_eq!(ips(&o, "a/by-pool"), ["192.0.2.0"]);
    assert_eq!(ips(&o, "a/by-ip"), ["192.0.2.77"]);
}

#[test]
fn pinned_pools_go_first_by_priority_with_zero_last_then_by_name() {
    let alloc = |prio: i32| format!("  serviceAllocation: {{priority: {prio}, namespaces: [a]}}\n");
    let y = pool("z-unset", &alloc(0), "192.0.2.0/32")
        + &pool("y-second", &alloc(20), "192.0.2.1/32")
        + &pool("x-first", &alloc(10), "192.0.2.2/32")
        + &pool("b-generic", "", "192.0.2.3/32")
        + &pool("w-tie", &alloc(20), "192.0.2.4/32")
        + &svc("a", "s1", "", "")
        + &svc("a", "s2", "", "")
        + &svc("a", "s3", "", "")
        + &svc("a", "s4", "", "")
        + &svc("a", "s5", "", "");
    let o = run(&y);
    let pools: Vec<String> = ["s1", "s2", "s3", "s4", "s5"]
        .iter()
        .map(|s| o.allocated[&ServiceKey::new("a", *s)].pool.clone())
        .collect();
    assert_eq!(
        pools,
        ["x-first", "w-tie", "y-second", "z-unset", "b-generic"]
    );
}

#[test]
fn pool_with_service_allocation_is_left_out_of_the_generic_fallback() {
    let y = pool(
        "team",
        "  serviceAllocation: {namespaces: [team]}\n",
        "192.0.2.0/24",
    ) + &svc("other", "s", "", "")
        + &svc("team", "s", "", "");
    let o = run(&y);
    assert!(pending(&o, "other/s").contains("no IPAddressPool admits"));
    assert_eq!(ips(&o, "team/s"), ["192.0.2.0"]);
}

#[test]
fn namespace_selectors_match_namespace_labels_and_the_name_label() {
    let y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {tier: gold}}\n---\n"
        .to_string()
        + &pool(
            "gold",
            "  serviceAllocation: {namespaceSelectors: [{matchLabels: {tier: gold}}]}\n",
            "192.0.2.0/25",
        )
        + &pool(
            "named",
            "  serviceAllocation: {namespaceSelectors: [{matchLabels: {kubernetes.io/metadata.name: blog}}]}\n",
            "192.0.2.128/25",
        )
        + &svc("shop", "s", "", "")
        + &svc("blog", "s", "", "")
        + &svc("misc", "s", "", "");
    let o = run(&y);
    assert_eq!(o.allocated[&ServiceKey::new("shop", "s")].pool, "gold");
    assert_eq!(o.allocated[&ServiceKey::new("blog", "s")].pool, "named");
    assert!(o.pending.contains_key(&ServiceKey::new("misc", "s")));
}

#[test]
fn service_selectors_pin_pools_to_matching_services() {
    let y = pool(
        "web",
        "  serviceAllocation: {serviceSelectors: [{matchLabels: {app: web}}]}\n",
        "192.0.2.0/25",
    ) + &pool("rest", "", "192.0.2.128/25")
        + "apiVersion: v1\nkind: Service\nmetadata: {name: w, namespace: a, labels: {app: web}}\nspec: {type: LoadBalancer}\n---\n"
        + &svc("a", "other", "", "");
    let o = run(&y);
    assert_eq!(o.allocated[&ServiceKey::new("a", "w")].pool, "web");
    assert_eq!(o.allocated[&ServiceKey::new("a", "other")].pool, "rest");
}

#[test]
fn explicit_request_must_be_admitted_by_the_pool() {
    let y = pool(
        "team",
        "  serviceAllocation: {namespaces: [team]}\n",
        "192.0.2.0/24",
    ) + &svc("other", "s", "", "  loadBalancerIP: 192.0.2.5\n");
    assert!(pending(&run(&y), "other/s").contains("does not admit this service"));
}

#[test]
fn requested_ips_annotation_and_spec_field_are_honoured() {
    let y = pool("p", "", "192.0.2.0/24")
        + &svc("a", "ann", "metallb.io/loadBalancerIPs: 192.0.2.50", "")
        + &svc(
            "a",
            "legacy",
            "metallb.universe.tf/loadBalancerIPs: 192.0.2.51",
            "",
        )
        + &svc("a", "spec", "", "  loadBalancerIP: 192.0.2.52\n");
    let o = run(&y);
    assert_eq!(ips(&o, "a/ann"), ["192.0.2.50"]);
    assert_eq!(ips(&o, "a/legacy"), ["192.0.2.51"]);
    assert_eq!(ips(&o, "a/spec"), ["192.0.2.52"]);
}

#[test]
fn requested_ip_outside_every_pool_or_taken_stays_pending() {
    let y = pool("p", "", "192.0.2.0/24")
        + &svc("a", "first", "", "  loadBalancerIP: 192.0.2.9\n")
        + &svc("a", "second", "", "  loadBalancerIP: 192.0.2.9\n")
        + &svc("a", "outside", "", "  loadBalancerIP: 198.51.100.1\n");
    let o = run(&y);
    assert_eq!(ips(&o, "a/first"), ["192.0.2.9"]);
    assert!(pending(&o, "a/second").contains("in use by a/first"));
    assert!(pending(&o, "a/outside").contains("is in no IPAddressPool"));
}

#[test]
fn address_pool_annotation_selects_the_pool_and_must_agree_with_a_requested_ip() {
    let y = pool("a-first", "", "192.0.2.0/25")
        + &pool("b-second", "", "192.0.2.128/25")
        + &svc("x", "pooled", "metallb.io/address-pool: b-second", "")
        + &svc(
            "x",
            "clash",
            "metallb.io/address-pool: b-second",
            "  loadBalancerIP: 192.0.2.1\n",
        )
        + &svc("x", "ghost", "metallb.io/address-pool: nope", "");
    let o = run(&y);
    assert_eq!(ips(&o, "x/pooled"), ["192.0.2.128"]);
    assert!(pending(&o, "x/clash").contains("asks for IPAddressPool b-second"));
    assert!(pending(&o, "x/ghost").contains("no IPAddressPool named nope"));
}

#[test]
fn sharing_needs_the_same_key_and_disjoint_ports() {
    let shared = "metallb.io/allow-shared-ip: k1";
    let y = pool("p", "", "192.0.2.0/24")
        + &svc("a", "http", shared, "  ports: [{port: 80}]\n")
        + &svc(
            "b",
            "dns",
            shared,
            "  ports: [{port: 53, protocol: UDP}]\n  loadBalancerIP: 192.0.2.0\n",
        )
        + &svc(
            "c",
            "http2",
            shared,
            "  ports: [{port: 80}]\n  loadBalancerIP: 192.0.2.0\n",
        )
        + &svc(
            "d",
            "nokey",
            "",
            "  ports: [{port: 81}]\n  loadBalancerIP: 192.0.2.0\n",
        )
        + &svc(
            "e",
            "otherkey",
            "metallb.io/allow-shared-ip: k2",
            "  ports: [{port: 82}]\n  loadBalancerIP: 192.0.2.0\n",
        );
    let o = run(&y);
    assert_eq!(ips(&o, "a/http"), ["192.0.2.0"]);
    assert_eq!(
        ips(&o, "b/dns"),
        ["192.0.2.0"],
        "sharing works across namespaces"
    );
    assert!(pending(&o, "c/http2").contains("both use TCP/80"));
    assert!(pending(&o, "d/nokey").contains("no allow-shared-ip key"));
    assert!(pending(&o, "e/otherkey").contains("keys differ"));
}

#[test]
fn sharing_services_are_colocated_by_automatic_allocation() {
    let shared = "metallb.io/allow-shared-ip: k";
    let y = pool("p", "", "192.0.2.0/24")
        + &svc("a", "s1", shared, "  ports: [{port: 80}]\n")
        + &svc("a", "s2", shared, "  ports: [{port: 443}]\n")
        + &svc("a", "s3", "", "  ports: [{port: 22}]\n");
    let o = run(&y);
    assert_eq!(ips(&o, "a/s1"), ips(&o, "a/s2"));
    assert_eq!(ips(&o, "a/s3"), ["192.0.2.1"]);
}

#[test]
fn sharing_needs_equal_backend_keys() {
    let shared = "metallb.io/allow-shared-ip: k";
    let y = pool("p", "", "192.0.2.0/24")
        + &svc(
            "a",
            "cluster",
            shared,
            "  ports: [{port: 80}]\n  loadBalancerIP: 192.0.2.1\n",
        )
        + &svc(
            "a",
            "local",
            shared,
            "  ports: [{port: 81}]\n  externalTrafficPolicy: Local\n  selector: {app: x}\n  loadBalancerIP: 192.0.2.1\n",
        )
        + &svc(
            "b",
            "local-same",
            shared,
            "  ports: [{port: 82}]\n  externalTrafficPolicy: Local\n  selector: {app: y}\n  loadBalancerIP: 192.0.2.2\n",
        )
        + &svc(
            "b",
            "local-same2",
            shared,
            "  ports: [{port: 83}]\n  externalTrafficPolicy: Local\n  selector: {app: y}\n  loadBalancerIP: 192.0.2.2\n",
        );
    let o = run(&y);
    assert!(pending(&o, "a/local").contains("backends differ"));
    assert_eq!(ips(&o, "b/local-same2"), ["192.0.2.2"]);
}

#[test]
fn single_stack_ipv6_service_gets_an_ipv6_address() {
    let y = pool("p", "", "192.0.2.0/24, 2001:db8:1::/64")
        + &svc("a", "s", "", "  ipFamilies: [IPv6]\n");
    assert_eq!(ips(&run(&y)), ["2001:db8:1::"]);
    fn ips(o: &Outcome) -> Vec<String> {
        o.allocated
            .values()
            .next()
            .unwrap()
            .ips
            .iter()
            .map(|i| i.to_string())
            .collect()
    }
}

#[test]
fn require_dual_stack_takes_both_families_from_one_pool() {
    let dual = "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n";
    let y = pool("a-v4only", "", "198.51.100.0/24")
        + &pool("b-dual", "", "192.0.2.0/24, 2001:db8:1::/64")
        + &svc("a", "s", "", dual);
    let o = run(&y);
    assert_eq!(ips(&o, "a/s"), ["192.0.2.0", "2001:db8:1::"]);
    assert_eq!(o.allocated[&ServiceKey::new("a", "s")].pool, "b-dual");
    let o = run(&(pool("v4only", "", "198.51.100.0/24") + &svc("a", "s", "", dual)));
    assert!(pending(&o, "a/s").contains("no free IPv4+IPv6 address"));
}

#[test]
fn prefer_dual_stack_falls_back_to_one_family_then_adds_the_other_later() {
    let prefer = "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv4]\n";
    let v4only = pool("p", "", "192.0.2.0/24");
    let c = config(&(v4only + &svc("a", "s", "", prefer)));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let o = converge(&mut a, inputs_from(&c, None));
    assert_eq!(ips(&o, "a/s"), ["192.0.2.0"]);
    // The pool gains IPv6: the next pass adds the missing family and keeps the IPv4 address.
    let c2 = config(&(pool("p", "", "192.0.2.0/24, 2001:db8:1::/64") + &svc("a", "s", "", prefer)));
    a.set_pools(&c2.pools.values().cloned().collect::<Vec<_>>());
    let o = converge(&mut a, inputs_from(&c2, None));
    assert_eq!(
        ips(&o, "a/s"),
        ["2001:db8:1::", "192.0.2.0"],
        "primary family first"
    );
}

#[test]
fn recovery_reclaims_status_addresses_before_pending_services_are_served() {
    // "a/new" sorts first and would take 192.0.2.0 if served first.
    let y = pool("p", "", "192.0.2.0/31")
        + &svc("a", "new", "", "")
        + "apiVersion: v1\nkind: Service\nmetadata: {name: old, namespace: z}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.0}]}}\n---\n";
    let o = run(&y);
    assert_eq!(ips(&o, "z/old"), ["192.0.2.0"]);
    assert_eq!(ips(&o, "a/new"), ["192.0.2.1"]);
}

#[test]
fn two_services_claiming_one_address_in_status_keep_it_for_the_first_in_key_order() {
    let st = |n: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: a}}\nspec: {{type: LoadBalancer}}\nstatus: {{loadBalancer: {{ingress: [{{ip: 192.0.2.7}}]}}}}\n---\n"
        )
    };
    let o = run(&(pool("p", "", "192.0.2.0/24") + &st("b") + &st("a")));
    assert_eq!(ips(&o, "a/a"), ["192.0.2.7"]);
    assert_eq!(ips(&o, "a/b"), ["192.0.2.0"]);
    assert!(
        o.cleared[&ServiceKey::new("a", "b")]
            .to_string()
            .contains("in use by a/a")
    );
}

#[test]
fn status_address_that_no_longer_fits_the_request_is_cleared_and_reallocated() {
    let y = pool("a-p", "", "192.0.2.0/25")
        + &pool("b-p", "", "192.0.2.128/25")
        + "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a, annotations: {metallb.io/address-pool: b-p}}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.3}]}}\n---\n";
    let o = run(&y);
    assert_eq!(ips(&o, "a/s"), ["192.0.2.128"]);
    assert!(o.cleared.contains_key(&ServiceKey::new("a", "s")));
}

#[test]
fn restart_keeps_every_address() {
    let mut y = pool("p", "", "192.0.2.0/24, 2001:db8:1::/120");
    for i in 0..40 {
        let extra = if i % 3 == 0 {
            "  ipFamilyPolicy: PreferDualStack\n"
        } else {
            ""
        };
        y += &svc("a", &format!("s{i:02}"), "", extra);
    }
    let first = run(&y);
    // Second run: a fresh allocator sees every address in status, plus a new service that sorts
    // first.
    let c = config(&(y + &svc("aaa", "new", "", "")));
    let mut inputs = inputs_from(&c, None);
    for i in inputs.iter_mut() {
        if let Some(a) = first.allocated.get(&i.key) {
            i.status_ips = a.ips.clone();
        }
    }
    let mut alloc = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let second = converge(&mut alloc, inputs);
    for (k, a) in &first.allocated {
        assert_eq!(&second.allocated[k], a, "{k} changed after restart");
    }
}

#[test]
fn pool_change_releases_only_addresses_that_left_every_pool() {
    let c1 = config(
        &(pool("p", "", "192.0.2.0/30") + &svc("a", "s0", "", "") + &svc("a", "s1", "", "")),
    );
    let mut a = PoolAllocator::new(&c1.pools.values().cloned().collect::<Vec<_>>());
    converge(&mut a, inputs_from(&c1, None));
    // 192.0.2.0 leaves every pool; 192.0.2.1 moves to pool "q".
    let c2 = config(
        &(pool("q", "", "192.0.2.1-192.0.2.3") + &svc("a", "s0", "", "") + &svc("a", "s1", "", "")),
    );
    let released = a.set_pools(&c2.pools.values().cloned().collect::<Vec<_>>());
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].0, ServiceKey::new("a", "s0"));
    assert_eq!(
        a.allocation(&ServiceKey::new("a", "s1")).unwrap().pool,
        "q",
        "moved address re-tagged"
    );
    let o = converge(&mut a, inputs_from(&c2, None));
    assert_eq!(ips(&o, "a/s1"), ["192.0.2.1"]);
    assert_eq!(ips(&o, "a/s0"), ["192.0.2.2"]);
}

/// A service admitted by its namespace's name label (which the allocator does not keep for
/// each service: the key implies it) is still admitted when the pools change.
#[test]
fn a_service_admitted_by_its_namespace_name_stays_when_the_pools_change() {
    let named = "  serviceAllocation: {namespaceSelectors: [{matchLabels: {kubernetes.io/metadata.name: blog}}]}\n";
    let c1 = config(&(pool("named", named, "192.0.2.0/30") + &svc("blog", "s", "", "")));
    let mut a = PoolAllocator::new(&c1.pools.values().cloned().collect::<Vec<_>>());
    let o = converge(&mut a, inputs_from(&c1, None));
    assert_eq!(ips(&o, "blog/s"), ["192.0.2.0"]);
    // Another pool appears; "named" is unchanged.
    let c2 = config(
        &(pool("named", named, "192.0.2.0/30")
            + &pool("other", "", "198.51.100.0/30")
            + &svc("blog", "s", "", "")),
    );
    let released = a.set_pools(&c2.pools.values().cloned().collect::<Vec<_>>());
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(
        a.allocation(&ServiceKey::new("blog", "s")).map(|x| x.pool),
        Some("named".to_string())
    );
}

#[test]
fn failed_assign_keeps_what_the_service_held() {
    let c = config(&pool("p", "", "192.0.2.0/24"));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let x = Request::simple(ServiceKey::new("a", "x"));
    let y = Request::simple(ServiceKey::new("a", "y"));
    let held = a.allocate(&x).unwrap();
    let other = a.allocate(&y).unwrap();
    let err = a.assign(&x, &other.ips).unwrap_err();
    assert!(matches!(err, AllocError::InUse { .. }));
    assert_eq!(a.allocation(&x.key), Some(held));
}

#[test]
fn allocate_is_idempotent_for_a_service_that_holds_addresses() {
    let c = config(&pool("p", "", "192.0.2.0/24"));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    let r = Request::simple(ServiceKey::new("a", "x"));
    let first = a.allocate(&r).unwrap();
    assert_eq!(a.allocate(&r).unwrap(), first);
    assert_eq!(a.usage("p").unwrap().ipv4_in_use, 1);
}

#[test]
fn same_inputs_give_the_same_outputs() {
    let mut y = pool("b", "", "192.0.2.0/28") + &pool("a", "", "198.51.100.0/28");
    for i in 0..20 {
        y += &svc(&format!("n{}", i % 3), &format!("s{i}"), "", "");
    }
    assert_eq!(run(&y), run(&y));
    // Equal pools are tried in name order: "a" first.
    assert_eq!(run(&y).allocated.values().next().unwrap().pool, "a");
}

#[test]
fn empty_ipv6_64_pool_costs_nothing_and_sequential_use_stays_one_run() {
    let c = config(&pool("v6", "", "2001:db8:1::/64"));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    assert_eq!(a.occupancy_runs(), 0);
    let mut r = Request::simple(ServiceKey::new("a", "x"));
    r.families = vec![lb_core::ip::Family::V6];
    for i in 0..1000 {
        r.key = ServiceKey::new("a", format!("s{i}"));
        a.allocate(&r).unwrap();
    }
    assert_eq!(a.occupancy_runs(), 1);
    assert_eq!(a.usage("v6").unwrap().ipv6_total, 1 << 64);
}

#[test]
fn services_gone_from_the_input_are_released() {
    let c = config(&(pool("p", "", "192.0.2.0/24") + &svc("a", "s", "", "")));
    let mut a = PoolAllocator::new(&c.pools.values().cloned().collect::<Vec<_>>());
    converge(&mut a, inputs_from(&c, None));
    converge(&mut a, Vec::<Input>::new());
    assert!(a.services().is_empty());
}

#[test]
fn non_load_balancer_and_classed_services_are_not_allocated() {
    let y = pool("p", "", "192.0.2.0/24")
        + "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {type: ClusterIP}\n---\n"
        + &svc("a", "classed", "", "  loadBalancerClass: other.io/lb\n");
    let o = run(&y);
    assert!(o.allocated.is_empty() && o.pending.is_empty());
}

#[test]
fn annotation_conflict_is_a_pending_reason_not_a_crash() {
    let y = pool("p", "", "192.0.2.0/24")
        + &svc(
            "a",
            "s",
            "metallb.io/loadBalancerIPs: 192.0.2.1",
            "  loadBalancerIP: 192.0.2.2\n",
        )
        + &svc("a", "t", "metallb.io/loadBalancerIPs: not-an-ip", "");
    let o = run(&y);
    assert!(pending(&o, "a/s").contains("not both"));
    assert!(pending(&o, "a/t").contains("is not an IP address"));
}

#[test]
fn pool_change_releases_addresses_whose_new_pool_does_not_admit_the_service() {
    // Found by the model test: an address moving into a pool pinned to another namespace.
    let c1 = config(&(pool("wide", "", "192.0.2.0/30") + &svc("a", "s", "", "")));
    let mut a = PoolAllocator::new(&c1.pools.values().cloned().collect::<Vec<_>>());
    converge(&mut a, inputs_from(&c1, None));
    let c2 = config(&pool(
        "b-only",
        "  serviceAllocation: {namespaces: [b]}\n",
        "192.0.2.0/30",
    ));
    let released = a.set_pools(&c2.pools.values().cloned().collect::<Vec<_>>());
    assert_eq!(released.len(), 1);
    assert!(a.services().is_empty());
}

/// Allocates `names` one at a time in that order, each pass claiming what the previous passes
/// gave (as a node that saw the services appear over time and kept its state); returns the
/// final addresses.
fn incremental(
    placement: lb_core::alloc::Placement,
    pools: &str,
    names: &[String],
) -> std::collections::BTreeMap<ServiceKey, Vec<std::net::IpAddr>> {
    let mut held: std::collections::BTreeMap<ServiceKey, Vec<std::net::IpAddr>> =
        Default::default();
    for n in 1..=names.len() {
        let yaml: String = pools.to_string()
            + &names[..n]
                .iter()
                .map(|s| svc("a", s, "", ""))
                .collect::<String>();
        let c = config(&yaml);
        let mut inputs = inputs_from(&c, None);
        for i in &mut inputs {
            i.status_ips = held.get(&i.key).cloned().unwrap_or_default();
        }
        let p: Vec<_> = c.pools.values().cloned().collect();
        let mut a = PoolAllocator::with_placement(&p, placement);
        let o = converge(&mut a, inputs);
        held = o.allocated.into_iter().map(|(k, v)| (k, v.ips)).collect();
    }
    held
}

#[test]
fn hashed_placement_gives_nodes_with_different_histories_nearly_the_same_addresses() {
    use lb_core::alloc::Placement;
    let pools = pool("p", "", "198.51.100.0/24");
    let names: Vec<String> = (0..64).map(|i| format!("svc{i:02}")).collect();
    let mut shuffled = names.clone();
    // A fixed permutation: every 7th, then the rest.
    shuffled.sort_by_key(|s| {
        let i: usize = s[3..].parse().unwrap();
        (i * 37) % 64
    });
    let differ = |p: Placement| {
        let a = incremental(p, &pools, &names);
        let b = incremental(p, &pools, &shuffled);
        assert_eq!(a.len(), 64);
        a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count()
    };
    let (lowest, hashed) = (differ(Placement::Lowest), differ(Placement::Hashed));
    // A quarter full: with the lowest free address almost every service depends on the order
    // it arrived in; with hashed placement only the few whose positions collide do.
    assert!(lowest > 50, "lowest free: {lowest} of 64 differ");
    assert!(hashed <= 6, "hashed: {hashed} of 64 differ");
}

#[test]
fn with_claims_adding_a_service_moves_no_other_under_either_placement() {
    use lb_core::alloc::Placement;
    let pools = pool("p", "", "198.51.100.0/24");
    let names: Vec<String> = (0..100).map(|i| format!("svc{i:02}")).collect();
    for p in [Placement::Lowest, Placement::Hashed] {
        let before = incremental(p, &pools, &names[..99]);
        let after = incremental(p, &pools, &names);
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "{k} moved ({p:?})");
        }
    }
}

#[test]
fn hashed_placement_wraps_around_and_keeps_sharing_groups_together() {
    use lb_core::alloc::Placement;
    let yaml = pool("p", "", "192.0.2.0/30")
        + &(0..4)
            .map(|i| svc("a", &format!("z{i}"), "", ""))
            .collect::<String>()
        + &svc(
            "a",
            "x",
            "metallb.io/allow-shared-ip: k",
            "  ports: [{port: 80}]\n",
        )
        + &svc(
            "a",
            "y",
            "metallb.io/allow-shared-ip: k",
            "  ports: [{port: 81}]\n",
        );
    let c = config(&yaml);
    let p: Vec<_> = c.pools.values().cloned().collect();
    let mut a = PoolAllocator::with_placement(&p, Placement::Hashed);
    let o = converge(&mut a, inputs_from(&c, None));
    // Four addresses, five groups (x and y share, and go first in key order): every address
    // is used, and one of the others waits.
    assert_eq!(o.pending.len(), 1, "{:?}", o.pending);
    let used: std::collections::BTreeSet<_> =
        o.allocated.values().flat_map(|v| v.ips.clone()).collect();
    assert_eq!(used.len(), 4);
    let (x, y) = (
        o.allocated.get(&ServiceKey::new("a", "x")),
        o.allocated.get(&ServiceKey::new("a", "y")),
    );
    assert_eq!(x.unwrap().ips, y.unwrap().ips, "a sharing group shares");
}

/// MetalLB walks a pool's addresses in the order written (config.go around 555, allocator.go
/// around 281): the first range listed is used first, whatever its address.
#[test]
fn a_pools_addresses_are_walked_in_the_order_written() {
    let o = run(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.8/29, 192.0.2.0/29]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\nspec: {type: LoadBalancer}\n",
    );
    assert_eq!(ips(&o, "default/a"), ["192.0.2.8"]);
    // Past the first range's end, the next range written.
    let mut yaml = String::from(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.8/31, 192.0.2.0/31]}\n",
    );
    for s in ["a", "b", "c"] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\nspec: {{type: LoadBalancer}}\n"
        ));
    }
    let o = run(&yaml);
    assert_eq!(ips(&o, "default/a"), ["192.0.2.8"]);
    assert_eq!(ips(&o, "default/b"), ["192.0.2.9"]);
    assert_eq!(ips(&o, "default/c"), ["192.0.2.0"]);
}

fn svc_yaml(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec: {{type: LoadBalancer, {spec}}}\n"
    )
}

fn pool_yaml(name: &str, addresses: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{addresses}]\n{extra}"
    )
}

/// MetalLB ipfamily.ForService (allocation.go): on a single-stack cluster the API server
/// stores one family for a PreferDualStack service, and it gets one address.
#[test]
fn prefer_dual_stack_takes_its_families_from_the_service() {
    let y = pool_yaml("both", "192.0.2.0/28, 2001:db8::/124", "")
        + &svc_yaml(
            "single",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4]",
        )
        + &svc_yaml(
            "dual",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv6, IPv4]",
        );
    let o = run(&y);
    // Services are served in key order: "dual" first.
    assert_eq!(ips(&o, "default/dual"), ["2001:db8::", "192.0.2.0"]);
    assert_eq!(
        ips(&o, "default/single"),
        ["192.0.2.1"],
        "one family, one address"
    );
}

/// MetalLB Allocate (allocator.go around 377): the pools pinned to a service are tried first,
/// for every family policy: a pinned single-family pool beats an unrestricted dual-stack one.
#[test]
fn pinned_pools_come_before_unrestricted_ones_for_prefer_dual_stack_too() {
    let y = pool_yaml("a-open", "192.0.2.0/28, 2001:db8::/124", "")
        + &pool_yaml(
            "z-pinned",
            "198.51.100.0/28",
            "  serviceAllocation:\n    serviceSelectors: [{matchLabels: {app: web}}]\n",
        )
        + &svc_yaml(
            "web",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6]",
        );
    let o = run(&y);
    assert_eq!(ips(&o, "default/web"), ["198.51.100.0"]);
}

/// MetalLB findBestPoolForService (allocator.go around 339): with no pool holding both
/// families, a PreferDualStack service takes the first pool holding its primary family.
#[test]
fn a_pool_holding_the_primary_family_is_preferred_for_a_dual_stack_request() {
    let y = pool_yaml("a-v6", "2001:db8::/124", "")
        + &pool_yaml("b-v4", "192.0.2.0/28", "")
        + &svc_yaml(
            "v4first",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6]",
        )
        + &svc_yaml(
            "v6first",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv6, IPv4]",
        );
    let o = run(&y);
    assert_eq!(ips(&o, "default/v4first"), ["192.0.2.0"]);
    assert_eq!(ips(&o, "default/v6first"), ["2001:db8::"]);
}

/// MetalLB's controller (service.go around 272) compares the requested addresses' family with
/// the service's: a dual-stack service must request one address per family, PreferDualStack
/// as RequireDualStack.
#[test]
fn a_dual_stack_service_that_requests_one_address_is_refused() {
    let y = pool_yaml("both", "192.0.2.0/28, 2001:db8::/124", "")
        + &svc_yaml(
            "prefer",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6], loadBalancerIP: 192.0.2.5",
        )
        + &svc_yaml(
            "require",
            "ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], loadBalancerIP: 192.0.2.6",
        )
        + &svc_yaml(
            "single-cluster",
            "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4], loadBalancerIP: 192.0.2.7",
        );
    let o = run(&y);
    for svc in ["default/prefer", "default/require"] {
        assert!(
            pending(&o, svc).contains("needs one IPv4 and one IPv6 address"),
            "{svc}: {}",
            pending(&o, svc)
        );
    }
    assert_eq!(ips(&o, "default/single-cluster"), ["192.0.2.7"]);
}
