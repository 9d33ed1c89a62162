//! The cloud's tracing output in tests. The first cloud a test binary starts installs a global
//! subscriber (production's filter, or `RUST_LOG`) that writes every line to memory, where a
//! test can read what was logged ([`captured`]), and, when `STAYOPEN_TEST_LOG_DIR` is set (the
//! test command sets it), to a file there: after the whole run, `infra/scripts/test.sh` fails if
//! any of those files holds something shaped like a token.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

struct Capture {
    lines: Mutex<Vec<u8>>,
    file: Option<Mutex<std::fs::File>>,
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

fn log_dir() -> Option<PathBuf> {
    std::env::var_os("STAYOPEN_TEST_LOG_DIR").map(PathBuf::from)
}

/// This test binary's name, to name its log files.
fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".to_owned())
}

fn state() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let file = log_dir().and_then(|dir| {
            std::fs::create_dir_all(&dir).ok()?;
            let path = dir.join(format!("{}-{}.log", binary_name(), std::process::id()));
            std::fs::File::create(path).ok().map(Mutex::new)
        });
        Capture {
            lines: Mutex::new(Vec::new()),
            file,
        }
    })
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let capture = state();
        if let Ok(mut lines) = capture.lines.lock() {
            lines.extend_from_slice(buf);
        }
        if let Some(file) = &capture.file
            && let Ok(mut file) = file.lock()
        {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary; later calls do nothing). Log records
/// of the `log` crate (actix-web's request logger) are captured too.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn,sqlx=warn"));
        // Another subscriber installed first (a test's own) keeps its place.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .try_init();
    });
}

/// Everything this test binary's clouds have logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&state().lines.lock().map(|l| l.clone()).unwrap_or_default())
        .into_owned()
}

/// Copies a log file written elsewhere (a cloud process's) into the run's log folder.
pub fn keep_file(path: &Path, label: &str) {
    let Some(dir) = log_dir() else {
        return;
    };
    if !path.exists() || std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let name = format!(
        "{}-{}-{label}-{}.log",
        binary_name(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    if let Err(e) = std::fs::copy(path, dir.join(name)) {
        eprintln!("could not keep the log {}: {e}", path.display());
    }
}
