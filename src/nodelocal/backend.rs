//! Writing the rules with the tool the node's kube-proxy uses: `iptables` (legacy or nft
//! flavour) or `nft`. The tools ship in the image (see the Dockerfile); each call is one
//! short process, as node-cache's `utiliptables` does it.
//!
//! `rules: auto` decides once at start, in this order:
//! 1. `nft list table ip kube-proxy` succeeds: kube-proxy runs in nftables mode, so the rules
//!    go into an nft table of our own ([`Backend::Nftables`]).
//! 2. The kubelet's `KUBE-IPTABLES-HINT` chain (mangle table) shows which iptables flavour the
//!    node uses: nft first, then legacy.
//! 3. Otherwise the flavour that holds more rules, nft on a tie — Kubernetes'
//!    `iptables-wrapper` rule, which kube-proxy's own image follows.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::config::RulesBackend;

use super::rules::{NFT_TABLE, Rule, nft_script};

/// A tool to call and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `iptables`-style tools: (IPv4 tool, IPv6 tool).
    Iptables(&'static str, &'static str),
    Nftables,
}

/// A rule that could not be checked, written or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RulesError {
    #[error("{tool}: another program holds the xtables lock: {message}")]
    Lock { tool: String, message: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args}: {message}")]
    Failed {
        tool: String,
        args: String,
        message: String,
    },
}

impl RulesError {
    /// node-cache's `errortype` label.
    pub(crate) fn errortype(&self) -> &'static str {
        match self {
            RulesError::Lock { .. } => "iptables_lock",
            _ => "iptables",
        }
    }
}

