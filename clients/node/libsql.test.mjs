// `@libsql/client` (and Drizzle on top of it), unchanged, against
// `donut-host serve`. tests/all/clients.rs starts the server and runs this
// file with `node --test`; by hand:
//   DONUT_URL=http://127.0.0.1:PORT DONUT_TOKEN=... DONUT_DB_PREFIX=node- \
//     node --test clients/node/
// Every database name starts with DONUT_DB_PREFIX and a per-run suffix.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient, LibsqlError } from "@libsql/client";
import { drizzle } from "drizzle-orm/libsql";
import { sqliteTable, integer, text } from "drizzle-orm/sqlite-core";
import { eq, sql } from "drizzle-orm";

const base = required("DONUT_URL");
const authToken = required("DONUT_TOKEN");
const prefix = required("DONUT_DB_PREFIX");
const run = Date.now().toString(36);

function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set (see the top of this file)`);
  return value;
}

/** A client of database `name` (the trailing slash selects it). */
function client(name, options = {}) {
  return createClient({ url: `${base}/db/${prefix}${name}-${run}/`, authToken, ...options });
}

/** The libSQL error a promise rejects with. */
async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof LibsqlError, `not a LibsqlError: ${e}`);
    return e;
  }
  assert.fail("it succeeded");
}

test("execute binds positional and named arguments", async () => {
  const db = client("args");
  await db.execute("create table t(a integer, b text)");
  const insert = await db.execute({ sql: "insert into t values (?, ?)", args: [1, "one"] });
  assert.equal(insert.rowsAffected, 1);
  assert.equal(insert.lastInsertRowid, 1n);
  for (const name of [":a", "@a", "$a"]) {
    const prefixChar = name[0];
    await db.execute({
      sql: `insert into t values (${prefixChar}a, ${prefixChar}b)`,
      args: { a: 2, b: `two ${prefixChar}` },
    });
  }
  const rows = (await db.execute({ sql: "select a, b from t where a = :a order by b", args: { a: 2 } })).rows;
  assert.deepEqual(rows.map((r) => r.b), ["two $", "two :", "two @"]);
  const all = await db.execute("select count(*) as n, sum(a) as s from t");
  assert.deepEqual(all.columns, ["n", "s"]);
  assert.equal(all.rows[0].n, 4);
  assert.equal(all.rows[0].s, 7);
  db.close();
});

test("a missing argument is an error, not a NULL", async () => {
  const db = client("missing");
  await db.execute("create table t(a)");
  const e = await failure(db.execute({ sql: "insert into t values (?)", args: [] }));
  assert.match(e.message, /parameter|argument|bind/i);
  assert.equal((await db.execute("select count(*) as n from t")).rows[0].n, 0);
  db.close();
});

test("values keep their types: blobs, NULL, floats, integers beyond 2^53", async () => {
  const db = client("values", { intMode: "bigint" });
  await db.execute("create table v(i integer, r real, x text, b blob, n)");
  const big = 2n ** 62n + 1n;
  const blob = new Uint8Array([0, 1, 2, 253, 254, 255]);
  await db.execute({ sql: "insert into v values (?, ?, ?, ?, ?)", args: [big, 1.25, "héllo ✓", blob, null] });
  await db.execute({ sql: "insert into v values (?, ?, ?, ?, ?)", args: [-big, -0.5, "", new Uint8Array(), null] });
  const rs = await db.execute("select i, r, x, b, n, typeof(b) as tb from v order by i");
  assert.equal(rs.rows[0].i, -big);
  assert.equal(rs.rows[1].i, big);
  assert.equal(rs.rows[1].r, 1.25);
  assert.equal(rs.rows[1].x, "héllo ✓");
  assert.deepEqual(new Uint8Array(rs.rows[1].b), blob);
  assert.equal(rs.rows[1].n, null);
  assert.equal(rs.rows[0].tb, "blob");
  assert.equal(rs.rows[0].b.byteLength, 0);
  // A sum past 2^53 is exact in bigint mode.
  const sum = await db.execute({ sql: "select ? + 1 as s", args: [2n ** 60n] });
  assert.equal(sum.rows[0].s, 2n ** 60n + 1n);
  db.close();
});

test("a 10,000-row result arrives whole", async () => {
  const db = client("rows");
  await db.execute("create table r(id integer primary key, v text)");
  await db.execute(
    "with recursive c(i) as (select 1 union all select i + 1 from c where i < 10000) " +
      "insert into r(v) select printf('row %05d', i) from c",
  );
  const rs = await db.execute("select id, v from r order by id");
  assert.equal(rs.rows.length, 10000);
  assert.equal(rs.rows[9999].v, "row 10000");
  assert.equal(rs.rows.reduce((s, r) => s + r.id, 0), (10000 * 10001) / 2);
  db.close();
});

test("a write batch is atomic: a failing step rolls the whole batch back", async () => {
  const db = client("batch");
  await db.execute("create table b(id integer primary key, v text not null)");
  const results = await db.batch(
    [
      { sql: "insert into b values (?, ?)", args: [1, "a"] },
      { sql: "insert into b values (?, ?)", args: [2, "b"] },
      "select count(*) as n from b",
    ],
    "write",
  );
  assert.equal(results.length, 3);
  assert.equal(results[2].rows[0].n, 2);
  const e = await failure(
    db.batch(
      [
        { sql: "insert into b values (?, ?)", args: [3, "c"] },
        { sql: "insert into b values (?, ?)", args: [1, "duplicate"] },
        { sql: "insert into b values (?, ?)", args: [4, "d"] },
      ],
      "write",
    ),
  );
  assert.match(e.code, /^SQLITE_CONSTRAINT/);
  const rs = await db.execute("select group_concat(id) as ids from b");
  assert.equal(rs.rows[0].ids, "1,2", "nothing of the failed batch stayed");
  db.close();
});

test("an interactive transaction commits and rolls back", async () => {
  const db = client("tx");
  await db.execute("create table a(id integer primary key, balance integer not null)");
  await db.execute("insert into a values (1, 100), (2, 0)");
  const tx = await db.transaction("write");
  await tx.execute("update a set balance = balance - 30 where id = 1");
  await tx.execute("update a set balance = balance + 30 where id = 2");
  // Inside the transaction its own writes are visible; outside they are not yet.
  assert.equal((await tx.execute("select balance from a where id = 2")).rows[0].balance, 30);
  assert.equal((await db.execute("select balance from a where id = 2")).rows[0].balance, 0);
  await tx.commit();
  assert.equal((await db.execute("select balance from a where id = 2")).rows[0].balance, 30);
  const undone = await db.transaction("write");
  await undone.execute("delete from a");
  await undone.rollback();
  assert.equal((await db.execute("select count(*) as n from a")).rows[0].n, 2);
  db.close();
});

test("a transaction that loses to a concurrent writer gets SQLITE_BUSY, and a retry commits", async () => {
  const db = client("conflict");
  const other = client("conflict");
  await db.execute("create table c(id integer primary key, n integer not null)");
  await db.execute("insert into c values (1, 0)");
  const tx = await db.transaction("write");
  const seen = (await tx.execute("select n from c where id = 1")).rows[0].n;
  await tx.execute({ sql: "update c set n = ? where id = 1", args: [seen + 1] });
  // Another client commits first.
  await other.execute("update c set n = n + 10 where id = 1");
  const e = await failure(tx.commit());
  assert.match(e.code, /^SQLITE_BUSY/, e.message);
  tx.close();
  // The retry reads the other's commit and adds to it.
  for (let attempt = 1; ; attempt++) {
    const retry = await db.transaction("write");
    try {
      const n = (await retry.execute("select n from c where id = 1")).rows[0].n;
      await retry.execute({ sql: "update c set n = ? where id = 1", args: [n + 1] });
      await retry.commit();
      break;
    } catch (err) {
      retry.close();
      if (!(err instanceof LibsqlError && err.code.startsWith("SQLITE_BUSY")) || attempt >= 5) throw err;
    }
  }
  assert.equal((await db.execute("select n from c where id = 1")).rows[0].n, 11);
  db.close();
  other.close();
});

test("16 concurrent clients write and read one database", async () => {
  const setup = client("many");
  await setup.execute("create table m(client integer, i integer, primary key (client, i))");
  const clients = Array.from({ length: 16 }, () => client("many"));
  await Promise.all(
    clients.map(async (db, c) => {
      for (let i = 0; i < 10; i++) {
        await db.execute({ sql: "insert into m values (?, ?)", args: [c, i] });
        const mine = await db.execute({ sql: "select count(*) as n from m where client = ?", args: [c] });
        assert.equal(mine.rows[0].n, i + 1);
      }
    }),
  );
  const rs = await setup.execute("select count(*) as n, count(distinct client) as c from m");
  assert.deepEqual([rs.rows[0].n, rs.rows[0].c], [160, 16]);
  for (const db of clients) db.close();
  setup.close();
});

test("errors carry SQLite's code", async () => {
  const db = client("errors");
  await db.execute("create table e(id integer primary key, v text unique)");
  await db.execute("insert into e values (1, 'x')");
  assert.equal((await failure(db.execute("select * from nowhere"))).code, "SQLITE_ERROR");
  assert.equal(
    (await failure(db.execute("insert into e values (2, 'x')"))).code,
    "SQLITE_CONSTRAINT_UNIQUE",
  );
  assert.equal(
    (await failure(db.execute("insert into e values (1, 'y')"))).code,
    "SQLITE_CONSTRAINT_PRIMARYKEY",
  );
  // The stream goes on serving after them.
  assert.equal((await db.execute("select count(*) as n from e")).rows[0].n, 1);
  db.close();
});

test("a wrong token is refused", async () => {
  const db = createClient({ url: `${base}/db/${prefix}auth-${run}/`, authToken: "not-a-token" });
  await assert.rejects(db.execute("select 1"), (e) => /401|unauthori[sz]ed|token/i.test(String(e)));
  db.close();
});

const users = sqliteTable("users", {
  id: integer("id").primaryKey(),
  name: text("name").notNull(),
  email: text("email").notNull().unique(),
});

test("Drizzle: create, insert, select, update, delete", async () => {
  const libsql = client("drizzle");
  const orm = drizzle(libsql);
  await orm.run(sql`create table users (id integer primary key, name text not null, email text not null unique)`);
  await orm.insert(users).values([
    { name: "Ada", email: "ada@example.com" },
    { name: "Grace", email: "grace@example.com" },
  ]);
  const all = await orm.select().from(users).orderBy(users.id);
  assert.deepEqual(all.map((u) => u.name), ["Ada", "Grace"]);
  await orm.update(users).set({ name: "Ada Lovelace" }).where(eq(users.email, "ada@example.com"));
  const [ada] = await orm.select().from(users).where(eq(users.id, all[0].id));
  assert.equal(ada.name, "Ada Lovelace");
  await orm.delete(users).where(eq(users.name, "Grace"));
  const left = await orm.select({ n: sql`count(*)` }).from(users);
  assert.equal(left[0].n, 1);
  await assert.rejects(orm.insert(users).values({ name: "Copy", email: "ada@example.com" }));
  libsql.close();
});
