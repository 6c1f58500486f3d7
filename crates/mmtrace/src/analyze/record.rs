//! One JSON line of a recording, read leniently into the fields the analysis uses.

use mmtrace_events::decode::errno_name;
use serde_json::{Map, Value};

/// The mapping at an address before a call (issue 4's `mapping` object).
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    pub prot: Option<String>,
    pub kind: Option<String>,
    pub path: Option<String>,
}

/// The caller's locked memory after a call (issue 4's `locked` object).
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    pub bytes: u64,
    /// None when RLIMIT_MEMLOCK is unlimited.
    pub limit: Option<u64>,
    pub cap_ipc_lock: bool,
}

#[derive(Debug, Clone)]
pub struct Record {
    /// Line number in the recording; 0 when traced live.
    pub line: usize,
    /// Entry time, ns since the epoch.
    pub ts: u64,
    pub duration: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub name: String,
    pub ret: i64,
    pub errno: Option<String>,
    /// Each argument's whole object, by name.
    args: Map<String, Value>,
    /// Host pid of the process a pidfd or pid argument refers to.
    pub target: Option<(u32, Option<String>)>,
    pub freed: Option<u64>,
    pub reason: Option<String>,
    pub locked: Option<Locked>,
    pub mapping: Option<Mapping>,
}

impl Record {
    /// Reads one line; the error says what makes it unusable.
    pub fn parse(text: &str, line: usize) -> Result<Record, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
        let Value::Object(obj) = value else {
            return Err("not a JSON object".to_string());
        };
        let name = obj
            .get("eventName")
            .and_then(Value::as_str)
            .ok_or("no eventName")?
            .to_string();
        let ts = obj
            .get("timestamp")
            .and_then(Value::as_u64)
            .ok_or("no numeric timestamp")?;
        let pid = obj
            .get("hostProcessId")
            .and_then(as_u32)
            .ok_or("no numeric hostProcessId")?;
        let tid = obj.get("hostThreadId").and_then(as_u32).unwrap_or(pid);
        let ret = obj.get("returnValue").and_then(Value::as_i64).unwrap_or(0);
        // Recordings from before `returnError` existed still carry the errno in the value.
        let errno = obj
            .get("returnError")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                (-4095..0).contains(&ret).then(|| {
                    errno_name(ret.unsigned_abs())
                        .map_or_else(|| format!("E{}", -ret), str::to_string)
                })
            });
        let args = match obj.get("args") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|a| Some((a.get("name")?.as_str()?.to_string(), a.clone())))
                .collect(),
            _ => Map::new(),
        };
        let target = obj.get("target").and_then(|t| {
            let pid = t.get("hostProcessId").and_then(as_u32)?;
            Some((
                pid,
                t.get("processName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ))
        });
        let freed = obj
            .get("memory")
            .and_then(|m| m.get("freedBytes"))
            .and_then(Value::as_u64);
        let locked = obj.get("locked").and_then(|l| {
            Some(Locked {
                bytes: l.get("lockedBytes")?.as_u64()?,
                limit: l.get("limitBytes").and_then(Value::as_u64),
                cap_ipc_lock: l
                    .get("capIpcLock")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        });
        let text_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let mapping = obj
            .get("mapping")
            .filter(|m| m.is_object())
            .map(|m| Mapping {
                prot: text_of(m, "prot"),
                kind: text_of(m, "kind"),
                path: text_of(m, "path"),
            });
        Ok(Record {
            line,
            ts,
            duration: obj.get("duration").and_then(Value::as_u64).unwrap_or(0),
            pid,
            tid,
            comm: obj
                .get("processName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            name,
            ret,
            errno,
            args,
            target,
            freed,
            reason: obj
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            locked,
            mapping,
        })
    }

    /// When the call returned: what it did took effect then.
    pub fn end(&self) -> u64 {
        self.ts.saturating_add(self.duration)
    }

    pub fn ok(&self) -> bool {
        self.errno.is_none()
    }

    /// An argument as an unsigned number; pointers are hex strings, as in Tracee.
    pub fn arg_u64(&self, name: &str) -> Option<u64> {
        match self.args.get(name)?.get("value")? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|v| v as u64)),
            Value::String(s) => {
                let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
                u64::from_str_radix(hex, 16).ok()
            }
            _ => None,
        }
    }

    pub fn arg_i64(&self, name: &str) -> Option<i64> {
        self.arg_u64(name).map(|v| v as i64)
    }

    pub fn arg_str(&self, name: &str) -> Option<&str> {
        self.args.get(name)?.get("value")?.as_str()
    }

    /// The argument's names (`MCL_FUTURE`), falling back to its value.
    pub fn arg_text(&self, name: &str) -> Option<String> {
        let arg = self.args.get(name)?;
        match arg.get("decoded").and_then(Value::as_str) {
            Some(d) => Some(d.to_string()),
            None => Some(arg.get("value")?.to_string()),
        }
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}