/// What one tool run said.
struct Ran {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(tool: &str, args: &[String], stdin: Option<&str>) -> Result<Ran, RulesError> {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn = |source| RulesError::Spawn {
        tool: tool.to_string(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    Ok(Ran {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn failed(tool: &str, args: &[String], ran: &Ran) -> RulesError {
    if ran.stderr.contains("xtables lock") {
        return RulesError::Lock {
            tool: tool.into(),
            message: ran.stderr.clone(),
        };
    }
    RulesError::Failed {
        tool: tool.into(),
        args: args.join(" "),
        message: if ran.stderr.is_empty() {
            format!("exit code {:?}", ran.code)
        } else {
            ran.stderr.clone()
        },
    }
}

fn tool_runs(tool: &str, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match run(tool, &args, None) {
        Ok(r) if r.ok => Some(r.stdout),
        _ => None,
    }
}

const LEGACY: Backend = Backend::Iptables("iptables-legacy", "ip6tables-legacy");
const NFT: Backend = Backend::Iptables("iptables-nft", "ip6tables-nft");
const PLAIN: Backend = Backend::Iptables("iptables", "ip6tables");

/// The backend for `choice`; `None` for `rules: none`.
pub(crate) fn choose(choice: RulesBackend) -> Option<Backend> {
    match choice {
        RulesBackend::None => None,
        RulesBackend::Iptables => Some(PLAIN),
        RulesBackend::IptablesLegacy => Some(LEGACY),
        RulesBackend::IptablesNft => Some(NFT),
        RulesBackend::Nftables => Some(Backend::Nftables),
        RulesBackend::Auto => Some(detect()),
    }
}

fn detect() -> Backend {
    if tool_runs("nft", &["list", "table", "ip", "kube-proxy"]).is_some() {
        return Backend::Nftables;
    }
    let nft = tool_runs("iptables-nft-save", &[]);
    let legacy = tool_runs("iptables-legacy-save", &[]);
    let hint = |save: &Option<String>| {
        save.as_deref()
            .is_some_and(|s| s.contains(":KUBE-IPTABLES-HINT"))
    };
    let count = |save: &Option<String>| {
        save.as_deref()
            .map(|s| s.lines().filter(|l| l.starts_with("-A")).count())
    };
    match (&nft, &legacy) {
        (None, None) => PLAIN,
        (Some(_), None) => NFT,
        (None, Some(_)) => LEGACY,
        _ if hint(&nft) => NFT,
        _ if hint(&legacy) => LEGACY,
        _ if count(&legacy) > count(&nft) => LEGACY,
        _ => NFT,
    }
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Iptables(v4, _) => v4,
            Backend::Nftables => "nft",
        }
    }

    /// Make every rule present. Returns how many were (re)added, and the failures (one per
    /// rule, as node-cache counts them).
    pub(crate) fn ensure(&self, rules: &[Rule]) -> (usize, Vec<RulesError>) {
        match self {
            Backend::Iptables(v4, v6) => {
                let mut added = 0;
                let mut errors = Vec::new();
                for r in rules {
                    let tool = if r.ip.is_ipv4() { v4 } else { v6 };
                    match ensure_iptables(tool, r) {
                        Ok(true) => added += 1,
                        Ok(false) => {}
                        Err(e) => errors.push(e),
                    }
                }
                (added, errors)
            }
            Backend::Nftables => match nft_present(rules) {
                Ok(true) => (0, vec![]),
                Ok(false) => match nft_apply(&nft_script(rules)) {
                    Ok(()) => (rules.len(), vec![]),
                    Err(e) => (0, vec![e]),
                },
                Err(e) => (0, vec![e]),
            },
        }
    }

    /// Remove every rule (all copies, as node-cache's teardown loops until none is left).
    pub(crate) fn remove(&self, rules: &[Rule]) -> Vec<RulesError> {
        match self {
            Backend::Iptables(v4, v6) => {
                let mut errors = Vec::new();
                for r in rules {
                    let tool = if r.ip.is_ipv4() { v4 } else { v6 };
                    if let Err(e) = remove_iptables(tool, r) {
                        errors.push(e);
                    }
                }
                errors
            }
            Backend::Nftables => {
                let args = vec![
                    "delete".to_string(),
                    "table".into(),
                    "inet".into(),
                    NFT_TABLE.into(),
                ];
                match run("nft", &args, None) {
                    Ok(r) if r.ok || r.stderr.contains("No such file") => vec![],
                    Ok(r) => vec![failed("nft", &args, &r)],
                    Err(e) => vec![e],
                }
            }
        }
    }
}

/// `-w 5`: wait up to five seconds for the xtables lock (legacy iptables) before failing with
/// the lock error that node-cache counts as `iptables_lock`.
fn iptables_cmd(r: &Rule, op: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), r.table_name().into()];
    a.extend(op.iter().map(|s| s.to_string()));
    a.extend(r.iptables_args());
    a
}

/// `-C`, then `-I CHAIN 1` when missing (node-cache's `EnsureRule(Prepend, …)`). Ok(true):
/// the rule was added.
fn ensure_iptables(tool: &str, r: &Rule) -> Result<bool, RulesError> {
    let check = iptables_cmd(r, &["-C", r.chain_name()]);
    let ran = run(tool, &check, None)?;
    if ran.ok {
        return Ok(false);
    }
    // Exit code 1 is "no such rule"; anything else (a lock, a missing table) is an error.
    if ran.code != Some(1) || ran.stderr.contains("xtables lock") {
        return Err(failed(tool, &check, &ran));
    }
    let insert = iptables_cmd(r, &["-I", r.chain_name(), "1"]);
    let ran = run(tool, &insert, None)?;
    if ran.ok {
        Ok(true)
    } else {
        Err(failed(tool, &insert, &ran))
    }
}

fn remove_iptables(tool: &str, r: &Rule) -> Result<(), RulesError> {
    let delete = iptables_cmd(r, &["-D", r.chain_name()]);
    // Bounded: a rule inserted twice (by two instances racing) goes too.
    for _ in 0..16 {
        let ran = run(tool, &delete, None)?;
        if ran.ok {
            continue;
        }
        if ran.code == Some(1) && !ran.stderr.contains("xtables lock") {
            return Ok(());
        }
        return Err(failed(tool, &delete, &ran));
    }
    Ok(())
}

/// The table holds exactly our four chains and as many rules as we write.
fn nft_present(rules: &[Rule]) -> Result<bool, RulesError> {
    let args: Vec<String> = ["-j", "list", "table", "inet", NFT_TABLE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ran = run("nft", &args, None)?;
    if !ran.ok {
        if ran.stderr.contains("No such file") {
            return Ok(false);
        }
        return Err(failed("nft", &args, &ran));
    }
    let v: serde_json::Value =
        serde_json::from_str(&ran.stdout).map_err(|e| RulesError::Failed {
            tool: "nft".into(),
            args: args.join(" "),
            message: format!("unreadable JSON: {e}"),
        })?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let count = |key: &str| items.iter().filter(|i| i.get(key).is_some()).count();
    Ok(count("chain") == 4 && count("rule") == rules.len())
}

fn nft_apply(script: &str) -> Result<(), RulesError> {
    let args = vec!["-f".to_string(), "-".into()];
    let ran = run("nft", &args, Some(script))?;
    if ran.ok {
        Ok(())
    } else {
        Err(failed("nft", &args, &ran))
    }
}
