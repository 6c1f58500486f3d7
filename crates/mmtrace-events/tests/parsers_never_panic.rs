//! No input makes the event-list, filter or scope parsers panic: they answer Ok or an error.

use mmtrace_events::decode::parse_size;
use mmtrace_events::scope::Scope;
use mmtrace_events::select::parse_selection;
use proptest::prelude::*;

/// Strings built from the syntax's own pieces reach deeper than random bytes would.
fn syntax() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("mlock2".to_string()),
        Just("munmap".to_string()),
        Just(".data.".to_string()),
        Just(".args.".to_string()),
        Just(".retval".to_string()),
        Just("flags".to_string()),
        Just("len".to_string()),
        Just("pid".to_string()),
        Just("comm".to_string()),
        Just("tree".to_string()),
        Just("cgroup".to_string()),
        Just("tag=".to_string()),
        Just("MLOCK_ONFAULT".to_string()),
        Just("-EINVAL".to_string()),
        "[=!<>,*|.-]{1,3}",
        "[0-9]{1,25}[KMGT]?",
        "0x[0-9a-f]{0,20}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn selection(flags in prop::collection::vec(syntax(), 0..4)) {
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _ = parse_selection(&refs);
    }

    #[test]
    fn scope(flags in prop::collection::vec(syntax(), 0..4)) {
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _ = Scope::parse(&refs);
    }

    #[test]
    fn sizes(text in syntax()) {
        let _ = parse_size(&text);
    }
}
