//! The JSON Schema files in docs/schema/ against the documents `vpnctl --json` prints: each
//! file is valid JSON, and example documents built by the real code (a tunnel brought up
//! sans-IO, a counters snapshot) have every property the schema requires, no property the
//! schema does not declare, and values of the declared types. A cheap consistency check; the
//! full validation (jsonschema, against the real binaries) is in scripts/e2e_vpnctl.py.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::world::*;
use control::api::*;
use control::daemon::{EventAt, SaTraffic};
use serde_json::Value;

fn schema(kind: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{kind}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()))
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        other => panic!("schema type {other:?} unknown to this check"),
    }
}

/// The subset of JSON Schema the files use: type, const, enum, properties, required,
/// items, additionalProperties (a schema), $ref to $defs, oneOf. Errors by path.
fn check(root: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local refs only");
        return check(root, &root["$defs"][name], v, path, errs);
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let ok = alts
            .iter()
            .filter(|a| {
                let mut e = Vec::new();
                check(root, a, v, path, &mut e);
                e.is_empty()
            })
            .count();
        if ok != 1 {
            errs.push(format!("{path}: matches {ok} of oneOf"));
        }
        return;
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => errs.push(format!("{path}: not {t}: {v}")),
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)) => {
            errs.push(format!("{path}: none of {ts:?}: {v}"))
        }
        _ => {} // no type, or the type matches
    }
    if let Some(c) = s.get("const") {
        if c != v {
            errs.push(format!("{path}: {v} is not {c}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    if let (Some(o), Some(props)) = (
        v.as_object(),
        s.get("properties").and_then(Value::as_object),
    ) {
        for r in s["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{path}: required {r} missing"));
            }
        }
        for (k, x) in o {
            match props.get(k) {
                Some(ps) => check(root, ps, x, &format!("{path}.{k}"), errs),
                None => errs.push(format!("{path}.{k}: not declared in the schema")),
            }
        }
    }
    if let (Some(o), Some(ap)) = (v.as_object(), s.get("additionalProperties")) {
        if ap.is_object() && s.get("properties").is_none() {
            for (k, x) in o {
                check(root, ap, x, &format!("{path}.{k}"), errs);
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check(root, items, x, &format!("{path}[{i}]"), errs);
        }
    }
}

fn assert_valid<T: serde::Serialize>(kind: &str, body: &T) {
    let s = schema(kind);
    let v = serde_json::to_value(Document::new(kind, body)).unwrap();
    let mut errs = Vec::new();
    check(&s, &s, &v, kind, &mut errs);
    assert!(errs.is_empty(), "{kind}: {errs:#?}\n{v:#}");
}

/// A tunnel up between two sans-IO daemons, with some traffic counted.
fn tunnel() -> World {
    let mut w = basic();
    w.start();
    w.run_until(2_000);
    let spi = w.nodes[0].dp.inbound()[0].config.spi;
    for s in 1..5 {
        w.nodes[0].daemon.handle_sa_counters(
            2_000 + s * 1000,
            &[SaTraffic {
                spi,
                inbound: true,
                packets: s,
                bytes: 100 * s,
            }],
        );
    }
    w.now = 6_000;
    w
}

#[test]
fn every_schema_file_is_json_with_a_kind_and_a_version() {
    for kind in [
        "status", "list", "stats", "events", "reply", "diagnose", "keys",
    ] {
        let s = schema(kind);
        assert_eq!(s["properties"]["kind"]["const"], kind);
        assert_eq!(s["properties"]["schema_version"]["const"], SCHEMA_VERSION);
        let req: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert!(
            req.contains(&"kind") && req.contains(&"schema_version"),
            "{kind}"
        );
    }
}

