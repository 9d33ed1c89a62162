//! The `stayopen-appliance` command line: bad configuration is refused clearly, with exit code 2.

use std::process::Command;

fn appliance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

/// A one-uplink simulated config whose uplink uses `interface`, plus `extra` lines in the uplink.
fn write_config(
    dir: &std::path::Path,
    name: &str,
    interface: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[appliance]\nstate_dir = \"{}\"\n[lan]\ninterface = \"lan0\"\n[[uplinks]]\nname = \"a\"\ninterface = \"{interface}\"\ngateway = \"192.0.2.1\"\npriority = 0\n{extra}[dataplane]\nkind = \"simulated\"\n",
            dir.display()
        ),
    )
    .expect("write config");
    path
}

fn run_with(config: &std::path::Path) -> std::process::Output {
    appliance()
        .args(["run", "--config"])
        .arg(config)
        .output()
        .expect("run")
}

#[test]
fn a_config_with_an_unknown_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_with(&write_config(
        dir.path(),
        "bad.toml",
        "wan0",
        "metred = true\n",
    ));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("metred"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[test]
fn a_semantically_invalid_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_with(&write_config(dir.path(), "bad.toml", "lan0", ""));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("uplinks[0].interface"));
}

#[test]
fn a_missing_config_file_exits_2() {
    let output = appliance()
        .args(["run", "--config", "/nonexistent/appliance.toml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/appliance.toml"));
}

#[test]
fn status_without_a_running_agent_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "ok.toml", "wan0", "");
    let output = appliance()
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .expect("status");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is it running?"));
}
