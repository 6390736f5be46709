//! A differential SQL fuzzer: seeded random programs — DDL, DML on rowid
//! and WITHOUT ROWID tables with overflowing rows, `auto_vacuum`,
//! savepoints, large transactions with a tiny `cache_size` (one page:
//! SQLite spills pages mid-transaction), `page_size` + VACUUM (after ~20 MB
//! of rows, sometimes), `VACUUM INTO`,
//! `journal_mode` and `synchronous` in every spelling, ATTACH, two
//! connections, `sqlite3_backup` between databases, transactions whose
//! pages DonutDB stores before the commit (`donut_spill_bytes`), one larger
//! than the instance's memory — run against
//! native SQLite on temporary files and against DonutDB through the stock
//! component, every step in a new instance (a reopen). After every step
//! both sides must agree on success, on each database's schema, page size
//! and contents, and DonutDB's `integrity_check` must pass.
//!
//! A failure names its seed; `DONUT_FUZZ_SEED=N` replays one,
//! `DONUT_FUZZ_SEEDS=N` runs more (`just fuzz 1000`).

use crate::util::{Harness, fill};
use donut_sim::Rng;
use std::path::PathBuf;

/// Seeds per backend in an ordinary run (CI).
const SEEDS_MEMORY: u64 = 24;
const SEEDS_LOCAL: u64 = 6;
/// Steps per program.
const STEPS: usize = 10;

/// What DonutDB must do with a step, compared with native SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The same success or failure, the same results.
    Same,
    /// A transaction writing two databases: DonutDB refuses its commit
    /// whole; native SQLite runs it with ROLLBACK in place of COMMIT, so
    /// both end where they began.
    RefusedAcrossDatabases,
    /// Lines `CONNECTION<TAB>SQL` run by two connections of one program
    /// without waiting on locks (the test component's `connections`
    /// mode): each line's outcome must match native SQLite's.
    TwoConnections,
    /// `FROM<TAB>TO<TAB>PAGES`: `sqlite3_backup` of one database into the
    /// other, PAGES pages a step (the test component's `backup-to` mode).
    Backup,
}

/// One step: SQL with placeholders (`{other}`, `{copy}`, `{wal}`, `{end}`)
/// that each side fills in.
#[derive(Debug, Clone)]
struct Step {
    sql: String,
    expect: Expect,
    /// A `VACUUM INTO` target this step writes: (name, page size DonutDB
    /// creates it with, empty).
    copy: Option<(String, u32)>,
    /// DonutDB runs the step in an instance with this memory limit
    /// (`LARGER_THAN_MEMORY`), not the default.
    memory_limit_bytes: Option<usize>,
}

/// A transaction of about 40 MB in an instance limited to 32 MiB: DonutDB
/// must store its pages before the commit (before spilling, the instance
/// was stopped at its limit).
const LARGER_THAN_MEMORY: (u64, usize) = (10_000, 32 << 20);

const PAGE_SIZES: [u32; 5] = [512, 1024, 4096, 8192, 65536];
const TABLES: u64 = 3;

/// The last table is WITHOUT ROWID (its B-tree is an index B-tree: other
/// pages, other overflow rules).
const WITHOUT_ROWID_TABLE: u64 = TABLES - 1;

fn table_ddl(schema: &str, t: u64) -> String {
    let without_rowid = if t == WITHOUT_ROWID_TABLE {
        " without rowid"
    } else {
        ""
    };
    format!(
        "create table if not exists {schema}t{t}(id integer primary key, a int, b text, c blob){without_rowid};"
    )
}

/// `rows` rows of `select` (columns a, b, c; `i` counts from 1) into
/// `t{t}`: a WITHOUT ROWID table is given ids from a random base (not
/// after its largest: a subquery on the table written would make SQLite
/// stage every row in a temporary table first).
fn fill_table(rng: &mut Rng, schema: &str, t: u64, rows: u64, select: &str) -> String {
    if t == WITHOUT_ROWID_TABLE {
        let base = rng.below(1 << 20) << 20;
        fill(
            &format!("{schema}t{t}(id, a, b, c)"),
            rows,
            &format!("{base} + i, {select}"),
        )
    } else {
        fill(&format!("{schema}t{t}(a, b, c)"), rows, select)
    }
}

