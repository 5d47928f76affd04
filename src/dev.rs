//! `paxos-kv dev`: a whole local cluster in one process.

use std::path::PathBuf;

use rand::Rng;

use crate::config::{Config, ConfigError, ServeArgs};
use crate::console::DevControl;
use crate::server::{prepare, termination, ServeError};

/// Why `paxos-kv dev` cannot run its cluster.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The ports do not fit below 65536.
    #[error("--base-port {base_port} leaves no room for {nodes} nodes")]
    Ports {
        /// `--base-port`.
        base_port: u16,
        /// `--nodes`.
        nodes: u32,
    },
    /// A node's configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A node cannot start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Starting or stopping the nodes failed.
    #[error("{0}")]
    Cluster(String),
}

/// The flags of `paxos-kv dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub nodes: u32,
    /// Port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Parent of each node's data directory (node1/, node2/, ...).
    #[arg(long, default_value = "./paxos-data")]
    pub data_dir: PathBuf,
}

/// Runs the cluster until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), DevError> {
    let token: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("hex digit"))
            .collect()
    };
    let port = |n: u32| -> Result<u16, DevError> {
        u16::try_from(u32::from(args.base_port) + n - 1).map_err(|_| DevError::Ports {
            base_port: args.base_port,
            nodes: args.nodes,
        })
    };
    let mut peers = Vec::new();
    for n in 1..=args.nodes {
        peers.push(format!("{n}=http://127.0.0.1:{}", port(n)?));
    }
    let peers = peers.join(",");
    let mut configs: Vec<Config> = Vec::new();
    for n in 1..=args.nodes {
        let serve = ServeArgs {
            id: n,
            listen: format!("127.0.0.1:{}", port(n)?),
            data_dir: args.data_dir.join(format!("node{n}")),
            peers: Some(peers.clone()),
            join: None,
            cluster_token: Some(token.clone()),
            max_value_bytes: 1024 * 1024,
            timing: Default::default(),
            security: Default::default(),
        };
        configs.push(serve.validate()?);
    }
    // Every node is opened before any is started, so a bad data dir fails
    // the whole command before a port is taken.
    let mut prepared = Vec::new();
    for config in configs {
        let node = prepare(config.clone())?;
        prepared.push((config, node));
    }
    let control = DevControl::new();
    let mut running = Vec::new();
    for (config, node) in prepared {
        running.push(
            control
                .launch(config, node)
                .await
                .map_err(DevError::Cluster)?,
        );
    }
    let first = running[0].addr;
    let last = running[running.len() - 1].addr;
    println!(
        "paxos-kv dev cluster: {} nodes, data under {}",
        args.nodes,
        args.data_dir.display()
    );
    for node in &running {
        println!("  node {}  http://{}", node.id, node.addr);
    }
    println!("watch Paxos live: http://{first}/");
    println!("try:");
    println!("  curl -i -X PUT --data-binary 'hello' http://{first}/v1/kv/greeting");
    println!("  curl -i http://{last}/v1/kv/greeting");
    println!(
        "change the members (README \"Changing the members\"), with this run's cluster token:"
    );
    println!("  export PAXOS_KV_CLUSTER_TOKEN={token}");
    println!("  paxos-kv members --url http://{first} list");
    println!("Ctrl-C stops the cluster; the data stays for the next run.");
    termination().await;
    control.stop_all().await.map_err(DevError::Cluster)
}
