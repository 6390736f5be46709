//! Test component. `test-guest MODE DB [N]`:
//! - `trap-in-transaction DB N`: inserts N rows in a transaction, then traps
//!   before committing;
//! - `count DB`: prints `select count(*) from t`;
//! - `spin DB`: loops forever; `hog DB`: allocates without end;
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
