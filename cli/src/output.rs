//! Output: the API's `data` as JSON (`--json`, indented or `--compact`), or for people aligned
//! tables and `key  value` blocks built from the same JSON. Money is the API's minor units
//! shown in major units with the currency (`{"amount":-1965,"currency":"usd"}` → `-19.65 USD`),
//! times in UTC to the second.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    pub compact: bool,
}

impl Out {
    /// Prints `value` as JSON on stdout.
    pub fn json(&self, value: &Value) {
        let text = if self.compact { serde_json::to_string(value) } else { serde_json::to_string_pretty(value) };
        println!("{}", text.unwrap_or_else(|_| "null".into()));
    }
}

/// Columns aligned on the widest cell; numeric columns right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), right: vec![false; headers.len()], rows: Vec::new() }
    }

    /// Right-aligns the named columns.
    pub fn right(mut self, columns: &[&str]) -> Self {
        for (i, h) in self.headers.iter().enumerate() {
            if columns.contains(h) {
                self.right[i] = true;
            }
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count()));
            cells.chain([self.headers[i].len()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> =
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if self.right[i] {
                            format!("{c:>w$}", w = widths[i])
                        } else {
                            format!("{c:<w$}", w = widths[i])
                        }
                    })
                    .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = vec![line(self.headers.clone())];
        for row in &self.rows {
            out.push(line(row.iter().map(String::as_str).collect()));
        }
        out.join("\n")
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// `key  value` lines, keys padded to the longest; rows whose value is empty are left out.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        println!("{key:<width$}  {value}");
    }
}

/// A JSON value as a cell: strings bare, null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Like [`text`], but empty for null (for [`print_fields`], which then drops the row).
pub fn opt(value: &Value) -> String {
    if value.is_null() { String::new() } else { text(value) }
}

/// An RFC 3339 time as `2026-11-30 15:04:05Z`; null as `-`.
pub fn time(value: &Value) -> String {
    match value.as_str().and_then(parse_time) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true).replacen('T', " ", 1),
        None => text(value),
    }
}

pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

/// A `{start, end}` period.
pub fn period(value: &Value) -> String {
    format!("{} → {}", time(&value["start"]), time(&value["end"]))
}

const ZERO_DECIMAL: &[&str] = &["jpy", "krw", "vnd", "clp", "isk", "ugx"];

/// `{"amount": 2900, "currency": "usd"}` → `29.00 USD`.
pub fn money(value: &Value) -> String {
    let (Some(amount), Some(currency)) = (value["amount"].as_i64(), value["currency"].as_str()) else {
        return text(value);
    };
    let code = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        return format!("{amount} {code}");
    }
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!("{sign}{}.{:02} {code}", abs / 100, abs % 100)
}

/// Seconds between two RFC 3339 times, as `1.25 s` or `340 ms`.
pub fn elapsed(from: &Value, to: &Value) -> Option<String> {
    let ms = (parse_time(to.as_str()?)? - parse_time(from.as_str()?)?).num_milliseconds();
    Some(if ms < 1000 { format!("{ms} ms") } else { format!("{:.2} s", ms as f64 / 1000.0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_in_major_units() {
        assert_eq!(money(&json!({"amount": 2900, "currency": "usd"})), "29.00 USD");
        assert_eq!(money(&json!({"amount": -1965, "currency": "eur"})), "-19.65 EUR");
        assert_eq!(money(&json!({"amount": -5, "currency": "usd"})), "-0.05 USD");
        assert_eq!(money(&json!({"amount": 1200, "currency": "jpy"})), "1200 JPY");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "COUNT"]).right(&["COUNT"]);
        t.row(vec!["a".into(), "5".into()]);
        t.row(vec!["longer".into(), "100".into()]);
        assert_eq!(t.render(), "NAME    COUNT\na           5\nlonger    100");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(time(&json!("2026-11-30T15:04:05.123456Z")), "2026-11-30 15:04:05Z");
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(
            elapsed(&json!("2026-01-01T00:00:00Z"), &json!("2026-01-01T00:00:01.5Z")).as_deref(),
            Some("1.50 s")
        );
    }
}
