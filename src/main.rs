//! The `levee` command: `levee run` (the appliance), `levee ctl` (the operator's client of
//! its management API), `levee check`, `levee lab` (the netns demo and end-to-end harness).

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "levee", version, about = "DPDK SYN-proxy and packet filter appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance: bridge the two configured ports until SIGINT/SIGTERM.
    Run {
        /// The TOML configuration file (see deploy/levee.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration, print the EAL arguments, and exit.
        #[arg(long)]
        check_config: bool,
        /// Print a counters line every this many seconds (0: only at exit).
        #[arg(long, default_value_t = 0.0)]
        stats_interval: f64,
        /// Stop by itself after this many seconds (0: run until signalled).
        #[arg(long, default_value_t = 0.0)]
        duration: f64,
        /// Print conntrack events (new / update / destroy), as `conntrack -E` does.
        #[arg(long)]
        ct_events: bool,
    },
    /// Talk to a running levee, nft-like: `levee ctl list ruleset`, `levee ctl add rule inet t
    /// input tcp dport 22 accept`, `levee ctl -f FILE`, `levee ctl monitor`, `levee ctl stats`,
    /// `levee ctl conntrack list` (see `levee ctl --help`).
    Ctl(levee::ctl::CtlArgs),
    /// Compile an nft-syntax ruleset offline (no DPDK, no daemon): print its normalized
    /// listing and exit 0, or print FILE:LINE:COL: message and exit 1.
    Check {
        /// The ruleset file.
        file: PathBuf,
        /// Print the JSON form (modelled on libnftables' JSON) instead of the listing.
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
    /// The netns lab: a real client and server in network namespaces with levee between them;
    /// fetches pages and runs iperf3 over IPv4, IPv6 and a VLAN, printing live counters, and
    /// removes everything it created when it ends.
    Lab {
        /// Seconds for each iperf3 transfer.
        #[arg(long, default_value_t = 3)]
        iperf_seconds: u32,
        /// Worker lcores for levee in the lab.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        workers: Vec<u32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            check_config,
            stats_interval,
            duration,
            ct_events,
        } => levee::run::run(&config, check_config, stats_interval, duration, ct_events),
        Command::Ctl(args) => match levee::ctl::main(&args) {
            Ok(()) => Ok(()),
            Err(e) => {
                // ctl's errors are complete lines (`FILE:LINE:COL: …`, `Error: …`).
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Lab {
            iperf_seconds,
            workers,
        } => levee::lab::main(iperf_seconds, &workers),
        Command::Check { file, json } => match levee::check::check(&file, json) {
            Ok(out) => {
                // A closed pipe (`levee check f | head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{}", out.listing.trim_end());
                let _ = writeln!(std::io::stderr(), "{}", out.note);
                Ok(())
            }
            Err(diagnostic) => {
                // Exactly FILE:LINE:COL: message, as compilers print it.
                eprintln!("{diagnostic}");
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee: {e}");
            ExitCode::FAILURE
        }
    }
}
