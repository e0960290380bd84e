//! Landlock: what the runner may open, and no TCP, no abstract Unix
//! sockets and no signals outside its own domain, with the best ABI the
//! kernel has.
//!
//! In its own root, the runner may read everything there is (only what it
//! needs is there) and write only beneath `/tmp` and to `/dev/null`.
//! Without a root of its own (no mount namespace), it may read only the
//! library (by its descriptor) and the system's library folders.

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::{Inherited, Layer, SandboxReport};

/// The newest Landlock ABI asked for; the crate falls back, best effort,
/// to what the running kernel has. Everything it can handle is denied
/// except what the rules below allow, so a newer ABI only denies more of
/// what the runner never needs.
const LANDLOCK_ABI: ABI = ABI::V10;

/// What the dynamic loader reads, outside a root of the runner's own.
const SYSTEM_LIBRARY_PATHS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Applies the ruleset to this process (and every thread it starts).
pub(super) fn restrict(
    own_root: bool,
    inherited: &Inherited,
    report: &mut SandboxReport,
) -> Result<(), String> {
    let failed = |error: landlock::RulesetError| format!("could not apply landlock: {error}");
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|ruleset| ruleset.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
        .and_then(|ruleset| ruleset.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|ruleset| ruleset.create())
        .map_err(failed)?;
    let ruleset = if own_root {
        let write = AccessFs::from_write(LANDLOCK_ABI) & !AccessFs::Execute;
        ruleset
            .add_rules(path_beneath_rules(["/"], read))
            .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(["/tmp"], read | write)))
            .and_then(|ruleset| {
                ruleset.add_rules(path_beneath_rules(
                    ["/dev/null", "/dev/zero"],
                    AccessFs::ReadFile | AccessFs::WriteFile,
                ))
            })
            .map_err(failed)?
    } else {
        let library = crate::fd_path(inherited.library);
        let library_rule = PathFd::new(&library)
            .map(|fd| PathBeneath::new(fd, AccessFs::ReadFile))
            .map_err(|error| format!("could not open the library for landlock: {error}"))?;
        ruleset
            .add_rule(library_rule)
            .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(SYSTEM_LIBRARY_PATHS, read)))
            .map_err(failed)?
    };
    let status = ruleset.restrict_self().map_err(failed)?;
    match (status.landlock, status.ruleset) {
        (LandlockStatus::NotImplemented, _) => report.miss("landlock: not built into this kernel"),
        (LandlockStatus::NotEnabled, _) => {
            report.miss("landlock: built into this kernel but not enabled at boot")
        }
        (LandlockStatus::Available { .. }, RulesetStatus::NotEnforced) => {
            return Err("could not apply landlock: the kernel enforced none of it".to_owned())
        }
        (
            LandlockStatus::Available {
                effective_abi,
                kernel_abi,
            },
            _,
        ) => {
            let used = effective_abi as i32;
            report.apply(
                Some(Layer::Landlock),
                match kernel_abi {
                    Some(kernel) => format!("landlock (ABI {used}; the kernel has {kernel})"),
                    None => format!("landlock (ABI {used})"),
                },
            );
        }
    }
    Ok(())
}
