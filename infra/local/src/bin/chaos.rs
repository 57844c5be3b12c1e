//! `make chaos`: the chaos run at scale; prints its figures and fails if a promise was broken.

use clap::Parser;
use local_stack::chaos::{ChaosOptions, run};

/// Runs N assets through the local pipeline under injected faults.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[arg(long, env = "CHAOS_ASSETS", default_value_t = 10_000)]
    assets: usize,
    #[arg(long, default_value_t = 6)]
    invocations: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_stack::init_cli_logs();
    let args = Args::parse();
    let endpoint = local_stack::aws::local_endpoint().map_err(anyhow::Error::msg)?;
    let sdk = local_stack::aws::sdk_config(&endpoint).await;
    let options = ChaosOptions {
        assets: args.assets,
        invocations: args.invocations,
        ..ChaosOptions::default()
    };
    let report = run(&sdk, &options).await?;
    report.print();
    let problems = report.problems();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        anyhow::bail!("{} checks failed", problems.len());
    }
    println!("all checks passed");
    Ok(())
}
