//! Test component. `test-guest MODE DB [N]`:
//! - `trap-in-transaction DB N`: inserts N rows in a transaction, then traps
//!   before committing;
//! - `count DB`: prints `select count(*) from t`;
//! - `until-removed DB N`: inserts rows until the database is removed;
//! - `backup-to DB DEST PAGES`: backs DB up into DEST;
//! - `spin DB`: loops forever; `hog DB`: allocates without end;
//! - `exclusive DB`: an exclusive writer and an optimistic one side by side;
//! - `sim-setup`, `sim`, `sim-final`: the simulator's client (`sim.rs`).

mod sim;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, db) = match (args.get(1), args.get(2)) {
        (Some(mode), Some(db)) => (mode.as_str(), db.as_str()),
        _ => {
            eprintln!("usage: test-guest MODE DB [N]");
            std::process::exit(2);
        }
    };
    match mode {
        "sim-setup" => return sim::setup(db),
        "sim" => return sim::client(db, &args),
        "sim-final" => return sim::final_state(db),
        _ => {}
    }
    let n: i64 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let mut conn = donut_guest::open(db).expect("open");
    match mode {
        "trap-in-transaction" => {
            let tx = conn.transaction().expect("begin");
            for i in 0..n {
                tx.execute(
                    "insert into t(x) values (?1)",
                    [format!("doomed {i} {}", "x".repeat(500))],
                )
                .expect("insert");
            }
            // Dies here: the transaction never reaches its commit point.
            std::process::abort();
        }
        "stale-writer" => {
            let b = donut_guest::open(db).expect("open b");
            let tx = conn.transaction().expect("begin a");
            let _: i64 = tx
                .query_row("select count(*) from t", [], |r| r.get(0))
                .expect("a reads");
            b.execute("insert into t values (2)", [])
                .expect("b commits");
            tx.execute("insert into t values (3)", [])
                .expect("a writes");
            match tx.commit() {
                Err(donut_guest::rusqlite::Error::SqliteFailure(e, _))
                    if e.code == donut_guest::rusqlite::ErrorCode::DatabaseBusy =>
                {
                    println!("a-commit: busy")
                }
                other => println!("a-commit: {other:?}"),
            }
            let rows: String = b
                .query_row("select group_concat(x) from t", [], |r| r.get(0))
                .expect("read");
            println!("rows: {rows}");
        }
        "spin" => {
            // A runaway guest: never returns.
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "hog" => {
            // Asks for memory until something stops it.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
            }
        }
        "two-writers" => {
            // A writes, B writes, A reads: A must see B's row. (The host
            // may make A's commit ambiguous: applied, but "unavailable".)
            let b = donut_guest::open(db).expect("open b");
            let a_result = conn.execute("insert into t values ('a')", []);
            println!(
                "a-insert: {}",
                if a_result.is_ok() { "ok" } else { "failed" }
            );
            b.execute("insert into t values ('b')", [])
                .expect("b commits");
            let rows: String = conn
                .query_row(
                    "select group_concat(x, ',') from (select x from t order by x)",
                    [],
                    |r| r.get(0),
                )
                .expect("a reads");
            println!("a-reads: {rows}");
        }
        "transfers" => {
            // `transfers DB N WRITER CLIENT`: N transfers, each retried until
            // it commits, each with a ledger row; prints what it committed.
            let writer = args.get(4).map(String::as_str).unwrap_or("optimistic");
            let client: i64 = args.get(5).and_then(|c| c.parse().ok()).unwrap_or(0);
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .expect("busy timeout");
            conn.pragma_update(None, "donut_writer", writer)
                .expect("writer mode");
            // A lease writer takes the lease first and then reads: no
            // conflicts. An optimistic one reads first and may lose.
            let begin = if writer == "lease" {
                donut_guest::rusqlite::TransactionBehavior::Immediate
            } else {
                donut_guest::rusqlite::TransactionBehavior::Deferred
            };
            let mut attempts = 0;
            for i in 0..n {
                let from = (client + i) % 8;
                let to = (from + 1 + i % 7) % 8;
                donut_guest::retry_with(&mut conn, begin, 1000, |tx| {
                    attempts += 1;
                    tx.execute(
                        "update accounts set balance = balance - 1 where id = ?1",
                        [from],
                    )?;
                    tx.execute(
                        "update accounts set balance = balance + 1 where id = ?1",
                        [to],
                    )?;
                    tx.execute(
                        "insert into ledger(id) values (?1)",
                        [client * 1_000_000 + i],
                    )?;
                    Ok(())
                })
                .expect("transfer");
            }
            println!("committed {n} attempts {attempts}");
        }
        "die-holding-lease" => {
            // Takes the write lease, writes, and dies before committing.
            let lease_ms = args.get(3).map(String::as_str).unwrap_or("3000");
            conn.pragma_update(None, "donut_lease_ms", lease_ms)
                .expect("lease ms");
            conn.pragma_update(None, "donut_writer", "lease")
                .expect("writer mode");
            conn.execute_batch("begin immediate; insert into t values ('doomed')")
                .expect("lease taken");
            std::process::abort();
        }
        "lease-write" => {
            // `lease-write DB BUSY_MS VALUE [HOLD_MS]`: one lease-mode insert
            // that waits up to BUSY_MS for the lease and holds its
            // transaction open HOLD_MS before committing.
            let busy_ms: u64 = args.get(3).and_then(|b| b.parse().ok()).unwrap_or(0);
            let value = args.get(4).map(String::as_str).unwrap_or("x");
            let hold_ms: u64 = args.get(5).and_then(|h| h.parse().ok()).unwrap_or(0);
            conn.busy_timeout(std::time::Duration::from_millis(busy_ms))
                .expect("busy timeout");
            conn.pragma_update(None, "donut_lease_ms", "1000")
                .expect("lease ms");
            conn.pragma_update(None, "donut_writer", "lease")
                .expect("writer mode");
            let result = conn
                .execute_batch("begin immediate")
                .and_then(|()| conn.execute("insert into t values (?1)", [value]))
                .and_then(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(hold_ms));
                    conn.execute_batch("commit")
                });
            match result {
                Ok(()) => println!("lease-write: ok"),
                Err(e) => println!(
                    "lease-write: {e} ({})",
                    donut_guest::last_storage_error().unwrap_or_default()
                ),
            }
        }
        "exclusive" => {
            // An exclusive writer and an optimistic one (busy at once, no
            // waiting) on the same database, in one instance.
            let rows = |c: &donut_guest::rusqlite::Connection| -> String {
                c.query_row(
                    "select group_concat(x, ',') from (select x from t order by x)",
                    [],
                    |r| r.get(0),
                )
                .expect("read")
            };
            let write = |c: &donut_guest::rusqlite::Connection, value: &str| match c
                .execute("insert into t values (?1)", [value])
            {
                Ok(_) => "ok".to_string(),
                Err(e) => format!(
                    "{e} ({})",
                    donut_guest::last_storage_error().unwrap_or_default()
                ),
            };
            conn.pragma_update(None, "donut_writer", "exclusive")
                .expect("writer mode");
            println!("exclusive-1: {}", write(&conn, "e1"));
            let other = donut_guest::open(db).expect("open other");
            other
                .busy_timeout(std::time::Duration::ZERO)
                .expect("busy timeout");
            println!("other-write: {}", write(&other, "o1"));
            println!("other-reads: {}", rows(&other));
            println!("exclusive-2: {}", write(&conn, "e2"));
            println!("exclusive-reads: {}", rows(&conn));
            drop(conn); // closing the connection ends the lease
            println!("other-write-after-close: {}", write(&other, "o2"));
            println!("final: {}", rows(&other));
        }
        "backup" => {
            // `backup DB`: an 8 KiB-page in-memory database backed up into
            // DB (another page size, rows of its own), then DB backed up
            // into a new in-memory database; prints what each holds.
            use donut_guest::rusqlite::{Connection, backup::Backup};
            let rows = |c: &Connection| -> String {
                c.query_row(
                    "select count(*) || ':' || sum(length(v)) || ':' || (select page_size from pragma_page_size) from t",
                    [],
                    |r| r.get(0),
                )
                .expect("read")
            };
            let source = Connection::open_in_memory().expect("memory db");
            source
                .execute_batch(
                    "pragma page_size = 8192;
                     create table t(id integer primary key, v text);
                     with recursive c(i) as (select 1 union all select i + 1 from c where i < 300)
                     insert into t(v) select printf('%.*c', 100 + i, 'x') from c;",
                )
                .expect("fill the source");
            Backup::new(&source, &mut conn)
                .and_then(|b| b.run_to_completion(7, std::time::Duration::ZERO, None))
                .expect("backup into DonutDB");
            println!("into: {}", rows(&conn));
            let mut copy = Connection::open_in_memory().expect("memory db");
            Backup::new(&conn, &mut copy)
                .and_then(|b| b.run_to_completion(5, std::time::Duration::ZERO, None))
                .expect("backup out of DonutDB");
            println!("out: {}", rows(&copy));
        }
        "backup-to" => {
            // `backup-to DB DEST PAGES`: sqlite3_backup of DB into the
            // DonutDB database DEST, PAGES pages a step; prints `ok` or
            // the error (the fuzzer compares it with native SQLite).
            let mut dest =
                donut_guest::open(args.get(3).map_or("", String::as_str)).expect("open dest");
            let pages = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(1);
            match donut_guest::rusqlite::backup::Backup::new(&conn, &mut dest)
                .and_then(|b| b.run_to_completion(pages, std::time::Duration::ZERO, None))
            {
                Ok(()) => println!("ok"),
                Err(e) => println!("{}", donut_guest::describe_sqlite_error(&e)),
            }
        }
        "reserved" => {
            // Two connections of one program: one writer at a time, as
            // with a native VFS; a rolled-back writer leaves nothing.
            let b = donut_guest::open(db).expect("open b");
            b.busy_timeout(std::time::Duration::ZERO)
                .expect("busy timeout");
            conn.execute_batch("begin immediate; insert into t values ('a')")
                .expect("a writes");
            let during = match b.execute_batch("begin immediate") {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            println!("b-begin-while-a-writes: {during}");
            let _ = b.execute_batch("rollback");
            conn.execute_batch("rollback").expect("a rolls back");
            b.execute_batch("begin immediate; insert into t values ('b'); commit")
                .expect("b writes after a");
            conn.execute("insert into t values ('c')", [])
                .expect("a writes after b");
            let rows: String = b
                .query_row("select group_concat(x, ',') from t", [], |r| r.get(0))
                .expect("read");
            println!("rows: {rows}");
        }
        "connections" => {
            // Two connections of one program run stdin's lines, each
            // `CONNECTION<TAB>SQL` (0 or 1), without waiting on locks;
            // prints `ok` or the error's code per line (the fuzzer
            // compares it with native SQLite).
            let other = donut_guest::open(db).expect("open other");
            let conns = [&conn, &other];
            for c in conns {
                c.busy_timeout(std::time::Duration::ZERO)
                    .expect("busy timeout");
            }
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).expect("stdin");
            for line in input.lines() {
                let Some((which, sql)) = line.split_once('\t') else {
                    continue;
                };
                let c = conns[which.parse::<usize>().unwrap_or(0).min(1)];
                match c.execute_batch(sql) {
                    Ok(()) => println!("ok"),
                    Err(donut_guest::rusqlite::Error::SqliteFailure(e, _)) => {
                        println!("{:?}", e.code)
                    }
                    Err(e) => println!("{e}"),
                }
            }
        }
        "until-removed" => {
            // Inserts a row every 10 ms (at most N) until the database is
            // removed under it; prints the error that says so.
            for i in 0..n {
                match conn.execute("insert into t values (?1)", [i]) {
                    // Lost to the removal's own swap: nothing landed; go on.
                    Err(donut_guest::rusqlite::Error::SqliteFailure(e, _))
                        if e.code == donut_guest::rusqlite::ErrorCode::DatabaseBusy => {}
                    Err(e) => {
                        println!("{}", donut_guest::describe_sqlite_error(&e));
                        return;
                    }
                    Ok(_) => {}
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            println!("never removed");
        }
        "count" => {
            let count: i64 = conn
                .query_row("select count(*) from t", [], |r| r.get(0))
                .expect("count");
            println!("{count}");
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}
