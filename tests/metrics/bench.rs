//! The size and render time of a scrape of a busy node with 100,000
//! registered numbers (docs/benchmarks.md). Ignored by default (it takes
//! minutes in a debug build); run it with
//! `cargo test -p admit-it --release --test metrics -- --ignored --nocapture scrape_of_100k`.
