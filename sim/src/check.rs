//! The checker: what must hold after every run, whatever was injected.
//!
//! - the database is intact (`PRAGMA integrity_check`), the bank's sum is
//!   the same in every read and at the end, no balance is negative;
//! - no acknowledged commit is lost, no refused one is visible, and one
//!   whose outcome was unknown is there entirely or not at all (ledger rows,
//!   list appends, large batches);
//! - no error says the database is corrupt;
//! - the list-append history is serializable, Elle-style: every read of a
//!   list is a prefix of the list's final order (so the order of appends is
//!   known), and the write-write, write-read and read-write dependencies
//!   between committed transactions that this order implies have no cycle;
//! - and in real time: a list-append transaction that began after another's
//!   commit was acknowledged (by the one virtual clock) reads its appends —
//!   no stale snapshot (the open's root, an exclusive writer's claim).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Accounts and opening balance, as the guest's `sim.rs` sets them up.
pub const ACCOUNTS: i64 = 8;
pub const BALANCE: i64 = 100;
/// Rows of one large batch.
pub const LARGE_ROWS: i64 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The commit was acknowledged.
    Ok,
    /// Definitely not applied (conflict, busy, throttled).
    Fail,
    /// The client cannot know (I/O error at commit, or killed before it
    /// heard).
    Unknown,
}

/// One client operation that reached its commit.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub client: usize,
    pub op: u64,
    /// The `{"p": …}` line: what it did and what it read.
    pub body: Value,
    pub status: Status,
    pub error: Option<String>,
    /// Virtual time at or after the commit's acknowledgement (`t1`).
    pub acked_ms: Option<u64>,
}

impl OpRecord {
    fn kind(&self) -> &str {
        self.body.get("k").and_then(|k| k.as_str()).unwrap_or("")
    }

    fn name(&self) -> String {
        format!("op {} (client {}, {:?})", self.op, self.client, self.status)
    }
}

#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    /// Operations that failed before their commit: (client, op, error).
    pub failed_early: Vec<(usize, u64, Option<String>)>,
    /// Problems found while reading the clients' output.
    pub anomalies: Vec<String>,
    /// The `final` object `sim-final` printed.
    pub final_state: Option<Value>,
    /// Every line the clients printed, for `--trace`.
    pub output: Vec<String>,
}

fn ints(v: Option<&Value>) -> Vec<i64> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
        .unwrap_or_default()
}

pub fn says_corrupt(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("malformed") || e.contains("corrupt")
}

/// Everything that is wrong with `history`; empty if nothing is.
pub fn check(history: &History) -> Vec<String> {
    let mut out = history.anomalies.clone();
    for op in &history.ops {
        if let Some(e) = &op.error
            && says_corrupt(e)
        {
            out.push(format!("{} failed with corruption: {e}", op.name()));
        }
    }
    for (client, op, error) in &history.failed_early {
        if let Some(e) = error
            && says_corrupt(e)
        {
            out.push(format!(
                "op {op} (client {client}) failed with corruption: {e}"
            ));
        }
    }
    let Some(fin) = &history.final_state else {
        out.push("no final state".into());
        return out;
    };
    let integrity: Vec<&str> = fin
        .get("integrity")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    if integrity != ["ok"] {
        out.push(format!("integrity_check: {integrity:?}"));
    }
    check_bank(history, fin, &mut out);
    check_large(history, fin, &mut out);
    check_lists(history, fin, &mut out);
    out
}

fn check_bank(history: &History, fin: &Value, out: &mut Vec<String>) {
    let total = ACCOUNTS * BALANCE;
    let sum = fin.get("sum").and_then(|v| v.as_i64());
    let n = fin.get("n").and_then(|v| v.as_i64());
    if sum != Some(total) || n != Some(ACCOUNTS) {
        out.push(format!(
            "final bank: sum {sum:?} over {n:?} accounts, expected {total} over {ACCOUNTS}"
        ));
    }
    for op in history.ops.iter().filter(|o| o.kind() == "sum") {
        let get = |k: &str| op.body.get(k).and_then(|v| v.as_i64());
        if get("sum") != Some(total) || get("n") != Some(ACCOUNTS) || get("neg") != Some(0) {
            out.push(format!(
                "{} read a state that was never committed: sum {:?} over {:?} accounts, {:?} negative",
                op.name(),
                get("sum"),
                get("n"),
                get("neg")
            ));
        }
    }
    let ledger: BTreeSet<i64> = ints(fin.get("ledger")).into_iter().collect();
    for op in history.ops.iter().filter(|o| o.kind() == "transfer") {
        let present = ledger.contains(&(op.op as i64));
        match (op.status, present) {
            (Status::Ok, false) => {
                out.push(format!("{}: an acknowledged transfer is lost", op.name()))
            }
            (Status::Fail, true) => {
                out.push(format!("{}: a refused transfer is visible", op.name()))
            }
            _ => {}
        }
    }
}

