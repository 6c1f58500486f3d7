//! `mmtrace explain EVENT`: one event's reference in the terminal, assembled from the catalog.

use std::io::{self, Write};

use mmtrace_bpf::features::Feature;
use mmtrace_events::catalog::{self, Raised, Source, IN_BAND};
use mmtrace_events::decode::{errno_number, Decoder};
use mmtrace_events::keys;
use mmtrace_events::select::{closest, SelectError};
use mmtrace_events::{by_name, ArgDef, EventDef, RetKind, Tag};

use crate::analyze::detections::DETECTIONS;
use crate::examples;
use crate::units;

/// The sections of every event's reference, in order, for the text and the Markdown alike.
pub const SECTIONS: [&str; 11] = [
    "What it does",
    "Syscall",
    "Arguments",
    "Return value",
    "Errors",
    "Hooks",
    "Context fields",
    "Use case",
    "Pitfalls",
    "Related events",
    "Example",
];

/// Every argument tag; a page explains each once rather than at every argument.
pub const TAGS: [Tag; 4] = [Tag::K, Tag::U, Tag::Toctou, Tag::Opt];

pub fn run(name: &str) -> anyhow::Result<()> {
    if name.to_ascii_uppercase().starts_with("MMT-") {
        return detection(name);
    }
    if let Some(l) = IN_BAND.iter().find(|l| l.name == name) {
        println!(
            "{} (eventId {}): {}. A line mmtrace writes about the recording itself, among the \
             events, whatever -e selects.",
            l.name, l.event_id, l.summary
        );
        return Ok(());
    }
    let kernel = crate::list::Kernel::probe();
    let (page, status) = match (by_name(name), catalog::raised(name)) {
        (Some(def), _) => (text(def), kernel.status(def).1),
        (None, Some(def)) => (text(def), kernel.raised_status(def.source.by).1),
        (None, None) => Err(SelectError::UnknownEvent {
            name: name.to_string(),
            close: closest(name, catalog::names()),
        })?,
    };
    let mut out = io::stdout().lock();
    out.write_all(page.as_bytes())?;
    writeln!(out, "\nOn this kernel: {status}")?;
    Ok(())
}

/// A detection's page, as `analyze` links it: `mmtrace explain MMT-004`.
fn detection(id: &str) -> anyhow::Result<()> {
    let Some(d) = DETECTIONS.iter().find(|d| d.id.eq_ignore_ascii_case(id)) else {
        let ids: Vec<&str> = DETECTIONS.iter().map(|d| d.id).collect();
        anyhow::bail!(
            "no detection is called {}: the detections are {}",
            mmtrace_events::text::escape(id),
            ids.join(", ")
        );
    };
    let mut page = format!("{}: {} (severity {})\n", d.id, d.title, d.severity.name());
    for (heading, text) in [
        ("What it means", d.explanation.to_string()),
        ("What raises it", d.raised_by()),
        ("What to do", d.advice.to_string()),
    ] {
        page.push_str(&format!("\n{heading}\n{}", wrap(&text, IN, IN)));
    }
    page.push_str(&format!("\nPage: {}\n", d.doc()));
    io::stdout().lock().write_all(page.as_bytes())?;
    Ok(())
}

/// What a successful result is, and how a failure shows.
pub fn returns<S>(e: &EventDef<S>) -> &'static str {
    match e.ret {
        RetKind::Zero => {
            "0 on success. On failure the kernel returns -errno: returnValue holds the \
             negative number and returnError its name, one of the errors below."
        }
        RetKind::Address => {
            "On success the start address of the mapping, a large positive returnValue that \
             the table shows in hex. On failure -errno, named by returnError."
        }
        RetKind::Fd => "On success a new file descriptor. On failure -errno, named by returnError.",
        RetKind::Bytes => {
            "On success the number of bytes advised. On failure -errno, named by returnError."
        }
        RetKind::Break => {
            "The program break after the call: the new break on success, the old one unchanged \
             on an ordinary failure. Only -EINTR, when a fatal signal interrupts the call, is an \
             errno, named by returnError."
        }
        RetKind::None => {
            "None: a kernel event is an instant, not a call. returnValue is always 0 and \
             duration 0; timestamp is when the event fired."
        }
    }
}

