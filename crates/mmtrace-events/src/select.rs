//! The `-e/--events` syntax: names, `-name` to exclude, `tag=SET`, `prefix*`, and filters
//! on arguments and return values (`EVENT.data.ARG OP VALUES`, `EVENT.retval OP VALUES`).

use crate::catalog::{self, EventDef, Raised, CATALOG, RAISED};
use crate::filter::{parse_filter, split_op, ArgFilter, FilterError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("unknown event '{name}'{}; run 'mmtrace list' to see them all", suggest(.close))]
    UnknownEvent {
        name: String,
        close: Vec<&'static str>,
    },
    #[error("unknown event set '{name}'{}; sets are: {}", suggest(.close), catalog::sets().join(", "))]
    UnknownSet {
        name: String,
        close: Vec<&'static str>,
    },
    #[error("'{pattern}' matches no event; run 'mmtrace list' to see them all")]
    NoMatch { pattern: String },
    #[error("empty item in event list '{list}': remove the extra comma")]
    EmptyItem { list: String },
    #[error("empty event list: give names, -NAME, tag=SET or PREFIX*, or leave -e out to trace every event")]
    EmptyList,
    #[error("event list '{list}' selects no event once exclusions apply")]
    NothingSelected { list: String },
    #[error("{name} cannot be filtered: mmtrace raises it from {by}; filter those instead")]
    RaisedFilter { name: &'static str, by: String },
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// What `-e` selected: the events, and the filters on their calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The events to attach: those named, and those whose records raise a named raised event.
    pub events: Vec<&'static EventDef>,
    pub filters: Vec<ArgFilter>,
    /// The raised events named (mem_prot_alert).
    pub raised: Vec<&'static EventDef<Raised>>,
    /// Events attached only for a raised event: their own lines are not shown.
    pub hidden: Vec<&'static EventDef>,
}

/// `EVENT.field OP VALUES`: a filter when what precedes the operator names an event's field.
fn as_filter(item: &str) -> Option<(&str, &str)> {
    let (lhs, _, _) = split_op(item)?;
    let (event, _) = lhs.split_once('.')?;
    Some((event, &item[event.len() + 1..]))
}

/// Parses the values of every `-e` flag. A flag holding a filter is one filter, so its values
/// may be comma separated; any other flag is a comma-separated list of names and patterns.
pub fn parse_selection(flags: &[&str]) -> Result<Selection, SelectError> {
    let mut list = Vec::new();
    let mut filters = Vec::new();
    for flag in flags.iter().map(|f| f.trim()) {
        match as_filter(flag) {
            Some((name, rest)) => {
                if let Some(raised) = catalog::raised(name) {
                    return Err(SelectError::RaisedFilter {
                        name: raised.name,
                        by: raised.source.by.join(", "),
                    });
                }
                let event = catalog::by_name(name).ok_or_else(|| SelectError::UnknownEvent {
                    name: name.into(),
                    close: closest(name, catalog::names()),
                })?;
                filters.push(parse_filter(event, rest, flag)?);
                list.push(name);
            }
            // `-e ''` or `-e "$EVENTS"` with the variable unset: all events would be a surprise.
            None if flag.is_empty() => return Err(SelectError::EmptyList),
            None => list.push(flag),
        }
    }
    let (events, raised) = choose(Some(&list.join(",")))?;
    let raisers: Vec<_> = CATALOG
        .iter()
        .filter(|e| raised.iter().any(|r| r.source.by.contains(&e.name)))
        .collect();
    let hidden = raisers
        .iter()
        .copied()
        .filter(|e| !events.contains(e))
        .collect();
    let events = CATALOG
        .iter()
        .filter(|e| events.contains(e) || raisers.contains(e))
        .collect();
    Ok(Selection {
        events,
        filters,
        raised,
        hidden,
    })
}

fn suggest(close: &[&str]) -> String {
    match close {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => format!(" (did you mean one of: {}?)", many.join(", ")),
    }
}

/// Names close to `typo`, best first: only those about as close as the best, so a clear
/// winner is suggested alone.
pub fn closest<'a>(typo: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = names
        .into_iter()
        .map(|n| (strsim::jaro_winkler(typo, n), n))
        .filter(|&(score, n)| score >= 0.85 || (typo.len() >= 3 && n.contains(typo)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let best = scored.first().map_or(0.0, |s| s.0);
    scored
        .into_iter()
        .take_while(|&(score, _)| score >= best - 0.05)
        .take(3)
        .map(|(_, n)| n)
        .collect()
}

/// The events a list selects, with those a selected raised event needs, in catalog order;
/// None or an empty list means all of them.
pub fn parse_events(list: Option<&str>) -> Result<Vec<&'static EventDef>, SelectError> {
    let flags: Vec<&str> = list.into_iter().collect();
    Ok(parse_selection(&flags)?.events)
}

