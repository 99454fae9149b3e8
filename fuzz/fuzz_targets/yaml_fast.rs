//! The fast YAML path against serde-saphyr: every document it reads, serde-saphyr reads as the
//! same value (with `load_str`'s options); what it is not certain of, it leaves alone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|doc: &str| {
    if let Some(fast) = lb_core::config::yaml::value(doc) {
        let options = serde_saphyr::options! { strict_booleans: true };
        match serde_saphyr::from_str_with_options::<Value>(doc, options) {
            Ok(v) => assert_eq!(v, fast, "serde-saphyr reads otherwise: {doc:?}"),
            Err(e) => panic!("serde-saphyr refuses what the fast path read ({fast:?}): {e}"),
        }
    }
});
