//! The `stayopen-appliance` command line: bad configuration is refused clearly, with exit code 2.

use std::process::Command;

fn appliance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

#[test]
fn a_config_with_an_unknown_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[appliance]\nstate_dir = \"/tmp/x\"\n[lan]\ninterface = \"lan0\"\n[[uplinks]]\nname = \"a\"\ninterface = \"wan0\"\ngateway = \"192.0.2.1\"\npriority = 0\nmetred = true\n[dataplane]\nkind = \"simulated\"\n",
    )
    .expect("write");
    let output = appliance()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("metred"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[test]
fn a_semantically_invalid_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[appliance]\nstate_dir = \"/tmp/x\"\n[lan]\ninterface = \"lan0\"\n[[uplinks]]\nname = \"a\"\ninterface = \"lan0\"\ngateway = \"192.0.2.1\"\npriority = 0\n[dataplane]\nkind = \"simulated\"\n",
    )
    .expect("write");
    let output = appliance()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
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
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        format!(
            "[appliance]\nstate_dir = \"{}\"\n[lan]\ninterface = \"lan0\"\n[[uplinks]]\nname = \"a\"\ninterface = \"wan0\"\ngateway = \"192.0.2.1\"\npriority = 0\n[dataplane]\nkind = \"simulated\"\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let output = appliance()
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .expect("status");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is it running?"));
}
