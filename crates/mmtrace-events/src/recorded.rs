//! A recorded JSON line read back into the event it was written from, through the catalog:
//! the analysis of a recording then reads the very model a live trace gives it.

use std::sync::Arc;

use crate::container::{Container, Info, Runtime};
use crate::decode::Decoder;
use crate::enrich::{Enrichment, Locked, Mapping, MappingKind, OomLimit, Psi, Rss, Target};
use crate::event::{Context, Event};
use crate::line::{self, hex_number, Line};
use crate::stack::{Frame, Stack};
use crate::{by_name, TracedText};

impl Line<'_> {
    /// The event the line was written from, as far as the line tells it: a line says
    /// nothing of the parent's start nor of the group id, and leaves out what the kernel did
    /// not gather. An error for a line of no event of the catalog, or without a timestamp.
    pub fn event(mut self) -> Result<Event, String> {
        let name = self.event_name.get().ok_or("no eventName")?;
        let def = by_name(&name).ok_or_else(|| format!("{name} is no event of the catalog"))?;
        let args = self.args.take().unwrap_or_default();
        let (raw_args, absent) =
            def.fields_of(|name| args.iter().find(|a| a.name == name)?.number());
        Ok(Event {
            def,
            ctx: self.context()?,
            raw_args,
            absent,
            ret: self.return_value.get().unwrap_or(0),
            duration_ns: self.duration.get().unwrap_or(0),
            enrich: self.enrichment(),
            stack: self.stack_of().map(Box::new),
        })
    }

    fn context(&self) -> Result<Context, String> {
        let timestamp = self.timestamp.get().ok_or("no numeric timestamp")?;
        let host_pid = self
            .host_process_id
            .get()
            .ok_or("no numeric hostProcessId")?;
        let host_tid = self.host_thread_id.get().unwrap_or(host_pid);
        let text = |s: Option<String>| TracedText::from(s.unwrap_or_default());
        Ok(Context {
            timestamp,
            thread_start: self.thread_start_time.get().unwrap_or(0),
            process_start: self.process_start_time.get().unwrap_or(0),
            parent_start: 0,
            cpu: self.processor_id.get().unwrap_or(0),
            pid: self.process_id.get().unwrap_or(host_pid),
            tid: self.thread_id.get().unwrap_or(host_tid),
            ppid: self.parent_process_id.get().unwrap_or(0),
            host_pid,
            host_tid,
            host_ppid: self.host_parent_process_id.get().unwrap_or(0),
            uid: self.user_id.get().unwrap_or(0),
            gid: 0,
            cgroup_id: self.cgroup_id.get().unwrap_or(0),
            mnt_ns: self.mount_namespace.get().unwrap_or(0),
            pid_ns: self.pid_namespace.get().unwrap_or(0),
            comm: text(self.process_name.get()),
            executable: self
                .executable
                .get()
                .and_then(|e| e.path.get())
                .map(|p| Arc::new(TracedText::from(p))),
            container: self.container_of().map(Arc::new),
        })
    }

    /// The container the keys Tracee writes name, with what its runtime had said of it.
    fn container_of(&self) -> Option<Container> {
        let id = self.container_id.get()?;
        let c = self.container.get().unwrap_or_default();
        let k = self.kubernetes.get().unwrap_or_default();
        let text = |m: &serde_json::Map<String, serde_json::Value>, key: &str| {
            m.get(key).and_then(|v| v.as_str()).map(str::to_string)
        };
        let runtime = text(&c, "runtime").and_then(|r| Runtime::from_name(&r));
        Some(Container {
            id,
            runtime: runtime.unwrap_or(Runtime::Unknown),
            info: Info {
                name: text(&c, "name"),
                image: text(&c, "image"),
                image_digest: text(&c, "imageDigest"),
                pod_name: text(&k, "podName"),
                pod_namespace: text(&k, "podNamespace"),
                pod_uid: text(&k, "podUID"),
                pod_sandbox: k.get("podSandbox").and_then(|v| v.as_bool()) == Some(true),
            },
        })
    }

    fn enrichment(&self) -> Option<Enrichment> {
        let rss = |r: line::Rss| Rss {
            anon: r.anon,
            file: r.file,
            shmem: r.shmem,
        };
        let memory = self.memory.get();
        let x = Enrichment {
            target: self.target.get().and_then(|t| {
                let host_pid = t.host_process_id.get()?;
                Some(Target {
                    host_pid,
                    pid: t.process_id.get().unwrap_or(host_pid),
                    comm: TracedText::from(t.process_name.get().unwrap_or_default()),
                })
            }),
            rss_before: memory.as_ref().and_then(|m| m.before.get()).map(rss),
            rss_after: memory.as_ref().and_then(|m| m.after.get()).map(rss),
            locked: self.locked.get().and_then(|l| {
                Some(Locked {
                    locked_bytes: l.locked_bytes.get()?,
                    limit_bytes: l.limit_bytes.get(),
                    cap_ipc_lock: l.cap_ipc_lock.get().unwrap_or(false),
                })
            }),
            mapping: self.mapping.get().and_then(|m| mapping(&m)),
            unlocked_bytes: self.unlocked_bytes.get(),
            oom_limit: self.limit.get().map(|l| oom_limit(&l)),
        };
        (x != Enrichment::default()).then_some(x)
    }

    /// The stack: its addresses, and the frames the reader symbolized where the line has them.
    fn stack_of(&self) -> Option<Stack> {
        let addresses = self.stack_addresses.get().unwrap_or_default();
        // A stack taken that held nothing is still a stack (`"stack":[]`).
        if addresses.is_empty() && !self.stack.present() {
            return None;
        }
        let frames = self.stack.get().unwrap_or_default();
        let hex = |s: &Option<String>| s.as_deref().map(hex).unwrap_or(0);
        let text = |s: &Option<String>| s.clone().map(|s| Arc::new(TracedText::from(s)));
        Some(Stack {
            addresses,
            sp_word: 0,
            frames: frames
                .iter()
                .map(|f| Frame {
                    address: hex(&f.address),
                    module: text(&f.module),
                    module_offset: hex(&f.module_offset),
                    function: text(&f.function),
                    function_offset: hex(&f.offset),
                    file: text(&f.file),
                    line: f.line.unwrap_or(0),
                })
                .collect(),
        })
    }
}

