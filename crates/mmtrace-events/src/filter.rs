//! Argument and return-value filters (`mlock2.data.flags=MLOCK_ONFAULT`, `munmap.retval<0`)
//! and the comparison syntax they share with scopes.

use crate::catalog::{ArgType, EventDef};
use crate::decode::{errno_number, parse_size, Decoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
        }
    }
}

/// Splits `lhs OP rhs` at the first operator; None when there is none.
pub fn split_op(expr: &str) -> Option<(&str, Op, &str)> {
    let at = expr.find(['=', '!', '<', '>'])?;
    let rest = &expr[at..];
    let (op, len) = match rest.as_bytes() {
        [b'!', b'=', ..] => (Op::Ne, 2),
        [b'<', b'=', ..] => (Op::Le, 2),
        [b'>', b'=', ..] => (Op::Ge, 2),
        [b'=', ..] => (Op::Eq, 1),
        [b'<', ..] => (Op::Lt, 1),
        [b'>', ..] => (Op::Gt, 1),
        _ => return None,
    };
    Some((&expr[..at], op, &rest[len..]))
}

/// What a filter compares: an argument (by index) or the return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Arg(usize),
    Ret,
}

/// One condition on one event's calls. Values are the bit patterns of the argument's type,
/// already narrowed and sign-extended the way the kernel side narrows the raw register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgFilter {
    pub event: &'static EventDef,
    pub target: Target,
    pub op: Op,
    /// Alternatives for `=`, exclusions for `!=`, one bound for the others.
    pub values: Vec<u64>,
}

impl ArgFilter {
    pub const MAX_VALUES: usize = mmtrace_abi::MAX_VALS as usize;

    /// Whether comparisons are signed, and the width in bytes the kernel side narrows to.
    /// The width is the kernel's type's: a filter compares what the kernel received, so
    /// `mprotect.data.prot=PROT_READ` does not match PROT_READ|0x100000000, which the kernel
    /// refused. The sign is Tracee's type's, as users write the values (`mmap.data.fd<0`).
    pub fn signed_width(&self) -> (bool, u8) {
        match self.target {
            Target::Ret => (true, 8),
            Target::Arg(i) => {
                let arg = &self.event.args[i];
                let signed = matches!(arg.ty, ArgType::I32 | ArgType::I64);
                (signed, if arg.kernel.bits <= 32 { 4 } else { 8 })
            }
        }
    }
}

