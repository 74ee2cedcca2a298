//! The pid file (`[process] pid_file`, Perdition's `pid_file`): written once every socket is
//! bound (never through a link, never into anything but a regular file: a FIFO or a device put
//! in its place is refused at once, never waited on), removed at exit unless a
//! successor took it over. As Perdition does, a missing directory is made and given to the
//! user the process becomes (so that the file can still be removed after privileges are
//! dropped), and a file that names a process still running stops the start: two instances
//! would otherwise take each other's file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::service_manager::AccountError;

/// Why the pid file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot make the pid file's directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot give {} to {user}: {source}", dir.display())]
    Chown {
        dir: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot use the pid file {}: {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: NotAPidFile,
    },
    #[error(
        "the pid file {} names process {pid}, which is running: another instance? \
         (remove the file if not, or give this one another pid file)",
        path.display()
    )]
    Running { path: PathBuf, pid: u32 },
    #[error("cannot write the pid file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: NotAPidFile,
    },
}

/// What is at the pid file's path, when it is not a file to read or write the id in.
#[derive(Debug, thiserror::Error)]
pub enum NotAPidFile {
    #[error("a symbolic link, which is not followed")]
    Link,
    #[error("{0}, not a regular file")]
    NotRegular(&'static str),
    #[error("a file with another name (a hard link), which is not written")]
    HardLink,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Write this process's id to `path`; `user`/`group` are who the process will run as.
pub fn write(path: &Path, user: Option<&str>, group: Option<&str>) -> Result<(), PidFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|source| PidFileError::Directory {
                dir: dir.to_path_buf(),
                source,
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
    let found = pid_in(path).map_err(|source| PidFileError::Unusable {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(pid) = found.filter(|&pid| pid != me && pid != predecessor) {
        if Path::new(&format!("/proc/{pid}")).exists() {
            return Err(PidFileError::Running {
                path: path.to_path_buf(),
                pid,
            });
        }
    }
    write_id(path).map_err(|source| PidFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Put this process's id back in `path` (a successor that had written its own failed).
pub fn take_back(path: &Path) {
    let _ = write_id(path);
}

/// This process's id into `path`, never through a symbolic link (the directory may be
/// writable by the user the process becomes) and only into a regular file.
fn write_id(path: &Path) -> Result<(), NotAPidFile> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    let mut file = open_regular(path, &mut options)?;
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(())
}

/// Remove `path` if it still names this process (a successor may have taken it over).
pub fn remove(path: &Path) {
    if matches!(pid_in(path), Ok(Some(pid)) if pid == std::process::id()) {
        let _ = fs::remove_file(path);
    }
}

/// The pid `path` names: `None` when there is no file or no number in it, an error when
/// something other than a regular file is there.
fn pid_in(path: &Path) -> Result<Option<u32>, NotAPidFile> {
    use std::io::Read;
    let mut file = match open_regular(path, fs::OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(_) if !exists_here(path) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    // A pid file is a line; a huge file is not one of ours.
    let _ = (&mut file).take(64).read_to_string(&mut text);
    Ok(text.trim().parse().ok())
}

/// Whether anything (a link included) is at `path`.
fn exists_here(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// `path` opened with `options`, only when it is a regular file. Neither a symbolic link
/// followed (the directory may be writable by the user the process becomes) nor a wait: a
/// FIFO opened the usual way blocks until someone opens its other end, and the start would
/// hang there for ever with the listeners bound; with `O_NONBLOCK` the open returns (or fails
/// at once), and what was opened is looked at before it is used.
fn open_regular(path: &Path, options: &mut fs::OpenOptions) -> Result<fs::File, NotAPidFile> {
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let file = options
        .mode(0o644)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ELOOP) => NotAPidFile::Link,
            // A FIFO nobody reads, opened to write; a socket.
            Some(Errno::ENXIO) => NotAPidFile::NotRegular(kind_of(path)),
            _ => NotAPidFile::Io(e),
        })?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(NotAPidFile::NotRegular(kind(&metadata.file_type())));
    }
    // A second name for the file (a hard link made by whoever can write the directory) could
    // be any file of the same file system, truncated by the write.
    if std::os::unix::fs::MetadataExt::nlink(&metadata) > 1 {
        return Err(NotAPidFile::HardLink);
    }
    Ok(file)
}

/// What is at `path`, in words, for an error.
fn kind_of(path: &Path) -> &'static str {
    fs::symlink_metadata(path).map_or("something", |m| kind(&m.file_type()))
}

fn kind(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match file_type {
        t if t.is_fifo() => "a FIFO",
        t if t.is_socket() => "a socket",
        t if t.is_dir() => "a directory",
        t if t.is_char_device() || t.is_block_device() => "a device",
        t if t.is_symlink() => "a symbolic link",
        _ => "something",
    }
}

/// Make `dir` the property of `user` (and `group`, else the user's own), when this process
/// may (root); anyone else keeps what it made.
fn give_to(dir: &Path, user: &str, group: Option<&str>) -> Result<(), PidFileError> {
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let (uid, gid) = crate::service_manager::account(user, group)?;
    std::os::unix::fs::chown(dir, Some(uid.as_raw()), Some(gid.as_raw())).map_err(|source| {
        PidFileError::Chown {
            dir: dir.to_path_buf(),
            user: user.to_string(),
            source,
        }
    })
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
        assert_eq!(pid_in(&path).ok(), Some(Some(std::process::id())));
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
        let e = write(&path, None, None).unwrap_err().to_string();
        assert!(
            e.contains(&other.to_string()) && e.contains("running"),
            "{e}"
        );
        remove(&path);
        assert_eq!(pid_in(&path).ok(), Some(Some(other)));
    }

    #[test]
    fn a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        // Above the kernel's largest pid (4194304): no such process.
        fs::write(&path, "4194305\n").unwrap();
        write(&path, None, None).unwrap();
        assert_eq!(pid_in(&path).ok(), Some(Some(std::process::id())));
    }

    #[test]
    fn a_fifo_or_a_link_in_its_place_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Nobody opens the other end: a blocking open would never return.
        let e = write(&fifo, None, None).unwrap_err().to_string();
        assert!(
            e.contains("fifo.pid") && e.contains("a FIFO, not a regular file"),
            "{e}"
        );
        // Not removed either: it is not ours.
        remove(&fifo);
        assert!(fifo.exists());
        take_back(&fifo);

        let target = dir.path().join("elsewhere");
        fs::write(&target, "").unwrap();
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write(&link, None, None).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "");

        let e = write(dir.path(), None, None).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");

        // A hard link to another file is not truncated through the pid file's name.
        let precious = dir.path().join("precious");
        fs::write(&precious, "keep me").unwrap();
        let hard = dir.path().join("hard.pid");
        fs::hard_link(&precious, &hard).unwrap();
        let e = write(&hard, None, None).unwrap_err().to_string();
        assert!(e.contains("hard link"), "{e}");
        assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    }
}
