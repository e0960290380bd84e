//! Who the runner is: an unprivileged user, without capabilities, unable
//! to gain privileges again, and not dumpable (so no process of the same
//! user outside the jail may trace it or read its memory).

use rustix::thread::{capabilities, set_capabilities, CapabilitySet, CapabilitySets};

use crate::{Identity, Jail, Layer, SandboxReport, NOBODY};

/// Drops to the jail's identity and clears every capability; sets no new
/// privileges. `in_user_namespace`: the keeper made a user namespace (the
/// host is not root), so the runner keeps the host's user and gives up
/// the capabilities that namespace gave it.
pub(super) fn drop_privileges(
    jail: &Jail,
    in_user_namespace: bool,
    report: &mut SandboxReport,
) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0 && !in_user_namespace;
    let bounding_cleared = clear_bounding_set();
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if root {
        let user = jail.user.unwrap_or(NOBODY);
        if user.uid == 0 || user.gid == 0 {
            return Err("[worker] user must not be root (uid or gid 0)".to_owned());
        }
        become_user(user)
            .map_err(|e| format!("could not become uid {} gid {}: {e}", user.uid, user.gid))?;
        report.apply(
            Some(Layer::Unprivileged),
            format!("runs as uid {}, gid {}", user.uid, user.gid),
        );
    } else {
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        set_capabilities(None, none).map_err(|e| format!("could not drop capabilities: {e}"))?;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        if uid == 0 {
            report.miss("unprivileged: runs as root");
        } else if in_user_namespace {
            report.apply(
                Some(Layer::Unprivileged),
                format!("runs as the host's user (uid {uid}) in a user namespace"),
            );
        } else {
            report.apply(
                Some(Layer::Unprivileged),
                format!("runs as the host's user (uid {uid})"),
            );
        }
    }
    let held = capabilities(None).map_err(|e| format!("could not read capabilities: {e}"))?;
    if held.effective.is_empty() && held.permitted.is_empty() && held.inheritable.is_empty() {
        report.apply(
            Some(Layer::NoCapabilities),
            if bounding_cleared {
                "no capabilities (bounding and ambient sets cleared)"
            } else {
                "no capabilities (the bounding set could not be cleared without privileges)"
            },
        );
    } else {
        return Err(format!("capabilities remain after dropping them: {held:?}"));
    }
    // SAFETY: PR_SET_DUMPABLE takes a flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match rustix::thread::set_no_new_privs(true) {
        Ok(()) => report.apply(Some(Layer::NoNewPrivileges), "no new privileges"),
        Err(rustix::io::Errno::INVAL) => {
            report.miss("no new privileges: the kernel does not know PR_SET_NO_NEW_PRIVS")
        }
        Err(error) => return Err(format!("could not set no new privileges: {error}")),
    }
    Ok(())
}

/// The namespace's init gives up being root too, without a report.
pub(super) fn become_nobody_quietly() -> std::io::Result<()> {
    clear_bounding_set();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        become_user(NOBODY)?;
    }
    // SAFETY: PR_SET_DUMPABLE takes a flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    rustix::thread::set_no_new_privs(true)?;
    Ok(())
}

/// Drops every capability from the bounding set; false when this process
/// may not (it lacks `CAP_SETPCAP`).
fn clear_bounding_set() -> bool {
    let mut cleared = true;
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_READ and PR_CAPBSET_DROP take a number.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        if held < 0 {
            // Past the last capability this kernel knows.
            break;
        }
        if held == 1 && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            cleared = false;
        }
    }
    cleared
}

/// Gives up root for `user`: no supplementary groups, then the group,
/// then the user (which clears the permitted and effective capabilities).
fn become_user(user: Identity) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: each takes plain ids (setgroups an empty list).
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(user.gid, user.gid, user.gid))?;
        check(libc::setresuid(user.uid, user.uid, user.uid))?;
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three ids.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if [r, e, s] != [user.uid; 3] {
        return Err(std::io::Error::other("the user ids did not change"));
    }
    Ok(())
}
