//! Baselines the benches compare against.
