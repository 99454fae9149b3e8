//! The ledger receive path of a standalone node: any chunks from a member (after the
//! membership opened them) are put back together, decoded as a ledger or a delta and heard by
//! the agreement without a panic; what does not decode is refused.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use lb_core::members::agree::{Agreement, Reassembly, Received};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let members: BTreeSet<String> = ["node1", "node2", "node3"].map(String::from).into();
    let mut agreement = Agreement::new("node1", 1, BTreeMap::new());
    let mut r = Reassembly::default();
    let mut hear = |chunk: &[u8], agreement: &mut Agreement| {
        match r.push_any("node2", chunk) {
            Ok(Some(Received::Ledger(l))) => {
                agreement.hear("node2", l, &members);
            }
            Ok(Some(Received::Delta(d))) => {
                agreement.hear_delta("node2", d, &members);
            }
            Ok(None) | Err(_) => {}
        }
    };
    if mode & 1 == 0 {
        // Chunks as they come: a length (two bytes) before each.
        let mut at = rest;
        while at.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([at[0], at[1]])).min(at.len() - 2);
            hear(&at[2..2 + n], &mut agreement);
            at = &at[2 + n..];
        }
    } else {
        // One whole body: the JSON decoders reached at once.
        let mut chunk = vec![0u8; 16];
        chunk.extend_from_slice(&0u32.to_be_bytes());
        chunk.extend_from_slice(&1u32.to_be_bytes());
        chunk.extend_from_slice(rest);
        hear(&chunk, &mut agreement);
    }
    let _ = agreement.take_changed();
});
