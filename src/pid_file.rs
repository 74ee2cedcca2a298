//! The pid file (`[process] pid_file`, Perdition's `pid_file`): written once every socket is
//! bound (never through a link, never into anything but a regular file), removed at exit unless a
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
    write_id(path).map_err(|e| format!("cannot write the pid file {shown}: {e}"))
}

/// Put this process's id back in `path` (a successor that had written its own failed).
pub fn take_back(path: &Path) {
    let _ = write_id(path);
}

/// This process's id into `path`, never through a symbolic link (the directory may be
/// writable by the user the process becomes) and only into a regular file.
fn write_id(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    file.set_len(0).map_err(|e| e.to_string())?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| e.to_string())
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
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let (uid, gid) = crate::service::account(user, group)?;
    std::os::unix::fs::chown(dir, Some(uid.as_raw()), Some(gid.as_raw()))
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
