//! Real secondaries for the zone transfer tests and benchmark: Knot DNS (`knotd`) and BIND 9
//! (`named`), each with a config and folder of its own on a loopback port, loading zones from a
//! primary by AXFR and following it by NOTIFY and IXFR (TSIG-signed when a key is given). Each
//! is killed on drop: exactly the process started. Only std here, so a bench can include this
//! file as it is (`#[path]`).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Knot,
    Bind,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::Knot => "knot",
            Flavor::Bind => "bind",
        }
    }
}

/// What the secondary follows.
pub(crate) struct Follow<'a> {
    pub primary: SocketAddr,
    /// Zones to take from the primary (dotted, no final dot).
    pub zones: &'a [&'a str],
    /// A TSIG key (name, base64 secret, hmac-sha256) for the transfers, the refresh queries and
    /// NOTIFY.
    pub key: Option<(&'a str, &'a str)>,
}

/// A running secondary; killed on drop.
pub(crate) struct Secondary {
    child: Child,
    pub flavor: Flavor,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secondary {
    /// Start `bin` (`knotd` or `named`) on 127.0.0.1:`port`, following `f`; returns once it
    /// answers queries (its zones may still be loading). It allows transfers out to loopback
    /// (so a test can compare its copy whole) and accepts NOTIFY from the primary's address.
    pub(crate) fn start(flavor: Flavor, bin: &Path, port: u16, f: &Follow<'_>) -> Secondary {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let conf = match flavor {
            Flavor::Knot => knot_conf(&d, port, f),
            Flavor::Bind => bind_conf(&d, port, f),
        };
        let conf_path = dir.path().join(match flavor {
            Flavor::Knot => "knot.conf",
            Flavor::Bind => "named.conf",
        });
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = Command::new(bin);
        match flavor {
            Flavor::Knot => {
                cmd.arg("-c").arg(&conf_path);
            }
            // Foreground, log to stderr, one worker, IPv4 only; as whoever runs the test.
            Flavor::Bind => {
                cmd.args(["-g", "-4", "-n", "1", "-c"]).arg(&conf_path);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let s = Secondary {
            child,
            flavor,
            addr,
            dir,
        };
        let up = wait(Duration::from_secs(15), || {
            soa_serial_or_rcode(addr, f.zones[0]).is_some()
        });
        assert!(
            up,
            "{} did not start answering on {addr}:\n{}",
            flavor.name(),
            s.log()
        );
        s
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The serial of `zone` it serves now, None while it has none (SERVFAIL, REFUSED).
    pub(crate) fn serial(&self, zone: &str) -> Option<u32> {
        soa_serial(self.addr, zone)
    }
}

fn knot_conf(d: &str, port: u16, f: &Follow<'_>) -> String {
    let ip = f.primary.ip();
    let mut c = vec![
        "server:".to_string(),
        format!("    listen: 127.0.0.1@{port}"),
        format!("    rundir: {d}"),
        "database:".into(),
        format!("    storage: {d}"),
        "log:".into(),
        "  - target: stderr".into(),
        "    any: info".into(),
    ];
    let key_ref = match f.key {
        Some((name, secret)) => {
            c.extend([
                "key:".into(),
                format!("  - id: {name}"),
                "    algorithm: hmac-sha256".into(),
                format!("    secret: {secret}"),
            ]);
            Some(format!("    key: {name}"))
        }
        None => None,
    };
    c.extend([
        "remote:".into(),
        "  - id: primary".into(),
        format!("    address: {ip}@{}", f.primary.port()),
    ]);
    c.extend(key_ref.clone());
    c.extend([
        "acl:".into(),
        "  - id: from_primary".into(),
        format!("    address: {ip}"),
        "    action: notify".into(),
    ]);
    c.extend(key_ref);
    c.extend([
        "  - id: to_tests".into(),
        "    address: 127.0.0.0/8".into(),
        "    action: transfer".into(),
        "template:".into(),
        "  - id: default".into(),
        format!("    storage: {d}"),
        "    zonefile-sync: -1".into(),
        "    zonefile-load: none".into(),
        "    journal-content: none".into(),
        "    master: primary".into(),
        "    acl: [from_primary, to_tests]".into(),
        "zone:".into(),
    ]);
    for z in f.zones {
        c.push(format!("  - domain: {z}"));
    }
    c.join("\n") + "\n"
}

fn bind_conf(d: &str, port: u16, f: &Follow<'_>) -> String {
    let (key, key_ref) = match f.key {
        Some((name, secret)) => (
            format!("key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
            format!(" key \"{name}\""),
        ),
        None => (String::new(), String::new()),
    };
    // `serial-query-rate` (default 20 a second) sets the tick of BIND's refresh rate limiter:
    // at 20 a refresh asked for by a NOTIFY waits for the next 500 ms tick; at 1000, 10 ms.
    let mut c = format!(
        "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  notify no;\n  dnssec-validation no;\n  allow-query {{ any; }};\n  allow-transfer {{ 127.0.0.0/8; }};\n  serial-query-rate 1000;\n}};\ncontrols {{ }};\n{key}"
    );
    for z in f.zones {
        c.push_str(&format!(
            "zone \"{z}\" {{\n  type secondary;\n  primaries port {pp} {{ {ip}{key_ref}; }};\n  allow-notify {{ {ip}; }};\n}};\n",
            pp = f.primary.port(),
            ip = f.primary.ip(),
        ));
    }
    c
}

fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// An SOA query for `zone` (wire form built here: std only).
fn soa_query(zone: &str, id: u16) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in zone.trim_end_matches('.').split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 6, 0, 1]);
    m
}

/// The server's answer to an SOA query for `zone`: Ok(serial) when it answers with the SOA,
/// Err(rcode) otherwise; None when it does not answer.
fn soa_serial_or_rcode(server: SocketAddr, zone: &str) -> Option<Result<u32, u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let q = soa_query(zone, id);
    sock.send_to(&q, server).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let m = &buf[..n];
    if n < 12 || m[0..2] != q[0..2] {
        return None;
    }
    let rcode = m[3] & 0x0F;
    let an = u16::from_be_bytes([m[6], m[7]]);
    if rcode != 0 || an == 0 {
        return Some(Err(rcode));
    }
    // The answer's first record: owner (a pointer or labels), type, class, TTL, RDLENGTH, then
    // MNAME and RNAME, then the serial.
    let mut p = q.len();
    p = skip_name(m, p)?;
    p += 10;
    p = skip_name(m, p)?;
    p = skip_name(m, p)?;
    let s = m.get(p..p + 4)?;
    Some(Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])))
}

