//! Writes the plan bench's generated file of N services to standard output, for timing
//! `lb-bin plan` and `check` on it: `cargo run --release -p lb-benches --example services_yaml
//! -- 100000 > /tmp/services.yaml`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    std::io::stdout().write_all(lb_benches::services_yaml(n).as_bytes())
}