/// The raw register narrowed to `width` bytes and sign- or zero-extended back to 64 bits.
pub fn narrow(raw: u64, signed: bool, width: u8) -> u64 {
    match (width, signed) {
        (4, true) => raw as u32 as i32 as i64 as u64,
        (4, false) => raw as u32 as u64,
        _ => raw,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("filter '{expr}': {problem}")]
pub struct FilterError {
    pub expr: String,
    pub problem: String,
}

/// Parses the part after `EVENT.`: `data.ARG OP VALUES`, `args.ARG ...` or `retval OP VALUES`.
pub fn parse_filter(
    event: &'static EventDef,
    rest: &str,
    expr: &str,
) -> Result<ArgFilter, FilterError> {
    let fail = |problem: String| FilterError {
        expr: expr.to_string(),
        problem,
    };
    let (lhs, op, rhs) = split_op(rest).ok_or_else(|| {
        fail(
            "no comparison: expected one of = != < > <= >= after the field, as in munmap.retval<0"
                .into(),
        )
    })?;
    let (target, decoder, ty) = if lhs == "retval" {
        (Target::Ret, None, ArgType::I64)
    } else {
        let arg = lhs
            .strip_prefix("data.")
            .or_else(|| lhs.strip_prefix("args."))
            .ok_or_else(|| {
                fail(format!(
                    "'{lhs}' is not a field: use {}.data.ARG or {}.retval",
                    event.name, event.name
                ))
            })?;
        let i = event
            .args
            .iter()
            .position(|a| a.name == arg)
            .ok_or_else(|| {
                let names: Vec<_> = event.args.iter().map(|a| a.name).collect();
                fail(match names.is_empty() {
                    true => format!(
                        "{} has no arguments; only retval can be filtered",
                        event.name
                    ),
                    false => format!(
                        "{} has no argument '{arg}'; its arguments are {}",
                        event.name,
                        names.join(", ")
                    ),
                })
            })?;
        let def = &event.args[i];
        (Target::Arg(i), Some(def.decoder), def.ty)
    };
    let texts: Vec<&str> = rhs.split(',').map(str::trim).collect();
    if texts.iter().any(|t| t.is_empty()) {
        return Err(fail(format!("empty value after '{}'", op.symbol())));
    }
    if texts.len() > 1 && !matches!(op, Op::Eq | Op::Ne) {
        return Err(fail(format!(
            "'{}' takes a single value; lists are for = and !=",
            op.symbol()
        )));
    }
    if texts.len() > ArgFilter::MAX_VALUES {
        return Err(fail(format!(
            "at most {} values per condition",
            ArgFilter::MAX_VALUES
        )));
    }
    let mut filter = ArgFilter {
        event,
        target,
        op,
        values: Vec::new(),
    };
    let (signed, width) = filter.signed_width();
    for text in texts {
        if text.contains('*') {
            return Err(fail(format!(
                "'{text}': '*' matches text, and this field is a number"
            )));
        }
        let raw = parse_value(text, decoder, target == Target::Ret)
            .ok_or_else(|| fail(format!("'{text}' is not {}", expected(decoder, ty, target))))?;
        filter.values.push(narrow(raw, signed, width));
    }
    Ok(filter)
}

fn expected(decoder: Option<Decoder>, ty: ArgType, target: Target) -> String {
    let names: Vec<_> = decoder.map(|d| d.names()).unwrap_or_default();
    match (target, names.first()) {
        (Target::Ret, _) => "a number or an errno name such as -EINVAL".into(),
        (_, Some((example, _))) => format!("a number or a name such as {example}"),
        _ if ty == ArgType::Pointer => "an address such as 0x7f0000000000".into(),
        _ => "a number (suffixes K, M, G allowed, as in 4K)".into(),
    }
}

/// A number (decimal, 0x hex, negative, or with a size suffix), a `|`-joined set of flag
/// names, or for return values an errno name.
fn parse_value(text: &str, decoder: Option<Decoder>, is_ret: bool) -> Option<u64> {
    if let Some(v) = parse_number(text) {
        return Some(v);
    }
    if is_ret {
        let name = text.strip_prefix('-').unwrap_or(text);
        return errno_number(name).map(|n| (n as i64).wrapping_neg() as u64);
    }
    let decoder = decoder.filter(|&d| d != Decoder::None)?;
    text.split('|')
        .map(|name| decoder.value_of(name.trim()))
        .try_fold(0u64, |acc, v| Some(acc | v?))
}

/// Decimal, `0x` hex, a leading minus, or a size suffix (`4K`).
pub fn parse_number(text: &str) -> Option<u64> {
    if let Some(neg) = text.strip_prefix('-') {
        let v = parse_number(neg)?;
        return i64::try_from(v).ok().map(|v| v.wrapping_neg() as u64);
    }
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_size(text);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::by_name;

    fn filter(event: &str, rest: &str) -> Result<ArgFilter, FilterError> {
        parse_filter(by_name(event).unwrap(), rest, &format!("{event}.{rest}"))
    }

    #[test]
    fn operators() {
        assert_eq!(split_op("a=1"), Some(("a", Op::Eq, "1")));
        assert_eq!(split_op("a!=1"), Some(("a", Op::Ne, "1")));
        assert_eq!(split_op("a<=1"), Some(("a", Op::Le, "1")));
        assert_eq!(split_op("a>=1"), Some(("a", Op::Ge, "1")));
        assert_eq!(split_op("a<1"), Some(("a", Op::Lt, "1")));
        assert_eq!(split_op("a>1"), Some(("a", Op::Gt, "1")));
        assert_eq!(split_op("a!1"), None);
        assert_eq!(split_op("abc"), None);
    }

    #[test]
    fn values_with_suffixes_names_and_errnos() {
        let f = filter("mlock2", "data.len=4K,2M").unwrap();
        assert_eq!(
            (f.target, f.op, f.values.clone()),
            (Target::Arg(1), Op::Eq, vec![4096, 2 << 20])
        );
        let f = filter("mlock2", "data.flags=MLOCK_ONFAULT").unwrap();
        assert_eq!(f.values, [1]);
        let f = filter("mmap", "data.prot=PROT_READ|PROT_WRITE").unwrap();
        assert_eq!(f.values, [3]);
        let f = filter("munmap", "retval=-EINVAL").unwrap();
        assert_eq!(f.values, [(-22i64) as u64]);
        let f = filter("munmap", "retval=EINVAL").unwrap();
        assert_eq!(f.values, [(-22i64) as u64]);
        let f = filter("munmap", "retval<0").unwrap();
        assert_eq!((f.op, f.values.clone()), (Op::Lt, vec![0]));
        let f = filter("pidfd_send_signal", "args.sig=SIGKILL,SIGTERM").unwrap();
        assert_eq!(f.values, [9, 15]);
        let f = filter("munmap", "data.addr>=0x7f0000000000").unwrap();
        assert_eq!(f.values, [0x7f00_0000_0000]);
        // An int argument narrows -1 to the 32-bit pattern the kernel compares.
        let f = filter("mlock2", "data.flags=-1").unwrap();
        assert_eq!(
            (f.signed_width(), f.values.clone()),
            ((true, 4), vec![u64::MAX])
        );
        // mmap's fd is an unsigned long to the kernel: -1 in all 64 bits, as libc passes it.
        let f = filter("mmap", "data.fd=-1").unwrap();
        assert_eq!(
            (f.signed_width(), f.values.clone()),
            ((true, 8), vec![u64::MAX])
        );
        // prot too: its high bits count, so PROT_READ|0x100000000 is not PROT_READ.
        let f = filter("mprotect", "data.prot=0x100000001").unwrap();
        assert_eq!(
            (f.signed_width(), f.values.clone()),
            ((true, 8), vec![0x1_0000_0001])
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let msg = |event: &str, rest: &str| filter(event, rest).unwrap_err().to_string();
        assert!(msg("mlock2", "data.lenn=1")
            .contains("mlock2 has no argument 'lenn'; its arguments are addr, len, flags"));
        assert!(msg("mlock2", "data.len=abc").contains("'abc' is not a number"));
        assert!(msg("mlock2", "data.flags=ONFAULT").contains("such as MLOCK_ONFAULT"));
        assert!(msg("munmap", "retval=EWHAT").contains("errno name"));
        assert!(msg("munmap", "length").contains("no comparison"));
        assert!(msg("munmap", "len=1").contains("'len' is not a field"));
        assert!(msg("munmap", "retval<0,1").contains("single value"));
        assert!(msg("munmap", "retval=").contains("empty value"));
        assert!(msg("munlockall", "data.x=1").contains("has no arguments"));
        assert!(msg("mlock2", "data.len=4*").contains("'*' matches text"));
        assert!(msg("mlock2", "data.len=1,2,3,4,5,6,7,8,9").contains("at most 8"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("-1"), Some(u64::MAX));
        assert_eq!(parse_number("1K"), Some(1024));
        assert_eq!(parse_number("--1"), None);
        assert_eq!(parse_number("x"), None);
        assert_eq!(parse_number("0xzz"), None);
        assert_eq!(parse_number("-18446744073709551615"), None);
    }
}
