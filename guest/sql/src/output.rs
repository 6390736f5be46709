//! Result sets as an aligned table, CSV (RFC 4180) or JSON (an array of
//! objects).

use donut_guest::rusqlite::types::Value;
use std::fmt::Write as _;
use std::io::{self, Write};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "table" => Some(Format::Table),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A REAL as SQLite's shell prints it: with a decimal point or an exponent
/// (`19.0`, `1e300`), so it never reads as an INTEGER (`f64`'s `Display`
/// prints `19` and 301 digits for `1e300`).
fn real(f: f64) -> String {
    format!("{f:?}")
}

fn plain(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => real(*f),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => format!("X'{}'", hex(b)),
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) if f.is_finite() => real(*f),
        Value::Real(_) => "null".into(),
        Value::Text(t) => json_string(t),
        Value::Blob(b) => json_string(&hex(b)),
    }
}

pub fn print(
    out: &mut impl Write,
    format: Format,
    columns: &[String],
    rows: &[Vec<Value>],
) -> io::Result<()> {
    match format {
        Format::Csv => {
            let header: Vec<String> = columns.iter().map(|c| csv_field(c)).collect();
            writeln!(out, "{}", header.join(","))?;
            for row in rows {
                let fields: Vec<String> = row.iter().map(|v| csv_field(&plain(v))).collect();
                writeln!(out, "{}", fields.join(","))?;
            }
        }
        Format::Json => {
            writeln!(out, "[")?;
            for (i, row) in rows.iter().enumerate() {
                let fields: Vec<String> = columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| format!("{}: {}", json_string(c), json_value(v)))
                    .collect();
                let comma = if i + 1 < rows.len() { "," } else { "" };
                writeln!(out, "  {{{}}}{comma}", fields.join(", "))?;
            }
            writeln!(out, "]")?;
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| match v {
                            Value::Null => "NULL".to_string(),
                            v => plain(v),
                        })
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = (0..columns.len())
                .map(|i| {
                    cells
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([columns[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| -> String {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
                    .trim_end()
                    .to_string()
            };
            writeln!(out, "{}", line(columns))?;
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(out, "{}", rule.join("-+-"))?;
            for row in &cells {
                writeln!(out, "{}", line(row))?;
            }
            writeln!(
                out,
                "({} row{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format) -> String {
        let columns = vec!["id".to_string(), "note".to_string()];
        let rows = vec![
            vec![Value::Integer(1), Value::Text("a,\"b\"".into())],
            vec![Value::Integer(2), Value::Null],
        ];
        let mut out = Vec::new();
        print(&mut out, format, &columns, &rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The differential test of Hrana and the CLI found a REAL of 19.0
    /// printed as the INTEGER 19.
    #[test]
    fn reals_keep_a_decimal_point_or_an_exponent() {
        let columns = vec!["r".to_string()];
        let rows = [19.0, -0.5, 1e300, 0.1]
            .map(|f| vec![Value::Real(f)])
            .to_vec();
        let mut out = Vec::new();
        print(&mut out, Format::Json, &columns, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\n  {\"r\": 19.0},\n  {\"r\": -0.5},\n  {\"r\": 1e300},\n  {\"r\": 0.1}\n]\n"
        );
        assert_eq!(plain(&Value::Real(2.0)), "2.0");
    }

    #[test]
    fn csv_quotes_fields() {
        assert_eq!(render(Format::Csv), "id,note\n1,\"a,\"\"b\"\"\"\n2,\n");
    }

    #[test]
    fn json_is_an_array_of_objects() {
        assert_eq!(
            render(Format::Json),
            "[\n  {\"id\": 1, \"note\": \"a,\\\"b\\\"\"},\n  {\"id\": 2, \"note\": null}\n]\n"
        );
    }

    #[test]
    fn table_aligns_columns() {
        assert_eq!(
            render(Format::Table),
            "id | note\n---+------\n1  | a,\"b\"\n2  | NULL\n(2 rows)\n"
        );
    }
}
