//! After a run: its kept versions, read back through time travel, restore
//! and fork (docs/format.md, "History"). Whatever the run's faults did,
//! every version a commit wrote must read as a consistent database whose
//! lists only grew from version to version; a restore must bring back
//! exactly what the version reads, and restoring the version before it
//! undo it; a fork of a version must read exactly that version.

use crate::Rng;
use crate::check::{ACCOUNTS, BALANCE, LARGE_ROWS};
use crate::gc::Blind;
use donut_format::{At, DbName};
use donut_host::MemoryBackend;
use donut_host::storage::{Clock, Version, fork, list_versions, remove_database, restore};
use serde_json::Value;

/// Past versions read per run, besides the newest (each is a guest run).
const SAMPLED_VERSIONS: usize = 2;

/// What the checks need of the simulator: reading a database's state
/// (`sim-final`) as a guest would, and blocking on the store.
pub trait Reader {
    /// The `final` object `sim-final` prints for `db` (a name, or
    /// `NAME@VERSION`), or why it could not be read.
    fn final_state(&self, db: &str) -> Result<Value, String>;
    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T;
}

/// Checks the kept versions of `db` from `first` (the first version with
/// the run's tables) on: returns anomalies.
pub fn check(
    reader: &impl Reader,
    store: &MemoryBackend,
    db: &str,
    first: u64,
    rng: &mut Rng,
    gc_blind: Option<Blind>,
) -> Vec<String> {
    let mut out = Vec::new();
    let name = DbName::new(db).expect("the sim's database name is legal");
    let kept = match reader.block_on(list_versions(store, &name, usize::MAX)) {
        Ok(kept) => kept,
        Err(e) => return vec![format!("history: listing versions failed: {e}")],
    };
    let live: Vec<u64> = kept
        .iter()
        .filter_map(|v| match v {
            Version::Live(root) if root.version >= first => Some(root.version),
            _ => None,
        })
        .collect();
    let Some(&newest) = live.first() else {
        return vec![format!("history: no version of {db} at or after {first}")];
    };
    let mut sampled: Vec<u64> = (0..SAMPLED_VERSIONS)
        .map(|_| live[rng.below(live.len() as u64) as usize])
        .chain([newest])
        .collect();
    sampled.sort_unstable();
    sampled.dedup();
    let mut states = Vec::new();
    for &version in &sampled {
        match reader.final_state(&format!("{db}@{version}")) {
            Ok(state) => {
                check_state(version, &state, &mut out);
                states.push((version, state));
            }
            Err(e) => out.push(format!("history: reading {db}@{version} failed: {e}")),
        }
    }
    for pair in states.windows(2) {
        check_growth(&pair[0], &pair[1], &mut out);
    }
    match reader.final_state(db) {
        Ok(current) if states.last().is_some_and(|(_, s)| *s != current) => out.push(format!(
            "history: {db}@{newest} reads {} but {db} reads {current}",
            states.last().map_or(Value::Null, |(_, s)| s.clone())
        )),
        Ok(_) => {}
        Err(e) => out.push(format!("history: reading {db} failed: {e}")),
    }
    let oldest = check_gc(
        reader, store, &name, &kept, &states, rng, gc_blind, &mut out,
    );
    if let Some((version, state)) = states.iter().find(|(v, _)| *v >= oldest).cloned() {
        let gc = Collect {
            rng,
            blind: gc_blind,
        };
        check_restore_and_fork(
            reader,
            store,
            &name,
            (version, &state),
            newest,
            gc,
            &mut out,
        );
    }
    out
}

/// How the restore check collects garbage.
struct Collect<'a> {
    rng: &'a mut Rng,
    blind: Option<Blind>,
}

