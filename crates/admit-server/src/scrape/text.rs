//! Writing series in the Prometheus text format (version 0.0.4): one
//! `# HELP` and `# TYPE` per family, escaped label values. Imports nothing
//! of this crate (admit-core's histogram type only).

use std::fmt::Write;

use admit_core::RatioHistogram;

/// A page under construction.
#[derive(Debug, Default)]
pub(super) struct Page {
    out: String,
}

/// One gauge family being written.
#[derive(Debug)]
pub(super) struct Family<'a> {
    name: &'static str,
    out: &'a mut String,
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(l: &[(&str, &str)], out: &mut String) {
    if l.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push('}');
}

fn value(v: f64, out: &mut String) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Family<'_> {
    pub fn sample(&mut self, l: &[(&str, &str)], v: f64) -> &mut Self {
        self.out.push_str(self.name);
        labels(l, self.out);
        self.out.push(' ');
        value(v, self.out);
        self.out.push('\n');
        self
    }
}

impl Page {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn gauge(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.head(name, help, "gauge");
        Family {
            name,
            out: &mut self.out,
        }
    }

    /// A counter family (`name` ends in `_total`), read at scrape time from
    /// counts the node keeps itself.
    pub fn counter(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.head(name, help, "counter");
        Family {
            name,
            out: &mut self.out,
        }
    }

    /// A histogram per `kind` label, from cumulative bucket counts.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        per_kind: &[(&str, &RatioHistogram)],
    ) {
        self.head(name, help, "histogram");
        let (bucket, sum, count) = (
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        );
        for &(kind, h) in per_kind {
            let mut le = String::new();
            for (b, n) in bounds.iter().zip(h.le) {
                le.clear();
                value(*b, &mut le);
                self.line(&bucket, &[("kind", kind), ("le", &le)], n as f64);
            }
            self.line(&bucket, &[("kind", kind), ("le", "+Inf")], h.count as f64);
            self.line(&sum, &[("kind", kind)], h.sum);
            self.line(&count, &[("kind", kind)], h.count as f64);
        }
    }

    fn line(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        labels(l, &mut self.out);
        self.out.push(' ');
        value(v, &mut self.out);
        self.out.push('\n');
    }

    pub fn finish(self) -> String {
        self.out
    }
}
