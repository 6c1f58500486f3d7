//! Text that traced processes choose (comm, file paths, memfd names) and the one way mmtrace
//! makes any text safe for a terminal.
//!
//! A process names itself, and names its files, with any bytes it likes: escape sequences that
//! recolour or clear root's terminal, newlines that forge rows, bytes that are not UTF-8. All
//! human-readable output escapes them as strace does (its `string_quote` without the quotes):
//! `\n`, `\t`, `\r`, `\v`, `\f`, `\\`, and every other byte outside printable ASCII in octal,
//! `\33` for ESC, `\177` for DEL, `\303\251` for the two bytes of `é`. The output is then plain
//! ASCII, so one byte is one terminal column. JSON needs none of this: its own escaping covers
//! control characters.

use std::borrow::Cow;
use std::fmt;

/// Bytes the kernel handed over for a traced process, kept as they were: a comm or a path
/// need not be UTF-8, and replacing what is not would hide what the process really chose.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TracedText(Vec<u8>);

impl TracedText {
    /// The bytes up to the first NUL, as the kernel's fixed-size strings hold them.
    pub fn from_c(bytes: &[u8]) -> TracedText {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        TracedText(bytes[..len].to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As UTF-8, with U+FFFD for what is not: for JSON, whose strings must be UTF-8 (Tracee's
    /// Go encoder does the same).
    pub fn to_str_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for TracedText {
    fn from(s: &str) -> TracedText {
        TracedText(s.as_bytes().to_vec())
    }
}

impl From<String> for TracedText {
    fn from(s: String) -> TracedText {
        TracedText(s.into_bytes())
    }
}

impl From<Vec<u8>> for TracedText {
    fn from(bytes: Vec<u8>) -> TracedText {
        TracedText(bytes)
    }
}

impl PartialEq<str> for TracedText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for TracedText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for TracedText {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

/// Escaped: `{}` of a TracedText is always safe to print.
impl fmt::Display for TracedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

impl fmt::Debug for TracedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Whether strace prints the byte as it is.
fn plain(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && b != b'\\'
}

/// Appends `bytes` to `out`, escaped as strace escapes a string.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let run = rest.iter().position(|&b| !plain(b)).unwrap_or(rest.len());
        out.push_str(std::str::from_utf8(&rest[..run]).expect("ASCII"));
        let Some((&b, after)) = rest[run..].split_first() else {
            break;
        };
        rest = after;
        out.push('\\');
        match b {
            b'\\' => out.push('\\'),
            b'\n' => out.push('n'),
            b'\t' => out.push('t'),
            b'\r' => out.push('r'),
            0x0b => out.push('v'),
            0x0c => out.push('f'),
            _ => {
                // As short as it can be, unless an octal digit follows and would be read as
                // part of it: then all three digits.
                let next_is_octal = rest.first().is_some_and(|c| (b'0'..=b'7').contains(c));
                let digits = [b >> 6, (b >> 3) & 7, b & 7];
                let skip = match (next_is_octal, b) {
                    (true, _) | (_, 0o100..) => 0,
                    (_, 0o10..) => 1,
                    _ => 2,
                };
                out.extend(digits[skip..].iter().map(|&d| char::from(b'0' + d)));
            }
        }
    }
}

/// `text` escaped as strace escapes a string; borrowed when there is nothing to escape.
pub fn escape(text: &(impl AsRef<[u8]> + ?Sized)) -> Cow<'_, str> {
    let bytes = text.as_ref();
    if bytes.iter().all(|&b| plain(b)) {
        return Cow::Borrowed(std::str::from_utf8(bytes).expect("ASCII"));
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    escape_into(&mut out, bytes);
    Cow::Owned(out)
}

/// A message mmtrace wrote about something, made safe as the last step before a terminal:
/// control characters escaped as `escape` does, everything else (quotes, backslashes,
/// non-ASCII words) left as written. The parts of the message a traced process chose were
/// escaped with `escape` when it was put together; this catches what was not.
pub fn escape_controls(message: &str) -> Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    let mut buf = [0u8; 4];
    for c in message.chars() {
        match c.is_control() {
            true => escape_into(&mut out, c.encode_utf8(&mut buf).as_bytes()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn as_strace_writes_them() {
        assert_eq!(escape("ev\x1b[31mRED\n"), r"ev\33[31mRED\n");
        assert_eq!(escape("a\x7fb"), r"a\177b");
        assert_eq!(escape("\0"), r"\0");
        assert_eq!(escape("\x01"), r"\1");
        assert_eq!(escape("\x01x"), r"\1x");
        // An octal digit after the escape would change its meaning: all three digits then.
        assert_eq!(escape("\x011"), r"\0011");
        assert_eq!(escape("\x1b7"), r"\0337");
        assert_eq!(escape("\x1b8"), r"\338");
        assert_eq!(escape("tab\there\r\x0b\x0c"), r"tab\there\r\v\f");
        assert_eq!(escape(r"back\slash"), r"back\\slash");
        assert_eq!(escape("défi"), r"d\303\251fi");
        assert_eq!(escape(b"\xff\xfe/x"), r"\377\376/x");
        assert_eq!(
            escape("plain /usr/lib/libc.so.6 \"q\""),
            "plain /usr/lib/libc.so.6 \"q\""
        );
        assert!(matches!(escape("java"), Cow::Borrowed("java")));
    }

    #[test]
    fn invalid_utf8_is_escaped_not_replaced() {
        let comm = TracedText::from_c(b"bad\xc3(\0junk");
        assert_eq!(comm.as_bytes(), b"bad\xc3(");
        assert_eq!(comm.to_string(), r"bad\303(");
        assert_eq!(comm.to_str_lossy(), "bad\u{fffd}(");
    }

    #[test]
    fn controls_in_messages() {
        assert_eq!(escape_controls("plain \"é\" \\"), "plain \"é\" \\");
        assert_eq!(
            escape_controls("a\x1b[2J\nb\u{9b}c"),
            r"a\33[2J\nb\302\233c"
        );
    }

    /// Reads an escaped string back as strace's users would, to show nothing is lost.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut it = s.bytes().peekable();
        while let Some(b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match it.next().unwrap() {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'v' => out.push(0x0b),
                b'f' => out.push(0x0c),
                b'\\' => out.push(b'\\'),
                d => {
                    let mut v = u32::from(d - b'0');
                    for _ in 0..2 {
                        match it.peek() {
                            Some(&c @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(c - b'0');
                                it.next();
                            }
                            _ => break,
                        }
                    }
                    out.push(v as u8);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn escaped_is_printable_ascii_and_reversible(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = escape(&bytes);
            prop_assert!(s.bytes().all(|b| (b' '..=b'~').contains(&b)), "{s}");
            prop_assert_eq!(unescape(&s), bytes);
        }

        #[test]
        fn messages_keep_no_control(text in any::<String>()) {
            prop_assert!(!escape_controls(&text).chars().any(char::is_control));
        }
    }
}
