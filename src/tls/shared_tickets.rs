//! Session tickets a fleet of proxies can all read: sealed under keys from a file the admin
//! gives every instance (`[tls] ticket_keys`), so that a client the balancer sends to another
//! instance still resumes. The first key seals, every key opens: rotation is a new key put
//! first, the old one kept a while, and a reload. ChaCha20-Poly1305 with a random nonce; the
//! certificate set is bound in as associated data, so a ticket never resumes a session where
//! other certificates are served.
//!
//! Key file: one key per line, 64 hexadecimal digits (32 bytes); `#` comments and blank lines
//! are skipped. Generate one with `openssl rand -hex 32`.

use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// How long a client may keep a ticket (the keys' own rotation is the admin's).
const LIFETIME_SECONDS: u32 = 12 * 3600;
/// Bytes naming the key that sealed a ticket, so that opening tries the right one.
const KEY_ID_LEN: usize = 4;

/// Why the ticket key file (`tls.ticket_keys`) was refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("tls.ticket_keys {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tls.ticket_keys {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "tls.ticket_keys {} belongs to uid {owner}, neither root nor this process \
         (uid {me}): its owner could put in a key of their own; chown root",
        path.display()
    )]
    UntrustedOwner { path: PathBuf, owner: u32, me: u32 },
    /// `by`: "others" or "its group".
    #[error(
        "tls.ticket_keys {} is writable by {by} (mode {mode:04o}): whoever can write \
         it can put in a key of their own and read the sessions sealed under it; \
         chmod 640 (or 600)",
        path.display()
    )]
    Writable {
        path: PathBuf,
        by: &'static str,
        mode: u32,
    },
    #[error(
        "tls.ticket_keys {}: more than {max} bytes, not a key file",
        path.display(),
        max = MAX_KEY_FILE
    )]
    TooLarge { path: PathBuf },
    #[error(
        "tls.ticket_keys {} line {line}: not 64 hexadecimal digits",
        path.display()
    )]
    NotAKey { path: PathBuf, line: usize },
    #[error("tls.ticket_keys {}: unusable key", path.display())]
    UnusableKey { path: PathBuf },
    #[error("tls.ticket_keys {}: no key in it", path.display())]
    NoKey { path: PathBuf },
}

pub struct SharedTickets {
    /// (id, key); the first seals.
    keys: Vec<([u8; KEY_ID_LEN], LessSafeKey)>,
    /// The certificate set the tickets are for.
    binding: Vec<u8>,
    random: SystemRandom,
}

impl std::fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedTickets({} keys)", self.keys.len())
    }
}

impl SharedTickets {
    /// The keys in `path`, for tickets of the certificate set `binding`, and a warning worth
    /// a log line when the file is readable by others.
    pub fn load(
        path: &Path,
        binding: &[u8],
    ) -> Result<(SharedTickets, Option<String>), TicketKeyError> {
        let (text, warning) = read_key_file(path)?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| TicketKeyError::NotAKey {
                    path: path.to_path_buf(),
                    line: n + 1,
                })?;
            let id = ring::digest::digest(&ring::digest::SHA256, &bytes);
            let mut key_id = [0u8; KEY_ID_LEN];
            key_id.copy_from_slice(&id.as_ref()[..KEY_ID_LEN]);
            let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| {
                TicketKeyError::UnusableKey {
                    path: path.to_path_buf(),
                }
            })?;
            keys.push((key_id, LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(TicketKeyError::NoKey {
                path: path.to_path_buf(),
            });
        }
        let tickets = SharedTickets {
            keys,
            binding: binding.to_vec(),
            random: SystemRandom::new(),
        };
        Ok((tickets, warning))
    }
}

/// The key file's text, once its permissions are known to be safe, and a warning when they are
/// lax. Whoever reads the keys opens every ticket sealed with them (the session keys are in
/// the ticket): readable by others is worth a warning (it ran so before, and a fleet's key
/// may still be meant for a readable place). Whoever writes them can put a key of their own
/// first, so that every new session's keys are sealed under it: writable by anyone but its
/// owner (group or others) is refused, and so is an owner other than root or this process.
/// Opened without blocking, and only a regular file read, so that a FIFO in its place does
/// not hang a start or a reload; at most [`MAX_KEY_FILE`] bytes.
/// Only root, or the account the proxy runs as, may own the key file: any other owner can
/// change its mode and write it.
fn trusted_owner(owner: u32, me: u32) -> bool {
    owner == 0 || owner == me
}

