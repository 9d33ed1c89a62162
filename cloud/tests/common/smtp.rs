//! A real SMTP server for e-mail notifications: aiosmtpd on a free loopback port, storing every
//! mail it accepts in a maildir; killed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct SmtpSink {
    pub port: u16,
    maildir: tempfile::TempDir,
    _process: tokio::process::Child,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let maildir = tempfile::tempdir().expect("maildir");
        let process = tokio::process::Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A path that does not exist yet: the handler creates the maildir's folders.
            .arg(maildir.path().join("mail"))
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd (Debian's python3-aiosmtpd; the test command installs it)");
        super::eventually(Duration::from_secs(15), "the SMTP sink listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self {
            port,
            maildir,
            _process: process,
        }
    }

    /// The raw messages received so far, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let new: PathBuf = self.maildir.path().join("mail").join("new");
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&new)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.iter().map(|(_, path)| read(path)).collect()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("mail")
}

/// The value of header `name` in a raw mail (first occurrence, unfolded).
pub fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\n\n").next().unwrap_or_default();
    let mut lines = head.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            let mut value = value.trim().to_owned();
            while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(lines.next().unwrap_or_default().trim());
            }
            return Some(value);
        }
    }
    None
}
