//! lb-bin: the load balancer's one binary. Subcommands follow the CLI contract in
//! ARCHITECTURE.md; those whose issues have not landed yet are not offered.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod report;

#[derive(Parser, Debug)]
#[command(
    name = "lb-bin",
    version,
    about = "Bare-metal load balancer, MetalLB-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file; print every finding, exit 1 when any is an error.
    Check {
        /// Multi-document YAML: metallb.io kinds and v1 Service/Node/EndpointSlice objects.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the allocations (and, with --node, a node's announcements) without announcing.
    Plan {
        #[arg(long)]
        config: PathBuf,
        /// Plan the announcements of this node; every Node in the file and this one are live.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the version and the compiled announcement modes.
    Version,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Announcement modes compiled into this binary.
fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "l2") {
        f.push("l2");
    }
    if cfg!(feature = "bgp") {
        f.push("bgp");
    }
    f
}

#[allow(clippy::print_stdout)]
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let r = report::check(&read(&config)?);
            print!("{}", r.render());
            Ok(if r.errors() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Plan {
            config,
            node,
            output,
        } => {
            let r = report::plan_file(&read(&config)?, node.as_deref());
            for f in &r.findings {
                eprintln!("config: {f}");
            }
            warn_uncompiled_modes(&r);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => print!("{}", r.render_table()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("lb-bin {}", env!("CARGO_PKG_VERSION"));
            println!("features: {}", features().join(" "));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A plan may hold announcements this build could not make; say so.
fn warn_uncompiled_modes(r: &report::PlanReport) {
    let Some(anns) = &r.announcements else {
        return;
    };
    let compiled = features();
    for (mode, protocol) in [
        ("l2", lb_core::Protocol::Layer2),
        ("bgp", lb_core::Protocol::Bgp),
    ] {
        if !compiled.contains(&mode) && anns.iter().any(|a| lb_core::Protocol::of(a) == protocol) {
            eprintln!(
                "warning: the plan has {protocol:?} announcements but this build lacks the '{mode}' feature"
            );
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb-bin: {e:#}");
            ExitCode::from(2)
        }
    }
}
