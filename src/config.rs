//! The YAML configuration: types, defaults, and validation.
//!
//! Every section denies unknown keys, so a typo is an error that names the key and its line
//! (serde-saphyr reports the position). Validation beyond types (addresses, domain names,
//! durations) happens in [`Config::validate`], whose errors name the offending key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;
use crate::names::parse_domain;
use crate::selector::Selector;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Addresses the DNS server listens on, UDP and TCP each: `IP:PORT`, `[IPv6]:PORT`, or
    /// `:PORT` for every address of both families (`0.0.0.0:PORT` and `[::]:PORT`).
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// What the cluster zone serves and how.
    pub cluster: ClusterConfig,
    /// Where the cluster objects come from.
    pub source: SourceConfig,
    /// Names outside the cluster zones: upstream resolvers.
    pub forward: ForwardConfig,
    /// The cache in front of forwarding.
    pub cache: CacheConfig,
    /// A hosts file consulted before forwarding.
    pub hosts: Option<HostsConfig>,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Liveness endpoint and shutdown behaviour.
    pub health: HealthConfig,
    /// Readiness endpoint.
    pub ready: ReadyConfig,
    /// Sampled structured query log.
    pub querylog: QueryLogConfig,
    /// Server tuning: UDP fast path, socket counts, TCP limits.
    pub server: ServerConfig,
    /// Node-local mode (NodeLocal DNSCache's node-cache): interface, interception rules, handover.
    pub nodelocal: NodeLocalConfig,
    /// Zone transfers (AXFR/IXFR) of the cluster zone to secondaries, and NOTIFY.
    pub transfer: TransferConfig,
    /// Answer shaping: CoreDNS's `rewrite`, `autopath`, `template` and `k8s_external`.
    pub shape: ShapeConfig,
    /// Per-client limits and bounded work: one noisy client never takes DNS from the rest.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:5353".parse().expect("static address")],
            cluster: ClusterConfig::default(),
            source: SourceConfig::default(),
            forward: ForwardConfig::default(),
            cache: CacheConfig::default(),
            hosts: None,
            metrics: MetricsConfig::default(),
            health: HealthConfig::default(),
            ready: ReadyConfig::default(),
            querylog: QueryLogConfig::default(),
            server: ServerConfig::default(),
            nodelocal: NodeLocalConfig::default(),
            transfer: TransferConfig::default(),
            shape: ShapeConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// How pod records (`a-b-c-d.<ns>.pod.<zone>`) are answered, as CoreDNS's `pods` option.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PodsMode {
    /// No pod records.
    Disabled,
    /// Any well-formed name answers with the IP it spells (kube-dns compatible).
    #[default]
    Insecure,
    /// Only names of pods that exist in that namespace with that IP.
    Verified,
}

/// The cluster zone: what CoreDNS's `kubernetes` plugin block holds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Serve the cluster zone at all (false: a pure caching forwarder, e.g. the node-local
    /// variant that forwards `cluster.local` to the kube-dns Service as a stub domain).
    pub enabled: bool,
    /// The cluster domain, e.g. `cluster.local`.
    pub zone: String,
    /// Reverse zones answered with PTR records for the cluster's IPs.
    pub reverse_zones: Vec<String>,
    /// Names in these zones that the cluster does not hold go on to forwarding
    /// (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
    pub fallthrough: Vec<String>,
    /// TTL of every cluster record, seconds (also the SOA minimum).
    pub ttl: u32,
    /// Pod records mode.
    pub pods: PodsMode,
    /// Name headless endpoints without a hostname after their pod (`targetRef.name`).
    pub endpoint_pod_names: bool,
    /// Serve only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Serve only services matching this label selector (`k=v,k2!=v,k3 in (a,b),k4,!k5`).
    pub labels: Option<String>,
    /// Serve only namespaces matching this label selector.
    pub namespace_labels: Option<String>,
    /// Serve no endpoint records (headless services answer nothing), as CoreDNS's `noendpoints`.
    pub noendpoints: bool,
    /// Services with no ready endpoints answer NXDOMAIN, as CoreDNS's `ignore empty_service`.
    pub ignore_empty_service: bool,
    /// Addresses of `ns.dns.<zone>`; empty: the `kube-system/kube-dns` ClusterIPs, else 127.0.0.1.
    pub nameserver_ips: Vec<std::net::IpAddr>,
    /// Rotate the order of A/AAAA records from query to query (CoreDNS's `loadbalance`): the
    /// cluster zone's, and those of forwarded, cached and hosts-file answers.
    pub loadbalance: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            zone: "cluster.local".into(),
            reverse_zones: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
            fallthrough: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
            ttl: 30,
            pods: PodsMode::Insecure,
            endpoint_pod_names: false,
            namespaces: vec![],
            labels: None,
            namespace_labels: None,
            noendpoints: false,
            ignore_empty_service: false,
            nameserver_ips: vec![],
            loadbalance: true,
        }
    }
}

/// Where cluster objects come from: a file, or the Kubernetes API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// A file of Kubernetes objects (`kubectl get -o yaml`), watched for changes.
    pub file: Option<PathBuf>,
    /// The Kubernetes API.
    pub kubernetes: Option<KubernetesSourceConfig>,
}

/// Connecting to the Kubernetes API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSourceConfig {
    /// A kubeconfig file; absent: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (CoreDNS's `kubeconfig FILE CONTEXT`); absent: its
    /// current context.
    pub context: Option<String>,
    /// The API server URL (CoreDNS's `endpoint`), e.g. `https://10.0.0.1:6443`; it replaces
    /// the URL of the kubeconfig or the in-cluster one, the credentials stay theirs.
    pub endpoint: Option<String>,
    /// How long to wait for the first sync before serving what there is.
    #[serde(with = "duration_text")]
    pub startup_timeout: Duration,
}

impl Default for KubernetesSourceConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            endpoint: None,
            startup_timeout: Duration::from_secs(5),
        }
    }
}

/// Upstream selection policy, as CoreDNS's `forward` `policy`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardPolicy {
    #[default]
    Random,
    RoundRobin,
    Sequential,
}

/// Forwarding of names outside the cluster zones.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Forward at all (false: names outside the cluster zones get REFUSED).
    pub enabled: bool,
    /// Upstreams as `IP` or `IP:PORT`; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<String>,
    /// The resolv.conf whose nameservers are the default upstreams.
    pub resolv_conf: PathBuf,
    /// Per-domain upstreams (kube-dns `stubDomains`): domain -> upstreams. A domain inside the
    /// cluster zone is forwarded, not answered from the cluster (as kube-dns's dnsmasq and a
    /// CoreDNS server block for that domain do); so is one of `domains`.
    pub stub_domains: std::collections::BTreeMap<String, Vec<String>>,
    /// Per-domain forwarding with options of its own (a CoreDNS server block's `forward` and
    /// `cache`): domain -> upstreams and options; an option left out is this section's.
    pub domains: std::collections::BTreeMap<String, DomainForwardConfig>,
    /// Names under these domains are not forwarded (CoreDNS's `except`): SERVFAIL, as CoreDNS
    /// answers when no plugin follows `forward`.
    pub except: Vec<String>,
    pub policy: ForwardPolicy,
    /// Consecutive failures before an upstream is marked down.
    pub max_fails: u32,
    #[serde(with = "duration_text")]
    pub health_check: Duration,
    /// Timeout of one try.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    /// Bound on concurrent forwarded queries; past it, a quick REFUSED.
    pub max_concurrent: usize,
    /// Idle upstream connections (TCP, TLS) older than this are closed rather than reused
    /// (CoreDNS's `expire`).
    #[serde(with = "duration_text")]
    pub expire: Duration,
    /// The name `tls://` upstreams' certificates are checked against (CoreDNS's
    /// `tls_servername`); absent: the upstream's IP address.
    pub tls_servername: Option<String>,
    /// PEM file of the CAs `tls://` upstreams' certificates must chain to; absent: the
    /// system's roots.
    pub tls_ca: Option<PathBuf>,
    /// Also export the pre-1.11 `coredns_forward_*` names that the CoreDNS mixin's alerts query.
    pub legacy_metrics: bool,
    /// The EDNS Client Subnet option (RFC 7871) of a client's query: `strip` it before
    /// forwarding, or `forward` it (then it is part of the cache key).
    pub client_subnet: ClientSubnet,
    /// AAAA questions that would be forwarded get NOERROR with no answer at once (IPv4-only
    /// clusters: the AAAA half of every search-path expansion never leaves the node).
    pub filter_aaaa: bool,
}