fn insert_rows(rng: &mut Rng, schema: &str, t: u64, rows_max: u64) -> String {
    let rows = 1 + rng.below(rows_max);
    let text_max = *rng.pick(&[10u64, 300, 3000]);
    let blob_max = *rng.pick(&[1u64, 100, 5000]);
    let salt = rng.below(1000);
    let row = format!(
        "i * {salt}, printf('%.*c', (i * 7 + {salt}) % {text_max}, char(65 + (i + {salt}) % 26)), zeroblob((i * 13) % {blob_max})"
    );
    format!(
        "{} {}",
        table_ddl(schema, t),
        fill_table(rng, schema, t, rows, &row)
    )
}

/// One statement that changes `t{t}` in `schema` (and may fail).
fn change(rng: &mut Rng, schema: &str) -> String {
    let t = rng.below(TABLES);
    let k = 2 + rng.below(5);
    let r = rng.below(k);
    match rng.below(8) {
        0..=2 => insert_rows(rng, schema, t, 400),
        3 => format!(
            "{} update {schema}t{t} set b = b || 'u', a = a + 1 where id % {k} = {r};",
            table_ddl(schema, t)
        ),
        4 => format!(
            "{} delete from {schema}t{t} where id % {k} = {r};",
            table_ddl(schema, t)
        ),
        5 => format!(
            "{} create index if not exists {schema}t{t}_a on t{t}(a);",
            table_ddl(schema, t)
        ),
        6 => format!("drop index if exists {schema}t{t}_a;"),
        _ => format!("drop table if exists {schema}t{t};"),
    }
}

fn changes(rng: &mut Rng, schema: &str) -> String {
    (0..1 + rng.below(3))
        .map(|_| change(rng, schema))
        .collect::<Vec<_>>()
        .join("\n")
}

const SYNCHRONOUS: [&str; 12] = [
    "off", "OFF", "no", "false", "0", "'off'", "normal", "1", "full", "extra", "3", "yes",
];
const JOURNAL_MODES: [&str; 6] = ["delete", "truncate", "persist", "memory", "{wal}", "off"];

