//! Benchmark workloads, run inside the component so that only storage calls
//! cross the boundary. `bench-guest WORKLOAD DB [ARGS]` prints one
//! `lat <microseconds>` line per operation and `info <key> <value>` lines.
//!
//! - `fill DB ROWS BYTES`: table kv(id, v) with ROWS rows of BYTES random
//!   bytes, in transactions of at most 32 MB;
//! - `insert DB N [exclusive]`: N one-row autocommit inserts (W1);
//!   `exclusive`: by an exclusive writer;
//! - `txn DB N ROWS`: N transactions of ROWS rows each (W2);
//! - `point DB N MAXID`: N point selects by random primary key (W3);
//! - `range DB N ROWS MAXID`: N range scans of ROWS rows (W4);
//! - `count DB N`: N full `count(*)` scans (W5);
//! - `accounts DB N`: N accounts of balance 1000;
//! - `transfer DB N ACCOUNTS SEED [lease]`: N transfers between random
//!   accounts, each retried until it commits (W6); `lease`: lease writers;
//! - `engine DB`: runs the SQL script on stdin (engine overhead);
//! - `engine-memdb DB`: the same on SQLite's in-memory VFS (no DonutDB);
//! - `noop DB`: returns at once (the cost of a call);
//! - `sleep DB MS`: sleeps MS milliseconds, then returns (an instance kept
//!   alive, for counting what live instances hold);
//! - `calls DB N`: N storage calls that do no storage work, then N root
//!   reads (the cost of crossing into the host per storage request).

use donut_guest::rusqlite::fallible_iterator::FallibleIterator as _;
use donut_guest::rusqlite::{self, Connection};
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        // xorshift64*: deterministic per seed, good enough to pick keys.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as i64
    }
}

fn arg(args: &[String], i: usize) -> i64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} must be a number"))
}

