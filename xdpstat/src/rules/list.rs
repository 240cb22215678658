//! Reading a blocklist: a text file of addresses and prefixes, one a
//! line, as FireHOL's netsets and `ipset save` write them. `#` begins a
//! comment; blank lines, `create` lines and an ipset's options are
//! skipped; anything else that is not an address or a prefix is an error
//! that names the file and the line.

use std::{net::IpAddr, path::Path};

use ipnet::IpNet;

use crate::rules::file::RulesError;

/// The longest list file read.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// The prefixes of the list file at `path`, in file order, each with its
/// 1-based line.
pub fn read(path: &Path) -> Result<Vec<(IpNet, usize)>, RulesError> {
    let text = crate::rules::file::read_limited(path, MAX_LIST_BYTES)?;
    parse(path, &text)
}

/// The prefixes in `text`, read from `path` (which only labels errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<(IpNet, usize)>, RulesError> {
    let mut prefixes = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line_number = at + 1;
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let first = words.next().unwrap_or_default();
        let entry = match first {
            // ipset save: `create NAME TYPE ...` and `add NAME ENTRY [options]`.
            "create" => continue,
            "add" => match (words.next(), words.next()) {
                (Some(_set), Some(entry)) => entry,
                _ => {
                    return Err(error(
                        path,
                        line_number,
                        "an ipset line `add NAME PREFIX` without its prefix",
                    ));
                }
            },
            entry if words.next().is_none() => entry,
            _ => {
                return Err(error(
                    path,
                    line_number,
                    &format!("\"{content}\" is not an address or a prefix"),
                ));
            }
        };
        prefixes.push((prefix(path, line_number, entry)?, line_number));
    }
    Ok(prefixes)
}

/// An address (a prefix of its whole length) or a prefix with no host bits.
fn prefix(path: &Path, line: usize, text: &str) -> Result<IpNet, RulesError> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    let prefix: IpNet = text.parse().map_err(|_| {
        error(
            path,
            line,
            &format!(
                "\"{text}\" is not an address or a prefix (like 198.51.100.0/24 or 2001:db8::/32)"
            ),
        )
    })?;
    if prefix.trunc() != prefix {
        return Err(error(
            path,
            line,
            &format!("{text} has host bits set: the prefix is {}", prefix.trunc()),
        ));
    }
    Ok(prefix)
}

fn error(path: &Path, line: usize, message: &str) -> RulesError {
    RulesError {
        file: path.to_owned(),
        line: Some(line),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Vec<(IpNet, usize)>, String> {
        parse(Path::new("drop.netset"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn netsets_and_ipset_saves_read_as_their_prefixes() {
        let text = "#\n# FireHOL netset\n#\n198.51.100.0/24\n203.0.113.7\n\n2001:db8:bad::/48   # a comment\ncreate drop hash:net family inet hashsize 1024\nadd drop 192.0.2.0/25\nadd drop 192.0.2.128/25 timeout 0\n";
        let prefixes = read_text(text).unwrap();
        let expected: Vec<(IpNet, usize)> = [
            ("198.51.100.0/24", 4),
            ("203.0.113.7/32", 5),
            ("2001:db8:bad::/48", 7),
            ("192.0.2.0/25", 9),
            ("192.0.2.128/25", 10),
        ]
        .iter()
        .map(|(p, line)| (p.parse().unwrap(), *line))
        .collect();
        assert_eq!(prefixes, expected);
        assert!(read_text("").unwrap().is_empty());
    }

    #[test]
    fn a_line_that_is_neither_names_its_file_and_line() {
        for (text, expected) in [
            (
                "198.51.100.0/24\nexample.com\n",
                "drop.netset:2: \"example.com\" is not an address or a prefix",
            ),
            (
                "198.51.100.1/24\n",
                "drop.netset:1: 198.51.100.1/24 has host bits set",
            ),
            (
                "\n\n198.51.100.0/24 203.0.113.0/24\n",
                "drop.netset:3: \"198.51.100.0/24 203.0.113.0/24\" is not an address or a prefix",
            ),
            ("add drop\n", "drop.netset:1: an ipset line"),
            ("10.0.0.0/33\n", "drop.netset:1: \"10.0.0.0/33\" is not"),
        ] {
            let error = read_text(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?} gave {error}");
        }
    }
}