fn generate(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut copies = 0;
    // `auto_vacuum` is set before the first table (later, only VACUUM
    // would apply it): freelist pages move, the file shrinks at commit.
    if rng.chance(300) {
        steps.push(Step {
            sql: format!("pragma auto_vacuum = {};", rng.pick(&[1, 2, 1])),
            expect: Expect::Same,
            copy: None,
            memory_limit_bytes: None,
        });
    }
    for _ in 0..STEPS {
        let mut prefix = String::new();
        let mut journal_off = false;
        if rng.chance(300) {
            prefix += &format!("pragma synchronous = {};\n", rng.pick(&SYNCHRONOUS));
        }
        if rng.chance(250) {
            let mode = *rng.pick(&JOURNAL_MODES);
            journal_off = mode == "off";
            prefix += &format!("pragma journal_mode = {mode};\n");
        }
        if rng.chance(100) {
            steps.push(two_connections(&mut rng));
            continue;
        }
        if rng.chance(60) {
            let (from, to) = *rng.pick(&[("main", "other"), ("other", "main")]);
            let pages = *rng.pick(&[1i64, 3, 50, 1_000_000]);
            steps.push(Step {
                sql: format!("{from}\t{to}\t{pages}"),
                expect: Expect::Backup,
                copy: None,
                memory_limit_bytes: None,
            });
            continue;
        }
        if rng.chance(25) {
            let (rows, limit) = LARGER_THAN_MEMORY;
            let t = rng.below(TABLES);
            steps.push(Step {
                sql: format!(
                    "{prefix}pragma cache_size = 2;\nbegin;\n{}\n{}\ncommit;",
                    table_ddl("", t),
                    fill_table(
                        &mut rng,
                        "",
                        t,
                        rows,
                        "i, printf('%.*c', i % 200, 'L'), zeroblob(4000)"
                    )
                ),
                expect: Expect::Same,
                copy: None,
                memory_limit_bytes: Some(limit),
            });
            continue;
        }
        // Pages stored before the commit (DonutDB's spilling; native
        // SQLite ignores a pragma it does not know).
        if rng.chance(150) {
            prefix += &format!(
                "pragma donut_spill_bytes = {};\n",
                rng.pick(&[0u64, 4096, 65536, 1 << 20])
            );
        }
        let mut expect = Expect::Same;
        let mut copy = None;
        let body = match rng.below(10) {
            // Autocommit statements.
            0 | 1 => changes(&mut rng, ""),
            // A transaction, committed or (unless the journal is off, where
            // SQLite leaves ROLLBACK undefined) rolled back.
            2 | 3 => {
                let end = if journal_off || rng.chance(700) {
                    "commit"
                } else {
                    "rollback"
                };
                let begin = rng.pick(&["begin", "begin immediate", "begin exclusive"]);
                format!("{begin};\n{}\n{end};", changes(&mut rng, ""))
            }
            // Savepoints, one rolled back.
            4 if !journal_off => format!(
                "savepoint a;\n{}\nsavepoint b;\n{}\nrollback to b;\nrelease a;",
                changes(&mut rng, ""),
                changes(&mut rng, "")
            ),
            // A large transaction that spills: a tiny page cache.
            5 => {
                let t = rng.below(TABLES);
                format!(
                    "pragma cache_size = {};\npragma donut_spill_bytes = {};\nbegin;\n{}\n{}\ncommit;",
                    1 + rng.below(9),
                    rng.pick(&[4096u64, 100_000, 1 << 20, 64 << 20]),
                    insert_rows(&mut rng, "", t, 3000),
                    change(&mut rng, "")
                )
            }
            // The page size re-set, VACUUM (on a one-page cache, or after
            // a large database was made: ~20 MB of overflowing rows, tens
            // of thousands of pages at small page sizes).
            6 => {
                let large = if rng.chance(120) {
                    let t = rng.below(TABLES);
                    format!(
                        "{} {}\n",
                        table_ddl("", t),
                        fill_table(
                            &mut rng,
                            "",
                            t,
                            15_000,
                            "i, printf('%.*c', 700 + i % 800, char(65 + i % 26)), zeroblob(i % 300)"
                        )
                    )
                } else {
                    String::new()
                };
                let cache = if rng.chance(500) {
                    "pragma cache_size = 1;\n"
                } else {
                    ""
                };
                format!(
                    "{large}{cache}pragma page_size = {};\nvacuum;",
                    rng.pick(&PAGE_SIZES)
                )
            }
            7 => {
                copies += 1;
                let name = format!("copy{copies}");
                copy = Some((name.clone(), *rng.pick(&PAGE_SIZES)));
                format!("vacuum into '{{{name}}}';")
            }
            // ATTACH: writes to one database, or to both in one transaction.
            _ => {
                let one = if rng.chance(500) {
                    changes(&mut rng, "o.")
                } else {
                    format!("begin immediate;\n{}\ncommit;", changes(&mut rng, "o."))
                };
                if rng.chance(350) {
                    expect = Expect::RefusedAcrossDatabases;
                    let t = rng.below(TABLES);
                    format!(
                        "{}\n{}\nbegin;\ninsert into t{t}(id, a) values ((select coalesce(max(id), 0) + 1 from t{t}), 1);\ninsert into o.t{t}(id, a) values ((select coalesce(max(id), 0) + 1 from o.t{t}), 2);\n{{end}};",
                        table_ddl("", t),
                        table_ddl("o.", t)
                    )
                } else {
                    one
                }
            }
        };
        let sql = if body.contains("o.") {
            format!("{prefix}attach '{{other}}' as o;\n{body}")
        } else {
            format!("{prefix}{body}")
        };
        steps.push(Step {
            sql,
            expect,
            copy,
            memory_limit_bytes: None,
        });
    }
    steps
}