fn timed<T>(f: impl FnOnce() -> rusqlite::Result<T>) -> T {
    let start = Instant::now();
    let out = f().unwrap_or_else(|e| panic!("{e} ({:?})", donut_guest::last_storage_error()));
    println!("lat {}", start.elapsed().as_micros());
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (workload, db) = (args[1].as_str(), args[2].as_str());
    if workload == "noop" {
        return; // instantiate-and-return: what a call costs the host
    }
    if workload == "sleep" {
        std::thread::sleep(std::time::Duration::from_millis(arg(&args, 3) as u64));
        return;
    }
    if workload == "calls" {
        let (boundary_ns, root_read_ns) =
            donut_guest::probe_host_calls(db, arg(&args, 3) as u32).expect("probe");
        println!("info boundary_ns {boundary_ns}");
        println!("info root_read_ns {root_read_ns}");
        return;
    }
    let conn: Connection = if workload == "engine-memdb" {
        // SQLite's own in-memory VFS inside the guest: what SQLite costs in
        // wasm with no DonutDB storage underneath.
        Connection::open_with_flags(
            format!("file:/{db}?vfs=memdb"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .expect("open memdb")
    } else {
        donut_guest::open_or_create(db, 4096).expect("open")
    };
    match workload {
        "fill" => {
            let (rows, bytes) = (arg(&args, 3), arg(&args, 4));
            conn.execute_batch("create table if not exists kv(id integer primary key, v blob)")
                .unwrap();
            let per_txn = ((32i64 << 20) / bytes.max(1)).max(1);
            let mut done = 0;
            while done < rows {
                let n = per_txn.min(rows - done);
                conn.execute(
                    "with recursive c(i) as (select 1 union all select i + 1 from c where i < ?1)
                     insert into kv(v) select randomblob(?2) from c",
                    [n, bytes],
                )
                .unwrap();
                done += n;
            }
            let pages: i64 = conn
                .query_row("pragma page_count", [], |r| r.get(0))
                .unwrap();
            println!("info pages {pages}");
        }
        "insert" => {
            conn.execute_batch("create table if not exists log(id integer primary key, v text)")
                .unwrap();
            if args.get(4).is_some_and(|w| w == "exclusive") {
                // The lease for the connection's life: no root reads.
                conn.pragma_update(None, "donut_writer", "exclusive")
                    .unwrap();
            }
            for i in 0..arg(&args, 3) {
                timed(|| conn.execute("insert into log(v) values (?1)", [format!("row {i}")]));
            }
        }
        "txn" => {
            conn.execute_batch("create table if not exists log(id integer primary key, v text)")
                .unwrap();
            let rows = arg(&args, 4);
            for _ in 0..arg(&args, 3) {
                timed(|| {
                    conn.execute_batch("begin")?;
                    let mut stmt = conn.prepare_cached("insert into log(v) values (?1)")?;
                    for i in 0..rows {
                        stmt.execute([format!("row {i} of a batch")])?;
                    }
                    conn.execute_batch("commit")
                });
            }
        }
        "point" => {
            let (n, max) = (arg(&args, 3), arg(&args, 4));
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
            for _ in 0..n {
                let id = 1 + rng.below(max);
                timed(|| {
                    conn.query_row("select length(v) from kv where id = ?1", [id], |r| {
                        r.get::<_, i64>(0)
                    })
                });
            }
        }
        "range" => {
            let (n, rows, max) = (arg(&args, 3), arg(&args, 4), arg(&args, 5));
            let mut rng = Rng(0x51ed_270b_a4b1_37c9 ^ n as u64);
            for _ in 0..n {
                let start = 1 + rng.below(max.saturating_sub(rows).max(1));
                timed(|| {
                    conn.query_row(
                        "select count(*), sum(length(v)) from kv where id >= ?1 and id < ?1 + ?2",
                        [start, rows],
                        |r| r.get::<_, i64>(0),
                    )
                });
            }
        }
        "count" => {
            for _ in 0..arg(&args, 3) {
                timed(|| conn.query_row("select count(*) from kv", [], |r| r.get::<_, i64>(0)));
            }
        }
        "accounts" => {
            conn.execute_batch(
                "create table if not exists accounts(id integer primary key, balance integer not null)",
            )
            .unwrap();
            conn.execute(
                "with recursive c(i) as (select 1 union all select i + 1 from c where i < ?1)
                 insert into accounts(balance) select 1000 from c",
                [arg(&args, 3)],
            )
            .unwrap();
        }
        "transfer" => {
            let (n, accounts, seed) = (arg(&args, 3), arg(&args, 4), arg(&args, 5));
            // Lease writers take the lease first (BEGIN IMMEDIATE) and wait
            // for it; optimistic ones race and retry.
            let lease = args.get(6).is_some_and(|w| w == "lease");
            if lease {
                conn.busy_timeout(std::time::Duration::from_secs(60))
                    .unwrap();
                conn.pragma_update(None, "donut_writer", "lease").unwrap();
            }
            let begin = if lease { "begin immediate" } else { "begin" };
            let mut rng = Rng((seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut conflicts = 0i64;
            for _ in 0..n {
                let from = 1 + rng.below(accounts);
                let to = 1 + rng.below(accounts);
                let start = Instant::now();
                loop {
                    let attempt = (|| {
                        conn.execute_batch(begin)?;
                        conn.execute(
                            "update accounts set balance = balance - 1 where id = ?1",
                            [from],
                        )?;
                        conn.execute(
                            "update accounts set balance = balance + 1 where id = ?1",
                            [to],
                        )?;
                        conn.execute_batch("commit")
                    })();
                    match attempt {
                        Ok(()) => break,
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
                        {
                            conflicts += 1;
                            let _ = conn.execute_batch("rollback");
                        }
                        Err(e) => panic!("transfer: {e}"),
                    }
                }
                println!("lat {}", start.elapsed().as_micros());
            }
            let sum: i64 = conn
                .query_row("select sum(balance) from accounts", [], |r| r.get(0))
                .unwrap();
            println!("info conflicts {conflicts}");
            println!("info balance_sum {sum}");
        }
        "engine" | "engine-memdb" => {
            // The SQL script on stdin, every statement stepped to the end:
            // donut-bench runs the same script natively to compare.
            let mut script = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut script).unwrap();
            let start = Instant::now();
            let mut rows = 0u64;
            let mut batch = rusqlite::Batch::new(&conn, &script);
            while let Some(mut stmt) = batch.next().unwrap() {
                let mut cursor = stmt.raw_query();
                while cursor.next().unwrap().is_some() {
                    rows += 1;
                }
            }
            println!("lat {}", start.elapsed().as_micros());
            println!("info rows {rows}");
        }
        other => panic!("unknown workload {other}"),
    }
}
