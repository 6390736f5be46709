//! The service's metrics in Prometheus' text format: HTTP requests and
//! latency per route, and, read from [`Tenants`] when scraped, per-tenant
//! storage use and limits met, and host-wide storage counters.

use crate::tenant::Tenants;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or under each bound (cumulative when rendered).
    buckets: [u64; LATENCY_BUCKETS_SECS.len()],
    count: u64,
    sum_secs: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS_SECS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_secs += secs;
    }
}

#[derive(Default)]
struct Http {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// Counters the service keeps itself.
#[derive(Default)]
pub struct Metrics {
    http: Mutex<Http>,
    /// Background garbage collection, summed over rounds.
    gc: Mutex<(u64, super::gc::GcRound)>,
}

impl Metrics {
    /// Counts one answered request on `route` (its pattern, not its path:
    /// a bounded set of labels).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        *http
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        http.latency
            .entry(route.to_string())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one garbage collection round.
    pub fn record_gc(&self, round: &super::gc::GcRound) {
        let mut gc = self.gc.lock().unwrap_or_else(|e| e.into_inner());
        gc.0 += 1;
        let total = &mut gc.1;
        total.databases += round.databases;
        total.versions_retired += round.versions_retired;
        total.sectors_deleted += round.sectors_deleted;
        total.sector_bytes_deleted += round.sector_bytes_deleted;
        total.removed += round.removed;
        total.errors += round.errors;
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self, tenants: &Tenants) -> String {
        let mut out = String::new();
        self.render_http(&mut out);
        self.render_gc(&mut out);
        render_tenants(&mut out, tenants);
        out
    }

    fn render_gc(&self, out: &mut String) {
        let (rounds, total) = self.gc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let counters = [
            ("donut_gc_rounds_total", "Background gc rounds run.", rounds),
            (
                "donut_gc_databases_total",
                "Databases collected by background gc.",
                total.databases,
            ),
            (
                "donut_gc_versions_retired_total",
                "Versions background gc retired.",
                total.versions_retired,
            ),
            (
                "donut_gc_sectors_deleted_total",
                "Sectors background gc deleted.",
                total.sectors_deleted,
            ),
            (
                "donut_gc_sector_bytes_deleted_total",
                "Bytes of the sectors background gc deleted.",
                total.sector_bytes_deleted,
            ),
            (
                "donut_gc_intents_collected_total",
                "Intent items background gc dealt with (what refused or killed commits stored).",
                total.intents_collected,
            ),
            (
                "donut_gc_removed_total",
                "Removed databases background gc cleared away.",
                total.removed,
            ),
            (
                "donut_gc_errors_total",
                "Background gc runs that failed.",
                total.errors,
            ),
        ];
        for (name, help, value) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    fn render_http(&self, out: &mut String) {
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        header(
            out,
            "donut_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for ((route, status), n) in &http.requests {
            let _ = writeln!(
                out,
                "donut_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        header(
            out,
            "donut_http_request_duration_seconds",
            "histogram",
            "HTTP request latency, by route.",
        );
        for (route, histogram) in &http.latency {
            let route = escape(route);
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS_SECS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "donut_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "donut_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "donut_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                histogram.sum_secs
            );
            let _ = writeln!(
                out,
                "donut_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count
            );
        }
    }
}

/// Reads one figure of a tenant's totals.
type TenantValue = fn(&crate::tenant::TenantTotals) -> f64;

fn render_tenants(out: &mut String, tenants: &Tenants) {
    let totals = tenants.totals();
    let per_tenant: [(&str, &str, &str, TenantValue); 7] = [
        (
            "donut_tenant_calls_total",
            "counter",
            "Plugin calls started.",
            |t| t.calls as f64,
        ),
        (
            "donut_tenant_storage_calls_total",
            "counter",
            "Storage calls of the tenant's plugins.",
            |t| t.storage.storage_calls as f64,
        ),
        (
            "donut_tenant_sectors_total",
            "counter",
            "Sectors read and written.",
            |t| t.storage.sectors as f64,
        ),
        (
            "donut_tenant_storage_bytes_total",
            "counter",
            "Bytes of sectors and roots read and written.",
            |t| t.storage.bytes as f64,
        ),
        (
            "donut_tenant_read_capacity_units_total",
            "counter",
            "DynamoDB read capacity units, as billed.",
            |t| t.read_units,
        ),
        (
            "donut_tenant_write_capacity_units_total",
            "counter",
            "DynamoDB write capacity units, as billed.",
            |t| t.write_units,
        ),
        (
            "donut_tenant_live_instances",
            "gauge",
            "Instances alive now: plugin calls running and libSQL streams open.",
            |t| t.live as f64,
        ),
    ];
    for (name, kind, help, value) in per_tenant {
        header(out, name, kind, help);
        for (tenant, t) in &totals {
            let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {}", escape(tenant), value(t));
        }
    }
    header(
        out,
        "donut_limit_refusals_total",
        "counter",
        "Calls refused or stopped at a limit, by tenant and limit.",
    );
    for (tenant, t) in &totals {
        for (limit, n) in &t.limited {
            let _ = writeln!(
                out,
                "donut_limit_refusals_total{{tenant=\"{}\",limit=\"{limit}\"}} {n}",
                escape(tenant)
            );
        }
    }
    let live: usize = totals.iter().map(|(_, t)| t.live).sum();
    header(
        out,
        "donut_live_instances",
        "gauge",
        "Plugin instances alive now, all tenants.",
    );
    let _ = writeln!(out, "donut_live_instances {live}");
    let stats = tenants.stats();
    let host = [
        (
            "donut_commits_total",
            "Root compare-and-swaps attempted (commits and creations).",
            stats.commit_root,
        ),
        (
            "donut_commit_conflicts_total",
            "Commits refused because another writer committed first.",
            stats.commit_conflicts,
        ),
        (
            "donut_sector_cache_hits_total",
            "Sectors served by the host's shared cache.",
            stats.sector_cache_hits,
        ),
        (
            "donut_disk_cache_hits_total",
            "Sectors served by the persistent sector cache on disk.",
            stats.disk_cache_hits,
        ),
        (
            "donut_sector_reads_total",
            "Sectors read from storage (cache misses).",
            stats.get_sectors_items,
        ),
        (
            "donut_storage_round_trips_total",
            "Storage calls of all plugins.",
            stats.round_trips(),
        ),
    ];
    for (name, help, value) in host {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the text format asks.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Each tenant's compile time in all, and the compiled code the runtime
/// keeps in memory.
pub fn render_compiles(
    out: &mut String,
    compiles: &[(String, Duration)],
    runtime: &crate::runtime::Runtime,
) {
    let _ = writeln!(
        out,
        "# HELP donut_tenant_compile_seconds_total Time spent compiling a tenant's uploads.\n# TYPE donut_tenant_compile_seconds_total counter"
    );
    for (tenant, took) in compiles {
        let _ = writeln!(
            out,
            "donut_tenant_compile_seconds_total{{tenant=\"{}\"}} {}",
            escape(tenant),
            took.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "# HELP donut_compiled_code_bytes Compiled code kept in memory.\n# TYPE donut_compiled_code_bytes gauge\ndonut_compiled_code_bytes {}\ndonut_compiles_total {}",
        runtime.program_cache_bytes(),
        runtime.compiles()
    );
}