fn hex(s: &str) -> u64 {
    hex_number(s).unwrap_or(0)
}

fn mapping(m: &line::Mapping) -> Option<Mapping> {
    let kind = m.kind.get()?;
    let kind = MappingKind::ALL.into_iter().find(|k| k.name() == kind)?;
    let text = |s: Option<String>| s.map(TracedText::from);
    Some(Mapping {
        kind,
        start: m.start.get().as_deref().map_or(0, hex),
        end: m.end.get().as_deref().map_or(0, hex),
        prot: m
            .prot
            .get()
            .and_then(|p| Decoder::Prot.parse_flags(&p))
            .unwrap_or(0),
        shared: m.shared.get().unwrap_or(false),
        locked: m.locked.get().unwrap_or(false),
        path: text(m.path.get()),
        name: text(m.name.get()),
    })
}

/// The limit as the writer wrote it from an `OomLimit` (`line::Limit::from`), read back.
fn oom_limit(l: &line::Limit) -> OomLimit {
    let centi = |v: f64| (v * 100.0).round() as u32;
    OomLimit {
        constraint: l.constraint.clone(),
        cgroup: l.cgroup.clone().map(TracedText::from),
        task_cgroup: l.task_cgroup.clone().map(TracedText::from),
        usage_bytes: l.usage_bytes,
        limit_bytes: l.limit_bytes,
        failcnt: l.failcnt,
        cgroup_version: l.cgroup_version,
        pressure: l.pressure.map(|p| Psi {
            some_avg10: centi(p.some_avg10),
            full_avg10: centi(p.full_avg10),
        }),
        unread: l.reason.clone(),
    }
}
