//! `donut-host gc [DB…] [--retain DURATION] [--write-units-max N]`:
//! retires versions older than the retention and deletes what only they
//! referenced (docs/format.md, "Garbage collection"). Safe to kill and
//! run again.

use super::{Env, db_name};
use anyhow::{Context, Result, bail};
use donut_host::storage::{Clock, GcOptions, GcReport, StorageError, collect_garbage};

#[derive(clap::Args)]
pub struct Args {
    /// Databases to collect (all of the store's when none is named).
    dbs: Vec<String>,
    /// Keep every version committed within this long (and the one current
    /// at its start; the newest is always kept): 7d, 12h, 30m, 90s, 0s.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    retain: u64,
    /// Stop once this many write units (1 per KB deleted) are spent; the
    /// next run goes on from there.
    #[arg(long, value_name = "N")]
    write_units_max: Option<u64>,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let names = match args.dbs.is_empty() {
        true => env
            .backend
            .list_roots()
            .await
            .context("listing the databases")?
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        false => args
            .dbs
            .iter()
            .map(|db| db_name(db))
            .collect::<Result<Vec<_>>>()?,
    };
    let options = GcOptions {
        retain_ms: args.retain,
        now_ms: Clock::System.now_ms(),
        write_units_max: args.write_units_max,
        keep_from: None,
    };
    let (mut failed, mut not_found) = (0, 0);
    for name in names {
        match collect_garbage(&*env.backend, &name, options).await {
            Ok(report) => println!("{}", describe(&name, &report)),
            Err(e) => {
                eprintln!("error: gc of {name:?} failed: {e}");
                failed += 1;
                if let StorageError::NotFound(_) = e {
                    not_found += 1;
                }
            }
        }
    }
    Ok(match (failed, not_found) {
        (0, _) => crate::exit::OK,
        (f, n) if f == n => {
            eprintln!("hint: {}", crate::exit::NOT_FOUND_HINT);
            crate::exit::NOT_FOUND
        }
        _ => crate::exit::FAILURE,
    })
}

fn describe(name: &donut_format::DbName, r: &GcReport) -> String {
    if r.removed {
        return format!(
            "{name}: removed; deleted {} sectors ({} bytes) and every item left of it",
            r.sectors_deleted, r.sector_bytes_deleted
        );
    }
    let mut line = format!(
        "{name}: oldest kept version {}, {} versions retired, {} sectors deleted ({} bytes)",
        r.oldest_kept, r.versions_retired, r.sectors_deleted, r.sector_bytes_deleted
    );
    if r.sectors_left_unsalted > 0 {
        line += &format!(
            "; {} sectors written before format v5 left",
            r.sectors_left_unsalted
        );
    }
    if r.forked {
        line += "; its sectors are shared with forks and left to a later gc";
    }
    if r.stopped_at_budget {
        line += "; stopped at --write-units-max: run again to go on";
    }
    line
}

/// `7d`, `12h`, `30m`, `90s`, `250ms`, or a plain number of seconds.
fn parse_duration_ms(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let Ok(count) = digits.parse::<u64>() else {
        bail!("{text:?} is not a duration such as 7d, 12h, 30m or 90s");
    };
    let unit_ms = match unit {
        "d" => 24 * 3600 * 1000,
        "h" => 3600 * 1000,
        "m" => 60 * 1000,
        "s" | "" => 1000,
        "ms" => 1,
        _ => bail!("{text:?}: the unit is one of d, h, m, s, ms"),
    };
    count
        .checked_mul(unit_ms)
        .with_context(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use donut_host::storage::RETAIN_MS_DEFAULT;

    #[test]
    fn durations_parse_in_every_unit_and_bad_ones_are_refused() {
        assert_eq!(parse_duration_ms("7d").unwrap(), RETAIN_MS_DEFAULT);
        assert_eq!(parse_duration_ms("12h").unwrap(), 12 * 3600 * 1000);
        assert_eq!(parse_duration_ms("0s").unwrap(), 0);
        assert_eq!(parse_duration_ms("90").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert!(parse_duration_ms("7w").is_err());
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }
}
