//! How admitctl prints: times in UTC, numbers' status as tables, JSON for
//! scripts, and the exit codes. Imports admit-client's types and
//! serde_json; no I/O besides stdout / stderr.

use admit_client::{Error, Status};
use serde::Serialize;

/// Exit codes, for scripts (documented in `admitctl --help`).
pub const OK: u8 = 0;
/// The send was denied, or a `--check` failed.
pub const DENIED: u8 = 1;
/// Bad usage: arguments or an input file.
pub const USAGE: u8 = 2;
/// The cluster could not be reached or could not serve.
pub const UNREACHABLE: u8 = 3;
/// The server refused the request (bad input, unknown number, ...).
pub const REFUSED: u8 = 4;

/// The exit code for a client error.
pub fn code_of(e: &Error) -> u8 {
    match e {
        Error::Config(_) => USAGE,
        e if e.is_unreachable() => UNREACHABLE,
        Error::RetryBudgetExhausted { .. } | Error::ResourceExhausted { .. } => UNREACHABLE,
        _ => REFUSED,
    }
}

/// A readable line for a client error, with a hint when nothing answered.
pub fn explain(e: &Error, server: &str) -> String {
    if e.is_unreachable() {
        format!("admitctl: cannot reach an admit node at {server}: {e}\n  is admitd running there? (set --server or ADMIT_SERVER)")
    } else {
        format!("admitctl: {e}")
    }
}

/// Prints `v` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("admitctl: cannot encode JSON: {e}"),
    }
}

/// Unix ms as "YYYY-MM-DD HH:MM:SSZ" (UTC).
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil date from days since 1970-01-01 (proleptic Gregorian)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn opt_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), time)
}

fn limit_of(s: &Status) -> (String, String, String, String) {
    match &s.usage {
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
        Some(u) => {
            let tier = u.tier.as_ref().map_or("-".into(), |t| t.name.clone());
            match u.tier.as_ref().and_then(|t| t.limit) {
                Some(l) => (
                    tier,
                    l.to_string(),
                    u.used.to_string(),
                    u.headroom.to_string(),
                ),
                None => (tier, "unlimited".into(), u.used.to_string(), "-".into()),
            }
        }
    }
}

/// One status as a two-column table.
pub fn status_table(s: &Status) {
    let (tier, limit, used, headroom) = limit_of(s);
    let what = if s.number.is_empty() {
        format!("portfolio {}", s.portfolio)
    } else if s.portfolio.is_empty() {
        format!("number {}", s.number)
    } else {
        format!("number {} (portfolio {})", s.number, s.portfolio)
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("", what),
        ("profile", s.profile.clone()),
        ("tier", tier),
        ("limit", limit),
        ("used (24 h)", used),
        ("headroom", headroom),
        (
            "account status",
            format!(
                "{}{}",
                s.account_status,
                if s.restricted {
                    format!(" until {}", opt_time(s.restricted_until_unix_ms))
                } else {
                    String::new()
                }
            ),
        ),
        ("quality", s.quality.clone()),
        ("number status", s.number_status.clone()),
    ];
    let upgrade = match (s.upgrade_at_unix_ms, &s.upgrade_to) {
        (Some(at), Some(t)) => format!(
            "to {} at {}{}",
            t.name,
            time(at),
            if s.observe_only {
                " (predicted only)"
            } else {
                ""
            }
        ),
        (Some(at), None) => time(at),
        _ if s.upgrade_eligible => "eligible".into(),
        _ => "-".into(),
    };
    rows.push(("upgrade", upgrade));
    rows.push(("downgrade", opt_time(s.downgrade_at_unix_ms)));
    let est = if s.uniques_estimated { " (est.)" } else { "" };
    rows.push(("uniques 7 d", format!("{}{est}", s.unique_7d)));
    rows.push(("uniques 30 d", format!("{}{est}", s.unique_30d)));
    rows.push(("opted out", s.opted_out.to_string()));
    if s.account_restricted {
        rows.push((
            "account restriction",
            format!("until {}", opt_time(s.account_restricted_until_unix_ms)),
        ));
    }
    if let Some(t) = s.spam_cooldown_until_unix_ms {
        rows.push(("spam cool-down", format!("until {}", time(t))));
    }
    rows.push(("as of", time(s.as_of_unix_ms)));
    for (k, v) in rows {
        if k.is_empty() {
            outln!("{v}");
        } else {
            outln!("  {k:<20} {v}");
        }
    }
}

/// Numbers as a table, one a line.
pub fn numbers_table(list: &[Status]) {
    outln!(
        "{:<18} {:<14} {:<14} {:>9} {:>7} {:>9}  {:<10} {:<8} {:<10} {:>6} {:>6} {:>6}",
        "number",
        "portfolio",
        "tier",
        "limit",
        "used",
        "headroom",
        "account",
        "quality",
        "status",
        "7d",
        "30d",
        "optout"
    );
    for s in list {
        let (tier, limit, used, headroom) = limit_of(s);
        outln!(
            "{:<18} {:<14} {:<14} {:>9} {:>7} {:>9}  {:<10} {:<8} {:<10} {:>6} {:>6} {:>6}",
            s.number,
            s.portfolio,
            tier,
            limit,
            used,
            headroom,
            s.account_status,
            s.quality,
            s.number_status,
            s.unique_7d,
            s.unique_30d,
            s.opted_out
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(time(1_893_456_000_000), "2030-01-01 00:00:00Z");
        assert_eq!(time(1_709_210_096_000), "2024-02-29 12:34:56Z");
    }
}
