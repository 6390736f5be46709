//! An example DonutDB query component.
//!
//! `query [--db NAME] WORD...` opens (creating if needed) the database, makes
//! sure table `notes` exists, inserts one row per WORD in one transaction and
//! prints every row. Build: `just guest`; run:
//! `donut-host run target/wasm32-wasip2/guest/query.wasm -- hello world`.

use donut_guest::rusqlite;
use std::process::ExitCode;

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut db = "demo.db".to_string();
    if args.first().map(String::as_str) == Some("--db") {
        if args.len() < 2 {
            return Err("--db needs a name".into());
        }
        db = args.remove(1);
        args.remove(0);
    }
    let mut conn = donut_guest::open_or_create(&db, 4096).map_err(|e| e.to_string())?;
    let describe = |e: rusqlite::Error| match donut_guest::last_storage_error() {
        Some(detail) => format!("{e} ({detail})"),
        None => e.to_string(),
    };
    conn.execute_batch(
        "create table if not exists notes(
             id integer primary key,
             body text not null,
             added_at text not null default (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
    )
    .map_err(describe)?;
    // A concurrent writer may win the commit: retry the whole transaction.
    donut_guest::retry(&mut conn, 5, |tx| {
        for word in &args {
            tx.execute("insert into notes(body) values (?1)", [word])?;
        }
        Ok(())
    })
    .map_err(describe)?;
    let mut stmt = conn
        .prepare("select id, body, added_at from notes order by id")
        .map_err(describe)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(describe)?;
    println!("{:>4}  {:<24}  added at (UTC)", "id", "body");
    let mut count = 0;
    for row in rows {
        let (id, body, added_at) = row.map_err(describe)?;
        println!("{id:>4}  {body:<24}  {added_at}");
        count += 1;
    }
    let plural = if count == 1 { "" } else { "s" };
    println!("{count} row{plural} in {db}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