/// What the reference says of where an entry's records come from: a hook, or the records of
/// the events that raise it.
pub trait Origin: Sized + 'static {
    /// Syscall numbers, a tracepoint, or the raising events, in a line.
    fn origin(e: &EventDef<Self>) -> String;
    /// The hooks mmtrace attaches, and what happens where they are missing.
    fn hooks(e: &EventDef<Self>) -> String;
    /// The x86_64 and arm64 cells of a page's table.
    fn numbers(e: &EventDef<Self>) -> (String, String);
}

impl Origin for Source {
    fn origin(e: &EventDef) -> String {
        match e.source {
            Source::Syscall { x86_64, aarch64 } => {
                format!("syscall: x86_64 {x86_64}, arm64 {aarch64}")
            }
            Source::Tracepoint { category, name, .. } => {
                format!("kernel event: tracepoint {category}:{name}")
            }
        }
    }

    fn hooks(e: &EventDef) -> String {
        let mut text = match e.source {
            Source::Syscall { .. } => format!(
                "Two tracepoints: syscalls:sys_enter_{n} saves the arguments and the entry time \
                 in task-local storage, and syscalls:sys_exit_{n} sends one record with the \
                 result and the duration through the ring buffer. There is no fallback hook: on \
                 a kernel without these tracepoints (older than Linux {since}, or built without \
                 CONFIG_FTRACE_SYSCALLS) `mmtrace trace` reports {n} as unavailable and traces \
                 the other selected events, failing only if none is left, and `mmtrace list` \
                 shows it as not available.",
                n = e.name,
                since = e.since
            ),
            Source::Tracepoint {
                category,
                name,
                program,
            } => format!(
                "One tracepoint, {category}:{name}, whose program ({program}) sends one record \
                 through the ring buffer when it fires. There is no fallback hook: on a kernel \
                 without it (older than Linux {since}) `mmtrace trace` reports {n} as \
                 unavailable and traces the other selected events.",
                n = e.name,
                since = e.since
            ),
        };
        for f in Feature::ALL.into_iter().filter(|f| f.affects(e)) {
            text.push_str(&format!(
                " On a kernel without {}, {} is left out (not written as 0), and the start \
                 line says so.",
                f.needs(),
                f.gives()
            ));
        }
        text
    }

    fn numbers(e: &EventDef) -> (String, String) {
        match e.source {
            Source::Syscall { x86_64, aarch64 } => (x86_64.to_string(), aarch64.to_string()),
            Source::Tracepoint { category, name, .. } => {
                let tp = format!("tracepoint `{category}:{name}`");
                (tp.clone(), tp)
            }
        }
    }
}

impl Origin for Raised {
    fn origin(e: &EventDef<Raised>) -> String {
        format!("raised by mmtrace from {}", e.source.by.join(", "))
    }

    fn hooks(e: &EventDef<Raised>) -> String {
        format!(
            "None of its own: mmtrace raises it from the records of {by}, whose hooks it \
             attaches when {n} is selected. `-e {n}` alone shows only the {n} lines; \
             `-e -{n}` leaves them out.",
            by = e.source.by.join(", "),
            n = e.name
        )
    }

    fn numbers(e: &EventDef<Raised>) -> (String, String) {
        let by = format!("raised from {}", e.source.by.join(", "));
        (by.clone(), by)
    }
}

/// What the Errors section says of an event that cannot fail.
pub const NO_ERRORS: &str = "None: a kernel event is not a call and cannot fail.";

/// The names an argument's decoder knows, with their values: hex for bit sets, decimal for
/// enumerations.
pub fn values(arg: &ArgDef) -> Vec<(&'static str, String)> {
    let enumerated = match arg.decoder {
        Decoder::Madvise | Decoder::Signal => true,
        Decoder::None
        | Decoder::Prot
        | Decoder::MapFlags
        | Decoder::MlockFlags
        | Decoder::MclFlags
        | Decoder::MremapFlags
        | Decoder::CloexecFlags
        | Decoder::PidfdOpenFlags
        | Decoder::PidfdSignalFlags => false,
    };
    arg.decoder
        .names()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                if enumerated {
                    v.to_string()
                } else {
                    format!("{v:#x}")
                },
            )
        })
        .collect()
}