/// Collects the garbage of the versions before a sampled one, then reads
/// every sampled version again: kept ones as before, retired ones refused.
/// Returns the oldest kept version.
#[allow(clippy::too_many_arguments)]
fn check_gc(
    reader: &impl Reader,
    store: &MemoryBackend,
    name: &DbName,
    kept: &[Version],
    states: &[(u64, Value)],
    rng: &mut Rng,
    blind: Option<Blind>,
    out: &mut Vec<String>,
) -> u64 {
    let db = name.as_str();
    if states.is_empty() {
        // No version read back: the anomalies already say why.
        return u64::MAX;
    }
    let cut = states[rng.below(states.len() as u64) as usize].0;
    let Some(horizon) = kept
        .iter()
        .find(|v| v.version() == cut)
        .map(Version::time_ms)
    else {
        return 0;
    };
    let report = match crate::gc::collect_at(reader, store, name, horizon, rng, blind) {
        Ok(report) => report,
        Err(e) => {
            out.push(format!("gc: {e}"));
            return 0;
        }
    };
    for (version, state) in states {
        let read = reader.final_state(&format!("{db}@{version}"));
        match read {
            Ok(read) if *version >= report.oldest_kept && read == *state => {}
            Ok(read) if *version >= report.oldest_kept => out.push(format!(
                "gc: {db}@{version} read {state} before gc (cut at {cut}) and {read} after"
            )),
            Ok(read) => out.push(format!(
                "gc: {db}@{version} is retired (oldest kept {}) but read {read}",
                report.oldest_kept
            )),
            Err(e) if *version < report.oldest_kept && e.contains("no longer kept") => {}
            Err(e) => out.push(format!("gc: reading {db}@{version} after gc failed: {e}")),
        }
    }
    report.oldest_kept
}

/// Restores `version`, reads it back, restores the version before the
/// restore (the undo) and forks `version` into a new database.
fn check_restore_and_fork(
    reader: &impl Reader,
    store: &MemoryBackend,
    name: &DbName,
    (version, state): (u64, &Value),
    newest: u64,
    gc: Collect<'_>,
    out: &mut Vec<String>,
) {
    let db = name.as_str();
    let expect = |what: &str, read: Result<Value, String>, out: &mut Vec<String>| match read {
        Ok(read) if read == *state => {}
        Ok(read) => out.push(format!(
            "history: {what} reads {read}, {db}@{version} {state}"
        )),
        Err(e) => out.push(format!("history: reading {what} failed: {e}")),
    };
    let newest_state = reader.final_state(db);
    // What the fork below copies: the restored version once gc retired
    // `version` (they read the same).
    let mut fork_from = version;
    match reader.block_on(restore(store, name, At::Version(version))) {
        Ok(restored) => {
            fork_from = restored.version;
            expect(
                &format!("{db} restored to {version}"),
                reader.final_state(db),
                out,
            );
            match reader.block_on(restore(store, name, At::Version(restored.version - 1))) {
                Ok(_) => {
                    if reader.final_state(db) != newest_state {
                        out.push(format!(
                            "history: undoing the restore of {db} did not bring version {newest} back"
                        ));
                    }
                }
                Err(e) => out.push(format!("history: undoing the restore failed: {e}")),
            }
            // Retire everything before the restore while its mark stands:
            // the restored version still reads as its source.
            let before_restore = restored_time(reader, store, name, restored.version) - 1;
            match crate::gc::collect_at(reader, store, name, before_restore, gc.rng, gc.blind) {
                Ok(_) => expect(
                    &format!("{db}@{} (restored) after gc", restored.version),
                    reader.final_state(&format!("{db}@{}", restored.version)),
                    out,
                ),
                Err(e) => out.push(format!("gc after a restore: {e}")),
            }
        }
        Err(e) => out.push(format!("history: restoring {db} to {version} failed: {e}")),
    }
    let copy = DbName::new("fork.db").expect("legal name");
    match reader.block_on(fork(store, name, Some(At::Version(fork_from)), &copy)) {
        Ok(_) => {
            expect(
                &format!("a fork of {db}@{fork_from}"),
                reader.final_state("fork.db"),
                out,
            );
            check_fork_gc(reader, store, name, &copy, gc, out);
        }
        Err(e) => out.push(format!("history: forking {db}@{fork_from} failed: {e}")),
    }
}

