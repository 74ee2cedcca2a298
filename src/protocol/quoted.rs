//! The quoted strings IMAP and ManageSieve share: `"` ... `"` with `\"` and `\\` as the only
//! escapes, read from a command and written into one.

/// The quoted string whose opening `"` is at `text[open]`: its value, and the index just
/// past its closing `"`. `None` when it does not end in `text`, escapes anything but `"` or
/// `\`, or holds one of `forbidden`.
pub fn read(text: &[u8], open: usize, forbidden: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut value = Vec::new();
    let mut i = open + 1;
    loop {
        match text.get(i) {
            None => return None,
            Some(b) if forbidden.contains(b) => return None,
            Some(b'"') => return Some((value, i + 1)),
            Some(b'\\') => {
                match text.get(i + 1) {
                    Some(&c @ (b'"' | b'\\')) => value.push(c),
                    _ => return None,
                }
                i += 2;
            }
            Some(&c) => {
                value.push(c);
                i += 1;
            }
        }
    }
}

/// `value` as a quoted string, appended to `out` (the caller knows it may be quoted).
pub fn write(out: &mut Vec<u8>, value: &[u8]) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_read_and_written_alike() {
        let text = br#"x "a\"b\\c" y"#;
        let (value, next) = read(text, 2, &[]).unwrap();
        assert_eq!((value.as_slice(), next), (&br#"a"b\c"#[..], 11));
        let mut out = Vec::new();
        write(&mut out, &value);
        assert_eq!(out, br#""a\"b\\c""#);
    }

    #[test]
    fn unfinished_strange_escapes_and_forbidden_bytes_are_refused() {
        assert!(read(b"\"abc", 0, &[]).is_none());
        assert!(read(b"\"a\\nb\"", 0, &[]).is_none());
        assert!(read(b"\"a\\", 0, &[]).is_none());
        assert!(read(b"\"a\rb\"", 0, b"\r\n\0").is_none());
        assert!(read(b"\"a\rb\"", 0, &[]).is_some());
    }
}
