//! The simulator's client: runs a seeded mix of workloads against one
//! database and prints, per operation, a JSON line before its commit
//! (`{"p": …}`: what it did and read) and one after (`{"d": …}`: the
//! outcome). A guest killed between the two leaves an operation whose
//! outcome the checker must treat as unknown.
//!
//! `test-guest sim-setup DB`, `test-guest sim DB CLIENT ID_BASE OPS SEED
//! WRITER BUG LEASE_MS`, `test-guest sim-final DB`.

use donut_guest::rusqlite::{self, Connection, ErrorCode, params};
use std::fmt::Write as _;

pub const ACCOUNTS: i64 = 8;
pub const BALANCE: i64 = 100;
const LIST_KEYS: u64 = 6;
const LARGE_ROWS: u64 = 40;
const LARGE_ROW_BYTES: usize = 3000;

/// xorshift64*: small and seeded, so a run replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(db: &str) -> Connection {
    match donut_guest::open(db) {
        Ok(conn) => conn,
        Err(e) => {
            println!("{{\"fatal\":{}}}", json_str(&e.to_string()));
            std::process::exit(3);
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub fn setup(db: &str) {
    let conn = match donut_guest::create(db, 4096) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("setup: {e}");
            std::process::exit(3);
        }
    };
    let mut sql = String::from(
        "begin;
         create table accounts(id integer primary key, balance integer not null);
         create table ledger(id integer primary key, amount integer not null);
         create table lists(k integer not null, v integer not null unique);
         create index lists_k on lists(k);
         create table big(id integer primary key, batch integer not null, body blob not null);",
    );
    for id in 0..ACCOUNTS {
        let _ = write!(sql, "insert into accounts values ({id}, {BALANCE});");
    }
    sql.push_str("commit;");
    if let Err(e) = conn.execute_batch(&sql) {
        eprintln!("setup: {e}");
        std::process::exit(3);
    }
}

/// How a transaction ended, as far as this client can know.
fn status(result: &rusqlite::Result<()>) -> &'static str {
    match result {
        Ok(()) => "ok",
        // Busy (conflict, lease held or lost, throttled, a transaction
        // cancelled for a conflict), full (too large) and permission
        // refusals: nothing landed (README, "What SQLite's error codes
        // mean"; the checker holds the client to it).
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                ErrorCode::DatabaseBusy | ErrorCode::DiskFull | ErrorCode::PermissionDenied
            ) =>
        {
            "fail"
        }
        // An I/O error at commit: the commit may or may not have landed.
        Err(_) => "unknown",
    }
}

fn fail_message(e: &rusqlite::Error) -> String {
    match donut_guest::last_storage_error() {
        Some(detail) => format!("{e} ({detail})"),
        None => e.to_string(),
    }
}

/// Errors before the commit leave nothing behind: the transaction is
/// rolled back and reported as failed.
/// Wall-clock ms (virtual under the simulator: one clock for every client).
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn abort(conn: &Connection, op: u64, e: &rusqlite::Error) {
    let _ = conn.execute_batch("rollback");
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
        _ => -1,
    };
    println!(
        "{{\"d\":{op},\"st\":\"fail\",\"code\":{code},\"err\":{}}}",
        json_str(&fail_message(e))
    );
}

fn commit(conn: &Connection, op: u64, pending: &str) {
    println!("{{\"p\":{op},{pending}}}");
    let result = conn.execute_batch("commit");
    let st = status(&result);
    if let Err(e) = &result {
        let _ = conn.execute_batch("rollback");
        println!(
            "{{\"d\":{op},\"st\":\"{st}\",\"err\":{}}}",
            json_str(&fail_message(e))
        );
    } else {
        // When the commit was acknowledged, or later: the checker's
        // real-time order (a transaction that starts after this sees it).
        println!("{{\"d\":{op},\"st\":\"ok\",\"t1\":{}}}", now_ms());
    }
}

