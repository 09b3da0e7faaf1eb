//! Who holds a lease: a runner's claim names its host and process (`<runner>#<claim>@<host>:
//! <pid>`), so a runner that finds the lease held by a process of its own host that no longer
//! runs — a rebuild killed with SIGKILL, a crashed service — takes it over instead of waiting
//! out its expiry.
//!
//! "Provably gone" is narrow on purpose: the same host name, and no live process with that id
//! (on Linux, read from `/proc`; a zombie counts as gone). On another host, without `/proc`, or
//! when the process id has been reused, the holder counts as alive and the lease runs out as
//! usual. A take-over by mistake (two containers sharing a host name and a view file) costs
//! the other runner its lease, never a double-applied batch: commits are compare-and-set.

use std::sync::OnceLock;

/// The lease owner for claim `claim` of runner `runner` in this process.
pub(crate) fn owner(runner: &str, claim: u64) -> String {
    match this_host() {
        Some(host) => format!("{runner}#{claim}@{host}:{}", std::process::id()),
        None => format!("{runner}#{claim}"),
    }
}

/// Whether `owner` names a process of this host that no longer runs.
pub(crate) fn is_gone(owner: &str) -> bool {
    let Some((_, place)) = owner.rsplit_once('@') else {
        return false;
    };
    let Some((host, pid)) = place.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    this_host() == Some(host) && pid != std::process::id() && process_gone(pid)
}

/// This host's name, if it can be known (Linux: the kernel's; else `HOSTNAME`).
fn this_host() -> Option<&'static str> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())?;
        let name = name.trim();
        // A name the owner format can carry back unambiguously.
        (!name.is_empty() && !name.contains(['@', ':', '#'])).then(|| name.to_owned())
    })
    .as_deref()
}

/// Whether process `pid` is provably not running: `/proc` works and has no live process of
/// that id.
fn process_gone(pid: u32) -> bool {
    if std::fs::metadata("/proc/self/stat").is_err() {
        return false; // no /proc: nothing is provable
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_or_a_foreign_host_is_never_gone() {
        let mine = owner("runner-a", 1);
        assert!(!is_gone(&mine), "{mine}");
        assert!(!is_gone("runner-a#1@some-other-host:1"));
        assert!(!is_gone("runner-a#1"));
        assert!(!is_gone("a@b@c:notanumber"));
    }

    #[test]
    fn an_exited_process_of_this_host_is_gone() -> std::io::Result<()> {
        let Some(host) = this_host() else {
            return Ok(()); // no host name here: nothing is ever provably gone
        };
        if std::fs::metadata("/proc/self/stat").is_err() {
            return Ok(());
        }
        let mut child = std::process::Command::new("true").spawn()?;
        let pid = child.id();
        child.wait()?;
        assert!(is_gone(&format!("runner-b#3@{host}:{pid}")));
        let me = std::process::id();
        assert!(!is_gone(&format!("runner-b#3@{host}:{me}")));
        Ok(())
    }
}
