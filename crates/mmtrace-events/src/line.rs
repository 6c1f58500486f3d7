//! The JSON line mmtrace writes, as types: Tracee's keys in Tracee's order, then mmtrace's,
//! each with what it means. The writer (`mmtrace`'s output/json.rs) stays hand-written, for
//! speed; `mmtrace analyze` reads lines into these types; `explain` and the event pages list
//! the keys from here; and a property test checks that every line the writer writes parses
//! into them with the values of the event it came from.

use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A key's value, kept as the line's own text until it is read, and read leniently: a value
/// of another type than expected reads as None, which costs that key, not the line. A key
/// nobody reads is only scanned past, which is most of what reading a recording saves.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a, T> {
    raw: Option<&'a RawValue>,
    of: PhantomData<T>,
}

impl<T> Default for Key<'_, T> {
    fn default() -> Self {
        Key {
            raw: None,
            of: PhantomData,
        }
    }
}

impl<'a, T: Deserialize<'a>> Key<'a, T> {
    /// The value, if the line has the key with a value of its type.
    pub fn get(&self) -> Option<T> {
        serde_json::from_str(self.raw?.get()).ok()
    }

    /// Whether the line has the key with a value, null being none.
    pub fn present(&self) -> bool {
        self.raw.is_some_and(|r| r.get() != "null")
    }
}

impl<'de: 'a, 'a, T> Deserialize<'de> for Key<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Key {
            raw: Some(<&RawValue>::deserialize(d)?),
            of: PhantomData,
        })
    }
}

/// One line. Documented in `KEYS` and the extras' consts below, in this order.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Line<'a> {
    #[serde(borrow)]
    pub timestamp: Key<'a, u64>,
    #[serde(borrow)]
    pub thread_start_time: Key<'a, u64>,
    #[serde(borrow)]
    pub processor_id: Key<'a, u16>,
    #[serde(borrow)]
    pub process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub cgroup_id: Key<'a, u64>,
    #[serde(borrow)]
    pub thread_id: Key<'a, u32>,
    #[serde(borrow)]
    pub parent_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_thread_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_parent_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub user_id: Key<'a, u32>,
    #[serde(borrow)]
    pub mount_namespace: Key<'a, u32>,
    #[serde(borrow)]
    pub pid_namespace: Key<'a, u32>,
    #[serde(borrow)]
    pub process_name: Key<'a, String>,
    #[serde(borrow)]
    pub executable: Key<'a, Executable<'a>>,
    #[serde(borrow)]
    pub host_name: Key<'a, String>,
    #[serde(borrow)]
    pub container_id: Key<'a, String>,
    #[serde(borrow)]
    pub container: Key<'a, Map<String, Value>>,
    #[serde(borrow)]
    pub kubernetes: Key<'a, Map<String, Value>>,
    /// A decimal number, as a string.
    #[serde(borrow)]
    pub event_id: Key<'a, String>,
    #[serde(borrow)]
    pub event_name: Key<'a, String>,
    #[serde(borrow)]
    pub matched_policies: Key<'a, Vec<String>>,
    #[serde(borrow)]
    pub args_num: Key<'a, u64>,
    #[serde(borrow)]
    pub return_value: Key<'a, i64>,
    #[serde(borrow)]
    pub syscall: Key<'a, String>,
    #[serde(borrow)]
    pub stack_addresses: Key<'a, Vec<u64>>,
    #[serde(borrow)]
    pub context_flags: Key<'a, ContextFlags>,
    #[serde(borrow)]
    pub thread_entity_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_entity_id: Key<'a, u32>,
    #[serde(borrow)]
    pub parent_entity_id: Key<'a, u32>,
    /// Read whole: a line whose arguments are not a list of arguments is no event.
    pub args: Option<Vec<Arg>>,
    #[serde(borrow)]
    pub duration: Key<'a, u64>,
    #[serde(borrow)]
    pub process_start_time: Key<'a, u64>,
    #[serde(borrow)]
    pub return_error: Key<'a, String>,
    #[serde(borrow)]
    pub target: Key<'a, Target<'a>>,
    #[serde(borrow)]
    pub memory: Key<'a, Memory<'a>>,
    #[serde(borrow)]
    pub reason: Key<'a, String>,
    #[serde(borrow)]
    pub locked: Key<'a, Locked<'a>>,
    #[serde(borrow)]
    pub mapping: Key<'a, Mapping<'a>>,
    #[serde(borrow)]
    pub unlocked_bytes: Key<'a, u64>,
    #[serde(borrow)]
    pub limit: Key<'a, Limit>,
    #[serde(borrow)]
    pub stack: Key<'a, Vec<StackFrame>>,
}

/// `limit`: which limit an OOM kill came from. Small and rare: read whole; the analysis
/// writes it as it read it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failcnt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// PSI avg10 figures, percent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    pub some_avg10: f64,
    pub full_avg10: f64,
}