/// The hooked and the raised events a list names, each in catalog order.
type Chosen = (Vec<&'static EventDef>, Vec<&'static EventDef<Raised>>);

/// The events a list names; None or an empty list means all of them.
fn choose(list: Option<&str>) -> Result<Chosen, SelectError> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok((CATALOG.iter().collect(), RAISED.to_vec()));
    };
    let n = CATALOG.len() + RAISED.len();
    let mut include = vec![false; n];
    let mut exclude = vec![false; n];
    let mut any_include = false;
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(SelectError::EmptyItem { list: list.into() });
        }
        let (negate, pattern) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let hits = matching(pattern)?;
        let target = if negate { &mut exclude } else { &mut include };
        any_include |= !negate;
        for i in hits {
            target[i] = true;
        }
    }
    let chosen = |i: usize| (include[i] || !any_include) && !exclude[i];
    let hooked: Vec<_> = CATALOG
        .iter()
        .enumerate()
        .filter(|&(i, _)| chosen(i))
        .map(|(_, e)| e)
        .collect();
    let raised: Vec<_> = RAISED
        .iter()
        .enumerate()
        .filter(|&(i, _)| chosen(CATALOG.len() + i))
        .map(|(_, &e)| e)
        .collect();
    if hooked.is_empty() && raised.is_empty() {
        return Err(SelectError::NothingSelected { list: list.into() });
    }
    Ok((hooked, raised))
}

