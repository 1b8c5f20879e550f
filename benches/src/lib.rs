//! Criterion benchmarks for podcap live in `benches/`; run them with `cargo xtask bench`.
