//! `vpnbench xsk gen|sink`: the AF_XDP packet generator and sink, each run inside a client
//! namespace (`ip netns exec`) by `vpnbench afxdp`'s driver. Both use the dataplane's own
//! AF_XDP layer (`dataplane::io::afxdp`: UMEM, rings, sockets) and report one JSON object on
//! stdout; the sink says `ready` on stderr once its sockets are steered.
//!
//! The generator sends [`afxdp_pkt`](super::afxdp_pkt) packets stamped with CLOCK_MONOTONIC
//! (one clock for every namespace) at an offered rate, paced on an absolute schedule in small
//! batches (at most 50 µs worth, ≤ 32 packets), or as fast as the tx ring takes them with
//! `--rate 0`. The sink attaches the dataplane's `xdp_inside` program to its interface with
//! its own address as the one "protected" prefix, so exactly the packets for it reach its
//! sockets (ARP and the rest go to the kernel), one socket per queue over one UMEM.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::io::afxdp::{poll_readable, BindMode, RxPacket, Umem, UmemFrame, XskSocket};
use dataplane::io::xdp::{AttachMode, Side, XdpSteering};
use serde::{Deserialize, Serialize};

use super::afxdp_pkt::{self, FlowSpec, SeqTracker, SeqVerdict, Template};
use super::hist::{LatencyHist, RawCounts};
use super::BenchError;

/// CLOCK_MONOTONIC in nanoseconds (shared by every network namespace on the host).
pub fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make latencies huge (and visible).
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

const FRAMES: u32 = 4096;
const FRAME_SIZE: u32 = 2048;
const RING: u32 = 2048;
/// Most packets per generator batch (the kernel sends 32 per kick in copy mode).
const MAX_BATCH: u64 = 32;

/// The generator's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GenReport {
    pub size: usize,
    pub offered_pps: f64,
    pub sent: u64,
    pub seconds: f64,
    /// Achieved send rate.
    pub sent_pps: f64,
    /// Times the tx ring or the free frames ran out (the generator waited).
    pub tx_full: u64,
    pub tx_invalid_descs: u64,
}

/// The sink's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SinkReport {
    /// Distinct sequence numbers received.
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Not one of the generator's packets (or a sequence number out of range).
    pub foreign: u64,
    /// Packets whose timestamp lies in the future (clock trouble): counted, not recorded.
    pub negative_latency: u64,
    /// CLOCK_MONOTONIC of the first and last received probe.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Kernel counters summed over the sink's sockets.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    /// Latency histogram (ns) of the distinct packets.
    pub hist: RawCounts,
}

#[derive(Debug, Clone, PartialEq)]
struct Opts(Vec<(String, String)>);

impl Opts {
    /// `--key value` pairs (every option of `xsk` takes a value).
    fn parse(rest: &[String]) -> Result<Opts, BenchError> {
        let mut out = Vec::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| BenchError::Other(format!("xsk: expected --option, got {k}")))?;
            let v = it
                .next()
                .ok_or_else(|| BenchError::Other(format!("xsk: --{key} needs a value")))?;
            out.push((key.to_string(), v.clone()));
        }
        Ok(Opts(out))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn req(&self, k: &str) -> Result<&str, BenchError> {
        self.get(k)
            .ok_or_else(|| BenchError::Other(format!("xsk: --{k} is required")))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, BenchError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| BenchError::Other(format!("xsk: --{k} {v}: not a number"))),
        }
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        what: what.into(),
        detail: e.to_string(),
    }
}

fn ifindex(ifname: &str) -> Result<u32, BenchError> {
    let p = format!("/sys/class/net/{ifname}/ifindex");
    std::fs::read_to_string(&p)
        .map_err(|e| setup(&p, e))?
        .trim()
        .parse()
        .map_err(|e| setup(&p, e))
}

/// The hidden `vpnbench xsk` subcommand.
pub fn xsk_main(args: &super::cli::XskArgs) -> Result<(), BenchError> {
    let o = Opts::parse(&args.rest)?;
    let json = match args.role.as_str() {
        "gen" => serde_json::to_string(&generate(&o)?),
        "sink" => serde_json::to_string(&sink(&o)?),
        other => {
            return Err(BenchError::Other(format!(
                "xsk: role {other}: expected gen or sink"
            )))
        }
    }
    .map_err(|e| BenchError::Other(e.to_string()))?;
    println!("{json}");
    Ok(())
}