/// Collects a database and its fork down to their newest versions, then
/// removes the fork and collects it away: whatever the two share must
/// stay until neither holds it (docs/format.md, "Garbage collection").
fn check_fork_gc(
    reader: &impl Reader,
    store: &MemoryBackend,
    name: &DbName,
    copy: &DbName,
    gc: Collect<'_>,
    out: &mut Vec<String>,
) {
    let (db, forked) = (name.as_str(), copy.as_str());
    let source_state = reader.final_state(db);
    let fork_state = reader.final_state(forked);
    // Past every version's time (restores stamp the system clock).
    let far = Clock::System.now_ms() + 3_600_000;
    let same = |what: &str, db: &str, before: &Result<Value, String>, out: &mut Vec<String>| {
        let now = reader.final_state(db);
        if now != *before {
            out.push(format!(
                "fork gc: {db} read {before:?} and after {what} {now:?}"
            ));
        }
    };
    for each in [name, copy] {
        if let Err(e) = crate::gc::collect_at(reader, store, each, far, gc.rng, gc.blind) {
            out.push(format!("fork gc: {e}"));
        }
    }
    same("collecting both", db, &source_state, out);
    same("collecting both", forked, &fork_state, out);
    if let Err(e) = reader.block_on(remove_database(store, copy)) {
        out.push(format!("fork gc: removing {forked} failed: {e}"));
        return;
    }
    match crate::gc::collect_at(reader, store, copy, far, gc.rng, gc.blind) {
        Ok(report) if report.removed => {}
        // The killed run got to the end: the fork is gone already.
        Err(e) if e.contains("no database") => {}
        Ok(report) => out.push(format!("fork gc: {forked} removed but left: {report:?}")),
        Err(e) => out.push(format!("fork gc: {e}")),
    }
    same("the fork's removal", db, &source_state, out);
}

/// Every fork the run's administrator left (`admin`) must read as a
/// consistent database: what `gc` deleted while it ran was no fork's.
pub fn check_forks(reader: &impl Reader, forks: &[DbName]) -> Vec<String> {
    let mut out = Vec::new();
    for fork in forks {
        match reader.final_state(fork.as_str()) {
            Ok(state) => check_state(0, &state, &mut out),
            Err(e) => out.push(format!("admin: reading {fork} failed: {e}")),
        }
    }
    out
}

/// When version `version` of `name` was committed (0 if unknown).
fn restored_time(reader: &impl Reader, store: &MemoryBackend, name: &DbName, version: u64) -> u64 {
    reader
        .block_on(list_versions(store, name, usize::MAX))
        .ok()
        .and_then(|kept| kept.into_iter().find(|v| v.version() == version))
        .map_or(1, |v| v.time_ms())
}

/// One version: intact, and the bank's invariant.
fn check_state(version: u64, state: &Value, out: &mut Vec<String>) {
    let integrity = state.get("integrity").and_then(Value::as_array);
    if integrity.is_none_or(|a| a.len() != 1 || a[0] != "ok") {
        out.push(format!(
            "history: version {version}: integrity {integrity:?}"
        ));
    }
    let sum = state.get("sum").and_then(Value::as_i64);
    if sum != Some(ACCOUNTS * BALANCE) {
        out.push(format!(
            "history: version {version}: the bank sums to {sum:?}, not {}",
            ACCOUNTS * BALANCE
        ));
    }
}

/// From an older version to a newer one: every list only grew (the older
/// one is a prefix), no ledger row went away, and every large batch is
/// whole.
fn check_growth((a, older): &(u64, Value), (b, newer): &(u64, Value), out: &mut Vec<String>) {
    let arrays = |state: &Value, key: &str| -> Vec<Value> {
        state
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_lists, new_lists) = (arrays(older, "lists"), arrays(newer, "lists"));
    for (key, (old, new)) in old_lists.iter().zip(&new_lists).enumerate() {
        let (old, new) = (old.as_array(), new.as_array());
        let prefix = match (old, new) {
            (Some(old), Some(new)) => new.starts_with(old),
            _ => false,
        };
        if !prefix {
            out.push(format!(
                "history: list {key} at version {a} is {old:?}, not a prefix of version {b}'s {new:?}"
            ));
        }
    }
    let ledger = arrays(newer, "ledger");
    if let Some(gone) = arrays(older, "ledger").iter().find(|x| !ledger.contains(x)) {
        out.push(format!(
            "history: ledger row {gone} of version {a} is gone at version {b}"
        ));
    }
    // Batches come and go, but only whole.
    for (version, state) in [(a, older), (b, newer)] {
        for batch in arrays(state, "batches") {
            if batch.get(1).and_then(Value::as_i64) != Some(LARGE_ROWS) {
                out.push(format!(
                    "history: version {version} holds part of batch {batch}"
                ));
            }
        }
    }
}
