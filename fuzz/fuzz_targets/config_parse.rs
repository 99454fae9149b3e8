//! Arbitrary text through the whole standalone pipeline: parse and validate, allocate every
//! service, and plan one node. Nothing may panic, and every finding must render.

#![no_main]

use std::collections::BTreeSet;

use lb_core::alloc::converge::inputs_from;
use lb_core::alloc::{PoolAllocator, converge};
use lb_core::plan::{PlanInput, plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let loaded = lb_core::load_str(text);
    for e in &loaded.errors {
        let _ = e.to_string();
    }
    let config = loaded.config;
    let pools: Vec<_> = config.pools.values().cloned().collect();
    let mut alloc = PoolAllocator::new(&pools);
    let outcome = converge(&mut alloc, inputs_from(&config, None));
    let mut members: BTreeSet<String> = config.nodes.keys().cloned().collect();
    members.insert("fuzz-node".to_string());
    for node in &members {
        let _ = plan(&PlanInput::new(
            &config,
            &outcome.allocated,
            &members,
            node,
            lb_core::Rules::standalone(),
        ));
    }
});
