//! The `clusterdns` command: `serve`, `check`, `convert-corefile`. Parsing flags and starting
//! things only; the work is in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use clusterdns::config::Config;

#[derive(Parser)]
#[command(
    name = "clusterdns",
    version,
    about = "A cluster DNS server for Kubernetes (a drop-in kube-dns)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS: the cluster zone from a file or the Kubernetes API, everything else forwarded.
    Serve(ServeArgs),
    /// Validate a config (and its objects file) and print what would be served.
    Check(CheckArgs),
    /// Convert a CoreDNS Corefile into a clusterdns config (printed on stdout; notes on stderr).
    ConvertCorefile(ConvertArgs),
    /// Ask a health or readiness endpoint (an exec probe): exit 0 on 200, 1 otherwise.
    Probe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// The endpoint: `unix:/path`, `host:port` or `:port`.
    endpoint: String,
    /// The path asked.
    #[arg(long, default_value = "/health")]
    path: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// Flags shared by `serve` and `check`: they override the config file.
#[derive(Args, Clone, Default)]
struct Overrides {
    /// Config file (YAML). Without it: built-in defaults plus these flags.
    #[arg(long, short = 'c', env = "CLUSTERDNS_CONFIG")]
    config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP (repeatable), e.g. 127.0.0.1:5353, or :53 for every
    /// address of both families.
    #[arg(long = "listen", value_name = "ADDR:PORT", value_parser = listen_arg)]
    listen: Vec<ListenArg>,
    /// A file of Kubernetes objects (kubectl get -o yaml) to serve instead of an API server.
    #[arg(long, value_name = "FILE")]
    objects: Option<PathBuf>,
    /// A kubeconfig for the Kubernetes API (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The cluster domain.
    #[arg(long, value_name = "DOMAIN")]
    zone: Option<String>,
    /// Upstream resolver (repeatable), overriding resolv.conf.
    #[arg(long = "upstream", value_name = "ADDR[:PORT]")]
    upstream: Vec<String>,
    /// Prometheus endpoint address (e.g. :9153 or 127.0.0.1:0).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Liveness endpoint address (e.g. :8080).
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<String>,
    /// Readiness endpoint address (e.g. :8181).
    #[arg(long, value_name = "ADDR")]
    ready_listen: Option<String>,
    /// Node-local mode (`nodelocal.enabled`): hold the node-local addresses on a local
    /// interface, intercept them with NOTRACK/ACCEPT rules, listen on exactly them.
    #[arg(long)]
    node_local: bool,
    /// A node-local address (repeatable; replaces `nodelocal.addresses`), as node-cache's
    /// `-localip`: the link-local address, and the kube-dns Service IP to intercept.
    #[arg(long = "node-local-ip", value_name = "IP")]
    node_local_ip: Vec<std::net::IpAddr>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    o: Overrides,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    o: Overrides,
}

#[derive(Args)]
struct ConvertArgs {
    /// The Corefile, or a ConfigMap in YAML (`kubectl get cm coredns -o yaml`: its `Corefile`
    /// and the files beside it, e.g. k3s's `NodeHosts`; or kube-dns's ConfigMap with
    /// `stubDomains` / `upstreamNameservers`).
    file: PathBuf,
    /// Folder that `import` globs are resolved against (default: the Corefile's folder).
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// The coredns-custom ConfigMap (`*.server`, `*.override`), read for `import custom/...`
    /// and `import /etc/coredns/custom/...`: a folder of its files, or the ConfigMap's YAML
    /// (`kubectl get cm coredns-custom -o yaml`).
    #[arg(long, value_name = "DIR|FILE")]
    custom_dir: Option<PathBuf>,
    /// A value for a NodeLocal DNSCache placeholder, e.g. `--pillar LOCAL__DNS=169.254.20.10`
    /// for `__PILLAR__LOCAL__DNS__` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pillar: Vec<String>,
    /// The cluster domain for a kube-dns ConfigMap (kube-dns's `--domain`; default
    /// `cluster.local`).
    #[arg(long, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// Also write the files the config refers to (e.g. a hosts file from inline `hosts`
    /// entries) into this folder.
    #[arg(long, value_name = "DIR")]
    files_dir: Option<PathBuf>,
}

/// One `--listen` value: one address, or both families' for `:PORT`.
#[derive(Clone, Debug)]
struct ListenArg(Vec<SocketAddr>);