pub fn tag_list(arg: &ArgDef) -> String {
    let names: Vec<&str> = arg.tags.iter().map(|t| t.name()).collect();
    names.join(", ")
}

/// An errno's number, for readers matching raw returnValues.
pub fn errno_value(name: &str) -> u64 {
    errno_number(name).expect("the catalog's errnos are real names, a test checks")
}

/// `text` filled to the width of a paragraph, its first line after `first` and the rest
/// after `rest`.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    units::wrap(text, first, rest, units::WIDTH)
}

const IN: &str = "    ";
const IN2: &str = "        ";

/// The whole reference of one event as plain text.
pub fn text<S: Origin>(e: &EventDef<S>) -> String {
    let d = e.doc;
    let mut out = format!("{}: {}\n", e.name, e.summary);
    let mut section = |i: usize, body: String| {
        out.push('\n');
        out.push_str(&SECTIONS[i].to_uppercase());
        out.push('\n');
        out.push_str(&body);
    };
    section(0, wrap(d.description, IN, IN));
    section(
        1,
        format!(
            "{IN}{}; added in Linux {}\n{IN}eventId: {}\n{IN}sets: {}\n",
            S::origin(e),
            e.since,
            e.event_id,
            e.sets.join(", ")
        ),
    );
    section(2, text_args(e));
    section(3, wrap(returns(e), IN, IN));
    let mut errors = String::new();
    for (name, meaning) in d.errnos {
        let head = format!("{IN}{name} ({})", errno_value(name));
        errors.push_str(&head);
        errors.push('\n');
        errors.push_str(&wrap(meaning, IN2, IN2));
    }
    if d.errnos.is_empty() {
        errors = wrap(NO_ERRORS, IN, IN);
    }
    section(4, errors);
    section(5, wrap(&S::hooks(e), IN, IN));
    let fields: String = keys::KEYS
        .iter()
        .copied()
        .chain(e.extra_fields())
        .chain(e.stack_field())
        .map(|(key, meaning)| wrap(meaning, &format!("{IN}{key:<20} "), &" ".repeat(25)))
        .collect();
    section(6, fields);
    section(7, wrap(d.use_case, IN, IN));
    let pitfalls: String = d.pitfalls.iter().map(|p| wrap(p, "  - ", IN)).collect();
    section(8, pitfalls);
    let related = format!("{} (mmtrace explain NAME)", d.related.join(", "));
    section(9, wrap(&related, IN, IN));
    section(10, text_example(e));
    out
}

fn text_args<S>(e: &EventDef<S>) -> String {
    if e.args.is_empty() {
        return format!("{IN}none\n");
    }
    let mut out = String::new();
    for (arg, meaning) in e.args.iter().zip(e.doc.args) {
        // The kernel's type where it is wider: kernelValue then carries what Tracee's cannot.
        let kernel = match arg.kernel.bits > arg.ty.bits() {
            true => format!(" (the kernel's {})", arg.kernel.name),
            false => String::new(),
        };
        out.push_str(&format!(
            "{IN}{}: {}{kernel} [{}]\n",
            arg.name,
            arg.ty.tracee_name(),
            tag_list(arg)
        ));
        out.push_str(&wrap(meaning, IN2, IN2));
        let values: Vec<String> = values(arg)
            .into_iter()
            .map(|(name, v)| format!("{name}={v}"))
            .collect();
        if !values.is_empty() {
            out.push_str(&wrap(&values.join(" "), &format!("{IN2}values: "), IN2));
        }
    }
    out.push_str(&format!("{IN}tags:\n"));
    for tag in TAGS {
        out.push_str(&format!("{IN2}{:<7} {}\n", tag.name(), tag.meaning()));
    }
    out
}

fn text_example<S>(e: &EventDef<S>) -> String {
    match examples::of(e.name) {
        Some(ex) => format!(
            "{IN}A real call, as a JSON line (mmtrace trace -o json), here spread over lines:\n\
             {}\n\n{IN}and as a table line (mmtrace trace -o table):\n{IN}{}\n{IN}{}\n",
            pretty(ex.json, IN),
            ex.table_header,
            ex.table
        ),
        None => wrap(
            examples::missing_reason(e.name).unwrap_or("None captured yet."),
            IN,
            IN,
        ),
    }
}