fn skip_name(m: &[u8], mut p: usize) -> Option<usize> {
    loop {
        let len = *m.get(p)? as usize;
        if len == 0 {
            return Some(p + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(p + 2);
        }
        p += 1 + len;
    }
}

/// The serial a server gives for `zone` (None: no SOA answer).
pub(crate) fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    soa_serial_or_rcode(server, zone).and_then(Result::ok)
}

/// One record as `dig` prints it, normalised for comparison: lowercase, single spaces.
fn norm(line: &str) -> String {
    line.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The records of `zones` by AXFR with one `dig` run (`key`: name and base64 secret,
/// hmac-sha256), per zone normalised and each once (the SOA comes first and last). Panics when
/// a transfer fails or is empty.
pub(crate) fn dig_axfr(
    dig: &Path,
    server: SocketAddr,
    zones: &[&str],
    key: Option<(&str, &str)>,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut cmd = Command::new(dig);
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=5", "+tries=1"])
        .args(["+noall", "+answer", "+nocomments"]);
    if let Some((name, secret)) = key {
        cmd.arg("-y").arg(format!("hmac-sha256:{name}:{secret}"));
    }
    for z in zones {
        cmd.arg(z).arg("AXFR");
    }
    let out = cmd.output().expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Transfer failed") && !text.contains("; Couldn't"),
        "AXFR of {zones:?} from {server} failed:\n{text}"
    );
    let mut by_zone: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = zones
        .iter()
        .map(|z| (z.to_string(), Default::default()))
        .collect();
    for r in text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(norm)
        .filter(|l| l.split(' ').nth(3) != Some("tsig"))
    {
        let owner = r.split(' ').next().unwrap_or("").trim_end_matches('.');
        let zone = zones
            .iter()
            .filter(|z| owner == **z || owner.ends_with(&format!(".{z}")))
            .max_by_key(|z| z.len())
            .unwrap_or_else(|| panic!("{r} is in none of {zones:?}"));
        by_zone.get_mut(*zone).unwrap().insert(r);
    }
    for (z, set) in &by_zone {
        assert!(!set.is_empty(), "empty AXFR of {z} from {server}:\n{text}");
    }
    by_zone
}

/// `(name, type)` of each record.
pub(crate) fn names_and_types(
    records: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<(String, String)> {
    records
        .iter()
        .filter_map(|r| {
            let mut f = r.split(' ');
            let name = f.next()?.to_string();
            let t = f.nth(2)?.to_uppercase();
            Some((name, t))
        })
        .collect()
}

/// The answers of `server` to `(name, type)` questions, asked with one `dig` run per few
/// hundred: per question its status (`NOERROR`, ...) and its answer section, normalised and
/// sorted. A question whose reply did not come (or was dig's own query: dig picks random
/// source ports, and one equal to the server's port on loopback sends the query to itself) is
/// asked again on its own.
pub(crate) fn dig_answers(
    dig: &Path,
    server: SocketAddr,
    questions: &[(String, String)],
) -> std::collections::BTreeMap<(String, String), (String, Vec<String>)> {
    let mut out = std::collections::BTreeMap::new();
    for chunk in questions.chunks(400) {
        out.extend(dig_run(dig, server, chunk));
    }
    for _ in 0..3 {
        let missing: Vec<(String, String)> = questions
            .iter()
            .filter(|q| !out.contains_key(*q))
            .cloned()
            .collect();
        for q in missing {
            out.extend(dig_run(dig, server, std::slice::from_ref(&q)));
        }
    }
    out
}

fn dig_run(
    dig: &Path,
    server: SocketAddr,
    questions: &[(String, String)],
) -> std::collections::BTreeMap<(String, String), (String, Vec<String>)> {
    let mut cmd = Command::new(dig);
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=2"])
        .args([
            "+noall",
            "+comments",
            "+question",
            "+answer",
            "+norecurse",
            "+nocookie",
        ]);
    for (name, t) in questions {
        cmd.arg(name).arg(t);
    }
    let text = String::from_utf8_lossy(&cmd.output().expect("run dig").stdout).into_owned();
    parse_dig(&text)
}

/// `dig +comments +question +answer` output of several questions: per question its status
/// and answer records. Replies dig warns about (its own query coming back, another ID) are
/// left out.
pub(crate) fn parse_dig(
    text: &str,
) -> std::collections::BTreeMap<(String, String), (String, Vec<String>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut status = String::new();
    let mut question: Option<(String, String)> = None;
    let mut in_question = false;
    let mut bogus = false;
    let mut next_bogus = false;
    let mut answers: Vec<String> = Vec::new();
    let mut flush =
        |q: &mut Option<(String, String)>, status: &str, bogus: bool, answers: &mut Vec<String>| {
            if let Some(q) = q.take()
                && !bogus
            {
                answers.sort();
                answers.dedup();
                out.insert(q, (status.to_string(), std::mem::take(answers)));
            }
            answers.clear();
        };
    for line in text.lines() {
        if line.starts_with(";; Got answer:") {
            flush(&mut question, &status, bogus, &mut answers);
            // dig warns about a reply before printing it.
            bogus = std::mem::take(&mut next_bogus);
        } else if line.contains("query response not set") || line.contains("ID mismatch") {
            next_bogus = true;
        } else if line.starts_with(";; ->>HEADER<<-") {
            status = line
                .split("status: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("")
                .to_string();
        } else if line.starts_with(";; QUESTION SECTION:") {
            in_question = true;
        } else if in_question && line.starts_with(';') && !line.starts_with(";;") {
            let f: Vec<&str> = line[1..].split_whitespace().collect();
            if f.len() >= 3 {
                question = Some((f[0].to_ascii_lowercase(), f[2].to_uppercase()));
            }
            in_question = false;
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            answers.push(norm(line));
        }
    }
    flush(&mut question, &status, bogus, &mut answers);
    out
}