#[test]
fn status_and_list_documents_match_their_schemas() {
    let mut w = tunnel();
    let d = &mut w.node("a").daemon;
    d.send_failed(
        5_000,
        "192.0.2.2:500".parse().unwrap(),
        "Network is unreachable",
    );
    let _ = d.reload(5_500, Err("bad".into()));
    let iked = d.status_report(6_000);
    let dataplane = DataplaneStatus {
        running: true,
        pid: Some(1),
        ring: "r".into(),
        counters_age_s: Some(0.5),
        outside: Some("o".into()),
        inside: Some("i".into()),
        xdp_mode: Some("native".into()),
        bind_mode: Some("copy".into()),
        workers: vec![WorkerStatus {
            id: 0,
            core: Some(0),
            queue: Some(0),
            outside_queues: vec![0],
            inside_queues: vec![0],
        }],
        sas: 2,
        policies: None,
        totals: Totals::default(),
        notes: vec!["a note".into()],
    };
    assert_valid(
        "status",
        &StatusReport {
            iked: Some(iked),
            iked_error: None,
            dataplane: dataplane.clone(),
        },
    );
    assert_valid(
        "status",
        &StatusReport {
            iked: None,
            iked_error: Some("no socket".into()),
            dataplane: DataplaneStatus::default(),
        },
    );
    let mut list = w.node("a").daemon.list_report(6_000, None);
    assert!(!list.connections[0].children[0].sas.is_empty());
    list.connections[0].children[0].sas[0].in_in_dataplane = Some(true);
    assert_valid("list", &list);
    // A connection that failed, with its classified failures.
    let bad_b = conf(B, A, "", &child("net", "10.2.0.0/16", "10.1.0.0/16", "")).replace(
        "a test pre-shared key of some length",
        "another pre-shared key entirely",
    );
    let good_a = conf(
        A,
        B,
        "",
        &child(
            "net",
            "10.1.0.0/16",
            "10.2.0.0/16",
            "start_action = \"start\"",
        ),
    );
    let mut w = World::new(&good_a, &bad_b);
    w.start();
    w.run_until(3_000);
    let list = w.node("a").daemon.list_report(3_000, None);
    assert!(!list.connections[0].failures.is_empty());
    assert_valid("list", &list);
}

#[test]
fn stats_events_reply_diagnose_and_keys_documents_match_their_schemas() {
    use dataplane::shm::counters::{CountersSnapshot, SaCounterEntry, WorkerCounters};
    let snap = CountersSnapshot {
        torn: false,
        updated_unix_ns: 1,
        esp_reasons: vec!["icv_failed".into()],
        worker_reasons: vec!["no_sa".into()],
        workers: vec![WorkerCounters {
            fixed: [1; 10],
            esp_drops: vec![2],
            worker_drops: vec![3],
        }],
        sas: vec![SaCounterEntry {
            spi: 0xc000_0001,
            inbound: true,
            reqid: 1,
            packets: 5,
            drops: vec![1],
            ..SaCounterEntry::default()
        }],
    };
    assert_valid("stats", &control::vpnctl::stats::report("r", &snap));

    let mut w = tunnel();
    let d = &mut w.node("a").daemon;
    d.event(
        6_000,
        tracing::Level::INFO,
        "trace",
        EventAt {
            conn: Some("peer".into()),
            peer: Some("192.0.2.2:500".parse().unwrap()),
            ike_spi: Some(7),
        },
        "sending INFORMATIONAL request 2 [ ]".into(),
    );
    let ev = d.events.since(0, 100);
    assert!(!ev.events.is_empty());
    assert_valid("events", &ev);

    assert_valid(
        "reply",
        &Reply {
            ok: false,
            text: "no connection \"nosuch\"".into(),
            data: Value::Null,
        },
    );
    assert_valid(
        "diagnose",
        &DiagnoseReport {
            now_unix_ms: 1,
            findings: vec![Finding {
                id: "esp-blocked".into(),
                severity: "error".into(),
                conn: Some("gw-b".into()),
                summary: "s".into(),
                evidence: BTreeMap::from([("encrypted_60s".into(), Value::from(12431))]),
                remedy: "r".into(),
                doc: "docs/DIAGNOSE.md#esp-blocked".into(),
            }],
            unchecked: vec!["nft: not installed".into()],
        },
    );
    assert_valid(
        "keys",
        &KeysReport {
            ike_sas: vec![IkeKeys {
                spi_i: "00".into(),
                spi_r: "11".into(),
                encr: "ENCR_AES_GCM_16".into(),
                encr_key_bits: 128,
                integ: None,
                sk_ei: "aa".into(),
                sk_er: "bb".into(),
                sk_ai: String::new(),
                sk_ar: String::new(),
            }],
            child_sas: vec![ChildKeys {
                direction: "in".into(),
                spi: "0xc0000001".into(),
                src: "192.0.2.2".into(),
                dst: "192.0.2.1".into(),
                encr: "ENCR_AES_GCM_16".into(),
                encr_key_bits: 128,
                integ: Some("AUTH_HMAC_SHA2_256_128".into()),
                encr_key: "00ff".into(),
                integ_key: "ee".into(),
                nat_t: false,
            }],
        },
    );
}

#[test]
fn the_check_catches_a_missing_or_undeclared_property() {
    let s = schema("reply");
    let mut errs = Vec::new();
    let v = serde_json::json!({"schema_version": 1, "kind": "reply", "ok": true, "data": null, "extra": 1});
    check(&s, &s, &v, "reply", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
}