/// A JSON line indented one key or element a line, in its own order, each line after `indent`.
fn pretty(line: &str, indent: &str) -> String {
    let mut out = Vec::new();
    let mut from = serde_json::Deserializer::from_str(line);
    let mut to = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"  "),
    );
    match serde_transcode::transcode(&mut from, &mut to) {
        Ok(()) => String::from_utf8_lossy(&out)
            .lines()
            .map(|l| format!("{indent}{l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        // The examples are captured lines: a test reads each; never here, but the line as is.
        Err(_) => format!("{indent}{line}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mmtrace_events::CATALOG;

    /// The body under each title, for every title in order.
    fn bodies(page: &str, heading: impl Fn(&str) -> String) -> Vec<&str> {
        let starts: Vec<(usize, usize)> = SECTIONS
            .iter()
            .map(|t| {
                let h = heading(t);
                let at = page
                    .find(&h)
                    .unwrap_or_else(|| panic!("no {h:?} in\n{page}"));
                (at, at + h.len())
            })
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(i, &(_, body))| {
                let end = starts.get(i + 1).map_or(page.len(), |&(next, _)| next);
                assert!(body <= end, "sections out of order");
                &page[body..end]
            })
            .collect()
    }

    pub fn assert_every_section_filled(page: &str, heading: impl Fn(&str) -> String) {
        for (title, body) in SECTIONS.iter().zip(bodies(page, heading)) {
            assert!(body.trim().len() > 3, "{title} is empty in\n{page}");
        }
    }

    #[test]
    fn every_event_explains_every_section() {
        for e in CATALOG {
            let page = text(e);
            assert!(page.starts_with(&format!("{}: ", e.name)));
            assert_every_section_filled(&page, |t| format!("\n{}\n", t.to_uppercase()));
            for (name, _) in e.doc.errnos {
                assert!(
                    page.contains(&format!("{IN}{name} (")),
                    "{}: {name}",
                    e.name
                );
            }
            for arg in e.args {
                for (name, _) in values(arg) {
                    assert!(page.contains(name), "{}: {name}", e.name);
                }
            }
            for tag in TAGS {
                assert_eq!(
                    page.matches(tag.meaning()).count(),
                    usize::from(!e.args.is_empty())
                );
            }
            match examples::of(e.name) {
                Some(ex) => assert!(
                    page.contains(&pretty(ex.json, IN)) && page.contains(ex.table),
                    "{}",
                    e.name
                ),
                None => assert!(page.contains("None captured: "), "{}: says why", e.name),
            }
        }
    }

    #[test]
    fn raised_events_are_explained() {
        let page = text(&catalog::MEM_PROT_ALERT);
        assert!(page.starts_with("mem_prot_alert: "));
        assert_every_section_filled(&page, |t| format!("\n{}\n", t.to_uppercase()));
        assert!(page.contains("raised by mmtrace from mmap, mprotect, pkey_mprotect"));
        for arg in ["alert: string", "prev_prot: int32", "ctime: uint64"] {
            assert!(page.contains(arg), "{arg}");
        }
    }

    #[test]
    fn lines_fit_a_terminal() {
        for e in CATALOG {
            let page = text(e);
            let example = examples::of(e.name);
            for line in page.lines() {
                // The table line is as wide as the table it was captured from; the JSON is
                // spread over lines that fit.
                let is_example = example.as_ref().is_some_and(|x| line.contains(x.table));
                assert!(
                    line.len() <= units::WIDTH || is_example,
                    "{}: {line}",
                    e.name
                );
            }
        }
    }

    #[test]
    fn flag_tables_show_bits_in_hex_and_enumerations_in_decimal() {
        let mlock2 = by_name("mlock2").unwrap();
        assert_eq!(
            values(&mlock2.args[2]),
            [("MLOCK_ONFAULT", "0x1".to_string())]
        );
        let madvise = by_name("madvise").unwrap();
        assert!(values(&madvise.args[2]).contains(&("MADV_COLD", "20".to_string())));
        assert!(values(&madvise.args[0]).is_empty());
    }
}