/// What forwarding does with a query's EDNS Client Subnet option.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientSubnet {
    /// Removed: upstreams answer for clusterdns's own address, and one answer serves all.
    #[default]
    Strip,
    /// Sent upstream as the client wrote it; answers are cached per subnet.
    Forward,
}

/// One domain's forwarding (what a CoreDNS server block for that domain holds in `forward`
/// and `cache`). Options left out are the `forward` section's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DomainForwardConfig {
    /// `IP`, `IP:PORT`, `tls://IP` or `tls://IP:PORT` (853 by default); empty: the
    /// nameservers of `forward.resolv_conf`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<ForwardPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_tcp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefer_udp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    #[serde(with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fails: Option<u32>,
    #[serde(with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub expire: Option<Duration>,
    #[serde(with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_servername: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// A cache of this domain's own (CoreDNS: each server block has its own); absent: the
    /// `cache` section's, shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            upstreams: vec![],
            resolv_conf: "/etc/resolv.conf".into(),
            stub_domains: Default::default(),
            domains: Default::default(),
            except: vec![],
            policy: ForwardPolicy::Random,
            max_fails: 2,
            health_check: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            force_tcp: false,
            prefer_udp: false,
            max_concurrent: 1000,
            expire: Duration::from_secs(10),
            tls_servername: None,
            tls_ca: None,
            legacy_metrics: true,
            client_subnet: ClientSubnet::Strip,
            filter_aaaa: false,
        }
    }
}

/// One place names are forwarded to, every option resolved: the default upstreams, a stub
/// domain, or an entry of `forward.domains` (its options, else the `forward` section's).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRoute {
    /// `.` for the default upstreams.
    pub domain: String,
    /// The config key the upstreams are under (for errors).
    pub key: String,
    /// As written; empty for the default route: the nameservers of `forward.resolv_conf`.
    pub upstreams: Vec<String>,
    pub except: Vec<String>,
    pub policy: ForwardPolicy,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    pub max_concurrent: usize,
    pub health_check: Duration,
    pub max_fails: u32,
    pub expire: Duration,
    pub timeout: Duration,
    pub tls_servername: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// A cache of the route's own; None: the shared one.
    pub cache: Option<CacheConfig>,
}

impl ForwardConfig {
    /// Forwarded queries that may wait for an upstream at once, over every route (each has its
    /// own `max_concurrent`): the server's bound on waiting work and on forwarding's sockets.
    pub fn max_in_flight(&self) -> usize {
        // At least the section's own: work that reaches the resolver without a route (hosts,
        // critical names, ExternalName targets) waits too.
        self.routes()
            .iter()
            .map(|r| r.max_concurrent)
            .sum::<usize>()
            .max(self.max_concurrent)
            .max(1)
    }

    /// Where names are forwarded: the default upstreams (when forwarding is on), each stub
    /// domain (the section's options), each of `domains` (its own options over the section's).
    /// The one place a per-domain option falls back to the section's.
    pub fn routes(&self) -> Vec<ForwardRoute> {
        let base = |domain: &str, key: String, upstreams: Vec<String>| ForwardRoute {
            domain: domain.to_string(),
            key,
            upstreams,
            except: self.except.clone(),
            policy: self.policy,
            force_tcp: self.force_tcp,
            prefer_udp: self.prefer_udp,
            max_concurrent: self.max_concurrent,
            health_check: self.health_check,
            max_fails: self.max_fails,
            expire: self.expire,
            timeout: self.timeout,
            tls_servername: self.tls_servername.clone(),
            tls_ca: self.tls_ca.clone(),
            cache: None,
        };
        if !self.enabled {
            return vec![];
        }
        let mut out = vec![base(
            ".",
            "forward.upstreams".into(),
            self.upstreams.clone(),
        )];
        for (domain, ups) in &self.stub_domains {
            let mut r = base(
                domain,
                format!("forward.stub_domains.{domain}"),
                ups.clone(),
            );
            // The section's `except` is about the default upstreams' names.
            r.except = vec![];
            out.push(r);
        }
        for (domain, d) in &self.domains {
            let b = base(
                domain,
                format!("forward.domains.{domain}.upstreams"),
                d.upstreams.clone(),
            );
            out.push(ForwardRoute {
                except: d.except.clone().unwrap_or_default(),
                policy: d.policy.unwrap_or(b.policy),
                force_tcp: d.force_tcp.unwrap_or(b.force_tcp),
                prefer_udp: d.prefer_udp.unwrap_or(b.prefer_udp),
                max_concurrent: d.max_concurrent.unwrap_or(b.max_concurrent),
                health_check: d.health_check.unwrap_or(b.health_check),
                max_fails: d.max_fails.unwrap_or(b.max_fails),
                expire: d.expire.unwrap_or(b.expire),
                timeout: d.timeout.unwrap_or(b.timeout),
                tls_servername: d.tls_servername.clone().or(b.tls_servername.clone()),
                tls_ca: d.tls_ca.clone().or(b.tls_ca.clone()),
                cache: d.cache.clone(),
                ..b
            });
        }
        out
    }
}

/// The cache in front of forwarding.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Maximum entries (positive and negative together).
    pub max_entries: usize,
    /// Caps and floors on positive TTLs, seconds.
    pub max_ttl: u32,
    pub min_ttl: u32,
    /// Cap and floor on negative TTLs (RFC 2308, from the SOA minimum), seconds.
    pub max_negative_ttl: u32,
    pub min_negative_ttl: u32,
    /// Entries asked this many times within their TTL are refreshed before they expire (0: off).
    pub prefetch: u32,
    /// Serve expired entries for up to this long after they expire (RFC 8767; 0: off).
    #[serde(with = "duration_text")]
    pub serve_stale: Duration,
    /// When a stale entry is served: `verify` (only once every upstream failed to refresh it)
    /// or `immediate` (at once, refreshed in the background: RFC 8767's "stale-while-refresh";
    /// CoreDNS's default when a Corefile says `serve_stale`).
    pub serve_stale_refresh: StaleRefresh,
    /// The TTL of every record of a stale answer, seconds (CoreDNS's RESPONSE_TTL, default 0;
    /// RFC 8767 recommends 30).
    pub serve_stale_ttl: u32,
    /// Most positive entries (CoreDNS's `success CAPACITY`); absent: bounded by `max_entries`
    /// only.
    pub success_capacity: Option<usize>,
    /// Most negative entries, SERVFAIL ones included (CoreDNS's `denial CAPACITY`).
    pub denial_capacity: Option<usize>,
    /// How long a SERVFAIL is cached, from an upstream or when no upstream answered (CoreDNS's
    /// `servfail`, default 5s, at most 5m; 0s: never).
    #[serde(with = "duration_text")]
    pub servfail_ttl: Duration,
    /// Serve the TTLs as they were stored instead of counting them down (CoreDNS's `keepttl`).
    pub keepttl: bool,
}

/// When stale cache entries are served (RFC 8767), as CoreDNS's `serve_stale` REFRESH_MODE.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StaleRefresh {
    /// Ask the upstreams first; the stale entry only when none answers.
    #[default]
    Verify,
    /// Answer from the stale entry at once, and refresh it in the background.
    Immediate,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 10_000,
            max_ttl: 3600,
            min_ttl: 5,
            max_negative_ttl: 1800,
            min_negative_ttl: 5,
            prefetch: 10,
            serve_stale: Duration::from_secs(3600),
            serve_stale_refresh: StaleRefresh::Verify,
            serve_stale_ttl: 0,
            success_capacity: None,
            denial_capacity: None,
            servfail_ttl: Duration::from_secs(5),
            keepttl: false,
        }
    }
}

/// A hosts file, consulted before forwarding.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostsConfig {
    /// The file, in /etc/hosts format.
    pub file: Option<PathBuf>,
    /// Names the file does not hold go on to forwarding.
    pub fallthrough: bool,
    /// TTL of answers from the file, seconds.
    pub ttl: u32,
    /// How often the file is checked for changes.
    #[serde(with = "duration_text")]
    pub reload: Duration,
    /// Names clusterdns resolves itself, keeps fresh by their TTLs, and keeps serving from the
    /// last good answer when upstreams fail.
    pub critical_names: Vec<String>,
    /// Where the last good answers of critical names are kept across restarts.
    pub state_file: Option<PathBuf>,
}

