//! `donut-host ls`: the databases in the store, each root checked as every
//! reader checks it.

use super::Env;
use anyhow::Result;
use donut_store::db::list_databases;

pub async fn run(env: &Env) -> Result<i32> {
    println!(
        "{:<32} {:>8} {:>10} {:>12} {:>9}  last commit (UTC)",
        "name", "version", "pages", "bytes", "page size"
    );
    for (name, root) in list_databases(&*env.backend).await? {
        match root {
            Ok(root) => println!(
                "{:<32} {:>8} {:>10} {:>12} {:>9}  {}",
                name.as_str(),
                root.version,
                root.page_count,
                root.file_size(),
                root.page_size,
                format_utc(root.commit_ms)
            ),
            Err(e) => println!("{:<32} unusable root: {e}", name.as_str()),
        }
    }
    Ok(0)
}

/// `YYYY-MM-DD HH:MM:SS` for milliseconds since the Unix epoch.
fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(1_709_251_199_000), "2024-02-29 23:59:59");
    }
}
