//! The testkit's command lines. Being integration tests, these also make `cargo test --workspace`
//! build `stayopen-testbed`, which the appliance's and the cloud's netns tests run from the target
//! folder.

use std::process::{Command, Output};

fn fleet_sim(seed_file: &std::path::Path, state_root: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stayopen-fleet-sim"))
        .args(["--api-url", "http://127.0.0.1:9"])
        .arg("--seed-file")
        .arg(seed_file)
        .arg("--state-root")
        .arg(state_root)
        .output()
        .expect("run stayopen-fleet-sim")
}

#[test]
fn the_fleet_simulator_refuses_a_seed_file_without_practices_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"practices": []}"#).expect("write seed");
    let output = fleet_sim(&seed, &dir.path().join("fleet"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no practices with enrolment tokens"),
        "{stderr}"
    );
}

#[test]
fn the_fleet_simulator_refuses_a_missing_seed_file_with_exit_code_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("absent.json");
    let output = fleet_sim(&seed, &dir.path().join("fleet"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent.json"), "{stderr}");
}

#[test]
fn the_testbed_tool_offers_the_benchmark_and_the_servers_the_namespaces_run() {
    let output = Command::new(env!("CARGO_BIN_EXE_stayopen-testbed"))
        .arg("--help")
        .output()
        .expect("run stayopen-testbed");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "bench",
        "echo-server",
        "http-server",
        "dns-server",
        "udp-stream",
        "bench-tunnel",
        "tcp-send",
        "tcp-sink",
        "udp-call",
        "udp-call-server",
        "http-get",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}