/// Two connections of one program, one writing while the other tries to
/// (native SQLite runs them with a page cache that never spills: see
/// `Native::run_two`).
fn two_connections(rng: &mut Rng) -> Step {
    let t = rng.below(TABLES);
    let k = 2 + rng.below(5);
    let small = |rng: &mut Rng| match rng.below(3) {
        0 => format!(
            "insert into t{t}(id, a, b) values ((select coalesce(max(id), 0) + 1 from t{t}), {}, 'x')",
            rng.below(1000)
        ),
        1 => format!("update t{t} set a = a + 1 where id % {k} = 0"),
        _ => format!("delete from t{t} where id % {k} = 1"),
    };
    let end = if rng.chance(500) {
        "commit"
    } else {
        "rollback"
    };
    let lines = [
        (0, table_ddl("", t)),
        (0, "begin immediate".to_string()),
        (0, small(rng)),
        (1, "begin immediate".to_string()),
        (1, small(rng)),
        (1, format!("select count(*) from t{t}")),
        (0, small(rng)),
        (0, end.to_string()),
        (1, small(rng)),
        (1, format!("begin; {}; commit", small(rng))),
    ];
    Step {
        sql: lines
            .iter()
            .map(|(c, sql)| format!("{c}\t{sql}"))
            .collect::<Vec<_>>()
            .join("\n"),
        expect: Expect::TwoConnections,
        copy: None,
        memory_limit_bytes: None,
    }
}

/// A `Backup` step's source, destination and pages a step.
fn backup_args(step: &Step) -> (&str, &str, std::ffi::c_int) {
    let mut parts = step.sql.split('\t');
    let from = parts.next().unwrap_or("main");
    let to = parts.next().unwrap_or("other");
    let pages = parts.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    (from, to, pages)
}

/// The databases a program may have written: main, the attached one, and
/// the `VACUUM INTO` copies so far.
fn databases(steps: &[Step]) -> Vec<String> {
    let mut out = vec!["main".to_string(), "other".to_string()];
    out.extend(
        steps
            .iter()
            .filter_map(|s| s.copy.as_ref().map(|c| c.0.clone())),
    );
    out
}

/// Native SQLite on temporary files.
struct Native {
    dir: tempfile::TempDir,
    /// The page size DonutDB's main database was created with: an empty
    /// DonutDB database opens with it, so an empty native file does too.
    main_page_size: u32,
    /// The same for the attached database.
    other_page_size: u32,
}

impl Native {
    fn path(&self, db: &str) -> PathBuf {
        self.dir.path().join(format!("{db}.db"))
    }

    fn fill(&self, step: &Step) -> String {
        let mut sql = step
            .sql
            .replace("{other}", &self.path("other").display().to_string())
            .replace("{wal}", "delete")
            .replace(
                "{end}",
                match step.expect {
                    Expect::RefusedAcrossDatabases => "rollback",
                    Expect::Same | Expect::TwoConnections | Expect::Backup => "commit",
                },
            );
        if let Some((copy, _)) = &step.copy {
            sql = sql.replace(
                &format!("{{{copy}}}"),
                &self.path(copy).display().to_string(),
            );
        }
        sql
    }

    /// A `TwoConnections` step: each line's outcome, as the test
    /// component prints it.
    /// A connection to the main file; an empty file opens with the page
    /// size DonutDB's main database was created with.
    fn open_main(&self) -> Result<rusqlite::Connection, String> {
        self.open("main")
    }

    /// A connection to `db` (main or other); an empty file opens with the
    /// page size DonutDB's database was created with.
    fn open(&self, db: &str) -> Result<rusqlite::Connection, String> {
        let path = self.path(db);
        let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
        if empty {
            let page_size = match db {
                "main" => self.main_page_size,
                _ => self.other_page_size,
            };
            conn.execute_batch(&format!("pragma page_size = {page_size}"))
                .map_err(|e| e.to_string())?;
        }
        Ok(conn)
    }

    fn run_two(&self, step: &Step) -> Result<Vec<String>, String> {
        let open = || -> Result<rusqlite::Connection, String> {
            let conn = self.open_main()?;
            conn.busy_timeout(std::time::Duration::ZERO)
                .map_err(|e| e.to_string())?;
            // A page cache that never spills to the file: spilling takes
            // EXCLUSIVE natively and blocks the other connection's reads,
            // where DonutDB's readers always read their snapshot.
            conn.execute_batch("pragma cache_size = -1000000")
                .map_err(|e| e.to_string())?;
            Ok(conn)
        };
        let conns = [open()?, open()?];
        let mut out = Vec::new();
        for line in step.sql.lines() {
            let Some((which, sql)) = line.split_once('\t') else {
                continue;
            };
            let conn = &conns[which.parse::<usize>().unwrap_or(0).min(1)];
            out.push(match conn.execute_batch(sql) {
                Ok(()) => "ok".to_string(),
                Err(rusqlite::Error::SqliteFailure(e, _)) => format!("{:?}", e.code),
                Err(e) => e.to_string(),
            });
        }
        Ok(out)
    }

