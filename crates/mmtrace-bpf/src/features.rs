//! What the running kernel offers the kernel side, found by probing it before anything loads.

use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper};
use mmtrace_events::catalog::{Extra, Source};
use mmtrace_events::EventDef;

/// A piece of the kernel side that some kernels lack; each turns off only what needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// bpf_find_vma and bpf_loop (5.17): the mapping a call touched.
    FindVma,
    /// sched_process_exit firing before exit_mm, with group_dead (6.16): memory at exit.
    ExitMemory,
    /// oom:mark_victim's fields beyond pid (6.9): the victim's memory, uid and name.
    VictimFields,
}

impl Feature {
    pub const ALL: [Feature; 3] = [Feature::FindVma, Feature::ExitMemory, Feature::VictimFields];

    /// The name `MMTRACE_FEATURES_OFF` takes.
    pub fn name(self) -> &'static str {
        match self {
            Feature::FindVma => "find_vma",
            Feature::ExitMemory => "exit_memory",
            Feature::VictimFields => "victim_fields",
        }
    }

    /// What users lose without it.
    pub fn gives(self) -> &'static str {
        match self {
            Feature::FindVma => "the mapping a call touched or made (`mapping`)",
            Feature::ExitMemory => "the memory a process still held at exit",
            Feature::VictimFields => "the OOM victim's memory, uid and name",
        }
    }

    /// What the kernel must have, and since which version.
    pub fn needs(self) -> &'static str {
        match self {
            Feature::FindVma => "the bpf_find_vma and bpf_loop helpers (Linux 5.17)",
            Feature::ExitMemory => {
                "sched_process_exit with group_dead, before the memory goes (Linux 6.16)"
            }
            Feature::VictimFields => "oom:mark_victim with fields beyond pid (Linux 6.9)",
        }
    }

    /// Whether `event` loses something without this feature.
    pub fn affects(self, event: &EventDef) -> bool {
        match self {
            Feature::FindVma => event.extras.iter().any(|&x| needs_find_vma(x)),
            Feature::ExitMemory => {
                matches!(
                    event.source,
                    Source::Tracepoint {
                        program: "on_exit",
                        ..
                    }
                )
            }
            Feature::VictimFields => matches!(
                event.source,
                Source::Tracepoint {
                    program: "oom_mark_victim",
                    ..
                }
            ),
        }
    }
}

/// A feature this kernel lacks, and how we know.
#[derive(Debug, Clone)]
pub struct Off {
    pub feature: Feature,
    pub why: String,
}

/// What the probes found.
#[derive(Debug, Clone, Default)]
pub struct Features {
    off: Vec<Off>,
}

/// A kernel without what every trace needs: nothing can be traced, and the error says what.
#[derive(Debug, thiserror::Error)]
#[error("this kernel lacks {0}: mmtrace needs Linux 5.15 or later (tested on 6.1, 6.12 and 6.18)")]
pub struct TooOld(pub &'static str);

/// An unknown name in a list of features to turn off.
#[derive(Debug, thiserror::Error)]
#[error("unknown kernel feature '{0}' in {FEATURES_OFF_VAR}: expected {names}", names = Feature::ALL.map(Feature::name).join(", "))]
pub struct UnknownFeature(String);

/// Turns features off by name, to see what a kernel without them gives or to work around a
/// kernel that misreports one: `MMTRACE_FEATURES_OFF=find_vma,exit_memory`.
pub const FEATURES_OFF_VAR: &str = "MMTRACE_FEATURES_OFF";

impl Feature {
    /// The features named in `list` (comma separated).
    pub fn parse_list(list: &str) -> Result<Vec<Feature>, UnknownFeature> {
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|name| {
                Feature::ALL
                    .into_iter()
                    .find(|f| f.name() == name)
                    .ok_or_else(|| UnknownFeature(name.to_string()))
            })
            .collect()
    }
}

