//! A real Prometheus server (Debian package `prometheus`) on loopback with a temporary storage
//! directory, scraping the targets it is given as `job="kube-dns"`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, get, require, urlencode, wait_for};

/// A Prometheus server scraping `targets` every second; killed on drop.
pub(crate) struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    pub(crate) fn start(targets: &[SocketAddr]) -> Prometheus {
        let bin = require("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: kube-dns\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, config).unwrap();
        let mut last_log = String::new();
        // The port was free a moment ago; on a lost race, try another.
        for attempt in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", cfg_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start prometheus");
            let ready = wait_for(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || get(addr, "/-/ready", &[]).is_ok_and(|r| r.status == 200)
            }) && child.try_wait().is_ok_and(|s| s.is_none());
            if ready {
                return Prometheus {
                    child,
                    addr,
                    _dir: dir,
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("prometheus did not start:\n{last_log}");
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Evaluate `expr` now (instant query); the vector result as (labels, value) pairs.
    pub(crate) fn query(
        &self,
        expr: &str,
    ) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let r = get(
            self.addr,
            &format!("/api/v1/query?query={}", urlencode(expr)),
            &[],
        )
        .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("query {expr}: {e}: {}", r.text()));
        assert_eq!(v["status"], "success", "query {expr}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {expr}: not a vector: {v}"))
            .iter()
            .map(|s| {
                let labels = s["metric"].as_object().cloned().unwrap_or_default();
                let val: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels, val)
            })
            .collect()
    }

    /// How many scrapes of the targets Prometheus holds from the last five minutes.
    pub(crate) fn scrapes(&self) -> f64 {
        self.query(r#"sum(count_over_time(up{job="kube-dns"}[5m]))"#)
            .first()
            .map_or(0.0, |(_, v)| *v)
    }

    /// Waits until Prometheus has scraped once more than it had (bounded: 10 s).
    pub(crate) fn next_scrape(&self) {
        let before = self.scrapes();
        assert!(
            wait_for(Duration::from_secs(10), || self.scrapes() > before),
            "no scrape in 10 s; prometheus log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