    /// A `Backup` step.
    fn backup(&self, step: &Step) -> Result<(), String> {
        let (from, to, pages) = backup_args(step);
        let source = self.open(from)?;
        let mut dest = self.open(to)?;
        rusqlite::backup::Backup::new(&source, &mut dest)
            .and_then(|b| b.run_to_completion(pages, std::time::Duration::ZERO, None))
            .map_err(|e| e.to_string())
    }

    fn run(&self, step: &Step) -> Result<(), String> {
        let conn = self.open_main()?;
        conn.execute_batch(&self.fill(step))
            .map_err(|e| e.to_string())
    }

    fn tables(&self, db: &str) -> Result<Vec<String>, String> {
        let conn = rusqlite::Connection::open(self.path(db)).map_err(|e| e.to_string())?;
        tables(&conn)
    }

    fn describe(&self, db: &str) -> Result<String, String> {
        let conn = rusqlite::Connection::open(self.path(db)).map_err(|e| e.to_string())?;
        let query = describe_query(&tables(&conn)?);
        let value: String = conn
            .query_row(&query, [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        Ok(normalized(value))
    }
}

fn tables(conn: &rusqlite::Connection) -> Result<Vec<String>, String> {
    let mut stmt = conn
        .prepare("select name from sqlite_schema where type = 'table' order by name")
        .map_err(|e| e.to_string())?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(names)
}

/// A database with an empty schema describes as nothing, whatever page
/// size it would take and whether it has its first page yet (SQLite writes
/// page 1 of an empty database that joins a write transaction; DonutDB
/// leaves such a database empty).
fn normalized(value: String) -> String {
    if value.split('|').nth(3) == Some("") {
        String::new()
    } else {
        value
    }
}

/// One value that describes a database: page count, integrity, page size,
/// schema, and per table its row count and sums over every column.
fn describe_query(tables: &[String]) -> String {
    let mut parts = vec![
        "(select page_count from pragma_page_count)".to_string(),
        "(select group_concat(integrity_check) from pragma_integrity_check)".to_string(),
        "(select page_size from pragma_page_size)".to_string(),
        "coalesce((select group_concat(type || ':' || name || ':' || coalesce(sql, ''), ';') from (select * from sqlite_schema order by type, name)), '')".to_string(),
    ];
    for t in tables {
        parts.push(format!(
            "(select count(*) || ',' || total(id) || ',' || total(a) || ',' || total(length(b)) || ',' || total(length(c)) || ',' || total(unicode(substr(b, -1))) from \"{t}\")"
        ));
    }
    format!("select {}", parts.join(" || '|' || "))
}

fn fill_donut(step: &Step) -> String {
    let mut sql = step
        .sql
        .replace("{other}", "other.db")
        .replace("{wal}", "wal")
        .replace("{end}", "commit");
    if let Some((copy, _)) = &step.copy {
        sql = sql.replace(&format!("{{{copy}}}"), &format!("{copy}.db"));
    }
    sql
}

async fn donut_describe(h: &Harness, db: &str, tables: &[String]) -> Result<String, String> {
    // The query is built from native SQLite's table list: a table DonutDB
    // lacks is an error, one it has extra shows in the schema.
    let out = h.sql(&format!("{db}.db"), &describe_query(tables)).await;
    if !out.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = text.lines().nth(1).unwrap_or("").trim_matches('"');
    Ok(normalized(value.to_string()))
}

/// Runs `seed`'s program on both sides; the first difference, described.
async fn run_seed(h: &Harness, seed: u64) -> Result<(), String> {
    let steps = generate(seed);
    let mut rng = Rng(seed ^ 0x5eed);
    let main_page_size = *rng.pick(&PAGE_SIZES);
    h.create_with_page_size("main.db", main_page_size).await;
    let other_page_size = *rng.pick(&PAGE_SIZES);
    h.create_with_page_size("other.db", other_page_size).await;
    let native = Native {
        dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        main_page_size,
        other_page_size,
    };
    for (i, step) in steps.iter().enumerate() {
        if let Some((copy, page_size)) = &step.copy {
            h.create_with_page_size(&format!("{copy}.db"), *page_size)
                .await;
        }
        let context = |what: String| {
            format!(
                "seed {seed}, step {i}: {what}\nsteps so far:\n{}",
                steps[..=i]
                    .iter()
                    .map(|s| format!("-- {:?}\n{}", s.expect, fill_donut(s)))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        if step.expect == Expect::TwoConnections {
            let theirs = native.run_two(step).map_err(&context)?;
            let (out, _) = h
                .run_with(
                    &crate::util::components().test_guest,
                    &["connections", "main.db"],
                    &step.sql,
                )
                .await;
            let ours: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if theirs != ours {
                return Err(context(format!(
                    "two connections differ:\n native: {theirs:?}\n DonutDB: {ours:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        if step.expect == Expect::Backup {
            let theirs = native
                .backup(step)
                .map_or_else(|e| e, |()| "ok".to_string());
            let (from, to, pages) = backup_args(step);
            let (out, _) = h
                .run_with(
                    &crate::util::components().test_guest,
                    &[
                        "backup-to",
                        &format!("{from}.db"),
                        &format!("{to}.db"),
                        &pages.to_string(),
                    ],
                    "",
                )
                .await;
            let ours = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if (theirs == "ok") != (ours == "ok") {
                return Err(context(format!(
                    "backup differs:\n native: {theirs}\n DonutDB: {ours} {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        let native_ok = match step.expect {
            Expect::TwoConnections | Expect::Backup => Ok(()),
            _ => native.run(step),
        };
        let out = match step.expect {
            Expect::TwoConnections | Expect::Backup => h.sql("main.db", "select 1").await,
            _ => match step.memory_limit_bytes {
                Some(limit) => h
                    .sql_within(limit, "main.db", &fill_donut(step))
                    .await
                    .map_err(|trap| context(format!("DonutDB was stopped: {trap}")))?,
                None => h.sql("main.db", &fill_donut(step)).await,
            },
        };
        let donut_err = String::from_utf8_lossy(&out.stderr).into_owned();
        match step.expect {
            Expect::Same if native_ok.is_ok() != out.success() => {
                return Err(context(format!(
                    "native {native_ok:?}, DonutDB {}",
                    if out.success() { "ok" } else { &donut_err }
                )));
            }
            Expect::RefusedAcrossDatabases
                if out.success() || !donut_err.contains("atomically") =>
            {
                return Err(context(format!(
                    "DonutDB was to refuse a commit across databases; it answered {}",
                    if out.success() { "ok" } else { &donut_err }
                )));
            }
            _ => {}
        }
        for db in databases(&steps[..=i]) {
            let theirs = native.describe(&db).map_err(&context)?;
            let tables = native.tables(&db).map_err(&context)?;
            let ours = donut_describe(h, &db, &tables)
                .await
                .map_err(|e| context(format!("{db}: {e}")))?;
            if theirs != ours {
                return Err(context(format!(
                    "{db} differs:\n native: {theirs}\n DonutDB: {ours}"
                )));
            }
        }
    }
    Ok(())
}

fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("DONUT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("DONUT_FUZZ_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

async fn fuzz(harness: impl Fn() -> Harness, default_seeds: u64) {
    let mut failed = Vec::new();
    for seed in seeds(default_seeds) {
        if let Err(e) = run_seed(&harness(), seed).await {
            eprintln!("FAILED {e}\n");
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "differential fuzzer: seeds {failed:?} failed (replay one with DONUT_FUZZ_SEED=N)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_fuzzer_on_the_memory_store() {
    fuzz(Harness::memory, SEEDS_MEMORY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_fuzzer_on_the_local_store() {
    fuzz(Harness::local, SEEDS_LOCAL).await;
}

#[test]
fn the_same_seed_gives_the_same_program() {
    let render = |seed| {
        generate(seed)
            .iter()
            .map(fill_donut)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(render(7), render(7));
    assert_ne!(render(7), render(8));
}
