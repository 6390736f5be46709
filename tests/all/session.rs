//! The session world (`donut:storage/session`): one SQLite connection kept
//! in one instance across calls, typed values in and out, SQLite's errors
//! with their codes, transactions that span calls, limits per call.

use crate::util::{Harness, guest_path};
use donut_host::runtime::{RunError, Runtime, RuntimeOptions};
use donut_host::session::{Session, SessionLimits, SessionProgram, SqlError, Statement, Value};
use donut_host::{Grant, StorageCtx};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(donut_testkit::component_cache_dir()),
        time_limits: true,
        fuel: false,
        pooling: None,
    })
    .expect("runtime")
}

fn program(runtime: &Runtime) -> SessionProgram {
    let bytes = std::fs::read(guest_path("donut_session.wasm")).expect("the session component");
    runtime.load_session(&bytes, "donut-session").expect("load")
}

async fn open(h: &Harness, runtime: &Runtime, program: &SessionProgram, db: &str) -> Session {
    let storage = StorageCtx::new(h.backend.clone(), Grant::all());
    Session::open(runtime, program, storage, SessionLimits::default(), db)
        .await
        .expect("instantiate")
        .unwrap_or_else(|e| panic!("open {db}: {e:?}"))
}

fn stmt(sql: &str, args: Vec<Value>) -> Statement {
    Statement {
        args,
        ..Statement::sql(sql)
    }
}

