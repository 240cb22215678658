//! Interface names as the kernel accepts them, checked before a name from
//! the command line becomes part of a path (`<pin root>/net<inode>/<name>`)
//! or reaches a message: a name that could hold `/`, `..` or a newline
//! would let `detach` reach outside the pin root and split error lines.

use crate::error::XdpstatError;

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_LEN: usize = 15;

/// Refuses `name` unless Linux could name an interface so (the rules of
/// the kernel's `dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace; control characters are refused too, since no
/// real interface needs them and they would corrupt a message.
pub fn check(name: &str) -> Result<(), XdpstatError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LEN {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it names a directory")
    } else if name.contains('/') {
        Some("it holds a '/'")
    } else if name.contains(':') {
        Some("it holds a ':'")
    } else if name.chars().any(char::is_whitespace) {
        Some("it holds whitespace")
    } else if name.chars().any(char::is_control) {
        Some("it holds a control character")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(XdpstatError::Usage(format!(
            "{} is not an interface name: {why} (a name is 1 to {MAX_LEN} bytes, without '/', ':' or whitespace, and not '.' or '..')",
            quoted(name)
        ))),
    }
}

/// `name` in quotes, with anything unprintable escaped: safe in a one-line
/// message whatever it holds.
pub fn quoted(name: &str) -> String {
    format!("{name:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_linux_accepts_pass() {
        for name in [
            "eth0",
            "vb",
            "enp0s31f6",
            "a",
            "veth-x_1.100",
            "123456789012345",
        ] {
            assert!(check(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn names_that_could_leave_the_pin_root_or_split_a_line_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "/",
            "/tmp/v",
            "../../../../../tmp/v3",
            "a/b",
            "eth0:1",
            "eth 0",
            "eth0\n",
            "x\ty",
            "a\u{7f}",
            "1234567890123456",
        ] {
            let error = check(name).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains("is not an interface name"), "{error}");
        }
    }
}
