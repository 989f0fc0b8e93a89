#!/usr/bin/env python3
"""clusterdns load benchmark: clusterdns against well-known DNS servers, same data, same method,
every answer checked, every run's figures kept.

  python3 benches/load.py [--secs 5] [--repeat 3] [--phases auth,tcp,cache] [--scale 1]
  python3 benches/load.py readme [benches/results/FILE.json]

A run:
  1. generates the Kubernetes-like zone (gen_zone.py) and the dnsperf query files
     (gen_queries.py) of the shared harness (--shared, default ../shared/bench beside the repo)
     into --work, and converts the zone into a clusterdns objects file (zone_to_objects.py)
  2. builds clusterdns with scripts/release-build.sh (the image's build) unless --binary or
     --no-build, into WORK/bin
  3. runs the phases. clusterdns runs with a shipped ConfigMap's config verbatim
     (manifests/configmap.yaml; for the cache, manifests/node-local/configmap.yaml) and only
     what cannot work on one machine replaced by flags: the listen addresses (DNS, metrics,
     health, ready) and the upstreams by loopback ones, the Kubernetes API by the objects file.
     In each phase the peer(s) and clusterdns run at the same time, each pinned to CPU 0
     (`taskset -c 0`); first every distinct query of every query file of the phase is asked of
     both and the answers compared whole (verify.py; any mismatch fails the run), then the
     shared load.sh (dnsperf pinned to CPU 1) measures them file by file, alternating servers
     so that slow drift of the host hits both alike:
       auth    knot-1w (knot, one UDP worker) vs clusterdns: hits, misses, mix over UDP
       tcp     bind (named -n 1) if installed, and knot-1w, vs clusterdns: hits over TCP
       cache   unbound (1 thread) vs clusterdns as caching forwarders in front of one knot
               (knot-1w, also on CPU 0): cache-hits, cache-mix with WARMUP=1; prefetch and
               serve-stale on for both (clusterdns's defaults; unbound: prefetch,
               serve-expired with a client timeout, i.e. stale only when the upstream fails)
  4. per run: QPS, lost queries, rcodes, latency, CPU 0 busy % (the pinned server CPU,
     kernel included) and the server process's own user+sys time (/proc/PID/stat, sampled
     around each measured dnsperf run); RSS after start and after the load. Everything goes to
     benches/results/<date>-<commit>.json (--results-dir), and WORK/results.md.

`readme` rewrites the performance table in README.md (between the load-table markers) from a
results file: the commit it was measured at, medians with the spread of the runs, comparisons
whose runs overlap marked as within the noise.

Every process started here is stopped again by its PID. Traffic stays on 127.0.0.1.
Environment: QUIET_MAX (default here 120) and QUIET_PCT go to load.sh. On a busy machine the
waits for quiet dominate: once half of --budget (default 1200 s) is spent, each run may wait at
most its share of what is left (budget left / runs left / 2, at least 5 s); runs measured in
background load are counted as noisy.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in benches/ or the shared harness
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ZONES = ["cluster.local", "10.in-addr.arpa"]
CLIENTS, OUTSTANDING = 4, 200   # load.sh's defaults, recorded with the results
SCHEMA = 1
peers = None    # the shared peers.py module, imported in run()
verify = None   # benches/verify.py
T0 = time.time()


def import_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def say(msg, log=None):
    line = f"[{time.time() - T0:6.0f}s] {msg}"
    print(line, flush=True)
    if log:
        log.write(line + "\n")
        log.flush()


def output(cmd, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------- preparing
def run_checked(cmd, log, **kw):
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    log.write(p.stdout + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p


def prepare(a, log):
    zdir = os.path.join(a.work, "zones")
    qdir = os.path.join(a.work, "queries")
    stamp = os.path.join(a.work, "prepared.json")
    want = {"scale": a.scale, "shared": a.shared}
    have = None
    if os.path.exists(stamp):
        with open(stamp) as f:
            have = json.load(f)
    if have != want or not os.path.exists(os.path.join(a.work, "objects.yaml")):
        shutil.rmtree(zdir, ignore_errors=True)
        shutil.rmtree(qdir, ignore_errors=True)
        run_checked([sys.executable, os.path.join(a.shared, "gen_zone.py"), "--out", zdir,
                     "--scale", str(a.scale)], log)
        run_checked([sys.executable, os.path.join(a.shared, "gen_queries.py"),
                     "--zone-dir", zdir, "--out", qdir], log)
        z2o = import_file("zone_to_objects", os.path.join(HERE, "zone_to_objects.py"))
        text, stats, warn = z2o.convert(os.path.join(zdir, "cluster.local.zone"), "cluster.local",
                                        os.path.join(zdir, "10.in-addr.arpa.zone"))
        for w in warn:
            say(f"zone_to_objects warning: {w}", log)
        with open(os.path.join(a.work, "objects.yaml"), "w") as f:
            f.write(text)
        with open(os.path.join(a.work, "objects-stats.json"), "w") as f:
            json.dump(dict(stats, warnings=len(warn)), f)
        with open(stamp, "w") as f:
            json.dump(want, f)
    with open(os.path.join(zdir, "zone-stats.txt")) as f:
        zstats = dict(l.strip().split("=", 1) for l in f if "=" in l)
    with open(os.path.join(a.work, "objects-stats.json")) as f:
        ostats = json.load(f)
    return zdir, qdir, zstats, ostats


def build(a, log):
    """scripts/release-build.sh WORK/bin (the image's build, which checks its own result),
    retried after 60 s when it fails (someone's half-saved file); the binary's path."""
    if a.binary:
        return os.path.abspath(a.binary)
    out = os.path.join(a.work, "bin")
    if not a.no_build:
        for attempt in range(1, 4):
            say(f"scripts/release-build.sh (attempt {attempt})", log)
            p = subprocess.run([os.path.join(REPO, "scripts", "release-build.sh"), out],
                               cwd=REPO, capture_output=True, text=True, timeout=3600)
            log.write(p.stdout[-5000:] + p.stderr[-5000:])
            if p.returncode == 0:
                break
            say("build failed; retrying in 60 s:\n"
                + "\n".join((p.stdout + p.stderr).strip().splitlines()[-8:]), log)
            if attempt == 3:
                raise SystemExit("scripts/release-build.sh failed 3 times")
            time.sleep(60)
    binary = os.path.join(out, "clusterdns")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"no clusterdns binary at {binary} (drop --no-build)")
    return binary


def git_commit():
    sha = output(["git", "-C", REPO, "rev-parse", "HEAD"])
    dirty = output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return {"sha": sha, "dirty": bool(dirty),
            "describe": output(["git", "-C", REPO, "describe", "--always", "--dirty"])}


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_mib": mem // 1024,
            "kernel": platform.release(), "os": output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])}


# ---------------------------------------------------------------- clusterdns
def shipped_config(manifest):
    """The `clusterdns.yaml` key of a ConfigMap manifest, as the pod reads it."""
    lines = open(os.path.join(REPO, manifest)).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "clusterdns.yaml: |")
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for l in lines[start + 1:]:
        if l.strip() and len(l) - len(l.lstrip()) <= indent:
            break
        body.append(l)
    pad = min(len(l) - len(l.lstrip()) for l in body if l.strip())
    return "\n".join(l[pad:] for l in body).rstrip() + "\n"


def loopback_stub_domains(text, upstream):
    """The forwarding domains' upstreams (the kube-dns-upstream Service IP in the node-local
    ConfigMap) replaced by `upstream`, and the `nodelocal` section (interception of the node's
    addresses, which cannot work on one machine) left out; everything else as shipped."""
    out, inside, skip = [], False, None
    for l in text.splitlines():
        ind = len(l) - len(l.lstrip())
        if skip is not None:
            if not l.strip() or ind > skip:
                continue
            skip = None
        if re.match(r"\s*nodelocal:\s*$", l):
            skip = ind
            continue
        if re.match(r"\s*(stub_)?domains:\s*$", l):
            inside, depth = True, ind
        elif inside and l.strip() and ind <= depth:
            inside = False
        if inside:
            l = re.sub(r'\["[^"\]]*"(, *"[^"\]]*")*\]', f'["{upstream}"]', l)
        out.append(l)
    return "\n".join(out) + "\n"


class Local:
    """A server this script configures itself, with peers.Server's interface (kind, label,
    dir, port, proc, argv, stop()): a fresh folder WORK/run/LABEL and a free loopback port."""

    def __init__(self, work, kind, label):
        self.kind, self.label = kind, label
        self.dir = os.path.join(work, "run", label)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = peers.free_port()

    def spawn(self, argv, **popen):
        """Start `argv` pinned to CPU 0, output to LABEL/output.log; remembered for stop_all."""
        self.argv = ["taskset", "-c", "0"] + argv
        self.logpath = os.path.join(self.dir, "output.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, **popen)
        peers.STARTED.append((self.proc.pid, peers.proc_start_time(self.proc.pid)))

    def stop(self):
        peers.stop(self.proc)
        self.log.close()


class ClusterDns(Local):
    """clusterdns with a shipped ConfigMap's config, pinned to CPU 0."""

    def __init__(self, work, binary, label, manifest, upstream, objects=None):
        super().__init__(work, "clusterdns", label)
        self.manifest = manifest
        up = f"127.0.0.1:{upstream}"
        self.config_text = loopback_stub_domains(shipped_config(manifest), up)
        # One loopback address sends all of dnsperf's load, where a cluster has a pod per
        # address: it is exempt from the per-client limits (as NSD's rrl-ratelimit is 0 for
        # the peers), so the benchmark measures the server, not one client's rate limit.
        self.config_text += 'limits:\n  exempt: ["127.0.0.1/32"]\n'
        self.config = os.path.join(self.dir, "clusterdns.yaml")
        with open(self.config, "w") as f:
            f.write(self.config_text)
        # What a single machine needs instead of the cluster: loopback listeners and
        # upstreams, and the objects file instead of the Kubernetes API.
        self.flags = [f"--listen=127.0.0.1:{self.port}", f"--upstream={up}"]
        for what in ("metrics", "health", "ready"):
            self.flags.append(f"--{what}-listen=127.0.0.1:{peers.free_port()}")
        if objects:
            self.flags.append(f"--objects={objects}")
        self.spawn([binary, "serve", "--config", self.config] + self.flags,
                   env=dict(os.environ, NO_COLOR="1"))

    def ready(self, checks, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clusterdns exited with {self.proc.returncode}: "
                                   + open(self.logpath).read()[-1500:])
            with open(self.logpath) as f:
                if "clusterdns: listening dns=" in f.read():
                    break
            time.sleep(0.05)
        peers.wait_ready(self.proc, self.port, checks, timeout=timeout)
        peers.remember_tree(self.proc.pid)
        return time.time() - t0


