//! Private network namespaces joined by veth pairs, for the demo and the
//! tests: the only places xdpstat ever sends traffic. A [`Namespace`] removes
//! itself when dropped, and namespaces left behind by a killed run are
//! removed by the next one.

use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

/// What went wrong with a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A system call or command could not be made.
    #[error("network namespace {name}: {doing}")]
    Io {
        /// The namespace.
        name: String,
        /// What was being done.
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// `ip` ran and refused.
    #[error("network namespace {name}: `ip {args}` failed: {stderr}")]
    Ip {
        /// The namespace.
        name: String,
        /// The arguments `ip` was given.
        args: String,
        /// What `ip` said.
        stderr: String,
    },
}

const NETNS_DIR: &str = "/run/netns";

/// A network namespace this process made; deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `xdpstat-{purpose}-{pid}-{n}` with IPv6 turned off on every
    /// link made in it, so no stray router solicitation, DAD or MLD frame
    /// ever changes a count.
    pub fn create(purpose: &str) -> Result<Self, NetnsError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale(purpose);
        let name = format!(
            "xdpstat-{purpose}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&name, &["netns", "add", &name])?;
        let namespace = Self { name };
        namespace
            .run(|| {
                for scope in ["all", "default"] {
                    std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"), "1")
                        .or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })?;
                }
                Ok::<_, std::io::Error>(())
            })?
            .map_err(|e| namespace.error("turning IPv6 off", e))?;
        Ok(namespace)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` with the calling thread inside this namespace, then returns
    /// the thread to the namespace it was in.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| self.error("opening this thread's namespace", e))?;
        self.enter()?;
        let result = f();
        setns(&home, CloneFlags::CLONE_NEWNET)
            .map_err(|e| self.error("returning to the original namespace", e))?;
        Ok(result)
    }

    /// Moves the calling thread into this namespace for good (for a thread
    /// that only sends test traffic).
    pub fn enter(&self) -> Result<(), NetnsError> {
        let target = File::open(Path::new(NETNS_DIR).join(&self.name))
            .map_err(|e| self.error("opening it", e))?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| self.error("entering it", e))
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&self.name, &full)
    }

    /// Output of `ip -n NAME ARGS...`.
    pub fn ip_output(&self, args: &[&str]) -> Result<String, NetnsError> {
        let output = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map_err(|e| self.error("running ip", e))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn error(&self, doing: &str, source: impl Into<std::io::Error>) -> NetnsError {
        NetnsError::Io {
            name: self.name.clone(),
            doing: doing.to_owned(),
            source: source.into(),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&self.name, &["netns", "delete", &self.name]);
    }
}

/// Creates a veth pair, `a_link` in `a` and `b_link` in `b`, both up.
pub fn veth_pair(
    a: &Namespace,
    a_link: &str,
    b: &Namespace,
    b_link: &str,
) -> Result<(), NetnsError> {
    ip(
        a.name(),
        &[
            "link",
            "add",
            a_link,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_link,
            "netns",
            b.name(),
        ],
    )?;
    a.ip(&["link", "set", a_link, "up"])?;
    b.ip(&["link", "set", b_link, "up"])
}

fn ip(namespace: &str, args: &[&str]) -> Result<(), NetnsError> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Io {
            name: namespace.to_owned(),
            doing: "running `ip` (iproute2)".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            name: namespace.to_owned(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Deletes `xdpstat-{purpose}-{pid}-*` namespaces whose process is gone.
fn remove_stale(purpose: &str) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let prefix = format!("xdpstat-{purpose}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&name, &["netns", "delete", &name]);
        }
    }
}
