//! Starting the real `clusterdns` binary on ephemeral ports, and asking it with real clients
//! (`dig`, `kdig`, `nslookup`) and with hickory's message parser.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

/// A running `clusterdns serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub dns: SocketAddr,
    pub lines: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
    /// Every listen line the server printed (`metrics=...`, `health=...`, `ready=...`).
    pub listens: Vec<(String, SocketAddr)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clusterdns"))
}

/// Fail loudly when a client tool is missing: CI installs them (`.ci/install`).
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run .ci/install (apt-get install dnsutils knot-dnsutils)"
    );
}

impl Server {
    /// Start with a config text (YAML) written into a temp dir; extra args appended. The
    /// config should listen on 127.0.0.1:0 — the real port is read from the server's output.
    pub fn start(config_yaml: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("clusterdns.yaml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--config").arg(&cfg).args(args);
        Self::spawn(cmd, dir)
    }

    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.env(
            "CLUSTERDNS_LOG",
            std::env::var("CLUSTERDNS_LOG").unwrap_or_else(|_| "info,hickory_server=warn".into()),
        );
        let mut child = cmd.spawn().expect("start clusterdns");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CLUSTERDNS_TEST_ECHO").is_some() {
                    eprintln!("[server] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut listens = Vec::new();
        let mut dns = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("clusterdns: listening ")
                        && let Some((k, v)) = rest.split_once('=')
                        && let Ok(a) = v.trim().parse::<SocketAddr>()
                    {
                        listens.push((k.to_string(), a));
                        if k == "dns" && dns.is_none() {
                            dns = Some(a);
                        }
                        if k == "ready" || (k == "dns" && !line.contains("more")) {
                            // keep reading briefly for the other endpoints
                        }
                    }
                    if line.starts_with("clusterdns: ")
                        && !line.starts_with("clusterdns: listening")
                    {
                        panic!("server failed: {line}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if dns.is_some() {
                        break;
                    }
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("server exited early: {st}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let dns = dns.expect("server printed its DNS address");
        Server {
            child,
            dns,
            lines: rx,
            dir,
            listens,
        }
    }

    pub fn listen(&self, what: &str) -> Option<SocketAddr> {
        self.listens
            .iter()
            .find(|(k, _)| k == what)
            .map(|(_, a)| *a)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `dig` against this server; returns stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        dig_at(self.dns, args)
    }

    /// Ask over UDP with a raw message; the reply decoded by hickory.
    pub fn ask_raw(&self, msg: &[u8]) -> Vec<u8> {
        udp_exchange(self.dns, msg).expect("reply")
    }

    /// Wait until `cond` holds for a `dig +short` answer (bounded).
    pub fn wait_for(
        &self,
        args: &[&str],
        cond: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.dig(args);
            if cond(&out) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn dig_at(addr: SocketAddr, args: &[&str]) -> String {
    require("dig");
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn udp_exchange(addr: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(msg, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn tcp_exchange(addr: SocketAddr, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for m in msgs {
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(m);
        s.write_all(&framed).unwrap();
    }
    let mut out = Vec::new();
    for _ in msgs {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        out.push(buf);
    }
    out
}

pub fn decode(b: &[u8]) -> Message {
    Message::from_vec(b).expect("decodable reply")
}

/// A query message in wire form.
pub fn query(name: &str, qtype: u16, id: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        edns.is_some() as u8,
    ];
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some(sz) = edns {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&sz.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

/// The repository's folder (for config/ and fixtures).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config for tests: DNS on an ephemeral port, HTTP endpoints on ephemeral ports, no
/// forwarding unless the test adds upstreams.
pub fn base_config(objects: &Path, extra: &str) -> String {
    // Never forward to this machine's resolv.conf (not on loopback): forwarding is off unless
    // the test names its own loopback upstreams.
    let extra = if extra.contains("forward:") {
        extra.to_string()
    } else {
        format!("forward:\n  enabled: false\n{extra}")
    };
    format!(
        "listen: [\"127.0.0.1:0\"]\nsource:\n  file: {}\nmetrics:\n  listen: \"127.0.0.1:0\"\nhealth:\n  listen: \"127.0.0.1:0\"\n  lameduck: 1s\nready:\n  listen: \"127.0.0.1:0\"\n{}",
        objects.display(),
        extra
    )
}