class Unbound(Local):
    """unbound as the shared harness configures it (1 thread, forwarding to `upstream`), plus
    the cache settings clusterdns ships with: prefetch, expired answers served only when the
    upstream does not answer (RFC 8767) for up to an hour, and answers passed on whole, the
    additional section included (unbound 1.17 trims it by default: `minimal-responses`). TTLs
    capped as the node-local ConfigMap caps its cluster.local cache (NodeLocal DNSCache's
    `success 9984 30`, `denial 9984 5`; clusterdns gives the capped TTLs from the first reply
    on, as CoreDNS does): unbound caps only server-wide, which is the same here, since every
    name the cache files ask is under cluster.local or 10.in-addr.arpa, whose TTLs are 30."""

    EXTRA = ("    prefetch: yes\n    serve-expired: yes\n    serve-expired-ttl: 3600\n"
             "    serve-expired-client-timeout: 1800\n    minimal-responses: no\n"
             "    cache-max-ttl: 30\n    cache-max-negative-ttl: 5\n")

    def __init__(self, work, upstream, label="unbound"):
        super().__init__(work, "unbound", label)
        argv = peers.conf_unbound(self.dir, self.port, upstream)
        path = os.path.join(self.dir, "unbound.conf")
        text = open(path).read().replace("server:\n", "server:\n" + self.EXTRA, 1)
        with open(path, "w") as f:
            f.write(text)
        self.config_text = text
        self.spawn(argv)


