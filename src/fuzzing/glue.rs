//! The one place that knows how today's query path and resolver are called. When the wire
//! layer changes shape, only this file changes: the targets and the oracle speak in bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::cluster::{ClusterEvent, Object};
use crate::config::{ClusterConfig, Config, HostsConfig};
use crate::observe::Proto;
use crate::ops::metrics::Metrics;
use crate::resolve::Resolver;
use crate::server::shape::Shaper;
use crate::server::{Engine, Local, Upstream};
use crate::zone::build::{ZoneBuilder, required_kinds};

/// The UDP payload limit of the servers built here (the config's default).
pub(super) const MAX_UDP: u16 = 1232;

/// What the query path does with one message.
pub(super) enum Outcome {
    /// A complete reply, written synchronously.
    Reply(Vec<u8>),
    /// No reply at all (not a query).
    Silent,
    /// The reply would come from an upstream (not awaited here).
    Forwarded,
}

/// A query path: the cluster zone (`cluster` settings) from `objects`, and, when `hosts` is given, a resolver that
/// answers from that hosts file and an empty cache and would forward to an upstream that is
/// never contacted (nothing here awaits the forwarding part).
pub(super) struct Server {
    engine: Engine,
}

impl Server {
    pub(super) fn new(
        cluster: &ClusterConfig,
        objects: Vec<Object>,
        hosts: Option<std::path::PathBuf>,
    ) -> Server {
        let mut builder = ZoneBuilder::new(cluster, &required_kinds(cluster));
        builder.apply(ClusterEvent::ReplaceAll { objects });
        let (snapshot, _) = builder.publish();
        let metrics = Arc::new(Metrics::default());
        let mut cfg = Config {
            cluster: cluster.clone(),
            ..Config::default()
        };
        cfg.server.max_udp_size = MAX_UDP;
        let resolver = hosts.map(|file| {
            let mut cfg = cfg.clone();
            // 127.0.0.1:9 (discard) is never sent to: only the synchronous part runs.
            cfg.forward.upstreams = vec!["127.0.0.1:9".into()];
            cfg.forward.health_check = Duration::ZERO;
            cfg.cache.max_entries = 16;
            cfg.hosts = Some(HostsConfig {
                file: Some(file),
                ..HostsConfig::default()
            });
            Resolver::new(&cfg, metrics.clone(), Clock::system())
                .expect("fuzzing resolver config is valid") as Arc<dyn Upstream>
        });
        Server {
            engine: Engine::new(
                &cfg,
                Arc::new(ArcSwap::new(snapshot)),
                resolver,
                Shaper::new(&cfg).expect("fuzzing shaping config is valid"),
                metrics,
            ),
        }
    }

    /// Answer one message as it came over UDP (`tcp` false) or TCP.
    pub(super) fn answer(&self, msg: &[u8], tcp: bool) -> Outcome {
        let mut out = Vec::with_capacity(512);
        let proto = if tcp { Proto::Tcp } else { Proto::Udp };
        match self.engine.answer_local(msg, proto, &mut out) {
            Local::Reply(_) => Outcome::Reply(out),
            Local::Drop => Outcome::Silent,
            Local::Forward(_) => Outcome::Forwarded,
            // Answered by the transfer service, which these servers do not have (transfers
            // are off, so the engine never asks for it): checked like a forwarded query.
            Local::Transfer(_) => Outcome::Forwarded,
        }
    }
}

/// A resolver forwarding everything to `upstream` (the hostile one), with a small cache and
/// no background work.
pub(super) fn forwarding_resolver(upstream: SocketAddr) -> Arc<Resolver> {
    let mut cfg = Config {
        listen: vec!["127.0.0.1:1".parse().expect("static address")],
        ..Config::default()
    };
    cfg.forward.upstreams = vec![upstream.to_string()];
    cfg.forward.health_check = Duration::ZERO;
    // Only reached if a reply that should have been accepted was not.
    cfg.forward.timeout = Duration::from_secs(3);
    cfg.cache.max_entries = 16;
    cfg.cache.prefetch = 0;
    Resolver::new(&cfg, Arc::new(Metrics::default()), Clock::system())
        .expect("fuzzing resolver config is valid")
}

/// The full forwarding path for one client query; `max` is the client's size limit (65535 for
/// a TCP client).
pub(super) async fn resolve(r: &Resolver, query: &[u8], max: usize) -> Vec<u8> {
    r.resolve(query, max).await.0
}

/// The synchronous path for one client query: a cache (or hosts) answer, or None.
pub(super) fn from_cache(r: &Resolver, query: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    r.answer_local(query, max, &mut out).map(|_| out)
}