impl Default for HostsConfig {
    fn default() -> Self {
        Self {
            file: None,
            fallthrough: true,
            ttl: 3600,
            reload: Duration::from_secs(5),
            critical_names: vec![],
            state_file: None,
        }
    }
}

/// Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port`, or `:port` for every address; null to turn it off.
    pub listen: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(":9153".into()),
        }
    }
}

/// Liveness endpoint and graceful shutdown.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub listen: Option<String>,
    /// After SIGTERM, keep serving DNS this long with readiness failing.
    #[serde(with = "duration_text")]
    pub lameduck: Duration,
    /// After the lameduck period, how long in-flight queries may take to finish.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            listen: Some(":8080".into()),
            lameduck: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Readiness endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadyConfig {
    pub listen: Option<String>,
}

impl Default for ReadyConfig {
    fn default() -> Self {
        Self {
            listen: Some(":8181".into()),
        }
    }
}

/// Sampled, structured query log.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLogConfig {
    pub enabled: bool,
    /// Fraction of queries logged, 0.0 to 1.0.
    pub sample: f64,
}

impl Default for QueryLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            sample: 1.0,
        }
    }
}

/// Server tuning.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// UDP sockets (and threads) per listen address; 0: one per CPU.
    pub udp_workers: usize,
    /// Largest UDP answer to EDNS clients (RFC 9715 / DNS flag day 2020: 1232).
    pub max_udp_size: u16,
    /// TCP connections idle longer than this are closed.
    #[serde(with = "duration_text")]
    pub tcp_idle_timeout: Duration,
    /// How UDP queries are spread over the workers' sockets.
    pub udp_balance: UdpBalance,
}

/// How the kernel spreads UDP queries over the workers' `SO_REUSEPORT` sockets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UdpBalance {
    /// By client address (a classic BPF program on the socket group): one client's queries
    /// all reach one worker, so a client flooding from many source ports fills one socket's
    /// queue, and the kernel drops only what arrives there; the other clients' workers keep
    /// their queues. One client is then served by one worker (one core) at the most.
    #[default]
    Client,
    /// By the kernel's flow hash (addresses and ports): one client's queries spread over
    /// every worker, and so does a flood.
    Flow,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            udp_workers: 0,
            max_udp_size: 1232,
            tcp_idle_timeout: Duration::from_secs(10),
            udp_balance: UdpBalance::Client,
        }
    }
}

/// The kind of link that holds the node-local addresses.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A `dummy` link, as node-cache creates (needs the kernel's dummy driver).
    #[default]
    Dummy,
    /// An `ifb` link: for kernels without the dummy driver; it holds addresses the same way.
    Ifb,
    /// No link of its own: the addresses go on `lo` (and only they are removed again).
    Lo,
}

/// Which tool writes the interception rules.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RulesBackend {
    /// What the node uses: `nftables` when kube-proxy's `ip kube-proxy` table exists, else the
    /// iptables mode the kubelet marked (`KUBE-IPTABLES-HINT`), else the one holding more rules
    /// (nft on a tie), as Kubernetes' iptables-wrapper decides.
    #[default]
    Auto,
    /// `iptables`/`ip6tables` as found on `PATH`.
    Iptables,
    IptablesLegacy,
    IptablesNft,
    /// A table of clusterdns's own (`inet clusterdns-nodelocal`) through `nft`.
    Nftables,
    /// No rules (node-cache's `-setupiptables=false`).
    None,
}

/// Node-local mode: what NodeLocal DNSCache's node-cache sets up around the cache.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeLocalConfig {
    /// Turn node-local mode on (flag `--node-local`).
    pub enabled: bool,
    /// The addresses held on the interface and listened on (node-cache's `-localip`): the
    /// link-local address, and the kube-dns Service IP to intercept it.
    pub addresses: Vec<std::net::IpAddr>,
    /// The DNS port on those addresses.
    pub port: u16,
    /// Create the interface and add the addresses (node-cache's `-setupinterface`).
    pub setup_interface: bool,
    /// The link's name (node-cache's `-interfacename`); unused with `link_kind: lo`.
    pub interface: String,
    pub link_kind: LinkKind,
    pub rules: RulesBackend,
    /// Skip conntrack for pods' queries only while a socket listens on the address (`-m socket`
    /// / `socket transparent 0` on the PREROUTING rules): with no process, queries to the kube-dns
    /// Service IP are tracked again and kube-proxy's DNAT sends them to kube-dns.
    pub fail_open: bool,
    /// Remove rules and interface on exit when no other instance runs (node-cache's
    /// `-skipteardown` inverted).
    pub teardown: bool,
    /// How often rules, link and addresses are checked and re-created (node-cache's
    /// `-syncinterval`).
    #[serde(with = "duration_text")]
    pub sync_interval: Duration,
    /// The lock file every instance on the node holds shared: on a host path, so that an
    /// exiting instance sees whether a newer one runs.
    pub lock_file: PathBuf,
}

impl Default for NodeLocalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            addresses: vec![std::net::Ipv4Addr::new(169, 254, 20, 10).into()],
            port: 53,
            setup_interface: true,
            interface: "nodelocaldns".into(),
            link_kind: LinkKind::Dummy,
            rules: RulesBackend::Auto,
            fail_open: true,
            teardown: true,
            sync_interval: Duration::from_secs(60),
            lock_file: "/run/clusterdns-nodelocal/lock".into(),
        }
    }
}

/// Zone transfers out (RFC 5936 AXFR, RFC 1995 IXFR) and NOTIFY (RFC 1996): clusterdns as the
/// primary of its cluster zone for secondaries outside the cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// Clients allowed to transfer, as prefixes (`10.0.0.0/8`) or addresses; empty: transfers
    /// are off (REFUSED, as before). Everyone else gets REFUSED.
    pub allow: Vec<String>,
    /// Zones offered: the cluster zone, and reverse zones listed in `cluster.reverse_zones`
    /// that are narrower than `in-addr.arpa`/`ip6.arpa`; empty: the cluster zone alone.
    pub zones: Vec<String>,
    /// Secondaries sent a NOTIFY for every zone offered on each new serial: `IP` or `IP:PORT`.
    pub notify: Vec<String>,
    /// A TSIG key (RFC 8945): when given, transfers must be signed with it.
    pub tsig: Option<TsigConfig>,
    /// Transfers served at the same time; past it, SERVFAIL (the secondary retries).
    pub max_transfers: usize,
    /// The longest a secondary may take to read one message of a transfer (instead of the
    /// resolvers' `server.tcp_idle_timeout`).
    #[serde(with = "duration_text")]
    pub write_timeout: Duration,
    /// Differences between serials kept for IXFR: at most this many...
    pub journal_entries: usize,
    /// ...and at most this many bytes of records; older ones are dropped (IXFR from a serial
    /// no longer held is answered with the whole zone).
    pub journal_bytes: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            allow: vec![],
            zones: vec![],
            notify: vec![],
            tsig: None,
            max_transfers: 10,
            write_timeout: Duration::from_secs(30),
            journal_entries: 1000,
            journal_bytes: 16 << 20,
        }
    }
}

/// Answer shaping, in CoreDNS's plugin order: `rewrites`, then `autopath`, then `templates`,
/// then `external` (k8s_external), then the cluster zone and forwarding. Compiled (regexes,
/// template fields, record texts) by `shape::Shaper::new`, whose errors name the key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ShapeConfig {
    /// CoreDNS `rewrite` rules, in order.
    pub rewrites: Vec<RewriteRule>,
    /// CoreDNS `template` blocks, in order.
    pub templates: Vec<TemplateRule>,
    /// Server-side search path (CoreDNS `autopath @kubernetes`).
    pub autopath: AutopathConfig,
    /// Services' external and LoadBalancer IPs under other zones (CoreDNS `k8s_external`).
    pub external: Option<ExternalConfig>,
}

