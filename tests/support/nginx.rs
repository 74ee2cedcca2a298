//! nginx's mail proxy as a behaviour reference: started with listening sockets the test bound
//! itself (port 0), so that no port is picked and bound later.

use std::net::TcpListener;
use std::path::Path;
use std::process::Child;

use super::end_with_this_process;

/// Debian's nginx and its mail module (packages nginx, libnginx-mod-mail).
pub const NGINX: &str = "/usr/sbin/nginx";
pub const NGINX_MAIL: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";

/// nginx from `conf` with `sockets` open in it (their descriptors named in `NGINX`, the way
/// nginx passes them on to its new binary; close-on-exec cleared in the child alone, between
/// fork and exec). Its stderr goes to `dir/stderr.log`, its error log to `dir/error.log`.
pub fn spawn_nginx_with_sockets<'a>(
    conf: &Path,
    dir: &Path,
    sockets: impl Iterator<Item = &'a TcpListener>,
) -> Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = sockets.map(|s| s.as_raw_fd()).collect();
    let inherited: String = fds.iter().map(|fd| format!("{fd};")).collect();
    let mut command = std::process::Command::new(NGINX);
    command
        .args(["-p", &dir.display().to_string()])
        .args(["-c", &conf.display().to_string()])
        .args(["-e", &dir.join("error.log").display().to_string()])
        .env("NGINX", inherited)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    // SAFETY: only fcntl(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("start nginx");
    end_with_this_process(child.id());
    child
}
