//! The pid file (`[process] pid_file`, Perdition's `pid_file`): written once every socket is
//! bound (never through a link: [`crate::service::write_pid_file`]), removed at exit unless a
//! successor took it over. As Perdition does, a missing directory is made and given to the
//! user the process becomes (so that the file can still be removed after privileges are
//! dropped), and a file that names a process still running stops the start: two instances
//! would otherwise take each other's file.

use std::fs;
use std::path::Path;

/// Write this process's id to `path`; `user`/`group` are who the process will run as.
pub fn write(path: &Path, user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot make the pid file's directory {}: {e}",
                    dir.display()
                )
            })?;
            if let Some(user) = user {
                give_to(dir, user, group)?;
            }
        }
    }
    // The process that started this one is its predecessor in a binary upgrade, which hands
    // the pid file over.
    let predecessor = std::os::unix::process::parent_id();
    let me = std::process::id();
    if let Some(pid) = pid_in(path).filter(|&pid| pid != me && pid != predecessor) {
        if Path::new(&format!("/proc/{pid}")).exists() {
            return Err(format!(
                "the pid file {shown} names process {pid}, which is running: another instance? \
                 (remove the file if not, or give this one another pid file)"
            ));
        }
    }
    let written = path
        .to_str()
        .ok_or_else(|| "not a UTF-8 path".to_string())
        .and_then(crate::service::write_pid_file);
    written.map_err(|e| format!("cannot write the pid file {shown}: {e}"))
}

/// Remove `path` if it still names this process (a successor may have taken it over).
pub fn remove(path: &Path) {
    if pid_in(path) == Some(std::process::id()) {
        let _ = fs::remove_file(path);
    }
}

fn pid_in(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Make `dir` the property of `user` (and `group`, else the user's own), when this process
/// may (root); anyone else keeps what it made.
fn give_to(dir: &Path, user: &str, group: Option<&str>) -> Result<(), String> {
    use nix::unistd::{getuid, Group, User};
    if !getuid().is_root() {
        return Ok(());
    }
    let account = User::from_name(user)
        .map_err(|e| format!("user {user}: {e}"))?
        .ok_or_else(|| format!("no user {user}"))?;
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .map_err(|e| format!("group {name}: {e}"))?
                .ok_or_else(|| format!("no group {name}"))?
                .gid
        }
        None => account.gid,
    };
    std::os::unix::fs::chown(dir, Some(account.uid.as_raw()), Some(gid.as_raw()))
        .map_err(|e| format!("cannot give {} to {user}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_made_and_the_file_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("perdition.imaps")
            .join("perdition.imaps.pid");
        write(&path, None, None).unwrap();
        assert_eq!(pid_in(&path), Some(std::process::id()));
        remove(&path);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_naming_a_running_process_stops_the_start_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        // init runs as long as the machine (or container) does; not this process's parent.
        let other = 1;
        fs::write(&path, format!("{other}\n")).unwrap();
        let e = write(&path, None, None).unwrap_err();
        assert!(
            e.contains(&other.to_string()) && e.contains("running"),
            "{e}"
        );
        remove(&path);
        assert_eq!(pid_in(&path), Some(other));
    }

    #[test]
    fn a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        // Above the kernel's largest pid (4194304): no such process.
        fs::write(&path, "4194305\n").unwrap();
        write(&path, None, None).unwrap();
        assert_eq!(pid_in(&path), Some(std::process::id()));
    }
}
