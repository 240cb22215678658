//! How `xdpstat ban`, `unban` and `bans` reach the xdpstat that counts on
//! an interface: a Unix socket in the abstract namespace named after the
//! interface's index (`xdpstat/ifindex/N`). Abstract names belong to the
//! network namespace, as interfaces do, and vanish with the process, so
//! there is no file to clean up or to be tricked into. One JSON request a
//! connection, one JSON answer; a peer without CAP_NET_ADMIN is refused.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    counts::report::{BanRow, ban_rows},
    error::one_line,
    kernel::rulemaps::RuleMaps,
    rules::{
        Action,
        ban::{Added, Ban},
    },
    run::reload::{Notices, RuleTarget},
};

/// The longest request read (a reason is at most 80 bytes).
const MAX_REQUEST: u64 = 4096;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ban {
        prefix: IpNet,
        /// Seconds; `None`: until unbanned.
        seconds: Option<f64>,
        limit_pps: Option<u64>,
        reason: String,
    },
    Unban {
        prefix: IpNet,
    },
    Bans,
}

/// An answer: a sentence for the user, or an error, and the bans in force.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub bans: Vec<BanRow>,
}

/// The socket name for the interface with index `ifindex`.
pub fn address(ifindex: u32) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("xdpstat/ifindex/{ifindex}"))
}

/// Starts answering requests for each target's interface, each on a
/// thread that lives as long as the process. An interface whose socket
/// another process holds (a second xdpstat counting beside this one) is
/// said on `notices` and left to it.
pub fn serve(targets: &[RuleTarget], notices: &Notices) {
    for (interface, maps) in targets {
        let Ok(ifindex) = nix::net::if_::if_nametoindex(interface.as_str()) else {
            continue;
        };
        let listener = match address(ifindex).and_then(|a| UnixListener::bind_addr(&a)) {
            Ok(listener) => listener,
            Err(e) => {
                notices.say(format!(
                    "xdpstat: {interface}: `xdpstat ban` cannot reach this run ({e}); another xdpstat on {interface} answers it"
                ));
                continue;
            }
        };
        let maps = Arc::clone(maps);
        let name = interface.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bans-{interface}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    answer(stream, &maps, &name);
                }
            });
        if let Err(e) = spawned {
            notices.say(format!(
                "xdpstat: {interface}: `xdpstat ban` cannot reach this run: {e}"
            ));
        }
    }
}

/// Reads one request from `stream`, acts on it and answers.
fn answer(stream: UnixStream, maps: &Mutex<RuleMaps>, interface: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let answer = match peer_may_ban(&stream) {
        Err(message) => Answer {
            message,
            ..Answer::default()
        },
        Ok(()) => {
            let mut line = String::new();
            let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
            match read
                .map_err(|e| e.to_string())
                .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
            {
                Ok(request) => act(
                    &request,
                    &mut maps.lock().unwrap_or_else(PoisonError::into_inner),
                    interface,
                    false,
                ),
                Err(e) => Answer {
                    message: format!("a request xdpstat does not understand: {e}"),
                    ..Answer::default()
                },
            }
        }
    };
    let mut text = serde_json::to_string(&answer).unwrap_or_default();
    text.push('\n');
    let _ = (&stream).write_all(text.as_bytes());
}

/// Whether the process at the other end has CAP_NET_ADMIN (what
/// attaching needs: changing what an interface drops is no less).
fn peer_may_ban(stream: &UnixStream) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a live socket, a ucred to fill and its length.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if got != 0 {
        return Err("cannot tell who is asking".into());
    }
    match crate::kernel::privilege::missing_net_admin(Some(cred.pid)) {
        Some(missing) => Err(format!("missing capabilities: {missing}; run it as root")),
        None => Ok(()),
    }
}

/// Does what `request` asks of `maps`: a running xdpstat's, or (`in_pins`)
/// those of a persisted interface no xdpstat runs on, changed in place.
pub fn act(request: &Request, maps: &mut RuleMaps, interface: &str, in_pins: bool) -> Answer {
    let note = if in_pins {
        " (in its pins: no xdpstat runs on it)"
    } else {
        ""
    };
    let result = match request {
        Request::Ban {
            prefix,
            seconds,
            limit_pps,
            reason,
        } => {
            let action = match *limit_pps {
                Some(pps) => Action::Limit {
                    pps,
                    burst: pps,
                    bps: 0,
                },
                None => Action::Drop,
            };
            let length = seconds.map(Duration::from_secs_f64);
            let ban = Ban::new(*prefix, action, "hand", reason, length);
            let described = format!("{} {}", ban.describe(), ban.prefix);
            let banned = if in_pins {
                maps.ban_in_place(ban)
            } else {
                maps.ban(ban)
            };
            match banned {
                Ok(Ok(Added::New)) => Ok(format!("{interface}: banned: {described}{note}")),
                Ok(Ok(Added::Replaced)) => Ok(format!(
                    "{interface}: banned: {described} (in place of its earlier ban){note}"
                )),
                Ok(Err(refusal)) => Err(format!("{interface}: ban refused: {refusal}")),
                Err(e) => Err(format!(
                    "{interface}: the ban could not be put in force: {}",
                    one_line(e.as_ref())
                )),
            }
        }
        Request::Unban { prefix } => {
            let unbanned = if in_pins {
                maps.unban_in_place(prefix, "hand")
            } else {
                maps.unban(prefix, "hand")
            };
            match unbanned {
                Ok(Some(_)) => Ok(format!("{interface}: unbanned {}{note}", prefix.trunc())),
                Ok(None) => Err(format!(
                    "{interface}: no ban of {} is in force",
                    prefix.trunc()
                )),
                Err(e) => Err(format!(
                    "{interface}: the ban could not be taken out: {}",
                    one_line(e.as_ref())
                )),
            }
        }
        Request::Bans => Ok(String::new()),
    };
    let bans = maps.hits().map(|hits| ban_rows(&hits)).unwrap_or_default();
    let (ok, message) = match result {
        Ok(message) => (true, message),
        Err(message) => (false, message),
    };
    Answer { ok, message, bans }
}

/// Why asking the xdpstat on an interface failed.
#[derive(Debug)]
pub enum AskError {
    /// Nothing answers for that interface.
    NoOne,
    Io(std::io::Error),
}

/// Sends `request` to the xdpstat counting on the interface with index
/// `ifindex` and waits for its answer (a rule set of a million prefixes
/// takes seconds to write again).
pub fn ask(ifindex: u32, request: &Request) -> Result<Answer, AskError> {
    let stream =
        UnixStream::connect_addr(&address(ifindex).map_err(AskError::Io)?).map_err(|e| match e
            .kind()
        {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => AskError::NoOne,
            _ => AskError::Io(e),
        })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(AskError::Io)?;
    let mut text = serde_json::to_string(request).map_err(|e| AskError::Io(e.into()))?;
    text.push('\n');
    (&stream).write_all(text.as_bytes()).map_err(AskError::Io)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take(64 << 20)
        .read_line(&mut line)
        .map_err(AskError::Io)?;
    serde_json::from_str(&line).map_err(|e| AskError::Io(e.into()))
}
