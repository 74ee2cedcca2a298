//! nginx's files: the main one and what its `include` directives name, read through
//! [`Files`] (the disk, or memory in tests) and put in place of each `include`, as nginx does.
//! Only where a `mail {}` block can be or is: the main context and inside `mail`; the other
//! blocks (`http`, `events`, `stream`) are not read into. A relative name is taken from the
//! main file's directory (nginx's prefix when it is started with `-c`); a wildcard in the last
//! part of a name (`*`, `?`) takes the matching files in name order, none being no error.
//! Bounded: [`MAX_INCLUDE_DEPTH`] levels, [`MAX_FILES`] files, [`MAX_FILE_SIZE`] bytes each.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::nginx_syntax::{self, Directive, Location, SyntaxError};

/// Includes within includes at most (a file that includes itself stops here).
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Files read at most, the main one included.
pub const MAX_FILES: usize = 256;
/// The largest file read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Where the files come from.
pub trait Files {
    /// The file's text (at most [`MAX_FILE_SIZE`] bytes, else an error).
    fn read(&mut self, path: &Path) -> Result<String, LoadError>;
    /// The names in a directory.
    fn list(&mut self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The machine's own files.
pub struct Disk;

impl Files for Disk {
    fn read(&mut self, path: &Path) -> Result<String, LoadError> {
        use std::io::Read;
        let unreadable = |source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let mut text = String::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(LoadError::TooLarge(path.to_path_buf()));
        }
        Ok(text)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }
}

/// Files that cannot be read as nginx would read them.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: larger than {MAX_FILE_SIZE} bytes", .0.display())]
    TooLarge(PathBuf),
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("{0}: include nested deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)")]
    TooDeep(Location),
    #[error("{0}: more than {MAX_FILES} files")]
    TooManyFiles(Location),
    #[error("{0}: include takes one file name")]
    IncludeArguments(Location),
    #[error("{at}: include {pattern}: a wildcard (* or ?) only in the last part of the name")]
    Pattern { at: Location, pattern: String },
    #[error("{at}: cannot list {}: {source}", dir.display())]
    List {
        at: Location,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directives of `main` with its includes in place.
pub fn load(main: &Path, files: &mut dyn Files) -> Result<Vec<Directive>, LoadError> {
    let base = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loader = Loader {
        files,
        base,
        count: 0,
    };
    loader.file(main, 0, false, None)
}

struct Loader<'a> {
    files: &'a mut dyn Files,
    /// Where relative names start.
    base: PathBuf,
    /// Files read so far.
    count: usize,
}