/// What a rewrite rule rewrites.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RewriteField {
    /// The question name.
    #[default]
    Name,
    /// The question type (`from`/`to`: type names, e.g. ANY → HINFO).
    Type,
    /// The question class (`from`/`to`: IN, CH, HS).
    Class,
}

/// How a `name` rule matches the question name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NameMatch {
    #[default]
    Exact,
    Prefix,
    Suffix,
    Substring,
    Regex,
}

/// A regular expression and its replacement (`{1}` for the first group).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub from: String,
    pub to: String,
}

/// One CoreDNS `rewrite` rule.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewriteRule {
    /// After this rule matched: stop (default) or go on with the next rule (`continue`).
    #[serde(rename = "continue")]
    pub continue_: bool,
    pub field: RewriteField,
    /// For `field: name`.
    #[serde(rename = "match")]
    pub match_: NameMatch,
    pub from: String,
    pub to: String,
    /// Names in the reply that are the rewritten name (or end in it) become the asked name
    /// again (`answer auto`; always so for `exact`).
    pub answer_auto: bool,
    /// Owner names in the reply rewritten by regex (`answer name FROM TO`).
    pub answer_name: Vec<RegexRewrite>,
    /// Names inside records (CNAME, SRV, MX, NS, PTR, SOA targets) rewritten by regex
    /// (`answer value FROM TO`).
    pub answer_value: Vec<RegexRewrite>,
}

impl Default for RewriteRule {
    fn default() -> Self {
        Self {
            continue_: false,
            field: RewriteField::Name,
            match_: NameMatch::Exact,
            from: String::new(),
            to: String::new(),
            answer_auto: false,
            answer_name: vec![],
            answer_value: vec![],
        }
    }
}

/// One CoreDNS `template` block.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateRule {
    /// The question class it answers: IN, CH, HS or ANY.
    pub class: String,
    /// The question type it answers (A, AAAA, PTR, ..., or ANY).
    #[serde(rename = "type")]
    pub qtype: String,
    /// Zones it is for (`.`: every name).
    pub zones: Vec<String>,
    /// Zones inside `zones` it leaves alone: a Corefile's other server blocks, which CoreDNS
    /// sends those names to (the converter fills it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// Regular expressions (RE2 syntax) matched against the lowercase question name with its
    /// trailing dot; the first that matches wins. Empty: every name.
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Records, as zone-file lines with template fields (`{{ .Name }}`, `{{ .Group.x }}`,
    /// `{{ index .Match 1 }}`, `{{ .Zone }}`, `{{ .Class }}`, `{{ .Type }}`, `{{ .Remote }}`).
    pub answer: Vec<String>,
    pub additional: Vec<String>,
    pub authority: Vec<String>,
    /// The reply's rcode (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...).
    pub rcode: String,
    /// Names of these zones that no regex matches go on (`.`: all of them); names of the
    /// template's zones that match nothing and do not fall through get SERVFAIL.
    pub fallthrough: Vec<String>,
}

impl Default for TemplateRule {
    fn default() -> Self {
        Self {
            class: "ANY".into(),
            qtype: "ANY".into(),
            zones: vec![".".into()],
            except: vec![],
            matches: vec![],
            answer: vec![],
            additional: vec![],
            authority: vec![],
            rcode: "NOERROR".into(),
            fallthrough: vec![],
        }
    }
}

/// A TSIG key shared with the secondaries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TsigConfig {
    /// The key's name, as the secondaries know it (e.g. `transfer-key`).
    pub name: String,
    /// `hmac-sha256` (RFC 8945's mandatory one), `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The secret, base64 (what `tsig-keygen` or `keymgr -t` print).
    pub secret: Option<String>,
    /// A file holding the secret (base64), e.g. from a Kubernetes Secret; instead of `secret`.
    pub secret_file: Option<PathBuf>,
    /// How far the signer's clock may be from ours (RFC 8945 fudge).
    #[serde(with = "duration_text")]
    pub fudge: Duration,
}

impl Default for TsigConfig {
    fn default() -> Self {
        Self {
            name: "transfer-key".into(),
            algorithm: "hmac-sha256".into(),
            secret: None,
            secret_file: None,
            fudge: Duration::from_secs(300),
        }
    }
}

/// Server-side search path completion.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutopathConfig {
    pub enabled: bool,
    /// The host search domains that follow `<ns>.svc.<zone> svc.<zone> <zone>` in a pod's
    /// search list: the `search` line of this file (the node's, as the kubelet copies it into
    /// pods); null: none.
    pub resolv_conf: Option<PathBuf>,
}

impl Default for AutopathConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            resolv_conf: Some("/etc/resolv.conf".into()),
        }
    }
}

/// TSIG algorithms clusterdns signs and verifies with.
pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// A client prefix: `10.0.0.0/8`, `fd00::/8`, or an address alone (all its bits).
pub fn parse_prefix(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        format!("{s:?} is not an address or prefix (10.0.0.0/8, fd00::/8, 192.0.2.7)")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
    };
    Ok((ip, len))
}

/// Services' external addresses under zones of their own (CoreDNS `k8s_external`):
/// `<svc>.<ns>.<zone>`, `<endpoint>.<svc>.<ns>.<zone>` (headless), `_<port>._<proto>.<svc>.<ns>.<zone>`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    pub zones: Vec<String>,
    /// The label of the apex's name server names (`ns1.<apex>.<zone>`).
    pub apex: String,
    /// TTL of its records, seconds.
    pub ttl: u32,
    /// Headless services' endpoints with external IPs.
    pub headless: bool,
    /// Names of these zones that do not exist go on to forwarding (`.`: all).
    pub fallthrough: Vec<String>,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            zones: vec![],
            apex: "dns".into(),
            ttl: 5,
            headless: false,
            fallthrough: vec![],
        }
    }
}

/// Per-client limits (reloadable): response rate limiting and TCP connection caps.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Clients neither rate limited nor held to the per-client TCP cap: node addresses, where
    /// node-local caches (their `force_tcp` connections) and hostNetwork pods send from, and
    /// zone-transfer secondaries. They still count toward `tcp.max_connections`.
    pub exempt: Vec<IpPrefix>,
    pub rate: RateLimitConfig,
    pub tcp: TcpLimitsConfig,
}

/// Response rate limiting per client, decided per query before any work (as Knot's `rrl`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained responses per second per client. 1,000: a pod resolving an outside name
    /// through the default `ndots:5` search path sends up to ten queries per lookup (four
    /// search domains and the name itself, A and AAAA), so this is a hundred uncached lookups a
    /// second per pod, far above what a well-behaved workload asks, and far below what one
    /// client in a retry loop sends (the 50,000 qps of issue 17).
    pub responses_per_second: u32,
    /// Responses a client may send back to back before the rate applies (start-up bursts).
    pub burst: u32,
    /// Every `slip`-th limited UDP response goes out empty with TC set, so a real client retries
    /// over TCP instead of waiting for a timeout; the others are dropped. 0: drop all; 1:
    /// truncate all. 2 is BIND's default.
    pub slip: u32,
    /// Clients are counted per this prefix: 32 per address; 24 puts a node's pods together.
    pub ipv4_prefix: u8,
    /// 128 per address; 56 or 64 puts a node's or a site's addresses together.
    pub ipv6_prefix: u8,
    /// Clients tracked at once (a fixed table, its chunks made as clients come: memory never
    /// passes 36 bytes per entry, 2.3 MiB for the default; an idle client's entry is reused
    /// first).
    pub table_size: usize,
    /// The most limited clients are logged at most once per this interval.
    #[serde(with = "duration_text")]
    pub log_interval: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            responses_per_second: 1000,
            burst: 2000,
            slip: 2,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            table_size: 65536,
            log_interval: Duration::from_secs(30),
        }
    }
}

/// TCP connection limits. Past a cap the oldest idle connection is closed to make room;
/// when none is idle, the new connection is closed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpLimitsConfig {
    /// Open connections in total, also held under the file-descriptor limit (what the limit
    /// leaves after forwarding's sockets and a reserve).
    pub max_connections: usize,
    /// Open connections per client address (RFC 7766 §6.2.1: a client SHOULD need one, plus
    /// one for a zone transfer; 32 leaves room for pooling forwarders).
    pub max_connections_per_client: usize,
    /// A message whose first byte has arrived must be complete within this long, else the
    /// connection is closed (slowloris). Knot's `tcp-io-timeout` is 500ms, CoreDNS's read
    /// timeout 3s.
    #[serde(with = "duration_text")]
    pub message_timeout: Duration,
}

