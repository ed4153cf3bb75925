//! `mlx5vf dirty`: over the simulated VF, `--verify` finds no miss for
//! several range sets (more than the device holds among them), page sizes
//! and message sizes; usage errors exit 2.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use common::run;

fn dirty(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec![
        "dirty",
        "--interval",
        "1ms",
        "--rounds",
        "3",
        "--verify",
        "--json",
    ];
    all.extend_from_slice(args);
    let r = run(&all);
    (r.code, r.stdout, r.stderr)
}

fn doc(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn verify_passes_for_range_sets_page_sizes_and_message_sizes() {
    let nine: Vec<String> = (0..9u64)
        .map(|i| {
            format!(
                "{:#x}:{}",
                (i * 12) << 20,
                if i % 2 == 0 { "2M" } else { "512K" }
            )
        })
        .collect();
    let mut sets: Vec<Vec<String>> = vec![
        vec!["0:128M".into()],
        vec!["0:4M".into(), "0x1000000:8M".into()],
        nine,
        vec!["0x4000000:64M".into(), "0x100000000:1G".into()],
    ];
    sets.push(vec!["0x7ff0000:64K".into()]);
    for ranges in &sets {
        for page in ["4K", "64K", "2M"] {
            for msg in ["64", "4K", "1M"] {
                let mut args: Vec<&str> = vec![
                    "--page-size",
                    page,
                    "--msg-size",
                    msg,
                    "--dirty-rate",
                    "50000",
                ];
                for r in ranges {
                    args.push("--range");
                    args.push(r);
                }
                let aligned = ranges.iter().all(|r| {
                    let (a, l) = r.split_once(':').unwrap();
                    let a = u64::from_str_radix(
                        a.trim_start_matches("0x"),
                        if a.starts_with("0x") { 16 } else { 10 },
                    )
                    .unwrap();
                    let l = match l.chars().last().unwrap() {
                        'K' => l[..l.len() - 1].parse::<u64>().unwrap() << 10,
                        'M' => l[..l.len() - 1].parse::<u64>().unwrap() << 20,
                        'G' => l[..l.len() - 1].parse::<u64>().unwrap() << 30,
                        _ => l.parse().unwrap(),
                    };
                    let p = match page {
                        "4K" => 4096,
                        "64K" => 65536,
                        _ => 2 << 20,
                    };
                    a % p == 0 && l % p == 0
                });
                let (code, out, err) = dirty(&args);
                if !aligned {
                    // The VFIO core would refuse ranges not aligned to the
                    // page size: the tool says which, before asking.
                    assert_eq!(code, Some(2), "{args:?}: {out}{err}");
                    assert!(err.contains("is not aligned to the page size"), "{err}");
                    continue;
                }
                assert_eq!(code, Some(0), "{args:?}: {out}{err}");
                let d = doc(&out);
                assert_eq!(d["verified"], true, "{args:?}");
                assert!(d["tracked_ranges"].as_u64().unwrap() <= 4);
                let reported: u64 = d["rounds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["reported_pages"].as_u64().unwrap())
                    .sum();
                // All of guest memory: 150 writes cannot all miss it.
                if ranges[0] == "0:128M" {
                    assert!(reported > 0, "{args:?}: nothing reported: {out}");
                }
            }
        }
    }
}

#[test]
fn more_ranges_than_the_device_holds_are_combined() {
    let (code, out, err) = dirty(&[
        "--device-ranges",
        "2",
        "--range",
        "0:1M",
        "--range",
        "0x200000:1M",
        "--range",
        "0x800000:1M",
        "--range",
        "0x900000:1M",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let d = doc(&out);
    assert_eq!(
        (d["ranges"].as_u64(), d["tracked_ranges"].as_u64()),
        (Some(4), Some(2))
    );
}

#[test]
fn page_size_is_clamped_and_reported() {
    let (code, out, err) = dirty(&["--page-size", "1K", "--range", "0:1M"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(doc(&out)["tracked_page_size"], 4096);
    let (code, out, _) = dirty(&["--page-size", "1G", "--range", "0:1G"]);
    assert_eq!(code, Some(0));
    assert_eq!(doc(&out)["tracked_page_size"], 2 << 20);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        // --verify on a VFIO device needs a guest's ground truth.
        &["--device", "vfio-mig:0000:00:01.0", "--range", "0:1M"][..],
        &["--device", "sim", "--guest", "/tmp", "--range", "0:1M"][..],
        &["--device", "nonsense:x", "--range", "0:1M"][..],
        &["--msg-size", "100", "--range", "0:1M"][..],
        &["--range", "nonsense"][..],
    ] {
        let (code, out, err) = dirty(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
    }
}

/// Ranges the VFIO core would refuse are named with the rule they break,
/// before the device is asked (the kernel answers only EINVAL).
#[test]
fn refused_ranges_are_named_with_the_rule() {
    for (args, says) in [
        (
            &[
                "--range",
                "0:16M",
                "--range",
                "0x6000000:1M",
                "--page-size",
                "2M",
            ][..],
            "range 0x6000000:0x100000 is not aligned to the page size 0x200000",
        ),
        (
            &["--range", "0:16M", "--range", "0x800000:1M"][..],
            "range 0x800000:0x100000 overlaps range 0x0:0x1000000",
        ),
        (
            &["--range", "0:16M", "--page-size", "3000"][..],
            "--page-size 3000 is not a power of two",
        ),
    ] {
        let (code, out, err) = dirty(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn migrate_with_a_dirtying_guest_counts_pages_per_round_and_at_the_stop() {
    let r = run(&[
        "migrate",
        "--from",
        "sim:state=8M,dirty=512K",
        "--precopy",
        "--guest-dirty",
        "200000",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let d = doc(&r.stdout);
    assert_eq!(d["digests_match"], true);
    let rounds = d["guest_pages_per_round"].as_str().unwrap();
    let n: Vec<u64> = rounds.split(',').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        n.len() as u64,
        d["precopy_rounds"].as_u64().unwrap(),
        "one sync per round"
    );
    assert!(d["guest_page_writes"].as_u64().unwrap() > 0);
    assert!(d["guest_stop_pages"].as_u64().is_some(), "{}", r.stdout);
    assert_eq!(
        d["guest_stop_bytes"].as_u64().unwrap(),
        d["guest_stop_pages"].as_u64().unwrap() * 4096
    );
    // Without --precopy the guest never runs: refused as usage.
    let r = run(&["migrate", "--from", "sim:state=8M", "--guest-dirty", "1000"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}

/// The downtime benchmark with a DMA-writing guest: both runs track it,
/// and the result says what the stop's sync found.
#[test]
fn the_downtime_benchmark_counts_the_guest_pages_sent_in_the_downtime() {
    let r = run(&[
        "bench",
        "--only",
        "downtime",
        "--downtime-sizes",
        "16M",
        "--dirty-rates",
        "512K",
        "--guest-dirty",
        "200000",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let d = doc(&r.stdout);
    assert_eq!(d["benchmark"], "downtime");
    assert_eq!(d["guest_dirty_pages_per_sec"], 200000);
    assert!(d["guest_stop_pages"].as_u64().is_some(), "{}", r.stdout);
    assert!(d.get("guest_tracking_error").is_none(), "{}", r.stdout);
    // Without a guest there are no guest figures.
    let r = run(&[
        "bench",
        "--only",
        "downtime",
        "--downtime-sizes",
        "16M",
        "--dirty-rates",
        "512K",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        doc(&r.stdout).get("guest_stop_pages").is_none(),
        "{}",
        r.stdout
    );
}