/// One frame of `stack`, innermost first; what the symbolizer did not know is left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackFrame {
    pub address: Option<String>,
    pub function: Option<String>,
    pub offset: Option<String>,
    pub module: Option<String>,
    pub module_offset: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One argument; its `type` is the catalog's (`ArgType::tracee_name`), so values say
/// what they are: pointers as hex strings, numbers, strings, booleans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Arg {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: Value,
    /// The value's names (`PROT_READ|PROT_WRITE`), where the catalog's decoder has some.
    pub decoded: Option<String>,
    /// The value the kernel received, where Tracee's type cannot hold it (`KEYS`).
    #[serde(rename = "kernelValue")]
    pub kernel_value: Option<u64>,
}

impl Arg {
    /// The number the kernel received, as the writer wrote it: `kernelValue` where the type
    /// could not hold it, else the value (pointers as hex strings, negative numbers as their
    /// two's complement, as the register held them).
    pub fn number(&self) -> Option<u64> {
        self.kernel_value.or_else(|| value_number(&self.value))
    }
}

/// A JSON value as the number it stands for: pointers are hex strings, as in Tracee.
pub fn value_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|v| v as u64)),
        Value::String(s) => hex_number(s),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// `0x7f00dead` as the number it writes.
pub fn hex_number(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Debug, Deserialize)]
pub struct Executable<'a> {
    #[serde(borrow, default)]
    pub path: Key<'a, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextFlags {
    pub container_started: bool,
    pub is_compat: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Target<'a> {
    #[serde(borrow)]
    pub host_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_name: Key<'a, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Memory<'a> {
    #[serde(borrow)]
    pub before: Key<'a, Rss>,
    /// null when no memory was left.
    #[serde(borrow)]
    pub after: Key<'a, Rss>,
    #[serde(borrow)]
    pub freed_bytes: Key<'a, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Locked<'a> {
    #[serde(borrow)]
    pub locked_bytes: Key<'a, u64>,
    /// null when unlimited.
    #[serde(borrow)]
    pub limit_bytes: Key<'a, u64>,
    #[serde(borrow)]
    pub cap_ipc_lock: Key<'a, bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Mapping<'a> {
    /// Hex strings, as pointers are.
    #[serde(borrow)]
    pub start: Key<'a, String>,
    #[serde(borrow)]
    pub end: Key<'a, String>,
    /// `MappingKind::name`.
    #[serde(borrow)]
    pub kind: Key<'a, String>,
    /// Decoded, as `PROT_READ|PROT_WRITE`.
    #[serde(borrow)]
    pub prot: Key<'a, String>,
    #[serde(borrow)]
    pub shared: Key<'a, bool>,
    #[serde(borrow)]
    pub locked: Key<'a, bool>,
    #[serde(borrow)]
    pub path: Key<'a, String>,
    #[serde(borrow)]
    pub name: Key<'a, String>,
}

impl Line<'_> {
    /// Reads `text` as a line; the error says why it is none.
    pub fn parse(text: &[u8]) -> Result<Line<'_>, serde_json::Error> {
        // Text known to be UTF-8 lends each key's value as it is; bytes would be checked
        // again for every key, which cost a third of reading a recording. A line that is
        // not UTF-8 is still read as far as it can be, as a reader of bytes does.
        match std::str::from_utf8(text) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::*;
    use serde::de::{self, Visitor};

    /// The field names a struct's Deserialize asks for, in order: serde hands them to
    /// `deserialize_struct`.
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Fields(Option<&'static [&'static str]>);
        impl<'de> Deserializer<'de> for &mut Fields {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("only structs"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = Some(fields);
                Err(de::Error::custom("seen"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut f = Fields(None);
        let _ = T::deserialize(&mut f);
        f.0.expect("a struct")
    }

    #[test]
    fn the_documented_keys_are_the_lines_in_order() {
        let keys: Vec<&str> = KEYS.iter().map(|&(k, _)| k).collect();
        let extras = [
            TARGET,
            MEMORY,
            REASON,
            LOCKED,
            MAPPING_BEFORE,
            UNLOCKED_BYTES,
            LIMIT,
            STACK,
        ];
        let all: Vec<&str> = keys
            .iter()
            .copied()
            .chain(extras.iter().map(|&(k, _)| k))
            .collect();
        assert_eq!(fields::<Line>(), all);
        for (a, b) in [(TARGET, VICTIM), (MAPPING_BEFORE, MAPPING_AFTER)] {
            assert_eq!(a.0, b.0);
        }
    }

    #[test]
    fn a_key_of_another_type_costs_the_key_not_the_line() {
        let line = Line::parse(
            br#"{"timestamp":"soon","hostProcessId":7,"locked":{"lockedBytes":4096,"limitBytes":null},"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(line.timestamp.get(), None);
        assert!(line.timestamp.present());
        assert_eq!(line.host_process_id.get(), Some(7));
        let locked = line.locked.get().unwrap();
        assert_eq!(locked.locked_bytes.get(), Some(4096));
        assert_eq!(locked.limit_bytes.get(), None);
        assert!(!locked.cap_ipc_lock.present());
        assert!(!line.mapping.present());
    }
}
