use super::*;
use gateway_core::config::MaskingConfig;
use gateway_core::masking::MaskingEngine;
use serde_json::json;

fn masks() -> std::sync::Arc<SessionMasks> {
    let block = MaskingConfig {
        connections: vec!["prod".into()],
        detectors: vec!["email".into()],
        ..Default::default()
    };
    MaskingEngine::new(&[block], [7; 32])
        .unwrap_or_else(|e| panic!("{e}"))
        .for_session("prod", &[])
        .unwrap_or_else(|| panic!("applies"))
}

const PASSWORD_B64: &str = "aHVudGVyMi1zM2NyZXQ="; // hunter2-s3cret

fn secret() -> Value {
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": { "name": "db", "annotations": {
            LAST_APPLIED: "{\"data\":{\"password\":\"aHVudGVyMi1zM2NyZXQ=\"}}"
        }},
        "type": "Opaque",
        "data": { "password": PASSWORD_B64 },
        "stringData": { "token": "plain-token-value" }
    })
}

fn assert_clean(v: &Value) {
    let text = v.to_string();
    for leak in [PASSWORD_B64, "hunter2", "plain-token-value"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[test]
fn secret_values_are_masked_and_stay_base64() {
    let m = masks();
    let mut counts = MaskCounts::new();
    let mut doc = secret();
    mask_document(&m, &mut doc, &mut counts);
    assert_clean(&doc);
    let data = doc["data"]["password"]
        .as_str()
        .unwrap_or_else(|| panic!("{doc}"));
    let decoded = STANDARD.decode(data).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        String::from_utf8_lossy(&decoded).contains("REDACTED"),
        "{doc}"
    );
    assert_eq!(counts.values(), 3);
}

#[test]
fn secrets_in_lists_events_and_tables_are_found() {
    let m = masks();
    let mut item = secret();
    if let Some(o) = item.as_object_mut() {
        o.remove("kind");
    }
    let mut docs = [
        json!({ "kind": "SecretList", "items": [item] }),
        json!({ "kind": "List", "items": [secret()] }),
        json!({ "type": "ADDED", "object": secret() }),
        json!({ "kind": "Table", "rows": [ { "cells": ["db"], "object": secret() } ] }),
        json!({ "type": "MODIFIED", "object": { "kind": "Table", "rows": [ { "object": secret() } ] } }),
    ];
    for doc in &mut docs {
        let mut counts = MaskCounts::new();
        mask_document(&m, doc, &mut counts);
        assert_clean(doc);
    }
}

#[test]
fn other_objects_are_left_alone() {
    let m = masks();
    let mut doc = json!({ "kind": "ConfigMap", "data": { "password": "visible" } });
    let before = doc.clone();
    mask_document(&m, &mut doc, &mut MaskCounts::new());
    assert_eq!(doc, before);
}

#[test]
fn a_metadata_only_secret_loses_its_last_applied_copy() {
    let m = masks();
    let applied =
        r#"{"apiVersion":"v1","kind":"Secret","data":{"password":"aHVudGVyMi1zM2NyZXQ="}}"#;
    let mut doc = json!({ "kind": "Table", "rows": [ { "object": {
        "kind": "PartialObjectMetadata",
        "metadata": { "name": "db", "annotations": { LAST_APPLIED: applied } }
    } } ] });
    mask_document(&m, &mut doc, &mut MaskCounts::new());
    assert_clean(&doc);
}
