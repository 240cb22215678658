//! Helpers the privileged test binaries share: the privilege gate, and the
//! frames of the counting rules.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use xdpstat::privilege::{Needs, check_capabilities};

/// True when the test may touch the kernel; otherwise says why it does not
/// run, so a skipped test is visible in the output, not silently green.
pub fn privileged(test: &str) -> bool {
    match check_capabilities(Needs::AttachAndNamespaces) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("SKIPPED {test}: needs root ({error})");
            if std::env::var_os("CI").is_some() {
                panic!("{test} must run in CI, which runs as root: {error}");
            }
            false
        }
    }
}