fn listen_arg(s: &str) -> Result<ListenArg, String> {
    clusterdns::config::parse_listen(s).map(ListenArg)
}

/// The config: file (or defaults) with flags applied, validated.
fn load_config(o: &Overrides) -> Result<Config, clusterdns::Error> {
    let mut cfg = match &o.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if !o.listen.is_empty() {
        cfg.listen = Vec::new();
        for a in o.listen.iter().flat_map(|l| &l.0) {
            if !cfg.listen.contains(a) {
                cfg.listen.push(*a);
            }
        }
    }
    if let Some(f) = &o.objects {
        cfg.source.file = Some(f.clone());
        cfg.source.kubernetes = None;
    }
    if let Some(k) = &o.kubeconfig {
        cfg.source.file = None;
        let mut kc = cfg.source.kubernetes.clone().unwrap_or_default();
        kc.kubeconfig = Some(k.clone());
        cfg.source.kubernetes = Some(kc);
    }
    if let Some(z) = &o.zone {
        cfg.cluster.zone = z.clone();
    }
    if !o.upstream.is_empty() {
        cfg.forward.upstreams = o.upstream.clone();
    }
    if let Some(m) = &o.metrics_listen {
        cfg.metrics.listen = Some(m.clone());
    }
    if let Some(h) = &o.health_listen {
        cfg.health.listen = Some(h.clone());
    }
    if let Some(r) = &o.ready_listen {
        cfg.ready.listen = Some(r.clone());
    }
    if o.node_local {
        cfg.nodelocal.enabled = true;
    }
    if !o.node_local_ip.is_empty() {
        cfg.nodelocal.addresses = o.node_local_ip.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(json: bool) {
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    // hickory logs a line per query at INFO: keep it at warn unless asked.
    let filter = || {
        EnvFilter::try_from_env("CLUSTERDNS_LOG").unwrap_or_else(|_| {
            EnvFilter::new("info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,kube_client=warn,kube_runtime=warn")
        })
    };
    let not_querylog = filter_fn(|m| !clusterdns::ops::querylog::is_querylog(m));
    // Colours only for a person at a terminal, never in a pod's log.
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(clusterdns::ops::querylog::layer());
    if json {
        registry
            .with(logs.json().with_filter(not_querylog).with_filter(filter()))
            .init();
    } else {
        registry
            .with(logs.with_filter(not_querylog).with_filter(filter()))
            .init();
    }
}

/// The exit code of a failed `serve` or `check` (README, "Exit codes"): 2 for a config or an
/// objects file that cannot be used, 3 for a config that forwards to clusterdns itself, 1 for
/// anything else (cannot listen, cannot start).
fn exit_code(e: &clusterdns::Error) -> ExitCode {
    ExitCode::from(match e {
        clusterdns::Error::Config(_) | clusterdns::Error::Source(_) => 2,
        clusterdns::Error::Loop(_) => 3,
        clusterdns::Error::Listen { .. } | clusterdns::Error::Other(_) => 1,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            init_logging(a.log_format == "json");
            let cfg = match load_config(&a.o) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("clusterdns: {e}");
                    return exit_code(&e);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("clusterdns: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let overrides = a.o.clone();
            let loader: clusterdns::reload::Loader = Box::new(move || load_config(&overrides));
            match rt.block_on(clusterdns::app::serve(cfg, a.o.config.clone(), loader)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("clusterdns: {e}");
                    exit_code(&e)
                }
            }
        }
        Command::Probe(a) => match clusterdns::ops::http::probe(
            &a.endpoint,
            &a.path,
            std::time::Duration::from_secs(a.timeout),
        ) {
            Ok(body) => {
                println!("{}", body.trim());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clusterdns: probe failed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check(a) => match check(&a.o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("clusterdns: {e}");
                exit_code(&e)
            }
        },
        Command::ConvertCorefile(a) => {
            let text = match std::fs::read_to_string(&a.file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("clusterdns: cannot read {}: {e}", a.file.display());
                    return ExitCode::from(2);
                }
            };
            let base = a
                .base_dir
                .clone()
                .unwrap_or_else(|| a.file.parent().map(Path::to_path_buf).unwrap_or_default());
            let mut pillars = std::collections::BTreeMap::new();
            for p in &a.pillar {
                let Some((k, v)) = p.split_once('=') else {
                    eprintln!("clusterdns: --pillar {p}: expected NAME=VALUE");
                    return ExitCode::from(2);
                };
                pillars.insert(k.to_string(), v.to_string());
            }
            let (mut custom_dir, mut custom_files) = (a.custom_dir.clone(), None);
            if let Some(f) = a.custom_dir.as_deref().filter(|p| p.is_file()) {
                let data = std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| clusterdns::corefile::configmap_data(&t));
                let Some(data) = data else {
                    eprintln!(
                        "clusterdns: --custom-dir {}: neither a folder nor a ConfigMap in YAML",
                        f.display()
                    );
                    return ExitCode::from(2);
                };
                (custom_dir, custom_files) = (None, Some(data));
            }
            let opts = clusterdns::corefile::Options {
                base_dir: base,
                custom_dir,
                custom_files,
                mounted: Default::default(),
                pillars,
                cluster_domain: a.cluster_domain.clone(),
                file_name: a
                    .file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            match clusterdns::corefile::convert_with(&text, &opts) {
                Ok(c) => {
                    for n in &c.notes {
                        eprintln!("note: {n}");
                    }
                    for (name, content) in &c.files {
                        let Some(dir) = &a.files_dir else {
                            eprintln!(
                                "file for ConfigMap key `{name}` ({}/{name}; --files-dir writes it):\n{content}",
                                clusterdns::corefile::CONFIG_DIR
                            );
                            continue;
                        };
                        let p = dir.join(name);
                        if let Err(e) = std::fs::write(&p, content) {
                            eprintln!("clusterdns: cannot write {}: {e}", p.display());
                            return ExitCode::from(2);
                        }
                        eprintln!("wrote {}", p.display());
                    }
                    print!("{}", c.config_yaml);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("clusterdns: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `check`: validate, load the objects, build the snapshot, print counts.
fn check(o: &Overrides) -> Result<(), clusterdns::Error> {
    let cfg = load_config(o)?;
    // The upstreams as `serve` takes them: a resolv.conf that cannot be read, or an upstream
    // that is our own listen address (a loop), fails here as it would there.
    if cfg.forward.enabled {
        clusterdns::resolve::Resolver::new(
            &cfg,
            Default::default(), // a registry of its own: nothing is served
            clusterdns::clock::Clock::system(),
        )?;
    }
    println!("config: ok");
    println!(
        "listen: {}",
        cfg.dns_listen()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "zone: {} (reverse: {})",
        cfg.cluster.zone,
        cfg.cluster.reverse_zones.join(", ")
    );
    match clusterdns::app::choose_source(&cfg) {
        clusterdns::app::SourceChoice::Kubernetes(k) => {
            println!(
                "source: kubernetes ({})",
                k.kubeconfig
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "KUBECONFIG, ~/.kube/config or in-cluster".into())
            );
        }
        clusterdns::app::SourceChoice::None => println!("source: none (cluster zone disabled)"),
        choice => {
            let (counts, skipped, name) = match &choice {
                clusterdns::app::SourceChoice::File(p) => {
                    let (counts, skipped) = clusterdns::app::file_snapshot_counts(&cfg, p)?;
                    (counts, skipped, p.display().to_string())
                }
                _ => {
                    let loaded = clusterdns::source::file::parse_objects(
                        clusterdns::source::file::EMBEDDED_SAMPLE,
                        Path::new("<embedded sample>"),
                    )?;
                    let counts = clusterdns::app::snapshot_counts(&cfg, loaded.objects);
                    (counts, loaded.skipped, "<embedded sample>".to_string())
                }
            };
            for e in &skipped {
                println!("skipped: {e}");
            }
            println!("source: file {name}");
            println!(
                "would serve: {} services, {} endpoints, {} pods, {} namespaces, {} records",
                counts.services, counts.endpoints, counts.pods, counts.namespaces, counts.records
            );
        }
    }
    let fwd = if cfg.forward.upstreams.is_empty() {
        format!("nameservers of {}", cfg.forward.resolv_conf.display())
    } else {
        cfg.forward.upstreams.join(", ")
    };
    println!(
        "forward: {}",
        if cfg.forward.enabled {
            fwd
        } else {
            "off".into()
        }
    );
    Ok(())
}