impl Default for TcpLimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 32,
            message_timeout: Duration::from_secs(2),
        }
    }
}

/// An address prefix, `10.0.0.0/8`, `fd00::/56`, or an address alone (all its bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: std::net::IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Parse `ADDR/LEN` or `ADDR`; bits past the length must be zero.
    pub fn parse(s: &str) -> Result<IpPrefix, String> {
        let s = s.trim();
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address prefix (e.g. 10.0.0.0/8, fd00::/56)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0 to {max}")),
            },
        };
        let p = IpPrefix { addr, len };
        if p.network_bits(addr) != ip_bits(addr) {
            return Err(format!("{s:?}: bits set past the prefix length"));
        }
        Ok(p)
    }

    /// Whether `ip` is inside (an address of the other family never is).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && self.network_bits(ip) == ip_bits(self.addr)
    }

    fn network_bits(&self, ip: std::net::IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host = width - u32::from(self.len);
        let bits = ip_bits(ip);
        if host >= 128 { 0 } else { bits >> host << host }
    }
}

fn ip_bits(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IpPrefix::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Parse a duration as the config writes it: Go's `time.ParseDuration` syntax (`500ms`, `5s`,
/// `1m30s`, `1.5h`, `0`; units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), or a bare number of seconds
/// (`7`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_text(s, true)
}

/// Parse a duration exactly as Go's `time.ParseDuration` does (what a Corefile holds): as
/// [`parse_duration`], but a number needs its unit (`5` is an error in CoreDNS, so it is one
/// here).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_duration_text(s, false)
}

/// The longest duration: Go's own limit (2^63-1 ns, about 292 years), so nothing CoreDNS
/// refuses is accepted, and every accepted value can be added to an `Instant`.
const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

/// The one duration parser. Whole numbers and fractions are read as decimal integers, not
/// floats, so `0.1s` is exactly 100ms and a huge value is an error instead of a panic.
fn parse_duration_text(s: &str, bare_seconds: bool) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 500ms, 5s, 1m30s)");
    let too_long = || format!("{s:?} is longer than the longest duration, 2562047h (292 years)");
    let text = s.trim();
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut first = true;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(num_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            // Go's one exception: a bare `0`.
            "" if first && tail.is_empty() && (bare_seconds || number == "0") => 1_000_000_000,
            "" => {
                return Err(format!(
                    "{s:?} has a number without a unit (ns, us, ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {s:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let whole = whole
            .bytes()
            .try_fold(0u128, |n, d| {
                n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
            })
            .ok_or_else(too_long)?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
        // Digits past the 18th cannot move the result by a nanosecond (the largest unit is
        // 3.6e12 ns); as Go, the fraction is truncated to whole nanoseconds.
        let (mut numerator, mut denominator) = (0u128, 1u128);
        for d in fraction.bytes().take(18) {
            numerator = numerator * 10 + u128::from(d - b'0');
            denominator *= 10;
        }
        nanos += numerator * unit_nanos / denominator;
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_DURATION_NANOS)
            .ok_or_else(too_long)?;
        rest = tail;
        first = false;
    }
    if negative && total > 0 {
        return Err(format!("{s:?} is negative; a duration is zero or more"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Write a duration as the config reads it, in the largest unit that keeps it exact: `2h`,
/// `30m`, `90s`, `500ms`, `250us`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if nanos == 0 {
        return "0s".into();
    }
    let (size, unit) = UNITS
        .into_iter()
        .find(|(size, _)| nanos.is_multiple_of(*size))
        .expect("every duration is whole nanoseconds");
    format!("{}{unit}", nanos / size)
}

/// Durations in the YAML: `5s`, `500ms`, or a number of seconds; written as [`format_duration`].
mod duration_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string(),
            Raw::Str(s) => s,
        };
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations in the YAML, as [`duration_text`].
mod opt_duration_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Num(n)) => parse_duration(&n.to_string())
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(Raw::Str(s)) => parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Config {
    /// Parse YAML text; errors carry the line and column of the offending key.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let cfg: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Read and parse a config file, then resolve relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut cfg = Self::from_yaml(&text, path)?;
        if let Some(base) = path.parent() {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Make relative file paths relative to the config file's folder, as an operator expects.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(f) = self.source.file.as_mut() {
            fix(f);
        }
        if let Some(k) = self.source.kubernetes.as_mut()
            && let Some(f) = k.kubeconfig.as_mut()
        {
            fix(f);
        }
        if let Some(f) = self
            .transfer
            .tsig
            .as_mut()
            .and_then(|k| k.secret_file.as_mut())
        {
            fix(f);
        }
        if let Some(f) = self.forward.tls_ca.as_mut() {
            fix(f);
        }
        for d in self.forward.domains.values_mut() {
            if let Some(f) = d.tls_ca.as_mut() {
                fix(f);
            }
        }
        if let Some(h) = self.hosts.as_mut() {
            if let Some(f) = h.file.as_mut() {
                fix(f);
            }
            if let Some(f) = h.state_file.as_mut() {
                fix(f);
            }
        }
        if let Some(f) = self.shape.autopath.resolv_conf.as_mut() {
            fix(f);
        }
    }

    /// Checks that types alone cannot express. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed".into()));
        }
        crate::names::parse_served_zone(&self.cluster.zone)
            .map_err(|e| invalid("cluster.zone", e))?;
        for (i, z) in self.cluster.reverse_zones.iter().enumerate() {
            crate::names::parse_served_zone(z)
                .map_err(|e| invalid(&format!("cluster.reverse_zones[{i}]"), e))?;
        }
        for (i, z) in self.cluster.fallthrough.iter().enumerate() {
            parse_domain(z).map_err(|e| invalid(&format!("cluster.fallthrough[{i}]"), e))?;
        }
        if self.cluster.ttl > 3600 {
            return Err(invalid(
                "cluster.ttl",
                format!("{} is above 3600 seconds", self.cluster.ttl),
            ));
        }
        if let Some(sel) = &self.cluster.labels {
            Selector::parse(sel).map_err(|e| invalid("cluster.labels", e))?;
        }
        if let Some(sel) = &self.cluster.namespace_labels {
            Selector::parse(sel).map_err(|e| invalid("cluster.namespace_labels", e))?;
        }
        if let Some(url) = self
            .source
            .kubernetes
            .as_ref()
            .and_then(|k| k.endpoint.as_ref())
        {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(invalid(
                    "source.kubernetes.endpoint",
                    format!("{url:?} is not an API server URL (https://HOST[:PORT])"),
                ));
            }
        }
        if self.source.file.is_some() && self.source.kubernetes.is_some() {
            return Err(invalid(
                "source",
                "give either `file` or `kubernetes`, not both".into(),
            ));
        }
        for (i, u) in self.forward.upstreams.iter().enumerate() {
            parse_upstream(u).map_err(|e| invalid(&format!("forward.upstreams[{i}]"), e))?;
        }
        for (i, d) in self.forward.except.iter().enumerate() {
            parse_domain(d).map_err(|e| invalid(&format!("forward.except[{i}]"), e))?;
        }
        for (domain, d) in &self.forward.domains {
            let key = format!("forward.domains.{domain}");
            parse_domain(domain).map_err(|e| invalid(&key, e))?;
            if self.forward.stub_domains.contains_key(domain) {
                return Err(invalid(
                    &key,
                    "also in forward.stub_domains: give it once".into(),
                ));
            }
            for (i, u) in d.upstreams.iter().enumerate() {
                parse_upstream(u).map_err(|e| invalid(&format!("{key}.upstreams[{i}]"), e))?;
            }
            for (i, x) in d.except.iter().flatten().enumerate() {
                parse_domain(x).map_err(|e| invalid(&format!("{key}.except[{i}]"), e))?;
            }
            if d.max_concurrent == Some(0) {
                return Err(invalid(
                    &format!("{key}.max_concurrent"),
                    "must be at least 1".into(),
                ));
            }
            if d.timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &format!("{key}.timeout"),
                    "must be above zero".into(),
                ));
            }
            if let Some(c) = &d.cache {
                validate_cache(c, &format!("{key}.cache"))?;
            }
        }
        for r in self.forward.routes() {
            if let Some(n) = &r.tls_servername {
                parse_domain(n).map_err(|e| invalid(&format!("{}: tls_servername", r.key), e))?;
            }
        }
        validate_cache(&self.cache, "cache")?;
        for (domain, ups) in &self.forward.stub_domains {
            parse_domain(domain)
                .map_err(|e| invalid(&format!("forward.stub_domains.{domain}"), e))?;
            if ups.is_empty() {
                return Err(invalid(
                    &format!("forward.stub_domains.{domain}"),
                    "no upstreams".into(),
                ));
            }
            for (i, u) in ups.iter().enumerate() {
                parse_upstream(u)
                    .map_err(|e| invalid(&format!("forward.stub_domains.{domain}[{i}]"), e))?;
            }
        }
        if self.forward.max_concurrent == 0 {
            return Err(invalid(
                "forward.max_concurrent",
                "must be at least 1".into(),
            ));
        }
        if self.forward.timeout.is_zero() {
            return Err(invalid("forward.timeout", "must be above zero".into()));
        }
        if let Some(h) = &self.hosts {
            for (i, n) in h.critical_names.iter().enumerate() {
                parse_domain(n).map_err(|e| invalid(&format!("hosts.critical_names[{i}]"), e))?;
            }
        }
        for (key, l) in [
            ("metrics.listen", &self.metrics.listen),
            ("health.listen", &self.health.listen),
            ("ready.listen", &self.ready.listen),
        ] {
            if let Some(l) = l {
                parse_ops_listen(l).map_err(|e| invalid(key, e))?;
            }
        }
        self.validate_nodelocal()?;
        self.validate_transfer()?;
        if !(0.0..=1.0).contains(&self.querylog.sample) {
            return Err(invalid(
                "querylog.sample",
                "must be between 0.0 and 1.0".into(),
            ));
        }
        self.validate_limits()?;
        if self.server.max_udp_size < 512 {
            return Err(invalid(
                "server.max_udp_size",
                "must be at least 512".into(),
            ));
        }
        Ok(())
    }
}

