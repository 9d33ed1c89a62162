//! Writing the configuration file: atomically (a private temporary file in the same directory,
//! flushed, renamed over the old one, the directory flushed), mode 0600 from the moment it
//! exists (it may hold the enrolment token), an existing file kept as `.bak` and its owner kept
//! (the agent's unit may run as a service user).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `appliance.toml` → `appliance.toml.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// What [`write_config`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where the previous file went, if there was one.
    pub backup: Option<PathBuf>,
}

/// Writes `text` to `path` atomically with mode 0600, keeping an existing file as `.bak` (also
/// 0600) and giving the new file the old one's owner and group.
pub fn write_config(path: &Path, text: &str) -> std::io::Result<Written> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
    }
    let previous = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Some(meta),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a regular file",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.setup-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        if let Some(meta) = &previous {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        }
        let backup = match &previous {
            Some(_) => {
                let backup = backup_path(path);
                std::fs::copy(path, &backup)?;
                std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o600))?;
                Some(backup)
            }
            None => None,
        };
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(Written { backup })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_written_0600_and_an_existing_one_is_kept_as_bak() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/stayopen/appliance.toml");
        let first = write_config(&path, "one = 1\n").expect("first write");
        assert_eq!(first.backup, None);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one = 1\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let second = write_config(&path, "two = 2\n").expect("second write");
        let backup = second.backup.expect("backup");
        assert_eq!(backup, dir.path().join("etc/stayopen/appliance.toml.bak"));
        assert_eq!(std::fs::read_to_string(&backup).expect("read"), "one = 1\n");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two = 2\n");
        assert_eq!((mode(&path), mode(&backup)), (0o600, 0o600));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind");
    }

    #[test]
    fn a_directory_at_the_path_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("appliance.toml");
        std::fs::create_dir(&path).expect("mkdir");
        let err = write_config(&path, "x = 1\n").expect_err("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(path.is_dir());
    }
}
