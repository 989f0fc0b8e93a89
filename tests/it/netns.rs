//! Network namespaces for the node-local tests: a "node" and a "pod" joined by a veth pair, a
//! stand-in for kube-proxy, `clusterdns` processes inside the node, and clients inside the pod.
//! Every namespace is deleted on drop (with its links, addresses and rules: they live in it),
//! and every process is killed on drop, also when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::support::{decode, query};

/// The binary under test: `CLUSTERDNS_BIN` (the bench scripts point it at a release build),
/// else the one cargo built for these tests.
pub(crate) fn bin() -> PathBuf {
    std::env::var_os("CLUSTERDNS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(crate::support::bin)
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub(crate) struct Netns {
    pub name: String,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        let name = format!(
            "cdns-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A command inside the namespace; its output, whatever its exit status.
    pub(crate) fn try_run(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// A command inside the namespace that must succeed; its stdout.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command with `input` on its stdin, inside the namespace; must succeed.
    pub(crate) fn run_stdin(&self, args: &[&str], input: &str) {
        let mut child = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `Command` whose process runs inside the namespace (it enters before exec, so its pid
    /// is the program's own: signals reach it directly).
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let f = std::fs::File::open(self.path()).unwrap();
        let mut cmd = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; the file stays open (moved into the closure)
        // until the command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Run `f` on a thread inside the namespace (sockets it opens belong to the namespace).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// `f` inside the namespace, waited for.
    pub(crate) fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Service IP of kube-dns in these tests, the link-local address, the cluster instance
/// (a kube-dns pod) on the node, and the pod's and node's veth addresses. Documentation and
/// benchmarking ranges: nothing here is reachable outside the test's namespaces.
pub(crate) const SERVICE_IP: &str = "192.0.2.10";
pub(crate) const LINK_LOCAL: &str = "169.254.20.10";
pub(crate) const KUBE_DNS_POD: &str = "198.18.0.53";
pub(crate) const NODE_VETH: &str = "198.51.100.1";
pub(crate) const POD_VETH: &str = "198.51.100.2";

/// How the test stands in for kube-proxy: the DNAT of the kube-dns Service IP, written with
/// the tool that node-local mode's `rules: auto` must then pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KubeProxy {
    IptablesNft,
    IptablesLegacy,
    Nftables,
}

/// A node and a pod namespace joined by a veth pair; a kube-dns pod address on the node.
pub(crate) struct Cluster {
    // Field order is drop order: processes die before their namespaces go.
    pub pod: Netns,
    pub node: Netns,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new(proxy: KubeProxy) -> Cluster {
        let node = Netns::new("node");
        let pod = Netns::new("pod");
        node.run(&[
            "ip", "link", "add", "vn", "type", "veth", "peer", "name", "vp", "netns", &pod.name,
        ]);
        node.run(&["ip", "addr", "add", &format!("{NODE_VETH}/24"), "dev", "vn"]);
        node.run(&["ip", "link", "set", "vn", "up"]);
        node.run(&[
            "ip",
            "addr",
            "add",
            &format!("{KUBE_DNS_POD}/32"),
            "dev",
            "lo",
        ]);
        pod.run(&["ip", "addr", "add", &format!("{POD_VETH}/24"), "dev", "vp"]);
        pod.run(&["ip", "link", "set", "vp", "up"]);
        pod.run(&["ip", "route", "add", "default", "via", NODE_VETH]);
        let dnat = |tool: &str| {
            for proto in ["udp", "tcp"] {
                node.run(&[
                    tool,
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-d",
                    SERVICE_IP,
                    "-p",
                    proto,
                    "--dport",
                    "53",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &format!("{KUBE_DNS_POD}:53"),
                ]);
            }
        };
        match proxy {
            KubeProxy::IptablesNft => dnat("iptables-nft"),
            KubeProxy::IptablesLegacy => dnat("iptables-legacy"),
            KubeProxy::Nftables => node.run_stdin(
                &["nft", "-f", "-"],
                &format!(
                    "table ip kube-proxy {{\n chain nat-prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr {SERVICE_IP} udp dport 53 dnat to {KUBE_DNS_POD}:53\n  ip daddr {SERVICE_IP} tcp dport 53 dnat to {KUBE_DNS_POD}:53\n }}\n}}\n"
                ),
            ),
        }
        Cluster {
            pod,
            node,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The kube-dns stand-in: a clusterdns serving the cluster zone on the kube-dns pod
    /// address, metrics on the node's 127.0.0.1:9153.
    /// The cluster DNS behind node-local caches, which forward from the node's address: a
    /// cluster lists its nodes in `limits.exempt` (docs/install.md); here every address is one.
    pub(crate) fn start_kube_dns(&self) -> Proc {
        let objects = self.dir.path().join("objects.yaml");
        std::fs::write(&objects, OBJECTS).unwrap();
        let cfg = format!(
            "listen: [\"{KUBE_DNS_POD}:53\"]\nsource:\n  file: {}\nforward:\n  enabled: false\nmetrics:\n  listen: \"127.0.0.1:9153\"\nhealth:\n  listen: \"127.0.0.1:8080\"\n  lameduck: 0s\nready:\n  listen: \"127.0.0.1:8181\"\nserver:\n  udp_workers: 1\n{EXEMPT_NODES}",
            objects.display()
        );
        let p = Proc::start(&self.node, &self.dir.path().join("kube-dns"), &cfg);
        p.wait_line("listening dns=");
        let ready: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.node.within(move || http_get(ready, "/ready")) != "OK" {
            assert!(
                Instant::now() < deadline,
                "kube-dns never ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// A node-local instance: its own folder (probe sockets), the node's shared lock file and
    /// metrics port. `extra` is appended to the `nodelocal:` section.
    pub(crate) fn start_node_local(&self, name: &str, link: &str, extra: &str) -> Proc {
        let dir = self.dir.path().join(name);
        let cfg = node_local_config(&dir, &self.dir.path().join("lock"), link, extra);
        Proc::start(&self.node, &dir, &cfg)
    }

    /// Ask `server` from inside the pod, over UDP: the A records, or None without a reply.
    pub(crate) fn ask(&self, server: &str, name: &str) -> Option<Vec<IpAddr>> {
        let server: SocketAddr = format!("{server}:53").parse().unwrap();
        let name = name.to_string();
        self.pod.within(move || ask_a(server, &name))
    }

    /// Sum of `coredns_dns_requests_total` at `addr` (an endpoint on the node's loopback), once
    /// settled: a request is counted when its reply has been sent, so right after a reply the
    /// count may still be one short. Read until two reads 50 ms apart agree (at most 2 s).
    pub(crate) fn requests(&self, addr: &str) -> u64 {
        let read = || sum_family(&self.scrape(addr), "coredns_dns_requests_total");
        let mut last = read();
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(50));
            let now = read();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// `coredns_dns_requests_total` at `addr` for one transport (`udp` or `tcp`).
    pub(crate) fn requests_over(&self, addr: &str, proto: &str) -> u64 {
        let label = format!("proto=\"{proto}\"");
        let text = self.scrape(addr);
        let lines: String = text
            .lines()
            .filter(|l| l.contains(&label))
            .map(|l| format!("{l}\n"))
            .collect();
        sum_family(&lines, "coredns_dns_requests_total")
    }

    pub(crate) fn scrape(&self, addr: &str) -> String {
        let addr: SocketAddr = addr.parse().unwrap();
        self.node.within(move || http_get(addr, "/metrics"))
    }
}

/// The cluster objects kube-dns serves.
pub(crate) const OBJECTS: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: default}}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: web, namespace: default}\n  spec: {clusterIP: 10.96.7.7}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: db, namespace: default}\n  spec: {clusterIP: 10.96.8.8}\n";
pub(crate) const WEB: &str = "web.default.svc.cluster.local";
pub(crate) const WEB_IP: &str = "10.96.7.7";

/// `limits.exempt` for every address: the kube-dns side of a node-local setup (see
/// [`Cluster::start_kube_dns`]).
const EXEMPT_NODES: &str = "limits:\n  exempt: [\"0.0.0.0/0\"]\n";

/// A node-local config: both addresses; as NodeLocal DNSCache's Corefile (and
/// manifests/node-local), the cluster and reverse zones forwarded to kube-dns over TCP
/// (`force_tcp` for those domains only; the cluster zone with its own cache, `success 9984 30`,
/// `denial 9984 5`), everything else over UDP — here to the kube-dns pod too, never this
/// machine's resolv.conf; probes on unix sockets in `dir`, metrics on the node's shared port.
pub(crate) fn node_local_config(dir: &Path, lock: &Path, link: &str, extra: &str) -> String {
    let kube_dns_over_tcp = format!(
        "  domains:\n    cluster.local:\n      upstreams: [\"{KUBE_DNS_POD}:53\"]\n      force_tcp: true\n      cache:\n        max_ttl: 30\n        max_negative_ttl: 5\n        success_capacity: 9984\n        denial_capacity: 9984\n    in-addr.arpa:\n      upstreams: [\"{KUBE_DNS_POD}:53\"]\n      force_tcp: true\n    ip6.arpa:\n      upstreams: [\"{KUBE_DNS_POD}:53\"]\n      force_tcp: true\n"
    );
    format!(
        "cluster:\n  enabled: false\nforward:\n  upstreams: [\"{KUBE_DNS_POD}:53\"]\n{kube_dns_over_tcp}  timeout: 1s\ncache:\n  enabled: true\nmetrics:\n  listen: \"127.0.0.1:9253\"\nhealth:\n  listen: \"unix:{d}/health.sock\"\n  lameduck: 500ms\n  drain_timeout: 2s\nready:\n  listen: \"unix:{d}/ready.sock\"\nserver:\n  udp_workers: 2\nnodelocal:\n  enabled: true\n  addresses: [\"{LINK_LOCAL}\", \"{SERVICE_IP}\"]\n  link_kind: {link}\n  lock_file: \"{l}\"\n{extra}",
        d = dir.display(),
        l = lock.display(),
    )
}

/// A `clusterdns serve` inside a namespace; killed on drop.
pub(crate) struct Proc {
    pub child: Child,
    pub dir: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) fn start(ns: &Netns, dir: &Path, config: &str) -> Proc {
        Self::start_env(ns, dir, config, &[])
    }

    /// As [`Proc::start`], with extra environment variables.
    pub(crate) fn start_env(ns: &Netns, dir: &Path, config: &str, env: &[(&str, &str)]) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("clusterdns.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = ns.command(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env(
                "CLUSTERDNS_LOG",
                std::env::var("CLUSTERDNS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start clusterdns");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CLUSTERDNS_TEST_ECHO").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            dir: dir.to_path_buf(),
            lines: rx,
            seen: Default::default(),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (bounded) for a log line containing `needle`; panics with the log if none comes.
    pub(crate) fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(l) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.borrow_mut().push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!(
            "no line with {needle:?} in:\n{}",
            self.seen.borrow().join("\n")
        );
    }

    /// Everything logged so far.
    pub(crate) fn log(&self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.borrow_mut().push(l);
        }
        self.seen.borrow().join("\n")
    }

    /// `clusterdns probe` against this instance's readiness socket (the DaemonSet's exec
    /// probe): whether it answered 200.
    pub(crate) fn probe_ready(&self) -> bool {
        Command::new(bin())
            .args(["probe", "--path", "/ready", "--timeout", "2"])
            .arg(format!("unix:{}", self.dir.join("ready.sock").display()))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Wait (bounded) until the readiness probe passes.
    pub(crate) fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.probe_ready() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("exited early ({st}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("never ready:\n{}", self.log());
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then wait (bounded) for the exit; its status.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One UDP A query; the addresses of a NOERROR answer, None without a reply (2 s).
pub(crate) fn ask_a(server: SocketAddr, name: &str) -> Option<Vec<IpAddr>> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&query(name, 1, 0x4242, None), server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    let m = decode(&buf[..n]);
    Some(
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
    )
}

/// A plain HTTP GET; the body (empty when nothing answers).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Sum of every series of a counter family in a Prometheus exposition.
pub(crate) fn sum_family(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadReport {
    pub sent: usize,
    pub answered: usize,
    /// Answers that were not NOERROR with an address.
    pub bad: usize,
    /// Answered later than 100 ms and 1 s after being sent.
    pub late_100ms: usize,
    pub late_1s: usize,
    /// The longest stretch of sent queries with no answer at all, in queries (at 1 ms each,
    /// milliseconds).
    pub longest_unanswered_run: usize,
    /// When (since the start) each query was sent, and whether it was answered.
    pub timeline: Vec<(Duration, bool)>,
}

impl LoadReport {
    pub(crate) fn lost(&self) -> usize {
        self.sent - self.answered
    }
}

/// A client in the pod sending `qps` UDP queries a second to `server:53` from 16 sockets
/// (16 source ports, so the kernel spreads them over every listening socket) until `stop`;
/// each query is sent once, never retried. Names rotate over `names`.
pub(crate) fn load(
    pod: &Netns,
    server: &str,
    names: &'static [&'static str],
    qps: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<LoadReport> {
    let server: SocketAddr = format!("{server}:53").parse().unwrap();
    pod.spawn(move || {
        const SOCKETS: usize = 16;
        let socks: Vec<UdpSocket> = (0..SOCKETS)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let queries: Vec<Vec<u8>> = names.iter().map(|n| query(n, 1, 0, None)).collect();
        let interval = Duration::from_secs(1) / qps;
        let start = Instant::now();
        let mut sent_at: Vec<Instant> = Vec::new();
        let mut answered_at: Vec<Option<Instant>> = Vec::new();
        let mut bad = 0usize;
        let mut buf = [0u8; 4096];
        let mut stopping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if stopping.is_none() && stop.load(Ordering::Acquire) {
                stopping = Some(now);
            }
            if let Some(t) = stopping
                && (now > t + Duration::from_secs(2) || answered_at.iter().all(|a| a.is_some()))
            {
                break;
            }
            let seq = sent_at.len();
            if stopping.is_none() && now >= start + interval * seq as u32 && seq < 65536 {
                let mut q = queries[seq % queries.len()].clone();
                q[0..2].copy_from_slice(&((seq / SOCKETS) as u16).to_be_bytes());
                // A send error (no route for an instant) is a query not answered.
                let _ = socks[seq % SOCKETS].send_to(&q, server);
                sent_at.push(Instant::now());
                answered_at.push(None);
            }
            for (i, s) in socks.iter().enumerate() {
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    if n < 12 {
                        continue;
                    }
                    let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    let seq = id * SOCKETS + i;
                    if seq < answered_at.len() && answered_at[seq].is_none() {
                        answered_at[seq] = Some(Instant::now());
                        let rcode = buf[3] & 0x0f;
                        let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                        if rcode != 0 || ancount == 0 {
                            bad += 1;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut r = LoadReport {
            sent: sent_at.len(),
            bad,
            ..Default::default()
        };
        let mut run = 0;
        for (sent, answered) in sent_at.iter().zip(&answered_at) {
            r.timeline.push((*sent - start, answered.is_some()));
            match answered {
                Some(a) => {
                    r.answered += 1;
                    let took = *a - *sent;
                    r.late_100ms += (took > Duration::from_millis(100)) as usize;
                    r.late_1s += (took > Duration::from_secs(1)) as usize;
                    run = 0;
                }
                None => {
                    run += 1;
                    r.longest_unanswered_run = r.longest_unanswered_run.max(run);
                }
            }
        }
        r
    })
}
