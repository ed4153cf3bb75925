//! `--json` (issue 14): every command that reports prints exactly one JSON
//! document on stdout (bench: one per result, JSON Lines), with
//! `"schema": "mlx5vf/1"` and its `command`; the human summary stays on
//! stderr; a failure still prints one document, with `error`. Read back
//! with serde_json, never by searching the text.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Value, json};

use common::{one_json_document, run, run_stdin};

/// A JSON object's keys in the order they were written.
struct KeyOrder(Vec<String>);

impl<'de> Deserialize<'de> for KeyOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KeyOrder;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(KeyOrder(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mlx5vf-json-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `args`, expects success, and returns its one document after
/// checking its `command`.
fn document(args: &[&str], command: &str) -> (Value, String) {
    let r = run(args);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    let doc = one_json_document(&r.stdout);
    assert_eq!(doc["command"], command, "{args:?}");
    (doc, r.stderr)
}

#[test]
fn save_load_and_migrate_print_their_summary_on_stdout() {
    let dir = temp_dir("transfer");
    let file = dir.join("state.bin");
    let f = file.to_str().unwrap();
    let (saved, stderr) = document(
        &[
            "save",
            "--device",
            "sim:state=2M,object=64K-256K",
            "-o",
            f,
            "--json",
        ],
        "save",
    );
    // The summary for people stays on stderr, the same figures.
    assert!(
        stderr.contains(&format!("bytes={} (", saved["bytes"])),
        "{stderr}"
    );
    assert_eq!(saved["stream_format"], "mlx5vf");
    assert!(saved["seconds"].is_f64());
    let r = run(&["load", "--device", "sim", "-i", f, "--json"]);
    let keys: KeyOrder = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(keys.0[..4], ["schema", "command", "device", "bytes"]);
    let (loaded, _) = document(&["load", "--device", "sim", "-i", f, "--json"], "load");
    assert_eq!(loaded["digest"], saved["digest"]);
    assert_eq!(loaded["bytes"], saved["bytes"]);
    let (migrated, stderr) = document(&["migrate", "--from", "sim:state=4M", "--json"], "migrate");
    assert_eq!(migrated["digests_match"], true);
    assert!(stderr.contains("digests_match=true"), "{stderr}");
    let (inspected, _) = document(&["inspect", f, "--json"], "inspect");
    assert_eq!(inspected["summary"]["total_bytes"], saved["bytes"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_prints_its_report_on_stdout_and_its_lines_on_stderr() {
    let (doc, stderr) = document(
        &["check", "--device", "sim:state=8M,precopy=off", "--json"],
        "check",
    );
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["migration_flags"], 3);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 10, "{doc}");
    let skipped: Vec<&Value> = checks.iter().filter(|c| c["result"] == "skip").collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["name"], "pre-copy");
    // The lines for people, as the checks ran.
    assert_eq!(stderr.lines().filter(|l| l.starts_with("PASS ")).count(), 9);
}

#[test]
fn states_print_documents() {
    let (next, _) = document(
        &["states", "next", "running", "stop-copy", "--json"],
        "states next",
    );
    assert_eq!(
        next,
        json!({"schema": "mlx5vf/1", "command": "states next", "from": "running",
               "to": "stop-copy", "flags": 7, "next": "running-p2p"})
    );
    let (path, _) = document(
        &["states", "path", "pre-copy", "resuming", "--json"],
        "states path",
    );
    assert_eq!(
        path["path"],
        json!(["pre-copy", "running", "running-p2p", "stop", "resuming"])
    );
    let (table, _) = document(
        &["states", "table", "--flags", "stop-copy", "--json"],
        "states table",
    );
    let states = table["states"].as_array().unwrap();
    assert_eq!(states.len(), 8);
    let at = |from: &str, to: &str| {
        let row = states.iter().position(|s| s == from).unwrap();
        let column = states.iter().position(|s| s == to).unwrap();
        table["next"][row][column].clone()
    };
    assert_eq!(at("running", "stop-copy"), "stop");
    assert_eq!(at("running", "pre-copy"), Value::Null);
}

#[test]
fn ifc_prints_documents() {
    let r = run(&[
        "ifc",
        "decode",
        "alloc_pd_out",
        "0x00000000000000000000002a00000000",
        "--json",
    ]);
    let doc = one_json_document(r.ok());
    assert_eq!(
        doc,
        json!({"schema": "mlx5vf/1", "command": "ifc decode", "structure": "alloc_pd_out",
               "fields": {"status": 0, "syndrome": 0, "pd": 42}})
    );
    // Members in table order, as the text form prints them.
    #[derive(Deserialize)]
    struct Decoded {
        fields: KeyOrder,
    }
    let decoded: Decoded = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(decoded.fields.0, ["status", "syndrome", "pd"]);
    let (encoded, _) = document(
        &["ifc", "encode", "alloc_pd_out", "pd=42", "--json"],
        "ifc encode",
    );
    assert_eq!(encoded["hex"], "00000000000000000000002a00000000");
    let (list, _) = document(&["ifc", "list", "--json"], "ifc list");
    let save = list["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "save_vhca_state_in")
        .unwrap();
    assert_eq!(
        *save,
        json!({"name": "save_vhca_state_in", "size": 32, "kind": "input", "opcode": 0x118})
    );
    let (fields, _) = document(&["ifc", "fields", "create_mkey_in", "--json"], "ifc fields");
    let fields = fields["fields"].as_array().unwrap();
    assert_eq!(
        fields.last().unwrap(),
        &json!({"name": "klm_pas_mtt[]", "bit": 272 * 8, "width": 32})
    );
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "memory_key_mkey_entry.pd")
    );
}

/// bench prints JSON Lines: one document per result. The scaling
/// benchmark reads its child's `migrate --json` document with serde_json.
#[test]
fn bench_prints_one_document_per_result() {
    let r = run(&[
        "bench",
        "--only",
        "resume,scaling",
        "--resume-size",
        "4M",
        "--scaling-sizes",
        "4M,8M",
        "--json",
    ]);
    let text = r.ok();
    let docs: Vec<Value> = text.lines().map(one_json_document).collect();
    assert_eq!(docs.len(), 3, "{text}");
    assert!(docs.iter().all(|d| d["command"] == "bench"));
    // Scaling runs before resume.
    assert_eq!(docs[2]["benchmark"], "resume");
    assert!(docs[2]["stream_bytes"].as_u64().unwrap() > 4 << 20);
    for (doc, size) in docs[..2].iter().zip([4u64 << 20, 8 << 20]) {
        assert_eq!(doc["benchmark"], "scaling");
        assert!(doc["bytes"].as_u64().unwrap() > size, "{doc}");
        assert!(doc["peak_buffer_bytes"].as_u64().unwrap() > 0, "{doc}");
        assert!(doc["bytes_per_sec"].as_f64().unwrap() > 0.0, "{doc}");
        assert_eq!(doc["base_state"], "4M", "{doc}");
        assert!(doc["ratio_to_first"].as_f64().unwrap() > 0.0, "{doc}");
        assert!(doc.get("ratio_to_1g").is_none(), "{doc}");
    }
    assert_eq!(docs[0]["ratio_to_first"], 1.0);
}

/// A command that fails after --json was given prints one document with
/// the error line and exit status, besides that line on stderr.
#[test]
fn a_failure_is_a_document_too() {
    let cases: [(&[&str], &str, i32); 4] = [
        (
            &["states", "next", "stop-copy", "pre-copy", "--json"],
            "states next",
            1,
        ),
        (
            &["ifc", "decode", "alloc_pd_out", "0x0g", "--json"],
            "ifc decode",
            2,
        ),
        (&["check", "--device", "vfio-mig:", "--json"], "check", 2),
        (
            &["inspect", "/nonexistent/stream.bin", "--json"],
            "inspect",
            1,
        ),
    ];
    for (args, command, code) in cases {
        let r = run(args);
        let line = r.fails(code, "");
        let doc = one_json_document(&r.stdout);
        assert_eq!(
            doc,
            json!({"schema": "mlx5vf/1", "command": command,
                   "error": {"message": line.strip_prefix("mlx5vf: ").unwrap(),
                             "exit_code": code}}),
            "{args:?}"
        );
    }
    let r = run_stdin(&["load", "--json"], b"");
    let line = r.fails(1, "empty stream");
    let doc = one_json_document(&r.stdout);
    assert_eq!(doc["command"], "load");
    assert_eq!(
        doc["error"]["message"],
        line.strip_prefix("mlx5vf: ").unwrap()
    );
}

/// The document goes to stdout, so `save --json` cannot send its stream
/// there too.
#[test]
fn save_json_needs_the_stream_elsewhere() {
    for args in [
        &["save", "--device", "sim:state=1M", "--json"][..],
        &["save", "--device", "sim:state=1M", "--json", "-o", "-"],
    ] {
        let r = run(args);
        r.fails(
            2,
            "--json prints its document on standard output, which would carry the stream too",
        );
        assert_eq!(r.stdout, "", "{args:?}");
    }
}
