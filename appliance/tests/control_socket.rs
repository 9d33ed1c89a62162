//! The control socket starts drills, so only its owner may connect: these tests run in their own
//! process because they widen the process umask, as a careless service manager would.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use nix::sys::stat::{Mode, umask};
use stayopen_appliance::control::{self, Command, SOCKET_MODE};
use tokio::sync::mpsc;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_control_socket_is_the_owners_alone_even_under_a_permissive_umask() {
    let previous = umask(Mode::empty());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = control::socket_path(dir.path());
    let (tx, _rx) = mpsc::channel::<Command>(1);
    control::serve(&path, tx).expect("serve");
    assert!(
        std::fs::symlink_metadata(&path)
            .expect("socket")
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&path), SOCKET_MODE, "0600 whatever the umask");
    // Started again over its stale socket: replaced, still 0600, nothing staged left behind.
    let (tx, _rx) = mpsc::channel::<Command>(1);
    control::serve(&path, tx).expect("serve again");
    assert_eq!(mode(&path), SOCKET_MODE);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(control::SOCKET_NAME)]);
    umask(previous);
}

#[tokio::test]
async fn a_symbolic_link_planted_at_the_socket_path_is_refused_and_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("victim");
    std::fs::write(&target, b"keep me").expect("victim");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = control::socket_path(dir.path());
    std::os::unix::fs::symlink(&target, &path).expect("plant the link");
    let (tx, _rx) = mpsc::channel::<Command>(1);
    let refused = control::serve(&path, tx).expect_err("a symbolic link is refused");
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    assert!(
        std::fs::symlink_metadata(&path)
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the link is left as it was"
    );
    assert_eq!(std::fs::read(&target).expect("victim"), b"keep me");
    assert_eq!(mode(&target), 0o644, "the link's target was not touched");
}
