//! The example lines of the event reference: real mmtrace output of real calls.

use mmtrace_events::catalog;

// Captured by tests/examples.rs, and built in so that `explain` can show them anywhere.
const JSON_LINES: &str = include_str!("../../../docs/events/examples.jsonl");
const TABLE_LINES: &str = include_str!("../../../docs/events/examples.table");

/// One event's captured call, as `mmtrace trace -o json` and `-o table` printed it.
pub struct Example {
    pub json: &'static str,
    pub table_header: &'static str,
    pub table: &'static str,
}

/// Why an event has no example, if it has none by design (the catalog's docs say).
pub fn missing_reason(event: &str) -> Option<&'static str> {
    catalog::doc(event)?.no_example
}

/// The example of `event`; None until one has been captured.
pub fn of(event: &str) -> Option<Example> {
    let json = JSON_LINES
        .lines()
        .find(|l| l.contains(&format!("\"eventName\":\"{event}\",")))?;
    let mut rows = TABLE_LINES.lines();
    let table_header = rows.next()?;
    // The call column follows a space, so ` mlock(` cannot match munlock or mlock2; a
    // raised event's row shows ` name: ` and its text.
    let marker = match catalog::raised(event) {
        Some(_) => format!(" {event}: "),
        None => format!(" {event}("),
    };
    let table = rows.find(|l| l.contains(&marker))?;
    Some(Example {
        json,
        table_header,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmtrace_events::keys::KEYS;
    use mmtrace_events::{EventDef, CATALOG};
    use serde_json::Value;

    #[test]
    fn one_example_per_event_and_no_other() {
        let examples = catalog::names()
            .filter(|name| missing_reason(name).is_none())
            .count();
        assert_eq!(JSON_LINES.lines().count(), examples);
        assert_eq!(TABLE_LINES.lines().count(), examples + 1);
        for name in catalog::names() {
            assert_eq!(of(name).is_some(), missing_reason(name).is_none(), "{name}");
        }
    }

    /// Every example parses and has the shape of a JSON line: the documented keys in order
    /// (Tracee's first), and arguments matching the catalog.
    #[test]
    fn examples_match_the_json_schema() {
        for e in CATALOG.iter().filter(|e| missing_reason(e.name).is_none()) {
            let v = check_shape(e, &e.extra_fields());
            assert_eq!(v["syscall"], e.name);
            // Calls take time and come from the example caller; kernel events are instants,
            // from the OOM victim (or whoever the kernel acted for).
            let call = matches!(e.source, mmtrace_events::catalog::Source::Syscall { .. });
            assert_eq!(v["duration"].as_u64().unwrap() > 0, call, "{}", e.name);
            if call {
                assert_eq!(v["processName"], "mmtrace-example");
            }
        }
        for e in catalog::RAISED {
            // Raised in the context of the call that raised it, as an instant.
            let v = check_shape(e, &[]);
            assert!(e.source.by.contains(&v["syscall"].as_str().unwrap()));
            assert_eq!(v["processName"], "mmtrace-example");
            assert_eq!(v["duration"], 0);
        }
    }

    /// Checks `e`'s example against the keys and the catalog; `extra` are the keys it may add.
    fn check_shape<S>(e: &EventDef<S>, extra: &[(&str, &str)]) -> Value {
        let line = of(e.name).unwrap().json;
        let v: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let failed = v.get("returnError").is_some();
        let expected: Vec<&str> = KEYS
            .iter()
            .map(|&(key, _)| key)
            .filter(|&key| key != "returnError" || failed)
            // Left out, as the examples' callers run outside any container.
            .filter(|key| !["containerId", "container", "kubernetes"].contains(key))
            .collect();
        assert_eq!(keys[..expected.len()], expected, "{}", e.name);
        // After the common keys, only what the catalog documents for this event.
        for key in &keys[expected.len()..] {
            assert!(
                extra.iter().any(|(k, _)| k == key),
                "{}: undocumented key {key}",
                e.name
            );
        }
        assert_eq!(v["eventName"], e.name);
        assert_eq!(v["eventId"], e.event_id.to_string());
        assert_eq!(v["argsNum"], e.args.len());
        let args = v["args"].as_array().unwrap();
        assert_eq!(args.len(), e.args.len(), "{}", e.name);
        for (a, def) in args.iter().zip(e.args) {
            assert_eq!(a["name"], def.name, "{}", e.name);
            assert_eq!(a["type"], def.ty.tracee_name(), "{}", e.name);
            assert!(!a["value"].is_null(), "{}", e.name);
            assert_eq!(
                a.get("decoded").is_some(),
                !def.decoder.names().is_empty(),
                "{} {}: decoded exactly where the catalog has names",
                e.name,
                def.name
            );
        }
        assert!(v["returnValue"].is_i64());
        v
    }

    /// `explain` shows the examples on any machine: none names a path of the machine that
    /// captured it, such as its build directory.
    #[test]
    fn examples_name_no_path_of_the_capturing_machine() {
        let checkout = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let checkout = std::fs::canonicalize(checkout).unwrap();
        for line in JSON_LINES.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let path = v["executable"]["path"].as_str().unwrap_or_default();
            assert!(!path.contains("/target/"), "{path}");
            assert!(!path.starts_with(checkout.to_str().unwrap()), "{path}");
        }
    }

    #[test]
    fn table_rows_are_the_same_calls() {
        for e in CATALOG.iter().filter(|e| missing_reason(e.name).is_none()) {
            let ex = of(e.name).unwrap();
            assert!(ex.table_header.ends_with("CALL"), "{}", ex.table_header);
            let v: Value = serde_json::from_str(ex.json).unwrap();
            // The pid alone: the examples' caller and victim are single-threaded.
            assert_eq!(v["hostProcessId"], v["hostThreadId"]);
            let pid = format!(" {} ", v["hostProcessId"]);
            assert!(ex.table.contains(&pid), "{}: {}", e.name, ex.table);
        }
    }
}