/// `xsk gen --ifname IF --src-mac M --dst-mac M --src-ip A --dst-ip A --size N
/// [--rate PPS (0: as fast as possible)] [--count N] [--seconds S] [--queue Q]`:
/// stops after `count` packets or `seconds`, whichever comes first.
fn generate(o: &Opts) -> Result<GenReport, BenchError> {
    let ifname = o.req("ifname")?;
    let flow = FlowSpec {
        src_mac: afxdp_pkt::parse_mac(o.req("src-mac")?).map_err(|e| setup("src-mac", e))?,
        dst_mac: afxdp_pkt::parse_mac(o.req("dst-mac")?).map_err(|e| setup("dst-mac", e))?,
        src_ip: o
            .req("src-ip")?
            .parse::<Ipv4Addr>()
            .map_err(|e| setup("src-ip", e))?,
        dst_ip: o
            .req("dst-ip")?
            .parse::<Ipv4Addr>()
            .map_err(|e| setup("dst-ip", e))?,
        src_port: o.num("src-port", 40_000u16)?,
    };
    let size: usize = o.num("size", 64)?;
    let rate: f64 = o.num("rate", 0.0)?;
    let count: u64 = o.num("count", u64::MAX)?;
    let seconds: f64 = o.num("seconds", if count == u64::MAX { 1.0 } else { 3600.0 })?;
    let queue: u32 = o.num("queue", 0)?;
    let tpl = Template::new(&flow, size).map_err(|e| setup("size", e))?;

    let mut umem = Umem::new(FRAMES, FRAME_SIZE).map_err(|e| setup("UMEM", e))?;
    let mut sock = XskSocket::bind(&umem, ifindex(ifname)?, queue, BindMode::Auto, RING, None)
        .map_err(|e| setup(&format!("AF_XDP socket on {ifname} queue {queue}"), e))?;
    let mut free: Vec<UmemFrame> = umem.take_frames();

    // Batch: at most 50 µs of the offered rate, so pacing bursts add little queueing.
    let batch = if rate > 0.0 {
        ((rate * 50e-6) as u64).clamp(1, MAX_BATCH)
    } else {
        MAX_BATCH
    };
    let start = mono_ns();
    let end = start + (seconds * 1e9) as u64;
    let mut sent: u64 = 0;
    let mut tx_full: u64 = 0;
    loop {
        sock.complete(&umem, &mut free, 1024);
        let now = mono_ns();
        if sent >= count || now >= end {
            break;
        }
        let due = if rate > 0.0 {
            let target = ((now - start) as f64 * rate / 1e9) as u64 + 1;
            target.saturating_sub(sent).min(batch)
        } else {
            batch
        }
        .min(count - sent);
        if due == 0 {
            // Next packet not due yet: sleep until it is when that is long, else yield.
            let next = start + ((sent as f64) * 1e9 / rate) as u64;
            let wait = next.saturating_sub(now);
            if wait > 120_000 {
                std::thread::sleep(Duration::from_nanos(wait - 70_000));
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        let room = (sock.tx_free(due as usize) as u64)
            .min(free.len() as u64)
            .min(due);
        if room == 0 {
            tx_full += 1;
            sock.tx_commit();
            std::thread::yield_now();
            continue;
        }
        for _ in 0..room {
            let mut f = free.pop().expect("room <= free.len()");
            let len = tpl.write(f.as_mut(), sent, mono_ns());
            sock.tx_push(f, 0, len);
            sent += 1;
        }
        sock.tx_commit();
    }
    let elapsed = (mono_ns() - start) as f64 / 1e9;
    // Let the last kicks complete (copy mode sends inside the kick; this is short).
    let drain_until = mono_ns() + 100_000_000;
    while free.len() < FRAMES as usize && mono_ns() < drain_until {
        sock.tx_commit();
        if sock.complete(&umem, &mut free, 1024) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let st = sock.stats().unwrap_or_default();
    Ok(GenReport {
        size,
        offered_pps: rate,
        sent,
        seconds: elapsed,
        sent_pps: if elapsed > 0.0 {
            sent as f64 / elapsed
        } else {
            0.0
        },
        tx_full,
        tx_invalid_descs: st.tx_invalid_descs,
    })
}

/// `xsk sink --ifname IF --ip A [--queues N] [--xdp-mode driver|skb] [--drain-ms MS]`:
/// receives until stdin closes (or says anything), then `drain-ms` without packets more.
fn sink(o: &Opts) -> Result<SinkReport, BenchError> {
    let ifname = o.req("ifname")?;
    let ip: Ipv4Addr = o.req("ip")?.parse().map_err(|e| setup("ip", e))?;
    let queues: u32 = o.num("queues", 1)?;
    let drain_ms: u64 = o.num("drain-ms", 300)?;
    let mode = match o.get("xdp-mode").unwrap_or("driver") {
        "driver" => AttachMode::Driver,
        "skb" => AttachMode::Skb,
        m => return Err(setup("xdp-mode", format!("{m}: expected driver or skb"))),
    };
    let ifx = ifindex(ifname)?;
    let mut umem = Umem::new(FRAMES, FRAME_SIZE).map_err(|e| setup("UMEM", e))?;
    let mut socks: Vec<XskSocket> = Vec::new();
    for q in 0..queues {
        // The previous point's sink released this queue, but the kernel frees an AF_XDP
        // socket asynchronously: EBUSY for a moment. Retry for up to 3 s.
        let mut tries = 0;
        let s = loop {
            match XskSocket::bind(&umem, ifx, q, BindMode::Auto, RING, socks.first()) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy && tries < 300 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(setup(&format!("AF_XDP socket on {ifname} queue {q}"), e)),
            }
        };
        socks.push(s);
    }
    let mut xdp = XdpSteering::load().map_err(|e| setup("XDP program", e))?;
    xdp.attach(Side::Inside, ifname, mode)
        .map_err(|e| setup("XDP attach", e))?;
    for s in &socks {
        xdp.register_socket(Side::Inside, s.queue(), s)
            .map_err(|e| setup("XSKMAP", e))?;
    }
    xdp.add_protected(ip.into(), 32)
        .map_err(|e| setup("protected prefix", e))?;
    let mut free = umem.take_frames();
    let share = free.len() / socks.len().max(1);
    for s in socks.iter_mut() {
        s.fill(&mut free, share);
    }
    let fds: Vec<_> = socks.iter().map(|s| s.as_raw_fd()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            // EOF or any line: the generator is done.
            let _eof_or_line = std::io::stdin().read_line(&mut line);
            stop.store(true, Ordering::Release);
        });
    }
    eprintln!("ready");

    let mut seqs = SeqTracker::default();
    let mut hist = LatencyHist::new();
    let mut rep = SinkReport::default();
    let mut rx: Vec<RxPacket> = Vec::with_capacity(256);
    let mut stopped_at: Option<u64> = None;
    let mut last_rx_at = mono_ns();
    loop {
        let mut got = 0usize;
        for s in socks.iter_mut() {
            got += s.recv(&umem, &mut rx, 256);
            let now = mono_ns();
            for p in rx.drain(..) {
                let bytes = &p.frame.as_ref()[p.offset..p.offset + p.len];
                match afxdp_pkt::parse(bytes) {
                    None => rep.foreign += 1,
                    Some(probe) => match seqs.record(probe.seq) {
                        SeqVerdict::New => {
                            if rep.first_ns == 0 {
                                rep.first_ns = now;
                            }
                            rep.last_ns = now;
                            if probe.ts_ns > now {
                                rep.negative_latency += 1;
                            } else {
                                hist.record_ns(now - probe.ts_ns);
                            }
                        }
                        SeqVerdict::Duplicate => {}
                        SeqVerdict::Invalid => rep.foreign += 1,
                    },
                }
                free.push(p.frame);
            }
            s.fill(&mut free, 256);
        }
        let now = mono_ns();
        if got > 0 {
            last_rx_at = now;
            continue;
        }
        if stop.load(Ordering::Acquire) {
            let since = *stopped_at.get_or_insert(now);
            let quiet = now.saturating_sub(last_rx_at.max(since));
            if quiet >= drain_ms * 1_000_000 {
                break;
            }
        }
        poll_readable(&fds, 1);
    }
    for s in &socks {
        if let Ok(st) = s.stats() {
            rep.rx_dropped += st.rx_dropped;
            rep.rx_ring_full += st.rx_ring_full;
            rep.rx_fill_ring_empty += st.rx_fill_ring_empty_descs;
        }
    }
    rep.received = seqs.received;
    rep.duplicates = seqs.duplicates;
    rep.out_of_order = seqs.out_of_order;
    rep.foreign += seqs.invalid;
    rep.hist = hist.to_raw();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_complain() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let o = Opts::parse(&v("--size 64 --rate 1000.5 --ifname ca0 --size 128")).unwrap();
        assert_eq!(o.num("size", 0usize).unwrap(), 128);
        assert_eq!(o.num("rate", 0.0f64).unwrap(), 1000.5);
        assert_eq!(o.num("count", 7u64).unwrap(), 7);
        assert_eq!(o.req("ifname").unwrap(), "ca0");
        assert!(o.req("ip").is_err());
        assert!(o.num::<u64>("ifname", 0).is_err());
        assert!(Opts::parse(&v("--size")).is_err());
        assert!(Opts::parse(&v("size 64")).is_err());
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = mono_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = mono_ns();
        assert!(a > 0 && b >= a + 2_000_000, "{a} {b}");
    }
}