/// Runs `statement`; panics on any failure.
async fn ok(
    s: &mut Session,
    rt: &Runtime,
    statement: Statement,
) -> donut_host::session::StatementResult {
    let sql = statement.sql.clone();
    s.execute(rt, statement)
        .await
        .expect("no trap")
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// Runs `statement`; returns SQLite's refusal.
async fn refused(s: &mut Session, rt: &Runtime, statement: Statement) -> SqlError {
    match s.execute(rt, statement).await.expect("no trap") {
        Ok(done) => panic!("expected an SQL error, got {done:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_round_trips_every_value_type_and_reports_changes_and_rowids() {
    let h = Harness::memory();
    let rt = runtime();
    let program = program(&rt);
    let mut s = open(&h, &rt, &program, "s.db").await;
    ok(
        &mut s,
        &rt,
        Statement::sql("create table t(i integer, r real, x text, b blob, n)"),
    )
    .await;
    let big = (1i64 << 53) + 1;
    let values = vec![
        Value::Integer(big),
        Value::Real(1.5),
        Value::Text("héllo".into()),
        Value::Blob(vec![0, 1, 255]),
        Value::Null,
    ];
    let inserted = ok(
        &mut s,
        &rt,
        stmt("insert into t values (?, ?, ?, ?, ?)", values.clone()),
    )
    .await;
    assert_eq!(inserted.affected_row_count, 1);
    assert_eq!(inserted.last_insert_rowid, Some(1));
    let named = Statement {
        named_args: vec![
            (":i".into(), Value::Integer(-7)),
            ("x".into(), Value::Text("named".into())),
        ],
        ..Statement::sql("insert into t(i, x) values (:i, :x)")
    };
    assert_eq!(ok(&mut s, &rt, named).await.last_insert_rowid, Some(2));
    let rows = ok(
        &mut s,
        &rt,
        Statement::sql("select i, r, x, b, n from t order by rowid"),
    )
    .await;
    let names: Vec<(String, Option<String>)> = rows
        .cols
        .iter()
        .map(|c| (c.name.clone(), c.decltype.clone()))
        .collect();
    // As native SQLite declares them.
    let native = rusqlite::Connection::open_in_memory().unwrap();
    native
        .execute_batch("create table t(i integer, r real, x text, b blob, n)")
        .unwrap();
    let native_stmt = native.prepare("select i, r, x, b, n from t").unwrap();
    let expected: Vec<(String, Option<String>)> = native_stmt
        .columns()
        .map(|c| (c.name().to_string(), c.decl_type().map(str::to_string)))
        .collect();
    assert_eq!(names, expected);
    assert_eq!(rows.rows[0], values);
    assert_eq!(rows.rows[1][0], Value::Integer(-7));
    assert_eq!(rows.rows[1][2], Value::Text("named".into()));
    let dropped = Statement {
        want_rows: false,
        ..Statement::sql("select * from t")
    };
    assert!(ok(&mut s, &rt, dropped).await.rows.is_empty());
    let updated = ok(&mut s, &rt, Statement::sql("update t set n = 1")).await;
    assert_eq!(updated.affected_row_count, 2);
    let described = s
        .describe(&rt, "select x from t where i = :i and r = ?")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(described.params, [Some(":i".to_string()), None]);
    assert!(described.is_readonly && !described.is_explain);
    // 10,000 rows in one answer.
    ok(
        &mut s,
        &rt,
        Statement::sql(&donut_testkit::fill("t(i)", 10_000, "i")),
    )
    .await;
    let many = ok(
        &mut s,
        &rt,
        Statement::sql("select i from t where n is null"),
    )
    .await;
    assert_eq!(many.rows.len(), 10_000);
    // What the session committed is what a new session reads.
    let mut other = open(&h, &rt, &program, "s.db").await;
    let count = ok(&mut other, &rt, Statement::sql("select count(*) from t")).await;
    assert_eq!(count.rows, [[Value::Integer(10_002)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_spans_calls_and_sqlite_errors_carry_their_codes() {
    let h = Harness::memory();
    let rt = runtime();
    let program = program(&rt);
    let mut a = open(&h, &rt, &program, "tx.db").await;
    let mut b = open(&h, &rt, &program, "tx.db").await;
    s_script(&mut a, &rt, "create table kv(k text primary key, v)").await;
    assert!(a.is_autocommit(&rt).await.unwrap());
    s_script(&mut a, &rt, "begin").await;
    assert!(!a.is_autocommit(&rt).await.unwrap());
    ok(
        &mut a,
        &rt,
        stmt(
            "insert into kv values (?, ?)",
            vec![Value::Text("a".into()), Value::Integer(1)],
        ),
    )
    .await;
    // Another connection does not see it before the commit...
    let seen = ok(&mut b, &rt, Statement::sql("select count(*) from kv")).await;
    assert_eq!(seen.rows, [[Value::Integer(0)]]);
    s_script(&mut a, &rt, "commit").await;
    let seen = ok(&mut b, &rt, Statement::sql("select count(*) from kv")).await;
    assert_eq!(seen.rows, [[Value::Integer(1)]]);
    // ...and a rolled-back one never.
    s_script(
        &mut a,
        &rt,
        "begin; insert into kv values ('b', 2); rollback",
    )
    .await;
    let unique = refused(
        &mut a,
        &rt,
        stmt(
            "insert into kv values (?, 3)",
            vec![Value::Text("a".into())],
        ),
    )
    .await;
    assert_eq!(unique.code, "SQLITE_CONSTRAINT_PRIMARYKEY");
    assert_eq!(unique.extended_code, 1555, "{unique:?}");
    assert!(unique.message.contains("UNIQUE"), "{unique:?}");
    let syntax = refused(&mut a, &rt, Statement::sql("selec 1")).await;
    assert_eq!(syntax.code, "SQLITE_ERROR");
    let missing = refused(
        &mut a,
        &rt,
        Statement {
            named_args: vec![("nope".into(), Value::Null)],
            ..Statement::sql("select :a")
        },
    )
    .await;
    assert!(missing.message.contains("nope"), "{missing:?}");
    // Two writers from one snapshot: the second commit is refused busy.
    s_script(&mut a, &rt, "begin; select * from kv").await;
    s_script(&mut b, &rt, "begin; select * from kv").await;
    s_script(&mut a, &rt, "insert into kv values ('x', 1); commit").await;
    let busy = match b
        .execute_script(&rt, "insert into kv values ('y', 1); commit")
        .await
        .unwrap()
    {
        Err(e) => e,
        Ok(()) => panic!("two writers from one snapshot both committed"),
    };
    assert!(busy.code.starts_with("SQLITE_BUSY"), "{busy:?}");
    let rows = ok(&mut a, &rt, Statement::sql("select k from kv order by k")).await;
    assert_eq!(
        rows.rows,
        [[Value::Text("a".into())], [Value::Text("x".into())]]
    );
}

async fn s_script(s: &mut Session, rt: &Runtime, sql: &str) {
    s.execute_script(rt, sql)
        .await
        .expect("no trap")
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outside_its_grant_is_refused_and_one_past_its_time_limit_is_stopped() {
    let h = Harness::memory();
    let rt = runtime();
    let program = program(&rt);
    let grant = Grant::prefixed(["mine-".to_string()], true);
    let storage = StorageCtx::new(h.backend.clone(), grant.clone());
    let refused = Session::open(
        &rt,
        &program,
        storage,
        SessionLimits::default(),
        "theirs.db",
    )
    .await
    .expect("no trap");
    match refused {
        Err(e) => assert_eq!(e.code, "SQLITE_PERM", "{e:?}"),
        Ok(_) => panic!("a session opened a database outside its grant"),
    }
    let limits = SessionLimits {
        time_limit: Some(std::time::Duration::from_millis(300)),
        ..SessionLimits::default()
    };
    let storage = StorageCtx::new(h.backend.clone(), grant);
    let mut s = Session::open(&rt, &program, storage, limits, "mine-1")
        .await
        .expect("no trap")
        .expect("open");
    // Each call gets the whole limit: many short calls are fine.
    for _ in 0..5 {
        ok(&mut s, &rt, Statement::sql("select 1")).await;
    }
    let spin = Statement::sql(
        "with recursive c(i) as (select 1 union all select i + 1 from c) select count(*) from c",
    );
    match s.execute(&rt, spin).await {
        Err(RunError::TimeLimit { .. }) => {}
        other => panic!("expected the time limit, got {other:?}"),
    }
    assert!(matches!(
        s.execute(&rt, Statement::sql("select 1")).await,
        Err(RunError::Trap { .. })
    ));
}
