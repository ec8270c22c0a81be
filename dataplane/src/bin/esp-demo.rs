//! `esp-demo`: run the ESP engine on generated traffic and report what it did.
//!
//! For every mode (tunnel 4in4, 6in6, 4in6, 6in4; transport IPv4, IPv6) and cipher it
//! encapsulates a batch stream of packets of mixed sizes, decapsulates them with the peer's
//! SA, checks every packet came back byte for byte, then shows the drop counters catching a
//! replayed, a tampered and an unknown-SPI packet.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use dataplane::esp::demo::{run, BATCH, CIPHERS, SHAPES};
use dataplane::esp::DropCounters;

struct Args {
    packets: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut packets = 20_000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--packets" => {
                packets = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--packets needs a number")?
            }
            "-h" | "--help" => {
                println!(
                    "esp-demo: run the sans-IO ESP engine on generated packets\n\n\
                     USAGE: esp-demo [--packets N]\n\n\
                     --packets N   packets per mode and cipher (default 20000)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Args { packets })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("esp-demo: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "ESP engine demo: {} packets per mode and cipher (64-1420 B inner), batches of {BATCH}",
        args.packets
    );
    println!(
        "Each packet is encapsulated, decapsulated by the peer SA and compared byte for byte.\n"
    );
    println!(
        "{:<13} {:<17} {:>5} {:>5} {:>8} {:>11} {:>11} {:>9} {:>9}  round trip",
        "mode", "cipher", "NAT-T", "ESN", "packets", "inner MB", "wire MB", "overhead", "ns/pkt",
    );
    let mut failed = false;
    let mut total = DropCounters::default();
    for shape in SHAPES {
        for &cipher in CIPHERS {
            match run(shape, cipher, args.packets) {
                Ok(r) => {
                    println!(
                        "{:<13} {:<17} {:>5} {:>5} {:>8} {:>11.2} {:>11.2} {:>8.1}% {:>9.0}  verified",
                        shape.name,
                        cipher,
                        if shape.nat_t { "yes" } else { "no" },
                        if shape.esn { "yes" } else { "no" },
                        r.packets,
                        r.inner_bytes as f64 / 1e6,
                        r.wire_bytes as f64 / 1e6,
                        100.0 * (r.wire_bytes as f64 / r.inner_bytes as f64 - 1.0),
                        r.ns_per_packet,
                    );
                    total.merge(&r.drops);
                }
                Err(e) => {
                    println!("{:<13} {:<17} FAILED: {e}", shape.name, cipher);
                    failed = true;
                }
            }
        }
    }
    println!("\nDrops by reason (from the deliberate replay, tamper and unknown-SPI packets):");
    for (r, n) in total.nonzero() {
        println!("  {:<18} {n}", r.name());
    }
    println!("\nns/pkt is encap + decap in one thread of this (shared, noisy) machine; see `cargo bench -p bench` for steady figures.");
    if failed {
        ExitCode::FAILURE
    } else {
        println!("All round trips verified.");
        ExitCode::SUCCESS
    }
}
