//! Metrics end to end (docs/metrics.md): `/metrics` scraped from running
//! nodes, checked against what the API says; a real Prometheus scraping a
//! real `admitd`; per-scope series on exactly one node of a cluster; and the
//! size and render time of a scrape with 100,000 numbers (ignored test, see
//! docs/benchmarks.md).

#[path = "../support/mod.rs"]
mod support;

mod http;

mod bench;
mod cluster;
mod logs;
mod prometheus;
mod scrape;