fn check_large(history: &History, fin: &Value, out: &mut Vec<String>) {
    let mut present: BTreeMap<i64, i64> = BTreeMap::new();
    for pair in fin
        .get("batches")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let p = ints(Some(pair));
        if let [batch, count] = p[..] {
            present.insert(batch, count);
        }
    }
    for (batch, count) in &present {
        if *count != LARGE_ROWS {
            out.push(format!(
                "large batch {batch} has {count} rows, not {LARGE_ROWS}: a transaction applied in part"
            ));
        }
    }
    let larges: Vec<&OpRecord> = history.ops.iter().filter(|o| o.kind() == "large").collect();
    let deleted: BTreeSet<i64> = larges
        .iter()
        .filter(|o| o.status != Status::Fail)
        .filter_map(|o| o.body.get("deleted").and_then(|d| d.as_i64()))
        .collect();
    for op in larges {
        let batch = op.op as i64;
        let there = present.contains_key(&batch);
        match op.status {
            Status::Ok if !there && !deleted.contains(&batch) => out.push(format!(
                "{}: an acknowledged large transaction is lost",
                op.name()
            )),
            Status::Fail if there => out.push(format!(
                "{}: a refused large transaction is visible",
                op.name()
            )),
            _ => {}
        }
    }
}

/// A list-append transaction's micro-operations.
enum Mop {
    Read(i64, Vec<i64>),
    Append(i64, i64),
}

fn mops(op: &OpRecord) -> Vec<Mop> {
    let mut out = Vec::new();
    for m in op
        .body
        .get("mops")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let Some(m) = m.as_array() else { continue };
        let key = m.get(1).and_then(|k| k.as_i64()).unwrap_or(-1);
        match m.first().and_then(|f| f.as_str()) {
            Some("r") => out.push(Mop::Read(key, ints(m.get(2)))),
            Some("a") => out.push(Mop::Append(
                key,
                m.get(2).and_then(|v| v.as_i64()).unwrap_or(-1),
            )),
            _ => {}
        }
    }
    out
}

/// Every read of a transaction that began (`t0`) after a commit was
/// acknowledged (`t1 < t0`) contains that commit's appends to its key.
fn check_real_time(txns: &[(&OpRecord, Vec<Mop>)], out: &mut Vec<String>) {
    for (reader, reads) in txns {
        let Some(t0) = reader.body.get("t0").and_then(|t| t.as_u64()) else {
            continue;
        };
        for (writer, writes) in txns {
            let Some(t1) = writer.acked_ms else { continue };
            if writer.status != Status::Ok || t1 >= t0 {
                continue;
            }
            for m in reads {
                let Mop::Read(key, seen) = m else { continue };
                for w in writes {
                    if let Mop::Append(k, v) = w
                        && k == key
                        && !seen.contains(v)
                    {
                        out.push(format!(
                            "{} began at {t0} ms and read list {key} without {v}, which {} appended and had acknowledged at {t1} ms: a stale snapshot",
                            reader.name(),
                            writer.name()
                        ));
                    }
                }
            }
        }
    }
}