fn transfer(conn: &Connection, rng: &mut Rng, op: u64) -> rusqlite::Result<String> {
    let from = rng.below(ACCOUNTS as u64) as i64;
    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
    let amount = 1 + rng.below(20) as i64;
    conn.execute_batch("begin")?;
    let balance: i64 =
        conn.query_row("select balance from accounts where id = ?1", [from], |r| {
            r.get(0)
        })?;
    let amount = amount.min(balance);
    conn.execute(
        "update accounts set balance = balance - ?2 where id = ?1",
        params![from, amount],
    )?;
    conn.execute(
        "update accounts set balance = balance + ?2 where id = ?1",
        params![to, amount],
    )?;
    conn.execute(
        "insert into ledger(id, amount) values (?1, ?2)",
        params![op as i64, amount],
    )?;
    let ledger: i64 = conn.query_row("select count(*) from ledger", [], |r| r.get(0))?;
    Ok(format!(
        "\"k\":\"transfer\",\"amount\":{amount},\"ledger\":{ledger}"
    ))
}

fn bank_read(conn: &Connection) -> rusqlite::Result<String> {
    conn.execute_batch("begin")?;
    let (sum, count): (i64, i64) =
        conn.query_row("select sum(balance), count(*) from accounts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let negative: i64 =
        conn.query_row("select count(*) from accounts where balance < 0", [], |r| {
            r.get(0)
        })?;
    Ok(format!(
        "\"k\":\"sum\",\"sum\":{sum},\"n\":{count},\"neg\":{negative}"
    ))
}

fn read_list(conn: &Connection, key: u64) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("select v from lists where k = ?1 order by rowid")?;
    let rows = stmt.query_map([key as i64], |r| r.get(0))?;
    rows.collect()
}

fn list_append(conn: &Connection, rng: &mut Rng, op: u64) -> rusqlite::Result<String> {
    // Before the transaction's snapshot is taken, or earlier.
    let t0 = now_ms();
    conn.execute_batch("begin")?;
    let mut mops = Vec::new();
    let n = 1 + rng.below(4);
    for i in 0..n {
        let key = rng.below(LIST_KEYS);
        if rng.below(2) == 0 {
            let values = read_list(conn, key)?;
            let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            mops.push(format!("[\"r\",{key},[{}]]", list.join(",")));
        } else {
            // Unique per client run: op ids are, and a transaction appends
            // at most four values.
            let value = (op * 4 + i) as i64;
            conn.execute(
                "insert into lists(k, v) values (?1, ?2)",
                params![key as i64, value],
            )?;
            mops.push(format!("[\"a\",{key},{value}]"));
        }
    }
    Ok(format!(
        "\"k\":\"la\",\"t0\":{t0},\"mops\":[{}]",
        mops.join(",")
    ))
}

fn large(conn: &Connection, rng: &mut Rng, op: u64) -> rusqlite::Result<String> {
    conn.execute_batch("begin")?;
    let mut deleted = -1i64;
    if rng.below(3) == 0 {
        deleted = conn.query_row("select coalesce(min(batch), -1) from big", [], |r| r.get(0))?;
        conn.execute("delete from big where batch = ?1", [deleted])?;
    }
    let mut body = vec![0u8; LARGE_ROW_BYTES];
    for row in 0..LARGE_ROWS {
        for b in body.iter_mut() {
            *b = rng.next() as u8;
        }
        conn.execute(
            "insert into big(id, batch, body) values (?1, ?2, ?3)",
            params![(op * LARGE_ROWS + row) as i64, op as i64, body],
        )?;
    }
    let ledger: i64 = conn.query_row("select count(*) from ledger", [], |r| r.get(0))?;
    Ok(format!(
        "\"k\":\"large\",\"batch\":{op},\"deleted\":{deleted},\"ledger\":{ledger}"
    ))
}

fn schema(conn: &Connection, rng: &mut Rng) -> rusqlite::Result<String> {
    let n = rng.below(3);
    let sql = match rng.below(4) {
        0 => format!("create table if not exists extra{n}(x integer, y text)"),
        1 => format!("drop table if exists extra{n}"),
        2 => format!("create index if not exists big_batch{n} on big(batch)"),
        _ => format!("drop index if exists big_batch{n}"),
    };
    conn.execute_batch("begin")?;
    conn.execute_batch(&sql)?;
    Ok(format!("\"k\":\"schema\",\"sql\":{}", json_str(&sql)))
}