impl Features {
    /// Probes the running kernel (needs the privileges loading does); `turned_off` are off
    /// whatever the kernel has.
    pub fn probe(tracefs: &Path, turned_off: &[Feature]) -> Result<Features, TooOld> {
        let helper = |h| is_helper_supported(ProgramType::TracePoint, h).unwrap_or(false);
        // Probe errors (as opposed to a clear "no") count as present: the load that follows
        // then fails with the verifier's own words rather than a guess of ours.
        if !is_program_supported(ProgramType::TracePoint).unwrap_or(true) {
            return Err(TooOld("tracepoint BPF programs"));
        }
        if !is_map_supported(MapType::RingBuf).unwrap_or(true) {
            return Err(TooOld("the BPF ring buffer (Linux 5.8)"));
        }
        // The helper and the map type came in one commit (5.11); the map is not probed
        // itself: freeing a task-storage map waits for an RCU grace period, tens of
        // milliseconds of every start.
        if !helper(BpfHelper::BPF_FUNC_task_storage_get)
            || !helper(BpfHelper::BPF_FUNC_get_current_task_btf)
        {
            return Err(TooOld(
                "task-local storage for tracepoint programs (Linux 5.11)",
            ));
        }
        // The syscall hook reads a call's arguments from the caller's registers.
        if !helper(BpfHelper::BPF_FUNC_task_pt_regs) {
            return Err(TooOld("bpf_task_pt_regs (Linux 5.15)"));
        }
        let mut off = Vec::new();
        if !helper(BpfHelper::BPF_FUNC_find_vma) || !helper(BpfHelper::BPF_FUNC_loop) {
            off.push((
                Feature::FindVma,
                "the kernel has no bpf_find_vma or bpf_loop",
            ));
        }
        if !has_field(tracefs, "sched/sched_process_exit", "group_dead") {
            off.push((
                Feature::ExitMemory,
                "sched_process_exit fires after the memory is gone",
            ));
        }
        if !has_field(tracefs, "oom/mark_victim", "total_vm") {
            off.push((
                Feature::VictimFields,
                "oom:mark_victim carries only the pid",
            ));
        }
        let mut features = Features {
            off: off
                .into_iter()
                .map(|(feature, why)| Off {
                    feature,
                    why: why.to_string(),
                })
                .collect(),
        };
        for &f in turned_off {
            features.turn_off(f, "turned off by request".to_string());
        }
        Ok(features)
    }

    pub fn has(&self, f: Feature) -> bool {
        !self.off.iter().any(|o| o.feature == f)
    }

    /// Whether the kernel side can gather `x` on this kernel.
    pub fn gathers(&self, x: Extra) -> bool {
        self.has(Feature::FindVma) || !needs_find_vma(x)
    }

    pub fn off(&self) -> &[Off] {
        &self.off
    }

    fn turn_off(&mut self, feature: Feature, why: String) {
        if self.has(feature) {
            self.off.push(Off { feature, why });
        }
    }

    /// One line on what the trace of `events` leaves out on this kernel and why, if anything.
    pub fn summary(&self, events: &[&EventDef]) -> Option<String> {
        let parts: Vec<String> = self
            .off
            .iter()
            .filter(|o| events.iter().any(|e| o.feature.affects(e)))
            .map(|o| {
                format!(
                    "{} ({}; needs {})",
                    o.feature.gives(),
                    o.why,
                    o.feature.needs()
                )
            })
            .collect();
        (!parts.is_empty()).then(|| format!("left out on this kernel: {}", parts.join("; ")))
    }

    /// What `event` loses on this kernel, one phrase per missing feature.
    pub fn lost_for(&self, event: &EventDef) -> Vec<&Off> {
        self.off
            .iter()
            .filter(|o| o.feature.affects(event))
            .collect()
    }
}

fn needs_find_vma(x: Extra) -> bool {
    matches!(x, Extra::Mapping | Extra::MappingAfter)
}

/// Whether a tracepoint's `format` file lists `field`. A tracepoint that is missing
/// altogether has none of its fields, and its event is reported unavailable on its own.
fn has_field(tracefs: &Path, tracepoint: &str, field: &str) -> bool {
    let format = tracefs.join("events").join(tracepoint).join("format");
    std::fs::read_to_string(format).is_ok_and(|f| {
        f.lines()
            .filter_map(|l| l.trim().strip_prefix("field:"))
            .any(|decl| {
                decl.split(';')
                    .next()
                    .and_then(|d| d.split_whitespace().last())
                    .and_then(|name| name.trim_start_matches('*').split('[').next())
                    .is_some_and(|name| name == field)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats as 6.1 and 6.18 print them: the fields decide, not the version number.
    #[test]
    fn format_fields() {
        let root = std::env::temp_dir().join(format!("mmtrace-format-{}", std::process::id()));
        let dir = root.join("events/sched/sched_process_exit");
        std::fs::create_dir_all(&dir).unwrap();
        let old = "name: sched_process_exit\nID: 290\nformat:\n\
                   \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n";
        std::fs::write(dir.join("format"), old).unwrap();
        assert!(!has_field(&root, "sched/sched_process_exit", "group_dead"));
        assert!(has_field(&root, "sched/sched_process_exit", "comm"));
        let new = format!("{old}\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n");
        std::fs::write(dir.join("format"), new).unwrap();
        assert!(has_field(&root, "sched/sched_process_exit", "group_dead"));
        assert!(!has_field(&root, "oom/mark_victim", "total_vm"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
