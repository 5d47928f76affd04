//! The `paxos-kv` command: serve, dev, put, get, list, bench, members
//! (docs/api.md).

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paxos_kv::bench::BenchArgs;
use paxos_kv::config::ServeArgs;
use paxos_kv::dev::DevArgs;
use paxos_kv::{bench, client, dev, server};

/// A distributed key-value store of write-once registers.
#[derive(Parser)]
#[command(name = "paxos-kv", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Serve(ServeArgs),
    /// Run a whole local cluster in this process (default 3 nodes on 7001..7003).
    Dev(DevArgs),
    /// Write a value to a key once. Exit 0 on 200/201, 1 on 409, 2 otherwise.
    Put {
        /// Node to ask.
        #[arg(long, default_value = "http://127.0.0.1:7001")]
        url: String,
        /// The key.
        key: String,
        /// The value, or - to read it from stdin.
        value: String,
        #[command(flatten)]
        access: client::ClientAccess,
    },
    /// Print the value of a key. Exit 0 on 200, 1 on 404, 2 otherwise.
    Get {
        /// Node to ask.
        #[arg(long, default_value = "http://127.0.0.1:7001")]
        url: String,
        /// Wait up to this long (e.g. 30s, at most 10m) for a value to be chosen.
        #[arg(long, value_parser = paxos_kv::config::parse_duration)]
        wait: Option<std::time::Duration>,
        /// The key.
        key: String,
        #[command(flatten)]
        access: client::ClientAccess,
    },
    /// List the chosen keys under a prefix, one per line (all pages).
    /// Exit 0 when some are listed, 1 when none, 2 otherwise.
    List {
        /// Node to ask.
        #[arg(long, default_value = "http://127.0.0.1:7001")]
        url: String,
        /// Print `key<TAB>value` lines.
        #[arg(long)]
        values: bool,
        /// The prefix ("" or omitted: every key).
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        access: client::ClientAccess,
    },
    /// Load-test a cluster; prints throughput, latency percentiles and statuses.
    Bench(BenchArgs),
    /// List, add or remove the cluster's members. Exit 0 on success, 1 when
    /// refused (404/409), 2 otherwise.
    Members {
        /// Node to ask.
        #[arg(long, default_value = "http://127.0.0.1:7001")]
        url: String,
        /// The cluster token, when the cluster has one.
        #[arg(long, env = "PAXOS_KV_CLUSTER_TOKEN", hide_env_values = true)]
        cluster_token: Option<String>,
        /// PEM CA certificate to trust for https:// URLs.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: client::MembersCommand,
    },
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

fn failed(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("paxos-kv: {message}");
    ExitCode::FAILURE
}

/// glibc's allocator took about a tenth of a node's CPU under PUT load
/// (free-list consolidation across tokio, sled and sync threads);
/// mimalloc's per-thread heaps cut a node's CPU per PUT by 8-20% in A/B runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One clear line (docs/api.md), not clap's usage block.
            let rendered = e.to_string();
            let first_paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = first_paragraph.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("paxos-kv: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) => {
            init_logs("info");
            // Everything that can be wrong is found before binding.
            let config = match args.validate() {
                Ok(c) => c,
                Err(e) => return failed(e),
            };
            let listen = config.listen;
            let runtime = runtime();
            let mut config = config;
            let mut joined = None;
            if config.join.is_some() {
                if paxos_kv::join::has_identity(&config) {
                    tracing::info!(
                        "--join is ignored: this data directory already belongs to a cluster"
                    );
                } else {
                    let tls = match config.tls.as_ref().map(|f| f.load()).transpose() {
                        Ok(tls) => tls.and_then(|t| t.peer_client),
                        Err(e) => return failed(e),
                    };
                    match runtime.block_on(paxos_kv::join::learn(&mut config, tls)) {
                        Ok(j) => joined = Some(j),
                        Err(e) => return failed(e),
                    }
                }
            }
            let prepared = match server::prepare(config) {
                Ok(p) => p,
                Err(e) => return failed(e),
            };
            let prepared = match joined {
                Some(joined) => prepared.with_joined(joined),
                None => prepared,
            };
            let result = runtime.block_on(async move {
                let listener = server::bind(listen).await?;
                prepared.run(listener, server::termination()).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Dev(args) => {
            init_logs("warn");
            match runtime().block_on(dev::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Put {
            url,
            key,
            value,
            access,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                    eprintln!("paxos-kv: cannot read the value from stdin: {e}");
                    return ExitCode::from(client::FAILED);
                }
                buf
            } else {
                value.into_bytes()
            };
            ExitCode::from(runtime().block_on(client::put(&url, &key, value, &access)))
        }
        Command::Get {
            url,
            wait,
            key,
            access,
        } => ExitCode::from(runtime().block_on(client::get(&url, &key, wait, &access))),
        Command::List {
            url,
            values,
            prefix,
            access,
        } => ExitCode::from(runtime().block_on(client::list(&url, &prefix, values, &access))),
        Command::Members {
            url,
            cluster_token,
            ca,
            command,
        } => ExitCode::from(runtime().block_on(client::members(
            &url,
            &command,
            cluster_token.as_deref(),
            ca,
        ))),
        Command::Bench(args) => {
            init_logs("warn");
            match runtime().block_on(bench::run(&args)) {
                Ok(report) if args.json => {
                    println!("{}", report.json(&args));
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    println!("{}", report.text(&args));
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
    }
}