/// One client's run: `ops` operations drawn from `seed`.
pub fn client(db: &str, args: &[String]) {
    let arg = |i: usize| -> u64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: test-guest sim DB CLIENT ID_BASE OPS SEED WRITER BUG LEASE_MS");
            std::process::exit(2);
        })
    };
    let (id_base, ops, seed) = (arg(4), arg(5), arg(6));
    let writer = args.get(7).map(String::as_str).unwrap_or("optimistic");
    match args.get(8).map(String::as_str) {
        Some("unpinned-reads") => {
            donut_guest::planted::plant(donut_guest::planted::Bug::UnpinnedReads)
        }
        Some("trusted-claims") => {
            donut_guest::planted::plant(donut_guest::planted::Bug::TrustedClaims)
        }
        Some("none") | None => {}
        Some(other) => {
            eprintln!("unknown bug {other}");
            std::process::exit(2);
        }
    }
    let lease_ms = args.get(9).map(String::as_str).unwrap_or("10000");
    let conn = open(db);
    // The simulator has no real time to wait in: a busy lease is an
    // outcome the client reports, not a sleep.
    let setup = conn
        .busy_timeout(std::time::Duration::ZERO)
        .and_then(|()| conn.pragma_update(None, "donut_lease_ms", lease_ms))
        .and_then(|()| conn.pragma_update(None, "donut_writer", writer));
    if let Err(e) = setup {
        println!("{{\"fatal\":{}}}", json_str(&e.to_string()));
        std::process::exit(3);
    }
    let mut rng = Rng::new(seed);
    for i in 0..ops {
        let op = id_base + i;
        let roll = rng.below(100);
        let result = match roll {
            0..35 => transfer(&conn, &mut rng, op),
            35..45 => bank_read(&conn),
            45..85 => list_append(&conn, &mut rng, op),
            85..91 => large(&conn, &mut rng, op),
            91..97 => schema(&conn, &mut rng),
            _ => {
                // VACUUM runs outside a transaction: it is its own commit.
                println!("{{\"p\":{op},\"k\":\"vacuum\"}}");
                let result = conn.execute_batch("vacuum");
                match &result {
                    Ok(()) => println!("{{\"d\":{op},\"st\":\"ok\"}}"),
                    Err(e) => println!(
                        "{{\"d\":{op},\"st\":\"{}\",\"err\":{}}}",
                        status(&result),
                        json_str(&fail_message(e))
                    ),
                }
                continue;
            }
        };
        match result {
            Ok(pending) => commit(&conn, op, &pending),
            Err(e) => abort(&conn, op, &e),
        }
    }
}

/// The state after a run, for the checker: integrity, accounts, ledger,
/// lists and large batches.
pub fn final_state(db: &str) {
    let conn = open(db);
    let query = || -> rusqlite::Result<String> {
        let integrity: Vec<String> = conn
            .prepare("pragma integrity_check")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let (sum, count): (i64, i64) = conn.query_row(
            "select coalesce(sum(balance), 0), count(*) from accounts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let ledger: Vec<String> = conn
            .prepare("select id from ledger order by id")?
            .query_map([], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v.to_string()))
            .collect::<Result<_, _>>()?;
        let mut lists = Vec::new();
        for key in 0..LIST_KEYS {
            let values: Vec<String> = read_list(&conn, key)?
                .iter()
                .map(|v| v.to_string())
                .collect();
            lists.push(format!("[{}]", values.join(",")));
        }
        let batches: Vec<String> = conn
            .prepare("select batch, count(*) from big group by batch order by batch")?
            .query_map([], |r| {
                Ok(format!("[{},{}]", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let integrity: Vec<String> = integrity.iter().map(|s| json_str(s)).collect();
        Ok(format!(
            "{{\"final\":{{\"integrity\":[{}],\"sum\":{sum},\"n\":{count},\"ledger\":[{}],\"lists\":[{}],\"batches\":[{}]}}}}",
            integrity.join(","),
            ledger.join(","),
            lists.join(","),
            batches.join(",")
        ))
    };
    match query() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            println!("{{\"fatal\":{}}}", json_str(&fail_message(&e)));
            std::process::exit(3);
        }
    }
}