fn check_lists(history: &History, fin: &Value, out: &mut Vec<String>) {
    let finals: Vec<Vec<i64>> = fin
        .get("lists")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().map(|l| ints(Some(l))).collect())
        .unwrap_or_default();
    let order = |key: i64| -> &[i64] {
        usize::try_from(key)
            .ok()
            .and_then(|k| finals.get(k))
            .map_or(&[], |v| v.as_slice())
    };
    let txns: Vec<(&OpRecord, Vec<Mop>)> = history
        .ops
        .iter()
        .filter(|o| o.kind() == "la")
        .map(|o| (o, mops(o)))
        .collect();
    // Who appended each value, and where each value sits in its list.
    let mut writer: HashMap<i64, usize> = HashMap::new();
    for (i, (_, ms)) in txns.iter().enumerate() {
        for m in ms {
            if let Mop::Append(_, v) = m
                && writer.insert(*v, i).is_some()
            {
                out.push(format!("value {v} appended twice"));
            }
        }
    }
    let mut position: HashMap<i64, (i64, usize)> = HashMap::new();
    for (key, list) in finals.iter().enumerate() {
        for (at, v) in list.iter().enumerate() {
            if position.insert(*v, (key as i64, at)).is_some() {
                out.push(format!("value {v} appears twice in the final lists"));
            }
            if !writer.contains_key(v) {
                out.push(format!("value {v} in list {key} was never appended"));
            }
        }
    }
    // Committed: acknowledged, or unknown but visible. Atomicity of each.
    let mut committed = vec![false; txns.len()];
    for (i, (op, ms)) in txns.iter().enumerate() {
        let appends: Vec<(i64, i64)> = ms
            .iter()
            .filter_map(|m| match m {
                Mop::Append(k, v) => Some((*k, *v)),
                Mop::Read(..) => None,
            })
            .collect();
        let visible: Vec<bool> = appends
            .iter()
            .map(|(k, v)| position.get(v).is_some_and(|(pk, _)| pk == k))
            .collect();
        match op.status {
            Status::Ok => {
                committed[i] = true;
                if visible.contains(&false) {
                    out.push(format!("{}: an acknowledged append is lost", op.name()));
                }
            }
            Status::Fail => {
                if visible.contains(&true) {
                    out.push(format!("{}: a refused append is visible", op.name()));
                }
            }
            Status::Unknown => {
                committed[i] = visible.contains(&true);
                if visible.contains(&true) && visible.contains(&false) {
                    out.push(format!(
                        "{}: an ambiguous commit applied in part",
                        op.name()
                    ));
                }
            }
        }
    }
    check_real_time(&txns, out);
    // Reads: each must be a prefix of its key's final order, once the
    // transaction's own appends (always last: higher rowids) are removed.
    let mut edges: BTreeMap<usize, BTreeSet<(usize, &'static str)>> = BTreeMap::new();
    for (i, (op, ms)) in txns.iter().enumerate() {
        let mut own: Vec<i64> = Vec::new();
        for m in ms {
            match m {
                Mop::Append(_, v) => own.push(*v),
                Mop::Read(key, seen) => {
                    let mut seen = seen.as_slice();
                    while let Some(last) = seen.last()
                        && own.contains(last)
                    {
                        seen = &seen[..seen.len() - 1];
                    }
                    let full = order(*key);
                    if seen.len() > full.len() || full[..seen.len()] != *seen {
                        out.push(format!(
                            "{} read list {key} as {seen:?}, not a prefix of its final order {full:?}",
                            op.name()
                        ));
                        continue;
                    }
                    if !committed[i] {
                        continue;
                    }
                    if let Some(last) = seen.last()
                        && let Some(&w) = writer.get(last)
                        && w != i
                    {
                        edges.entry(w).or_default().insert((i, "wr"));
                    }
                    if let Some(next) = full.get(seen.len())
                        && let Some(&w) = writer.get(next)
                        && w != i
                    {
                        edges.entry(i).or_default().insert((w, "rw"));
                    }
                }
            }
        }
    }
    for list in &finals {
        for pair in list.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&pair[0]), writer.get(&pair[1]))
                && a != b
            {
                edges.entry(a).or_default().insert((b, "ww"));
            }
        }
    }
    if let Some(cycle) = find_cycle(txns.len(), &edges) {
        let steps: Vec<String> = cycle
            .iter()
            .map(|(t, kind)| format!("{} -{kind}->", txns[*t].0.name()))
            .collect();
        out.push(format!(
            "not serializable: dependency cycle {} (back to the first)",
            steps.join(" ")
        ));
    }
}