/// What types cannot say about a cache section (`key`: where it is).
fn validate_cache(c: &CacheConfig, key: &str) -> Result<(), ConfigError> {
    let invalid = |k: &str, message: &str| ConfigError::Invalid {
        key: format!("{key}.{k}"),
        message: message.into(),
    };
    // CoreDNS: "DURATION may not be greater than 5 minutes" (RFC 2308 section 7.1).
    if c.servfail_ttl > Duration::from_secs(300) {
        return Err(invalid("servfail_ttl", "at most 5m (RFC 2308 section 7.1)"));
    }
    if c.success_capacity == Some(0) || c.denial_capacity == Some(0) {
        let k = if c.success_capacity == Some(0) {
            "success_capacity"
        } else {
            "denial_capacity"
        };
        return Err(invalid(k, "must be at least 1"));
    }
    if c.max_entries == 0 {
        return Err(invalid("max_entries", "must be at least 1"));
    }
    Ok(())
}

impl Config {
    /// The DNS listen addresses: `listen`, or in node-local mode exactly the node-local
    /// addresses at `nodelocal.port`.
    pub fn dns_listen(&self) -> Vec<SocketAddr> {
        if self.nodelocal.enabled {
            let port = self.nodelocal.port;
            self.nodelocal
                .addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        } else {
            self.listen.clone()
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let r = &self.limits.rate;
        if r.responses_per_second == 0 {
            return Err(invalid(
                "limits.rate.responses_per_second",
                "must be at least 1 (turn limiting off with enabled: false)",
            ));
        }
        if r.burst == 0 {
            return Err(invalid("limits.rate.burst", "must be at least 1"));
        }
        if r.slip > 10 {
            return Err(invalid("limits.rate.slip", "must be 0 to 10"));
        }
        if r.ipv4_prefix == 0 || r.ipv4_prefix > 32 {
            return Err(invalid("limits.rate.ipv4_prefix", "must be 1 to 32"));
        }
        if r.ipv6_prefix == 0 || r.ipv6_prefix > 128 {
            return Err(invalid("limits.rate.ipv6_prefix", "must be 1 to 128"));
        }
        if !(64..=1 << 24).contains(&r.table_size) {
            return Err(invalid("limits.rate.table_size", "must be 64 to 16777216"));
        }
        if r.log_interval.is_zero() {
            return Err(invalid("limits.rate.log_interval", "must be above zero"));
        }
        let t = &self.limits.tcp;
        if t.max_connections == 0 {
            return Err(invalid("limits.tcp.max_connections", "must be at least 1"));
        }
        if t.max_connections_per_client == 0 {
            return Err(invalid(
                "limits.tcp.max_connections_per_client",
                "must be at least 1",
            ));
        }
        if t.message_timeout.is_zero() {
            return Err(invalid("limits.tcp.message_timeout", "must be above zero"));
        }
        Ok(())
    }

    /// The zones a transfer may be asked for, normalised: `transfer.zones`, or the cluster zone.
    pub fn transfer_zones(&self) -> Vec<String> {
        if self.transfer.zones.is_empty() {
            return vec![self.cluster.zone.trim_end_matches('.').to_ascii_lowercase()];
        }
        let mut v: Vec<String> = Vec::new();
        for z in &self.transfer.zones {
            let z = parse_domain(z).unwrap_or_else(|_| z.clone());
            if !v.contains(&z) {
                v.push(z);
            }
        }
        v
    }

    fn validate_transfer(&self) -> Result<(), ConfigError> {
        let t = &self.transfer;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        for (i, a) in t.allow.iter().enumerate() {
            parse_prefix(a).map_err(|e| invalid(&format!("transfer.allow[{i}]"), e))?;
        }
        for (i, n) in t.notify.iter().enumerate() {
            parse_upstream(n).map_err(|e| invalid(&format!("transfer.notify[{i}]"), e))?;
        }
        let cluster = parse_domain(&self.cluster.zone).unwrap_or_default();
        let reverse: Vec<String> = self
            .cluster
            .reverse_zones
            .iter()
            .filter_map(|z| parse_domain(z).ok())
            .collect();
        let mut zones: Vec<String> = Vec::new();
        for (i, z) in t.zones.iter().enumerate() {
            let key = format!("transfer.zones[{i}]");
            let z = parse_domain(z).map_err(|e| invalid(&key, e))?;
            if z == "in-addr.arpa" || z == "ip6.arpa" {
                return Err(invalid(
                    &key,
                    format!(
                        "{z} is too wide to transfer: a secondary holding all of it would answer NXDOMAIN for every address outside the cluster; offer the service and pod ranges' zones (e.g. 10.in-addr.arpa) and list them in cluster.reverse_zones"
                    ),
                ));
            }
            if z != cluster {
                let Some(at) = reverse.iter().position(|r| *r == z) else {
                    return Err(invalid(
                        &key,
                        format!(
                            "{z} is neither cluster.zone nor one of cluster.reverse_zones; only zones clusterdns serves can be transferred"
                        ),
                    ));
                };
                // Answers for names in `z` must be written with `z` as their zone: no wider
                // reverse zone may come first in the list (the first that holds a name wins).
                if let Some(w) = reverse[..at].iter().find(|w| crate::names::in_zone(&z, w)) {
                    return Err(invalid(
                        &key,
                        format!(
                            "{z} comes after {w} in cluster.reverse_zones, which holds it; list {z} first"
                        ),
                    ));
                }
            }
            if let Some(o) = zones
                .iter()
                .find(|o| crate::names::in_zone(&z, o) || crate::names::in_zone(o, &z))
            {
                return Err(invalid(&key, format!("{z} overlaps {o}, also offered")));
            }
            zones.push(z);
        }
        if let Some(k) = &t.tsig {
            parse_domain(&k.name).map_err(|e| invalid("transfer.tsig.name", e))?;
            if !TSIG_ALGORITHMS.contains(&k.algorithm.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    "transfer.tsig.algorithm",
                    format!(
                        "{:?} is not one of {}",
                        k.algorithm,
                        TSIG_ALGORITHMS.join(", ")
                    ),
                ));
            }
            match (&k.secret, &k.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "transfer.tsig",
                        "give either `secret` or `secret_file`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "transfer.tsig.secret",
                        "a TSIG key needs its secret (`secret` or `secret_file`)".into(),
                    ));
                }
                (Some(secret), None) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(secret.trim())
                        .map_err(|e| {
                            invalid(
                                "transfer.tsig.secret",
                                format!("not base64 (as tsig-keygen prints it): {e}"),
                            )
                        })?;
                }
                _ => {}
            }
        }
        if t.max_transfers == 0 {
            return Err(invalid(
                "transfer.max_transfers",
                "must be at least 1".into(),
            ));
        }
        if t.write_timeout.is_zero() {
            return Err(invalid(
                "transfer.write_timeout",
                "must be above zero".into(),
            ));
        }
        if t.journal_entries == 0 {
            return Err(invalid(
                "transfer.journal_entries",
                "must be at least 1 (IXFR needs one difference)".into(),
            ));
        }
        Ok(())
    }

    fn validate_nodelocal(&self) -> Result<(), ConfigError> {
        let n = &self.nodelocal;
        if !n.enabled {
            return Ok(());
        }
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.listen != Config::default().listen {
            return Err(invalid(
                "listen",
                "in node-local mode clusterdns listens on nodelocal.addresses at nodelocal.port; leave `listen` out".into(),
            ));
        }
        if n.addresses.is_empty() {
            return Err(invalid(
                "nodelocal.addresses",
                "at least one address is needed".into(),
            ));
        }
        for (i, ip) in n.addresses.iter().enumerate() {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                return Err(invalid(
                    &format!("nodelocal.addresses[{i}]"),
                    format!(
                        "{ip} cannot be a node-local address (unspecified, multicast or loopback)"
                    ),
                ));
            }
            if n.addresses[..i].contains(ip) {
                return Err(invalid(
                    &format!("nodelocal.addresses[{i}]"),
                    format!("{ip} is listed twice"),
                ));
            }
        }
        if n.port == 0 {
            return Err(invalid(
                "nodelocal.port",
                "the rules need a fixed port".into(),
            ));
        }
        // IFNAMSIZ is 16 with the terminating NUL.
        let name_ok = !n.interface.is_empty()
            && n.interface.len() < 16
            && n.interface != "."
            && n.interface != ".."
            && n.interface
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if n.link_kind != LinkKind::Lo && !name_ok {
            return Err(invalid(
                "nodelocal.interface",
                format!(
                    "{:?} is not an interface name (1 to 15 characters, no `/`, `:` or spaces)",
                    n.interface
                ),
            ));
        }
        if n.link_kind != LinkKind::Lo && n.interface == "lo" {
            return Err(invalid(
                "nodelocal.interface",
                "use `link_kind: lo` to put the addresses on lo".into(),
            ));
        }
        if n.sync_interval.is_zero() {
            return Err(invalid(
                "nodelocal.sync_interval",
                "must be above zero".into(),
            ));
        }
        if n.lock_file.as_os_str().is_empty() {
            return Err(invalid("nodelocal.lock_file", "must be a path".into()));
        }
        Ok(())
    }
}