# ---------------------------------------------------------------- measuring
CALLS_LEFT = [0]   # load.sh calls still to come (set from the phases in run())
HZ = os.sysconf("SC_CLK_TCK")


def quiet_max_for(a):
    """QUIET_MAX for the next load.sh call: the environment's (120) until half the budget is
    spent, then the call's share of the rest."""
    qm = int(os.environ.get("QUIET_MAX", "120"))
    spent = time.time() - T0
    if spent > a.budget / 2:
        share = (a.budget - spent) / max(1, CALLS_LEFT[0]) / (2 * a.repeat)
        qm = int(max(5, min(qm, share)))
    return str(qm)


def proc_ticks(pid):
    """user + system clock ticks of one process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid):
    """PIDs below `pid`, from /proc/PID/task/*/children (cheap: no scan of /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


class RunSampler(threading.Thread):
    """While load.sh runs: every 20 ms, the server's CPU ticks and whether a measured dnsperf
    run (`-q OUTSTANDING`; warm-up passes use -q 50) is going. Each measured run becomes a
    window: the server's ticks from the last sample before it started to the first sample after
    it ended (so it holds the whole run, and at most one 20 ms sample of what came before)."""

    def __init__(self, loadsh_pid, server_pid):
        super().__init__(daemon=True)
        self.loadsh, self.server = loadsh_pid, server_pid
        self.windows, self.done = [], threading.Event()

    def measured_dnsperf(self):
        for p in descendants(self.loadsh):
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"dnsperf" and b"-q" in argv \
                    and argv[argv.index(b"-q") + 1] == str(OUTSTANDING).encode():
                return p
        return None

    def run(self):
        prev = (time.monotonic(), proc_ticks(self.server))
        current = None
        while not self.done.is_set():
            now = (time.monotonic(), proc_ticks(self.server))
            dp = self.measured_dnsperf()
            if current is None and dp is not None:
                current = {"pid": dp, "t0": prev[0], "ticks0": prev[1]}
            elif current is not None and dp != current["pid"]:
                current.update(t1=now[0], ticks1=now[1])
                self.windows.append(current)
                current = {"pid": dp, "t0": prev[0], "ticks0": prev[1]} if dp else None
            prev = now
            time.sleep(0.02)


def load(srv, qfile, a, raw_dir, mode, warmup, log):
    """One load.sh call (REPEAT runs) against `srv`; every accepted run's figures, with the
    server process's CPU time during that run."""
    quiet_max = quiet_max_for(a)
    env = dict(os.environ, REPEAT=str(a.repeat), MODE=mode, RAW_DIR=raw_dir,
               WARMUP="1" if warmup else "0", QUIET_MAX=quiet_max)
    cmd = [peers.LOAD, "127.0.0.1", str(srv.port), qfile, str(a.secs)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = RunSampler(p.pid, srv.proc.pid)
    sampler.start()
    limit = a.repeat * 3 * (a.secs * (2 if warmup else 1) + 60 + int(quiet_max)) + 120
    stdout, stderr = p.communicate(timeout=limit)
    sampler.done.set()
    sampler.join()
    log.write(f"$ REPEAT={a.repeat} MODE={mode} WARMUP={int(warmup)} QUIET_MAX={quiet_max} "
              f"{' '.join(cmd)}\n{stdout}{stderr}\n")
    log.flush()
    result = next((dict(re.findall(r"(\w+)=(\S+)", l)) for l in stdout.splitlines()
                   if l.startswith("RESULT ")), None)
    if result is None:
        raise RuntimeError(f"load.sh failed: {stdout[-500:]} {stderr[-500:]}")
    # Which sampled window is each accepted run: a run load.sh repeated (background load)
    # left one window per try, at most three, the last one kept.
    repeats = [int(m) for m in re.findall(r"^run (\d+): background load", stderr, re.M)]
    runs, w = [], 0
    for line in stdout.splitlines():
        m = re.match(r"run (\d+): (.*)", line)
        if not m:
            continue
        i = int(m.group(1))
        w += min(repeats.count(i), 2) + 1
        f = dict(re.findall(r"(\w+)=(\S+)", m.group(2)))
        raw_path = os.path.join(raw_dir, f"{os.path.basename(qfile)[:-4]}-{mode}-{i}.txt")
        completed = None
        try:
            with open(raw_path) as fh:
                c = re.search(r"Queries completed:\s+(\d+)", fh.read())
            completed = int(c.group(1)) if c else None
        except OSError:
            pass
        win = sampler.windows[w - 1] if len(sampler.windows) >= w else None
        proc_s = ((win["ticks1"] - win["ticks0"]) / HZ
                  if win and win["ticks0"] is not None and win["ticks1"] is not None else None)
        cpu0 = pct(f.get("cpu_server"))
        qps = float(f["qps"])
        runs.append({
            "qps": qps, "lost": int(f["lost"]) if f.get("lost", "?").isdigit() else None,
            "completed": completed, "rcodes": f.get("rcodes"), "lat_ms": float(f["lat_ms"]),
            "cpu_server_pct": cpu0, "cpu_client_pct": pct(f.get("cpu_client")),
            "cpu0_us_per_query": cpu0 * 10000 / qps if cpu0 is not None and qps else None,
            "proc_cpu_s": proc_s, "proc_window_s": (win["t1"] - win["t0"]) if win else None,
            "proc_us_per_query": proc_s * 1e6 / completed if proc_s is not None and completed else None,
            "repeated_for_noise": repeats.count(i),
        })
    return {"runs": runs, "noisy": int(result["noisy"]), "quiet_max": int(quiet_max),
            "waited_busy": stderr.count("waiting for an idle machine")}


def pct(s):
    """'97' or '98(steal:3)' -> 97.0"""
    m = re.match(r"\d+", s or "")
    return float(m.group(0)) if m else None


def spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def summarize(file_result):
    runs = file_result["runs"]
    return {k: spread([r[k] for r in runs])
            for k in ("qps", "cpu0_us_per_query", "proc_us_per_query", "cpu_server_pct",
                      "cpu_client_pct", "lat_ms")}


# ---------------------------------------------------------------- phases
def start_all(makers, checks_of, log):
    """Start each (factory) in turn and wait until it answers; returns the servers."""
    out = []
    for make in makers:
        s = make()
        out.append(s)
        s.ready_s = s.ready(checks_of(s)) if hasattr(s, "ready") else peers.wait_ready(
            s.proc, s.port, checks_of(s))
        peers.remember_tree(s.proc.pid)
        s.mem_ready = peers.mem_of(s.proc.pid)
        s.escapes = peers.affinity_escapes(s.proc.pid)
        say(f"{s.label}: port {s.port} ready in {s.ready_s:.1f}s rss={s.mem_ready['rss_kib']}KiB "
            f"threads={s.mem_ready['threads']} argv={' '.join(s.argv)}"
            + (f" NOT PINNED: {s.escapes}" if s.escapes else ""), log)
    return out


def check_answers(name, servers, files, qd, results, log, tcp=False, ttl_slack=0, allowed=None):
    """Every distinct query of every file, asked of each peer and of clusterdns, compared.
    A mismatch ends the run (after the results are saved). `allowed`: (header bits, reason)
    that may differ, declared by the phase."""
    cd = next(s for s in servers if s.kind == "clusterdns")
    out = results["phases"][name].setdefault("verification", [])
    bad = []
    for peer in (s for s in servers if s is not cd):
        for f in files:
            bits, why = allowed or ((), None)
            v = verify.verify(peer.port, cd.port, os.path.join(qd, f"{f}.txt"), tcp=tcp,
                              ttl_slack=ttl_slack, allowed_flags=frozenset(bits))
            v["peer"] = peer.label
            v["allowed_because"] = why
            out.append(v)
            say(f"  verify {f} {v['transport']} vs {peer.label}: {v['queries']} queries, "
                f"{v['identical']} identical ({v['truncated_compared_by_flags']} truncated, "
                f"compared by flags; {v['allowed_flag_differences']} differing only in "
                f"{'/'.join(v['allowed_flags']) or '-'}), {v['mismatch_count']} mismatches", log)
            for m in v["mismatches"]:
                say(f"    MISMATCH {m}", log)
            if v["mismatch_count"]:
                bad.append(f"{name}: {f} vs {peer.label}: {v['mismatch_count']} mismatches")
    return bad


def run_phase(name, servers, files, a, qd, raw, log, results, mode="udp", warmup=False,
              upstream=None):
    """Alternate the servers file by file; record results["phases"][name]["servers"]."""
    ph = results["phases"][name].setdefault("servers", {})
    for s in servers:
        ph[s.label] = {"kind": s.kind, "argv": s.argv, "config": getattr(s, "config_text", None),
                       "ready_s": round(s.ready_s, 2), "rss_ready_kib": s.mem_ready["rss_kib"],
                       "threads": s.mem_ready["threads"], "affinity_escapes": s.escapes,
                       "files": {}}
    for f in files:
        for s in servers:
            t_up = proc_ticks(upstream.proc.pid) if upstream else None
            r = load(s, os.path.join(qd, f"{f}.txt"), a, os.path.join(raw, s.label), mode,
                     warmup, log)
            CALLS_LEFT[0] -= 1
            if upstream:
                r["upstream_cpu_s"] = (proc_ticks(upstream.proc.pid) - t_up) / HZ
            r["summary"] = summarize(r)
            ph[s.label]["files"][f"{f}-{mode}"] = r
            sm = r["summary"]
            say(f"  {s.label:16} {f:10} {mode}: qps {fmt_spread(sm['qps'], 0)} "
                f"cpu0 us/q {fmt_spread(sm['cpu0_us_per_query'], 2)} proc us/q "
                f"{fmt_spread(sm['proc_us_per_query'], 2)} noisy={r['noisy']}", log)
            save(a, results)
    for s in servers:
        m = peers.mem_of(s.proc.pid)
        ph[s.label].update(rss_after_kib=m["rss_kib"], pss_after_kib=m["pss_kib"],
                           threads_after=m["threads"])


def results_path(a, results):
    return os.path.join(a.results_dir, f"{results['started_utc'][:10]}-"
                        f"{results['commit']['describe'] or 'unknown'}.json")


def save(a, results):
    text = json.dumps(results, indent=1, default=str) + "\n"
    for path in (os.path.join(a.work, "results.json"), results_path(a, results)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def run(a):
    global peers, verify
    for tool in ("dnsperf", "taskset", "kdig", "knotd"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} not found (Debian: dnsperf util-linux knot-dnsutils knot)")
    peers = import_file("peers", os.path.join(a.shared, "peers.py"))
    verify = import_file("verify", os.path.join(HERE, "verify.py"))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (peers.stop_all(), sys.exit(130)))
    log = open(os.path.join(a.work, "commands.log"), "a")
    say(f"work directory {a.work}, shared harness {a.shared}", log)
    zdir, qd, zstats, ostats = prepare(a, log)
    say(f"zone: {zstats.get('records_total')} records; objects: {ostats}", log)
    binary = build(a, log)
    raw = os.path.join(a.work, "raw")
    shutil.rmtree(raw, ignore_errors=True)
    phases = a.phases.split(",")
    results = {
        "schema": SCHEMA, "status": "running",
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(), "machine": machine(),
        "method": {"secs": a.secs, "repeat": a.repeat, "scale": a.scale, "clients": CLIENTS,
                   "outstanding": OUTSTANDING, "server_cpu": 0, "client_cpu": 1,
                   "quiet_max": os.environ.get("QUIET_MAX"), "quiet_pct": os.environ.get("QUIET_PCT", "6"),
                   "budget_s": a.budget, "phases": phases},
        "zone": zstats, "objects": ostats, "phases": {}, "notes": [],
        "versions": {k: peers.version(k) for k in ("knotd", "named", "unbound", "dnsperf")},
    }
    results["versions"].update(
        clusterdns=output([binary, "--version"]), rustc=output(["rustc", "--version"]),
        python=platform.python_version(), binary=binary)
    CALLS_LEFT[0] = (6 * ("auth" in phases) + 3 * ("tcp" in phases) + 4 * ("cache" in phases))
    objects = os.path.join(a.work, "objects.yaml")
    checks_ref = peers.checks_for(zdir, ZONES)
    # clusterdns serves PTRs under in-addr.arpa, not a 10.in-addr.arpa zone with its own SOA
    checks_cd = [c for c in checks_ref if c != ("10.in-addr.arpa", "SOA")]
    checks_of = lambda s: checks_cd if s.kind == "clusterdns" else checks_ref
    auth_peer = lambda kind: (lambda: peers.Server(a.work, kind, zdir, ZONES, label=kind))
    bad = []

    def phase(name, makers, files, mode="udp", ttl_slack=0, warmup=False, upstream=None,
              allowed=None):
        results["phases"][name] = {}
        say(f"phase {name}: {mode}, files {', '.join(files)}", log)
        srv = []
        try:
            srv = makers() if callable(makers) else start_all(makers, checks_of, log)
            bad.extend(check_answers(name, srv, files, qd, results, log, tcp=mode == "tcp",
                                     ttl_slack=ttl_slack, allowed=allowed))
            save(a, results)
            if bad:
                return
            run_phase(name, srv, files, a, qd, raw, log, results, mode=mode, warmup=warmup,
                      upstream=upstream)
        finally:
            for s in srv:
                s.stop()

    if "auth" in phases:
        knot = None
        def auth_servers():
            nonlocal knot
            knot = start_all([auth_peer("knot-1w")], checks_of, log)[0]
            cd = lambda: ClusterDns(a.work, binary, "clusterdns", "manifests/configmap.yaml",
                                    upstream=knot.port, objects=objects)
            return [knot] + start_all([cd], checks_of, log)
        phase("auth", auth_servers, ["hits", "misses", "mix"])
    if "tcp" in phases and not bad:
        kinds = (["bind-n1"] if shutil.which("named") else []) + ["knot-1w"]
        if not shutil.which("named"):
            results["notes"].append("bind (named) not installed: TCP compared with knot-1w only")
        def tcp_servers():
            ps = start_all([auth_peer(k) for k in kinds], checks_of, log)
            cd = lambda: ClusterDns(a.work, binary, "clusterdns", "manifests/configmap.yaml",
                                    upstream=ps[-1].port, objects=objects)
            return ps + start_all([cd], checks_of, log)
        phase("tcp", tcp_servers, ["hits"], mode="tcp")
    if "cache" in phases and not bad:
        up = peers.Server(a.work, "knot-1w", zdir, ZONES, label="upstream-knot")
        try:
            up.ready(checks_ref)
            say(f"upstream knot-1w on port {up.port} (pinned to CPU 0 too)", log)
            fwd_check = [("kubernetes.default.svc.cluster.local", "A")]
            makers = []
            if shutil.which("unbound") or os.path.exists("/usr/sbin/unbound"):
                makers.append(lambda: Unbound(a.work, up.port))
            else:
                results["notes"].append("unbound not installed: no cache peer")
            makers.append(lambda: ClusterDns(a.work, binary, "clusterdns-cache",
                                             "manifests/node-local/configmap.yaml",
                                             upstream=up.port))
            # Cached answers count their TTLs down: compared within 5 s of each other. AA and RA
            # may differ: clusterdns passes the upstream's on (here an authoritative knot: AA
            # set, RA clear), as CoreDNS's forward and cache do; unbound, a recursive resolver,
            # sets RA and clears AA. Everything else must match.
            why = ("clusterdns keeps the upstream's AA and RA bits (as CoreDNS's forward and "
                   "cache do); unbound, a recursive resolver, sets RA and clears AA")
            phase("cache", lambda: start_all(makers, lambda s: fwd_check, log),
                  ["cache-hits", "cache-mix"], ttl_slack=5, warmup=True, upstream=up,
                  allowed=({"aa", "ra"}, why))
        finally:
            up.stop()

    results["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["elapsed_s"] = round(time.time() - T0)
    results["status"] = "failed: answers differ" if bad else "ok"
    results["failures"] = bad
    save(a, results)
    md = report(results)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write(md)
    print("\n" + md)
    say(f"results: {results_path(a, results)}", log)
    if bad:
        raise SystemExit("answers differ (see the mismatches above): no load measured after them")


# ---------------------------------------------------------------- reports
def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def fmt_spread(s, nd=1):
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"], nd)
    return f"{fmt(s['median'], nd)} ({fmt(s['min'], nd)}–{fmt(s['max'], nd)})"


def comparisons(R):
    """clusterdns against each peer, per phase and file: medians, spreads, ratios, and whether
    the difference is within the noise: the runs of the two overlap, load.sh saw background
    load, or there were fewer than 3 runs (no spread to tell)."""
    out = []
    for ph, body in R["phases"].items():
        servers = body.get("servers", {})
        cd = next((v for v in servers.values() if v["kind"] == "clusterdns"), None)
        if not cd:
            continue
        for label, peer in servers.items():
            if peer is cd:
                continue
            for test, r in peer["files"].items():
                c = cd["files"].get(test)
                if not c:
                    continue
                row = {"phase": ph, "peer": label, "peer_kind": peer["kind"], "file": test,
                       "noisy": c["noisy"] + r["noisy"]}
                for k in ("qps", "cpu0_us_per_query", "proc_us_per_query"):
                    a, b = c["summary"][k], r["summary"][k]
                    if not a or not b:
                        row[k] = None
                        continue
                    overlap = a["min"] <= b["max"] and b["min"] <= a["max"]
                    few = min(len(c["runs"]), len(r["runs"])) < 3
                    row[k] = {"clusterdns": a, "peer": b, "ratio": a["median"] / b["median"],
                              "within_noise": overlap or few or row["noisy"] > 0}
                out.append(row)
    return out


def report(R):
    """The whole run as markdown (WORK/results.md)."""
    L = [f"## clusterdns load benchmark, {R['started_utc']}, commit {R['commit']['describe']}\n",
         f"{describe_method(R)}\n",
         "| phase | server | file | QPS median (min–max) | CPU0 µs/query | process µs/query | "
         "lost | rcodes (last run) | CPU0 % | CPU1 % | noisy |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ph, body in R["phases"].items():
        for label, s in body.get("servers", {}).items():
            for test, r in s["files"].items():
                sm = r["summary"]
                L.append(f"| {ph} | {label} | {test} | {fmt_spread(sm['qps'], 0)} | "
                         f"{fmt_spread(sm['cpu0_us_per_query'], 2)} | "
                         f"{fmt_spread(sm['proc_us_per_query'], 2)} | "
                         f"{sum(x['lost'] or 0 for x in r['runs'])} | "
                         f"{r['runs'][-1]['rcodes'] if r['runs'] else '-'} | "
                         f"{'/'.join(fmt(x['cpu_server_pct'], 0) for x in r['runs'])} | "
                         f"{'/'.join(fmt(x['cpu_client_pct'], 0) for x in r['runs'])} | {r['noisy']} |")
    L.append("\n| phase | server | threads | ready in | RSS after start | RSS after load | upstream CPU s per file |")
    L.append("|---|---|---|---|---|---|---|")
    for ph, body in R["phases"].items():
        for label, s in body.get("servers", {}).items():
            up = ", ".join(f"{t}: {r['upstream_cpu_s']:.2f}" for t, r in s["files"].items()
                           if "upstream_cpu_s" in r) or "-"
            L.append(f"| {ph} | {label} | {s['threads']} | {s['ready_s']:.1f} s | "
                     f"{s['rss_ready_kib']/1024:.1f} MiB | {s.get('rss_after_kib', 0)/1024:.1f} MiB | {up} |")
    L.append("\n" + verification_line(R))
    notes = R["notes"] + R.get("failures", [])
    if notes:
        L.append("\n" + "\n".join(f"- {n}" for n in notes))
    L.append("\nVersions: " + "; ".join(f"{k}: {v}" for k, v in R["versions"].items()))
    return "\n".join(L) + "\n"


def describe_method(R):
    m, mc = R["method"], R["machine"]
    z = R["zone"]
    return (f"{mc['cpus']} CPUs ({mc['cpu_model']}), {mc['os']}, Linux {mc['kernel']}; zone "
            f"{z.get('records_total')} records ({z.get('services')} services, {z.get('headless')} "
            f"headless x {z.get('endpoints')} endpoints, {z.get('namespaces')} namespaces); dnsperf "
            f"`-c {m['clients']} -q {m['outstanding']}` pinned to CPU 1, every server pinned to "
            f"CPU 0; {m['repeat']} run(s) x {m['secs']} s per file.")


def verification_line(R):
    vs = [v for body in R["phases"].values() for v in body.get("verification", [])]
    if not vs:
        return "Answers were not verified."
    n = sum(v["queries"] for v in vs)
    bad = sum(v["mismatch_count"] for v in vs)
    tc = sum(v["truncated_compared_by_flags"] for v in vs)
    peers_ = sorted({v["peer"] for v in vs})
    allowed = {(v["peer"], tuple(v.get("allowed_flags", ())), v.get("allowed_because"))
               for v in vs if v.get("allowed_flag_differences")}
    extra = "".join(f" Against {p}, {'/'.join(f.upper() for f in fl)} may differ: {why}; "
                    f"{sum(v['allowed_flag_differences'] for v in vs if v['peer'] == p)} answers did."
                    for p, fl, why in sorted(allowed))
    return (f"Answers checked before the load: every distinct query of every file, as dnsperf "
            f"sends it and with EDNS and 0x20 case, {n} in all, compared with {', '.join(peers_)} "
            f"(all sections, EDNS, case): {bad} mismatches; {tc} truncated UDP answers compared "
            f"by their flags.{extra}")


TRAFFIC = {"hits-udp": "cluster-zone hits, UDP", "misses-udp": "NXDOMAIN (ndots:5 search-path misses), UDP",
           "mix-udp": "20 % hits / 80 % misses, UDP", "hits-tcp": "cluster-zone hits, TCP",
           "cache-hits-udp": "forwarded names, warm cache, UDP",
           "cache-mix-udp": "forwarded names, 20/80 cache mix, UDP"}
BEGIN = "<!-- load-table:begin -->"
END = "<!-- load-table:end -->"


def readme_section(R, source):
    """The README's performance section, from one results file."""
    m = R["method"]
    smoke = m["secs"] < 5 or m["repeat"] < 3
    c = R["commit"]
    L = [BEGIN,
         f"<!-- generated by `python3 benches/load.py readme {source}`: edit that, not this -->",
         ""]
    if smoke:
        L += [f"**Smoke run** ({m['repeat']} run(s) x {m['secs']} s per file, on a machine others "
              f"were compiling on): it shows the harness works, not how fast anything is. The "
              f"numbers come from a quiet machine and `python3 benches/load.py` with its "
              f"defaults.", ""]
    L += [f"Measured at commit `{c['sha'][:12]}`{' (with uncommitted changes)' if c['dirty'] else ''} "
          f"on {R['started_utc'][:10]} by `benches/load.py` (results: `{source}`). "
          + describe_method(R)
          + " clusterdns ran with the shipped ConfigMaps (`manifests/configmap.yaml`; the cache "
          "rows `manifests/node-local/configmap.yaml`), only listen addresses and upstreams "
          "replaced by loopback ones and the objects file instead of the API; the cache rows "
          "with prefetch and serve-stale on for both servers.",
          "",
          "Median over the runs, (min–max) of the runs. CPU0 µs/query: the pinned CPU's busy "
          "time (kernel included) per answer; process µs/query: the server process's own "
          "user+system time per answer (/proc/PID/stat). Ratio: clusterdns ÷ peer (below 1: "
          "clusterdns is cheaper; QPS above 1: faster). *Within noise*: the runs of the two "
          "servers overlap, load.sh saw background load, or there were fewer than 3 runs: the "
          "difference is not shown to be real.",
          "",
          "| traffic | peer | CPU0 µs/query clusterdns / peer | process µs/query clusterdns / peer | QPS clusterdns / peer |",
          "|---|---|---|---|---|"]
    for row in comparisons(R):
        cells = []
        for k, nd in (("cpu0_us_per_query", 2), ("proc_us_per_query", 2), ("qps", 0)):
            x = row[k]
            if not x:
                cells.append("-")
                continue
            ratio = f"{x['ratio']:.2f}"
            verdict = "*within noise*" if x["within_noise"] else f"**{ratio}**"
            cells.append(f"{fmt_spread(x['clusterdns'], nd)} / {fmt_spread(x['peer'], nd)}: "
                         + (f"{ratio}, {verdict}" if x["within_noise"] else verdict))
        L.append(f"| {TRAFFIC.get(row['file'], row['file'])} | {row['peer']} | " + " | ".join(cells) + " |")
    L += ["", verification_line(R), ""]
    auth = R["phases"].get("auth", {}).get("servers", {})
    cd = next((v for v in auth.values() if v["kind"] == "clusterdns"), None)
    if cd:
        services = R["objects"].get("clusterip_services", 0) + R["objects"].get("headless_services", 0)
        coredns = services / 1000 + 54
        L += [f"Memory: clusterdns serving this zone from the objects file held "
              f"{cd['rss_ready_kib'] / 1024:.1f} MiB resident after start and "
              f"{cd.get('rss_after_kib', 0) / 1024:.1f} MiB after its load. CoreDNS publishes its "
              f"memory need as (pods + services) / 1000 + 54 MB with default settings "
              f"([Scaling CoreDNS](https://github.com/coredns/deployment/blob/master/kubernetes/Scaling_CoreDNS.md)): "
              f"{coredns:.0f} MB for these {services} services and no pods.", ""]
    v = "; ".join(f"{k}: {R['versions'][k]}" for k in ("clusterdns", "knotd", "named", "unbound",
                                                        "dnsperf", "rustc")
                  if R["versions"].get(k) not in (None, "", "not installed"))
    L += [f"Versions: {v}.", END]
    return "\n".join(L)


def readme(argv):
    ap = argparse.ArgumentParser(prog="load.py readme",
                                 description="Rewrite README.md's performance table from a results file.")
    ap.add_argument("results", nargs="?", help="benches/results/*.json (default: the one measured last)")
    ap.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 when the table is not what the file gives")
    a = ap.parse_args(argv)
    path = a.results
    if not path:
        d = os.path.join(HERE, "results")
        def started(f):
            # The newest by when it was measured (two runs on one day differ only by commit).
            try:
                with open(os.path.join(d, f)) as fh:
                    return json.load(fh).get("started_utc") or ""
            except (OSError, ValueError):
                return ""
        files = sorted((f for f in os.listdir(d) if f.endswith(".json")),
                       key=lambda f: (started(f), f)) if os.path.isdir(d) else []
        if not files:
            raise SystemExit(f"no results file in {d}: run python3 benches/load.py first")
        path = os.path.join(d, files[-1])
    R = json.load(open(path))
    if R.get("status") != "ok":
        raise SystemExit(f"{path}: status {R.get('status')!r}; only a complete run goes in the README")
    source = os.path.relpath(os.path.abspath(path), REPO)
    text = open(a.readme).read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{a.readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    new = readme_section(R, source)
    if a.check:
        if BEGIN + old + END != new:
            raise SystemExit(f"{a.readme}: the performance table is not the one {source} gives: "
                             f"run python3 benches/load.py readme {source}")
        print(f"{a.readme}: the performance table is {source}'s")
        return
    with open(a.readme, "w") as f:
        f.write(head + new + tail)
    print(f"{a.readme}: performance table from {source}")


def default_shared():
    d = os.path.dirname(REPO)
    while True:
        cand = os.path.join(d, "shared", "bench")
        if os.path.exists(os.path.join(cand, "peers.py")) or d == os.path.dirname(d):
            return cand
        d = os.path.dirname(d)


def main():
    if sys.argv[1:2] == ["readme"]:
        return readme(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=int, default=5, help="seconds per dnsperf run (5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per file, median reported (3)")
    ap.add_argument("--phases", default="auth,tcp,cache")
    ap.add_argument("--scale", type=int, default=1, help="gen_zone.py --scale (1)")
    ap.add_argument("--shared", default=default_shared(),
                    help="the shared harness (gen_zone.py, gen_queries.py, load.sh, peers.py); "
                         "default: shared/bench in a folder above the repository")
    ap.add_argument("--work", default="/tmp/clusterdns-bench", help="work directory")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"),
                    help="where the results file goes (benches/results)")
    ap.add_argument("--binary", help="clusterdns binary to use (skips the build)")
    ap.add_argument("--no-build", action="store_true", help="use the binary already in WORK/bin")
    ap.add_argument("--budget", type=int, default=1200,
                    help="seconds; past half of it, runs wait less for a quiet machine (1200)")
    a = ap.parse_args()
    a.shared = os.path.abspath(a.shared)
    a.work = os.path.abspath(a.work)
    a.results_dir = os.path.abspath(a.results_dir)
    os.makedirs(a.work, exist_ok=True)
    os.environ.setdefault("QUIET_MAX", "120")
    try:
        run(a)
    finally:
        if peers:
            peers.stop_all()


if __name__ == "__main__":
    main()