/// A dependency: (to transaction, kind: "ww", "wr" or "rw").
type Edge = (usize, &'static str);

/// A cycle in the dependency graph, as (transaction, edge kind to the next).
fn find_cycle(
    nodes: usize,
    edges: &BTreeMap<usize, BTreeSet<(usize, &'static str)>>,
) -> Option<Vec<(usize, &'static str)>> {
    // Iterative depth-first search with colours; the path is the cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; nodes];
    let empty = BTreeSet::new();
    for start in 0..nodes {
        if colour[start] != Colour::White {
            continue;
        }
        // Stack of (node, its edges as a list, next edge index).
        let mut stack: Vec<(usize, Vec<Edge>, usize)> = Vec::new();
        colour[start] = Colour::Grey;
        stack.push((
            start,
            edges
                .get(&start)
                .unwrap_or(&empty)
                .iter()
                .copied()
                .collect(),
            0,
        ));
        while let Some((node, out_edges, next)) = stack.last_mut() {
            if *next == out_edges.len() {
                colour[*node] = Colour::Black;
                stack.pop();
                continue;
            }
            let (to, _) = out_edges[*next];
            *next += 1;
            match colour[to] {
                Colour::White => {
                    colour[to] = Colour::Grey;
                    let to_edges = edges.get(&to).unwrap_or(&empty).iter().copied().collect();
                    stack.push((to, to_edges, 0));
                }
                Colour::Grey => {
                    let from = stack
                        .iter()
                        .position(|(n, _, _)| *n == to)
                        .expect("on the path");
                    return Some(
                        stack[from..]
                            .iter()
                            .map(|(n, e, i)| (*n, e[*i - 1].1))
                            .collect(),
                    );
                }
                Colour::Black => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn la(op: u64, status: Status, mops: Value) -> OpRecord {
        OpRecord {
            client: 0,
            op,
            body: json!({"p": op, "k": "la", "mops": mops}),
            status,
            error: None,
            acked_ms: None,
        }
    }

    #[test]
    fn a_read_that_began_after_an_acknowledged_commit_must_see_it() {
        // 1 appended 10 and was acknowledged at 5 ms; 2 began at 7 ms and
        // read the list empty: serializable (2 before 1), but stale.
        let mut first = la(1, Status::Ok, json!([["a", 0, 10]]));
        first.acked_ms = Some(5);
        let mut second = la(2, Status::Ok, json!([["r", 0, []]]));
        second.body["t0"] = json!(7);
        let h = history(vec![first.clone(), second.clone()], json!([[10]]));
        let found = check(&h).join("\n");
        assert!(found.contains("stale snapshot"), "{found}");
        // Begun at the same ms as the acknowledgement: no order to check.
        second.body["t0"] = json!(5);
        assert_eq!(
            check(&history(vec![first, second], json!([[10]]))),
            Vec::<String>::new()
        );
    }

    fn history(ops: Vec<OpRecord>, lists: Value) -> History {
        History {
            ops,
            final_state: Some(json!({
                "integrity": ["ok"], "sum": ACCOUNTS * BALANCE, "n": ACCOUNTS,
                "ledger": [], "lists": lists, "batches": []
            })),
            ..History::default()
        }
    }

    #[test]
    fn a_serial_history_passes() {
        let h = history(
            vec![
                la(1, Status::Ok, json!([["a", 0, 10]])),
                la(2, Status::Ok, json!([["r", 0, [10]], ["a", 0, 20]])),
                la(3, Status::Ok, json!([["r", 0, [10, 20]]])),
            ],
            json!([[10, 20]]),
        );
        assert_eq!(check(&h), Vec::<String>::new());
    }

    #[test]
    fn a_lost_update_is_a_cycle() {
        // Both read the empty list and appended; the final order puts 2
        // after 1, so 2 missed 1's append: 1 -ww-> 2 and 2 -rw-> 1.
        let h = history(
            vec![
                la(1, Status::Ok, json!([["r", 1, []], ["a", 1, 10]])),
                la(2, Status::Ok, json!([["r", 1, []], ["a", 1, 20]])),
            ],
            json!([[], [10, 20]]),
        );
        let found = check(&h);
        assert!(
            found.iter().any(|a| a.contains("not serializable")),
            "{found:?}"
        );
    }

    #[test]
    fn lost_and_partial_and_dirty_writes_are_found() {
        let h = history(
            vec![
                la(1, Status::Ok, json!([["a", 0, 10]])),
                la(2, Status::Unknown, json!([["a", 0, 20], ["a", 1, 21]])),
                la(3, Status::Fail, json!([["a", 1, 30]])),
                la(4, Status::Ok, json!([["r", 1, [99]]])),
            ],
            json!([[20], [30]]),
        );
        let found = check(&h).join("\n");
        assert!(found.contains("acknowledged append is lost"), "{found}");
        assert!(found.contains("applied in part"), "{found}");
        assert!(found.contains("refused append is visible"), "{found}");
        assert!(found.contains("not a prefix"), "{found}");
    }
}
