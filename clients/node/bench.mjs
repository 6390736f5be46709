// Load for `donut-bench --libsql` (bench/src/libsql.rs), through the real
// `@libsql/client`: `node bench.mjs URL TOKEN MODE CLIENTS REQUESTS`.
// MODE is `setup` (a table of ROWS keyed rows; CLIENTS is ignored),
// `select` (point SELECT of a random key) or `insert` (one-row INSERT).
// Prints one JSON line: {requests, p50_us, p99_us, per_sec}.

import { createClient } from "@libsql/client";

const [url, authToken, mode, clientsArg, requestsArg] = process.argv.slice(2);
const clients = Number(clientsArg);
const requests = Number(requestsArg);
const ROWS = 1000;

if (!url || !authToken || !["setup", "select", "insert"].includes(mode) || !(requests > 0)) {
  console.error("usage: node bench.mjs URL TOKEN setup|select|insert CLIENTS REQUESTS");
  process.exit(2);
}

if (mode === "setup") {
  const db = createClient({ url, authToken });
  await db.execute("create table if not exists kv(k integer primary key, v text not null)");
  await db.execute("create table if not exists log(id integer primary key, v text not null)");
  await db.execute({
    sql:
      "with recursive c(i) as (select 1 union all select i + 1 from c where i < ?) " +
      "insert or replace into kv select i, printf('value %d', i) from c",
    args: [ROWS],
  });
  db.close();
  console.log(JSON.stringify({ requests: 3 }));
  process.exit(0);
}

const micros = [];
const started = process.hrtime.bigint();
await Promise.all(
  Array.from({ length: clients }, async (_, c) => {
    const db = createClient({ url, authToken });
    const share = Math.floor(requests / clients) + (c < requests % clients ? 1 : 0);
    for (let i = 0; i < share; i++) {
      const t = process.hrtime.bigint();
      if (mode === "select") {
        const k = 1 + Math.floor(Math.random() * ROWS);
        const rs = await db.execute({ sql: "select v from kv where k = ?", args: [k] });
        if (rs.rows[0].v !== `value ${k}`) throw new Error(`wrong row for ${k}`);
      } else {
        await db.execute({ sql: "insert into log(v) values (?)", args: [`client ${c} row ${i}`] });
      }
      micros.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    db.close();
  }),
);
const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
micros.sort((a, b) => a - b);
const at = (p) => micros[Math.round((micros.length - 1) * p)];
console.log(
  JSON.stringify({ requests: micros.length, p50_us: at(0.5), p99_us: at(0.99), per_sec: micros.length / elapsedS }),
);
