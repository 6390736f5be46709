//! `donut-sim`: runs the simulator over many seeds, or replays one.

use anyhow::Context as _;
use clap::Parser;
use donut_sim::{Bug, Options, Sim};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "DonutDB's deterministic simulator")]
struct Args {
    /// How many seeds to run, starting at --first-seed.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Replay exactly this seed (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Operations per client.
    #[arg(long, default_value_t = 30)]
    ops: u64,
    /// Interleavings only: no injected faults.
    #[arg(long)]
    no_faults: bool,
    /// Switch on a planted bug (the simulator must find it).
    #[arg(long, value_enum)]
    bug: Option<Bug>,
    /// Print the run's trace (with --seed).
    #[arg(long)]
    trace: bool,
    /// Keep going after a failing seed.
    #[arg(long)]
    keep_going: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Where `just` builds: $CARGO_TARGET_DIR (the justfile exports it).
    let target = std::path::PathBuf::from(
        std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()),
    );
    let sim = Sim::new(
        &target.join("wasm32-wasip2/guest"),
        Some(target.join("test-component-cache")),
    )
    .context("starting the simulator")?;
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let started = Instant::now();
    let (mut steps, mut ops, mut committed, mut faults, mut kills, mut crashes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for &seed in &seeds {
        let options = Options {
            seed,
            ops: args.ops,
            faults: !args.no_faults,
            bug: args.bug,
        };
        let report = sim.run(&options);
        steps += report.steps;
        ops += report.ops;
        committed += report.committed;
        faults += report.faults;
        kills += report.kills as u64;
        crashes += report.host_crashes as u64;
        if args.trace {
            for line in &report.trace {
                println!("{line}");
            }
            for line in &report.output {
                println!("{line}");
            }
        }
        if args.seed.is_some() {
            println!("seed {seed}: {}", report.config);
            println!(
                "  {} storage calls, {} operations ({} committed), {} faults, {} kills, {} host crashes, trace {}",
                report.steps,
                report.ops,
                report.committed,
                report.faults,
                report.kills,
                report.host_crashes,
                &report.trace_hash[..16]
            );
        }
        if !report.ok() {
            eprintln!("FAILED seed {seed}: {}", report.config);
            for anomaly in &report.anomalies {
                eprintln!("  - {anomaly}");
            }
            eprintln!("  replay: {}", report.replay_command(&options));
            failed.push(seed);
            if !args.keep_going {
                break;
            }
        }
    }
    println!(
        "{} seeds, {} failed; {ops} operations ({committed} committed), {steps} storage calls, {faults} faults, {kills} kills, {crashes} host crashes; {:.1} s",
        seeds.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        anyhow::bail!("failing seeds: {failed:?}");
    }
    Ok(())
}