/// A key file is a few lines; anything much larger is something else.
const MAX_KEY_FILE: u64 = 64 * 1024;

fn read_key_file(path: &Path) -> Result<(String, Option<String>), TicketKeyError> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let unreadable = |source| TicketKeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(TicketKeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let owner = std::os::unix::fs::MetadataExt::uid(&metadata);
    let me = nix::unistd::geteuid().as_raw();
    if !trusted_owner(owner, me) {
        return Err(TicketKeyError::UntrustedOwner {
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(TicketKeyError::Writable {
            path: path.to_path_buf(),
            by: if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
            mode,
        });
    }
    let warning = (mode & 0o004 != 0).then(|| {
        format!(
            "tls.ticket_keys {shown} is readable by others (mode {mode:04o}): whoever reads \
             it can open every session ticket sealed with it; chmod 640 (or 600)"
        )
    });
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(TicketKeyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok((text, warning))
}

impl rustls::server::ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECONDS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&self.binding),
            &mut sealed,
        )
        .ok()?;
        let mut ticket = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        // The ticket is the client's: any bytes at all.
        let (id, rest) = ticket.split_at_checked(KEY_ID_LEN)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let (_, key) = self.keys.iter().find(|(key_id, _)| key_id == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(&self.binding), &mut opened)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_or_the_proxys_own_account_may_own_the_key_file() {
        assert!(trusted_owner(0, 1000));
        assert!(trusted_owner(1000, 1000));
        assert!(!trusted_owner(1001, 1000));
        assert!(!trusted_owner(1001, 0));
    }

    #[test]
    fn a_file_far_larger_than_keys_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "x".repeat(70_000)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_key_file(&path).unwrap_err().to_string();
        assert!(e.contains("not a key file"), "{e}");
    }
    use rustls::server::ProducesTickets;

    /// A key file of mode 0600 (the temporary file's own).
    fn keys(lines: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), lines).unwrap();
        file
    }

    fn load(path: &Path, binding: &[u8]) -> SharedTickets {
        let (tickets, warning) = SharedTickets::load(path, binding).unwrap();
        assert_eq!(warning, None);
        tickets
    }

    #[test]
    fn another_instance_opens_what_one_sealed_and_nothing_else() {
        let (a, b) = ("11".repeat(32), "22".repeat(32));
        let file = keys(&format!("# current first\n{a}\n{b}\n"));
        let one = load(file.path(), b"set");
        let two = load(file.path(), b"set");
        let ticket = one.encrypt(b"session").unwrap();
        assert_eq!(two.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // Rotated: a new key first, the old one still opens.
        let rotated = keys(&format!("{}\n{a}\n", "33".repeat(32)));
        let three = load(rotated.path(), b"set");
        assert_eq!(three.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // Another certificate set, a tampered ticket, garbage: nothing.
        let other = load(file.path(), b"other set");
        assert_eq!(other.decrypt(&ticket), None);
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(two.decrypt(&tampered), None);
        for junk in [&b""[..], b"abc", &[0u8; 40]] {
            assert_eq!(two.decrypt(junk), None);
        }
    }

    #[test]
    fn a_key_file_without_proper_keys_is_refused() {
        for text in ["", "# only a comment\n", "abcd\n", &"zz".repeat(32)] {
            let file = keys(text);
            assert!(
                SharedTickets::load(file.path(), b"set").is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_key_file_others_may_read_is_a_warning_and_one_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let file = keys(&format!("{}\n", "11".repeat(32)));
        let chmod = |mode| {
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for mode in [0o600, 0o640, 0o400, 0o440] {
            chmod(mode);
            let (_, warning) = SharedTickets::load(file.path(), b"set").unwrap();
            assert_eq!(warning, None, "{mode:o}");
        }
        chmod(0o644);
        let (_, warning) = SharedTickets::load(file.path(), b"set").unwrap();
        let warning = warning.expect("a warning for 0644");
        assert!(
            warning.contains("readable by others (mode 0644)"),
            "{warning}"
        );
        for (mode, by) in [(0o666, "others"), (0o646, "others"), (0o660, "its group")] {
            chmod(mode);
            let e = SharedTickets::load(file.path(), b"set")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("writable by {by} (mode {mode:04o})")),
                "{e}"
            );
        }
    }
}