/// Indexes of the entries one pattern names: the hooked events, then the raised ones.
fn matching(pattern: &str) -> Result<Vec<usize>, SelectError> {
    let entries = CATALOG
        .iter()
        .map(|e| (e.name, e.sets))
        .chain(RAISED.iter().map(|e| (e.name, e.sets)));
    let indexes = |pred: &dyn Fn(&str, &[&str]) -> bool| -> Vec<usize> {
        entries
            .clone()
            .enumerate()
            .filter(|(_, (name, sets))| pred(name, sets))
            .map(|(i, _)| i)
            .collect()
    };
    if let Some(set) = pattern
        .strip_prefix("tag=")
        .or_else(|| pattern.strip_prefix("set="))
    {
        let hits = indexes(&|_, sets| sets.contains(&set));
        if hits.is_empty() {
            return Err(SelectError::UnknownSet {
                name: set.into(),
                close: closest(set, catalog::sets()),
            });
        }
        return Ok(hits);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        let hits = indexes(&|name, _| name.starts_with(prefix));
        if hits.is_empty() {
            return Err(SelectError::NoMatch {
                pattern: pattern.into(),
            });
        }
        return Ok(hits);
    }
    let hits = indexes(&|name, _| name == pattern);
    if hits.is_empty() {
        return Err(SelectError::UnknownEvent {
            name: pattern.into(),
            close: closest(pattern, catalog::names()),
        });
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_their_event() {
        let sel = parse_selection(&["munmap.retval<0"]).unwrap();
        assert_eq!(
            sel.events.iter().map(|e| e.name).collect::<Vec<_>>(),
            ["munmap"]
        );
        assert_eq!(sel.filters.len(), 1);
        let sel = parse_selection(&["mlock*", "mlock2.data.len=4K,8K", "-mlockall"]).unwrap();
        assert_eq!(
            sel.events.iter().map(|e| e.name).collect::<Vec<_>>(),
            ["mlock", "mlock2"]
        );
        assert_eq!(sel.filters[0].values, [4096, 8192]);
        assert_eq!(parse_selection(&[]).unwrap().events.len(), CATALOG.len());
        assert!(matches!(
            parse_selection(&["mlok.retval<0"]),
            Err(SelectError::UnknownEvent { .. })
        ));
        let err = parse_selection(&["mlock2.data.len=x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("filter 'mlock2.data.len=x': 'x' is not a number"),
            "{err}"
        );
        // A set name with '=' is not a filter.
        assert_eq!(parse_selection(&["tag=oom"]).unwrap().filters.len(), 0);
    }

    #[test]
    fn raised_events_attach_what_raises_them() {
        let sel = parse_selection(&["mem_prot_alert"]).unwrap();
        let names = |v: &[&EventDef]| v.iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(&sel.events), ["mmap", "mprotect", "pkey_mprotect"]);
        assert_eq!(names(&sel.hidden), ["mmap", "mprotect", "pkey_mprotect"]);
        assert_eq!(sel.raised, [&catalog::MEM_PROT_ALERT]);
        let sel = parse_selection(&["mmap,mem_prot_alert"]).unwrap();
        assert_eq!(names(&sel.hidden), ["mprotect", "pkey_mprotect"]);
        let sel = parse_selection(&["tag=mapping"]).unwrap();
        assert_eq!(sel.raised.len(), 1);
        assert!(sel.hidden.is_empty());
        assert!(parse_selection(&["mlock"]).unwrap().raised.is_empty());
        let err = parse_selection(&["mem_prot_alert.data.prot=7"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("raises it from mmap, mprotect, pkey_mprotect"),
            "{err}"
        );
        let err = parse_events(Some("mem_prot_alrt")).unwrap_err().to_string();
        assert!(err.contains("did you mean 'mem_prot_alert'"), "{err}");
    }

    fn names(list: &str) -> Vec<&'static str> {
        parse_events(Some(list))
            .unwrap()
            .iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn default_is_everything() {
        assert_eq!(parse_events(None).unwrap().len(), CATALOG.len());
    }

    #[test]
    fn names_prefixes_sets_and_exclusions() {
        assert_eq!(
            names("oom_*"),
            [
                "oom_mark_victim",
                "oom_start_task_reaping",
                "oom_finish_task_reaping",
                "oom_skip_task_reaping"
            ]
        );
        assert_eq!(names("munmap,mlock"), ["munmap", "mlock"]);
        assert_eq!(names("mlock*"), ["mlock", "mlockall", "mlock2"]);
        assert_eq!(
            names("tag=mlock,-munlock*"),
            ["mlock", "mlockall", "mlock2"]
        );
        assert_eq!(
            names("tag=oom,-oom_*,-sched_*,-exit_mmap"),
            [
                "kill",
                "pidfd_send_signal",
                "pidfd_open",
                "process_madvise",
                "process_mrelease"
            ]
        );
        // mmap still raises mem_prot_alert, which stays selected: traced, not shown.
        let sel = parse_selection(&["-mmap"]).unwrap();
        assert_eq!(sel.events.len(), CATALOG.len());
        assert_eq!(
            sel.hidden.iter().map(|e| e.name).collect::<Vec<_>>(),
            ["mmap"]
        );
        assert_eq!(names("-mmap,-mem_prot_alert").len(), CATALOG.len() - 1);
        assert_eq!(names(" munmap , mmap "), ["mmap", "munmap"]);
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let err = parse_events(Some("mlok")).unwrap_err();
        let SelectError::UnknownEvent { close, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(close.first(), Some(&"mlock"));
        assert!(err.to_string().contains("did you mean"), "{err}");
        let err = parse_events(Some("proces_mrelease")).unwrap_err();
        assert!(
            err.to_string()
                .contains("(did you mean 'process_mrelease'?)"),
            "{err}"
        );
        let err = parse_events(Some("tag=mem")).unwrap_err();
        assert!(matches!(err, SelectError::UnknownSet { .. }), "{err:?}");
        assert!(err.to_string().contains("sets are:"));
    }

    #[test]
    fn bad_lists() {
        assert!(matches!(
            parse_events(Some("mmap,,munmap")),
            Err(SelectError::EmptyItem { .. })
        ));
        assert!(matches!(
            parse_events(Some("zz*")),
            Err(SelectError::NoMatch { .. })
        ));
        assert!(matches!(
            parse_events(Some("mmap,-mmap")),
            Err(SelectError::NothingSelected { .. })
        ));
        assert!(matches!(
            parse_events(Some("-")),
            Err(SelectError::UnknownEvent { .. })
        ));
        assert!(
            matches!(parse_events(Some("xyzzy")), Err(SelectError::UnknownEvent { close, .. }) if close.is_empty())
        );
        assert_eq!(parse_selection(&[""]), Err(SelectError::EmptyList));
        assert_eq!(parse_selection(&["mmap", " "]), Err(SelectError::EmptyList));
        assert_eq!(parse_selection(&[]).unwrap().events.len(), CATALOG.len());
    }
}