/// Where an operator endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsListen {
    /// `host:port` or `:port`.
    Tcp(SocketAddr),
    /// `unix:/path`: a socket only this pod's exec probes reach (two node-local pods on one
    /// node's host network would share any TCP port).
    Unix(PathBuf),
}

/// `unix:/absolute/path`, else [`parse_http_listen`].
pub fn parse_ops_listen(s: &str) -> Result<OpsListen, String> {
    match s.strip_prefix("unix:") {
        Some(p) if p.starts_with('/') && p.len() > 1 => Ok(OpsListen::Unix(p.into())),
        Some(_) => Err(format!(
            "{s:?}: a unix socket needs an absolute path (unix:/run/x.sock)"
        )),
        None => parse_http_listen(s).map(OpsListen::Tcp),
    }
}

/// A DNS listen address: `IP:PORT`, `[IPv6]:PORT`, or `:PORT` for both families' wildcard
/// addresses (as CoreDNS's `.:53`): `0.0.0.0:PORT` and `[::]:PORT`, each its own socket.
pub fn parse_listen(s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: bad port (IP:PORT, [IPv6]:PORT or :PORT)"))?;
        return Ok(vec![
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port),
            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
        ]);
    }
    s.parse::<SocketAddr>()
        .map(|a| vec![a])
        .map_err(|_| format!("{s:?} is not a listen address (IP:PORT, [IPv6]:PORT or :PORT)"))
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let mut out = Vec::new();
    for s in Vec::<String>::deserialize(d)? {
        for a in parse_listen(&s).map_err(serde::de::Error::custom)? {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// `IP` or `IP:PORT` or `[v6]:PORT` (port 53 by default), with or without `dns://`; or
/// `tls://` and one of those (port 853 by default).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    parse_upstream_target(s).map(|t| t.addr)
}

/// An upstream as the config writes it: plain DNS, or DNS over TLS (RFC 7858).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// [`parse_upstream`], telling DNS over TLS (`tls://`) apart.
pub fn parse_upstream_target(s: &str) -> Result<UpstreamTarget, String> {
    let s = s.trim();
    let (rest, tls, port) = match s.strip_prefix("tls://") {
        Some(r) => (r, true, 853),
        None => (s.strip_prefix("dns://").unwrap_or(s), false, 53),
    };
    let addr = if let Ok(sa) = rest.parse::<SocketAddr>() {
        sa
    } else if let Ok(ip) = rest.parse::<std::net::IpAddr>() {
        SocketAddr::new(ip, port)
    } else {
        return Err(format!(
            "{s:?} is not an upstream (IP, IP:PORT, tls://IP or tls://IP:PORT)"
        ));
    };
    Ok(UpstreamTarget { addr, tls })
}

/// `host:port` or `:port` (every address).
pub fn parse_http_listen(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        return Ok(SocketAddr::new(
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            port,
        ));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && host == "localhost"
    {
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        return Ok(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port));
    }
    Err(format!("{s:?} is not an address (HOST:PORT or :PORT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_port_alone_is_both_families() {
        let c = Config::from_yaml(
            "listen: [\":53\", \"0.0.0.0:53\", \"[::1]:5353\"]\n",
            Path::new("x"),
        )
        .unwrap();
        let want: Vec<SocketAddr> = ["0.0.0.0:53", "[::]:53", "[::1]:5353"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.listen, want);
        let e = Config::from_yaml("listen: [\"localhost:53\"]\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("listen address"), "{e}");
        assert!(parse_listen(":x").is_err());
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::from_yaml("", Path::new("x.yaml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.cluster.ttl, 30);
        assert_eq!(c.cluster.zone, "cluster.local");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_yaml(
            "listen: [\"127.0.0.1:53\"]\ncluster:\n  zoen: x\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("zoen"), "{err}");
        assert!(err.contains("line 3") || err.contains("3:"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 parsecs").is_err());
        // Too long for a Duration: an error, not a panic (found by fuzzing).
        let e = parse_duration("99999999999999999999999h").unwrap_err();
        assert!(e.contains("longest duration"), "{e}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5 s").is_err());
        // Go's forms: fractions, compound values, micro- and nanoseconds, a sign.
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("2h45m0.5s").unwrap(),
            Duration::from_millis(9_900_500)
        );
        assert_eq!(
            parse_go_duration(".5s").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1us1µs1μs1ns").unwrap(),
            Duration::from_nanos(3001)
        );
        assert_eq!(parse_go_duration("+5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_go_duration("-0").unwrap(), Duration::ZERO);
        // Exact, not through a float: 0.1s is 100ms to the nanosecond.
        assert_eq!(
            parse_go_duration("0.1s").unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(
            parse_go_duration("1.0000000019s").unwrap().as_nanos(),
            1_000_000_001
        );
        assert!(parse_go_duration("1m30").is_err(), "a unit is missing");
    }

    #[test]
    fn durations_out_of_range_are_errors_not_panics() {
        for bad in [
            "99999999999999999999h",
            "99999999999999999999",
            "2562048h",
            "9223372036854775808ns",
            "1000000000000000000000000000000000000000000000000s",
            "2562047h1h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("longest duration"), "{bad}: {e}");
        }
        // The longest one Go accepts is accepted.
        assert_eq!(
            parse_go_duration("9223372036854775807ns")
                .unwrap()
                .as_nanos(),
            i64::MAX as u128
        );
        for bad in ["-5s", "-1"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("negative"), "{bad}: {e}");
        }
        for bad in [
            "",
            "s",
            ".",
            "-",
            "NaN",
            "nan",
            "inf",
            "infs",
            "1e3s",
            "1.2.3s",
            "5 s",
            "1..5s",
            "5 parsecs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        // Through the YAML too: an error naming the key's line, not a panic.
        let e = Config::from_yaml(
            "cache:\n  serve_stale: 99999999999999999999h\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("longest duration"), "{e}");
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_micros(1500), "1500us"),
            (Duration::from_nanos(7), "7ns"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn config_serialises_and_reads_back() {
        let mut c = Config {
            hosts: Some(HostsConfig::default()),
            source: SourceConfig {
                kubernetes: Some(KubernetesSourceConfig::default()),
                file: None,
            },
            ..Config::default()
        };
        c.forward.health_check = Duration::from_millis(250);
        c.cluster.pods = PodsMode::Verified;
        c.forward.policy = ForwardPolicy::RoundRobin;
        let yaml = serde_saphyr::to_string(&c).unwrap();
        assert!(yaml.contains("health_check: 250ms"), "{yaml}");
        assert!(yaml.contains("pods: verified"), "{yaml}");
        assert!(yaml.contains("policy: round_robin"), "{yaml}");
        assert_eq!(Config::from_yaml(&yaml, Path::new("c.yaml")).unwrap(), c);
    }

    #[test]
    fn validation_names_key() {
        let mut c = Config::default();
        c.forward.upstreams = vec!["not-an-ip".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("forward.upstreams[0]"), "{e}");
        let mut c = Config::default();
        c.forward
            .stub_domains
            .insert("corp..example".into(), vec!["10.0.0.5".into()]);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("forward.stub_domains"), "{e}");
        // Every forwarding value the resolver relies on is checked here, and only here (the
        // resolver trusts a validated config).
        let bad = |f: &dyn Fn(&mut Config), key: &str| {
            let mut c = Config::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        };
        bad(
            &|c| c.forward.upstreams = vec!["127.0.0.1:9".into(), "nope".into()],
            "forward.upstreams[1]",
        );
        bad(
            &|c| {
                c.forward
                    .stub_domains
                    .insert("corp.example".into(), vec!["x.y".into()]);
            },
            "forward.stub_domains.corp.example[0]",
        );
        bad(
            &|c| {
                c.forward.stub_domains.insert("corp.example".into(), vec![]);
            },
            "forward.stub_domains.corp.example",
        );
        bad(&|c| c.forward.max_concurrent = 0, "forward.max_concurrent");
        bad(
            &|c| {
                c.source.kubernetes = Some(KubernetesSourceConfig {
                    endpoint: Some("10.0.0.1:6443".into()),
                    ..Default::default()
                })
            },
            "source.kubernetes.endpoint",
        );
        bad(
            &|c| c.forward.except = vec!["a..b".into()],
            "forward.except[0]",
        );
        bad(
            &|c| {
                c.forward.domains.insert(
                    "corp.example".into(),
                    DomainForwardConfig {
                        upstreams: vec!["10.0.0.5".into()],
                        cache: Some(CacheConfig {
                            success_capacity: Some(0),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                );
            },
            "forward.domains.corp.example.cache.success_capacity",
        );
        bad(&|c| c.forward.timeout = Duration::ZERO, "forward.timeout");
        bad(
            &|c| {
                c.hosts = Some(HostsConfig {
                    critical_names: vec!["a..b".into()],
                    ..Default::default()
                })
            },
            "hosts.critical_names[0]",
        );
    }

    #[test]
    fn prefixes() {
        let p = IpPrefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let one = IpPrefix::parse("127.0.0.2").unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.3".parse().unwrap()));
        let v6 = IpPrefix::parse("fd00:1::/56").unwrap();
        assert!(v6.contains("fd00:1:0:ff::9".parse().unwrap()));
        assert!(!v6.contains("fd00:1:0:100::9".parse().unwrap()));
        assert!(
            IpPrefix::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/"] {
            assert!(IpPrefix::parse(bad).is_err(), "{bad}");
        }
        let e = Config::from_yaml("limits:\n  exempt: [10.0.0.1/8]\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the prefix"), "{e}");
    }

    #[test]
    fn limits_are_checked() {
        let bad = |f: &dyn Fn(&mut Config), key: &str| {
            let mut c = Config::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        };
        bad(
            &|c| c.limits.rate.responses_per_second = 0,
            "limits.rate.responses_per_second",
        );
        bad(&|c| c.limits.rate.slip = 11, "limits.rate.slip");
        bad(
            &|c| c.limits.rate.ipv4_prefix = 33,
            "limits.rate.ipv4_prefix",
        );
        bad(&|c| c.limits.rate.table_size = 1, "limits.rate.table_size");
        bad(
            &|c| c.limits.tcp.max_connections = 0,
            "limits.tcp.max_connections",
        );
        bad(
            &|c| c.limits.tcp.message_timeout = Duration::ZERO,
            "limits.tcp.message_timeout",
        );
    }

    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse_upstream("10.0.0.5").unwrap(),
            "10.0.0.5:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5300").unwrap(),
            "127.0.0.1:5300".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(
            parse_http_listen(":9153").unwrap(),
            "0.0.0.0:9153".parse().unwrap()
        );
    }

    #[test]
    fn transfer_config_is_checked_key_by_key() {
        let base = "cluster:\n  reverse_zones: [10.in-addr.arpa, in-addr.arpa]\n";
        let err = |transfer: &str| {
            Config::from_yaml(&format!("{base}transfer:\n{transfer}"), Path::new("x"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let ok = Config::from_yaml(
            &format!(
                "{base}transfer:\n  allow: [192.0.2.0/24, \"2001:db8::1\"]\n  zones: [cluster.local., 10.in-addr.arpa]\n  notify: [\"192.0.2.7:5300\"]\n  tsig:\n    name: k\n    secret: \"AAAA\"\n"
            ),
            Path::new("x"),
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.transfer_zones(), ["cluster.local", "10.in-addr.arpa"]);
        for (transfer, key, why) in [
            (
                "  allow: [10.0.0.0/33]\n",
                "transfer.allow[0]",
                "prefix length",
            ),
            ("  allow: [nope]\n", "transfer.allow[0]", "not an address"),
            ("  notify: [\"x:y\"]\n", "transfer.notify[0]", ""),
            ("  zones: [in-addr.arpa]\n", "transfer.zones[0]", "too wide"),
            ("  zones: [example.org]\n", "transfer.zones[0]", "neither"),
            (
                "  zones: [10.in-addr.arpa, 10.in-addr.arpa.]\n",
                "transfer.zones[1]",
                "overlaps",
            ),
            (
                "  tsig:\n    name: k\n",
                "transfer.tsig.secret",
                "needs its secret",
            ),
            (
                "  tsig:\n    name: k\n    secret: \"not base64!\"\n",
                "transfer.tsig.secret",
                "base64",
            ),
            (
                "  tsig:\n    secret: AAAA\n    secret_file: /k\n",
                "transfer.tsig",
                "either",
            ),
            (
                "  tsig:\n    secret: AAAA\n    algorithm: hmac-md5\n",
                "transfer.tsig.algorithm",
                "not one of",
            ),
            (
                "  max_transfers: 0\n",
                "transfer.max_transfers",
                "at least 1",
            ),
            (
                "  journal_entries: 0\n",
                "transfer.journal_entries",
                "at least 1",
            ),
            (
                "  write_timeout: 0s\n",
                "transfer.write_timeout",
                "above zero",
            ),
        ] {
            let e = err(transfer);
            assert!(e.contains(key) && e.contains(why), "{transfer}: {e}");
        }
        // A reverse zone after a wider one that holds it: its names would be answered as the
        // wider zone's.
        let e = Config::from_yaml(
            "cluster:\n  reverse_zones: [in-addr.arpa, 10.in-addr.arpa]\ntransfer:\n  zones: [10.in-addr.arpa]\n",
            Path::new("x"),
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("list 10.in-addr.arpa first"), "{e}");
    }
}