impl Loader<'_> {
    /// The directives of `path`, read at include `depth` (from the `include` at `at`).
    fn file(
        &mut self,
        path: &Path,
        depth: usize,
        in_mail: bool,
        at: Option<&Location>,
    ) -> Result<Vec<Directive>, LoadError> {
        self.count += 1;
        if let (true, Some(at)) = (self.count > MAX_FILES, at) {
            return Err(LoadError::TooManyFiles(at.clone()));
        }
        let text = self.files.read(path)?;
        let name: Arc<Path> = Arc::from(path);
        let directives = nginx_syntax::parse(&text, &name)?;
        self.expand(directives, depth, in_mail)
    }

    /// `directives` with each `include` replaced by its files' directives, inside `mail` too.
    fn expand(
        &mut self,
        directives: Vec<Directive>,
        depth: usize,
        in_mail: bool,
    ) -> Result<Vec<Directive>, LoadError> {
        let mut out = Vec::with_capacity(directives.len());
        for mut d in directives {
            if d.name == "include" && d.block.is_none() {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(LoadError::TooDeep(d.at));
                }
                for path in self.matches(&d)? {
                    out.extend(self.file(&path, depth + 1, in_mail, Some(&d.at))?);
                }
                continue;
            }
            if let Some(block) = d.block.take() {
                let into = in_mail || d.name == "mail";
                d.block = Some(match into {
                    true => self.expand(block, depth, true)?,
                    false => block,
                });
            }
            out.push(d);
        }
        Ok(out)
    }

    /// The files an `include` names.
    fn matches(&mut self, include: &Directive) -> Result<Vec<PathBuf>, LoadError> {
        let [pattern] = include.args.as_slice() else {
            return Err(LoadError::IncludeArguments(include.at.clone()));
        };
        let path = self.base.join(pattern);
        let wild = |s: &str| s.contains(['*', '?', '[']);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = path.parent().unwrap_or(Path::new("/"));
        if wild(&dir.to_string_lossy()) || name.contains('[') {
            return Err(LoadError::Pattern {
                at: include.at.clone(),
                pattern: pattern.clone(),
            });
        }
        if !wild(name) {
            return Ok(vec![path]);
        }
        let listed = match self.files.list(dir) {
            Ok(listed) => listed,
            // glob(3) matches nothing in a directory that is not there; nginx takes that.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(LoadError::List {
                    at: include.at.clone(),
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut found: Vec<PathBuf> = listed
            .into_iter()
            .filter(|p| {
                let candidate = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // As glob(3): a leading dot is matched only by a leading dot.
                (!candidate.starts_with('.') || name.starts_with('.'))
                    && wildcard(name.as_bytes(), candidate.as_bytes())
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

/// Whether `name` matches `pattern`'s `*` (any run) and `?` (any one byte).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    // The classic two-pointer match, backtracking to the last `*`: linear enough for file
    // names, and no recursion.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files in memory.
    #[derive(Default)]
    pub(crate) struct Memory(pub BTreeMap<PathBuf, String>);

    impl Memory {
        pub(crate) fn with(files: &[(&str, &str)]) -> Memory {
            Memory(
                files
                    .iter()
                    .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                    .collect(),
            )
        }
    }

    impl Files for Memory {
        fn read(&mut self, path: &Path) -> Result<String, LoadError> {
            self.0.get(path).cloned().ok_or_else(|| LoadError::Read {
                path: path.to_path_buf(),
                source: io::ErrorKind::NotFound.into(),
            })
        }

        fn list(&mut self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            Ok(self
                .0
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .cloned()
                .collect())
        }
    }

    #[test]
    fn includes_are_read_in_place_relative_to_the_main_file() {
        let mut files = Memory::with(&[
            ("/etc/nginx/nginx.conf", "a;\ninclude mail.conf;\nz;\n"),
            (
                "/etc/nginx/mail.conf",
                "mail {\n include /etc/nginx/mail.d/*.conf;\n}\n",
            ),
            ("/etc/nginx/mail.d/20-b.conf", "b;"),
            (
                "/etc/nginx/mail.d/10-a.conf",
                "\n\nserver { include inner; }",
            ),
            ("/etc/nginx/mail.d/.hidden.conf", "hidden;"),
            ("/etc/nginx/mail.d/readme", "not nginx"),
            ("/etc/nginx/inner", "listen 143;"),
        ]);
        let tree = load(Path::new("/etc/nginx/nginx.conf"), &mut files).unwrap();
        let names: Vec<&str> = tree.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "mail", "z"]);
        let mail = tree[1].block.as_ref().unwrap();
        assert_eq!(mail[0].name, "server");
        assert_eq!(mail[0].at.to_string(), "/etc/nginx/mail.d/10-a.conf:3");
        let listen = &mail[0].block.as_ref().unwrap()[0];
        assert_eq!(listen.at.to_string(), "/etc/nginx/inner:1");
        assert_eq!(mail[1].name, "b");
        assert_eq!(mail.len(), 2);
    }

    #[test]
    fn blocks_other_than_mail_are_not_read_into() {
        let mut files =
            Memory::with(&[("/n/nginx.conf", "http { include mime.types; }\nmail { }\n")]);
        let tree = load(Path::new("/n/nginx.conf"), &mut files).unwrap();
        assert_eq!(tree[0].block.as_ref().unwrap()[0].name, "include");
    }

    #[test]
    fn a_file_that_includes_itself_is_stopped() {
        let mut files = Memory::with(&[("/n/nginx.conf", "include nginx.conf;\n")]);
        let e = load(Path::new("/n/nginx.conf"), &mut files).unwrap_err();
        assert!(matches!(e, LoadError::TooDeep(_)), "{e}");
        assert!(
            e.to_string().starts_with("/n/nginx.conf:1: include nested"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_and_a_bad_include_are_named() {
        let mut files = Memory::with(&[("/n/nginx.conf", "mail {\n include gone.conf;\n}\n")]);
        let e = load(Path::new("/n/nginx.conf"), &mut files).unwrap_err();
        assert!(e.to_string().contains("/n/gone.conf"), "{e}");
        let mut files = Memory::with(&[("/n/nginx.conf", "include a b;\n")]);
        let e = load(Path::new("/n/nginx.conf"), &mut files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/n/nginx.conf:1: include takes one file name"
        );
        let mut files = Memory::with(&[("/n/nginx.conf", "include */x.conf;\n")]);
        assert!(matches!(
            load(Path::new("/n/nginx.conf"), &mut files),
            Err(LoadError::Pattern { .. })
        ));
        // No file matching a wildcard is no mistake.
        let mut files = Memory::with(&[("/n/nginx.conf", "include none/*.conf;\n")]);
        assert!(load(Path::new("/n/nginx.conf"), &mut files)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wildcards_match_as_globs_do() {
        for (pattern, name, expected) in [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("a?c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
        ] {
            assert_eq!(
                wildcard(pattern.as_bytes(), name.as_bytes()),
                expected,
                "{pattern} {name}"
            );
        }
    }
}
