//! Adopting a VMM's VFIO descriptors from the command line (`vfio-fd:`
//! specs, `pass-fds`), without VFIO: specs that do not parse are usage
//! errors; descriptors that are not open, or are not VFIO devices, are
//! refused in one line naming the step, the device and the errno, before
//! anything else happens. (Adoption of real VFIO descriptors runs in the
//! kernel rig, tests/kernel/guest-init.sh.)
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use std::process::Stdio;

use common::{bin, run};

#[test]
fn a_bad_vfio_fd_spec_is_a_usage_error() {
    for (spec, says) in [
        ("vfio-fd:", "vfio-fd: needs a device fd"),
        (
            "vfio-fd:x,container=3",
            "\"x\" is not a file descriptor number",
        ),
        ("vfio-fd:5", "needs the device's container=FD or iommufd=FD"),
        (
            "vfio-fd:5,container=4,iommufd=6",
            "one of container= and iommufd=",
        ),
    ] {
        run(&["check", "--device", spec]).fails(2, says);
        run(&["save", "--device", spec, "-o", "/dev/null"]).fails(2, says);
    }
}

/// Fds that are not open in the process: EBADF at the step that
/// duplicates them, and the hint says where they should come from.
#[test]
fn fds_that_are_not_open_are_refused_with_ebadf() {
    run(&["check", "--device", "vfio-fd:1000000,container=1000001"]).fails(
        1,
        "cannot open device: vfio-fd:1000000,container=1000001: duplicate the device fd \
         1000000: EBADF (errno 9: Bad file descriptor); is fd 1000000 open in this process \
         (inherited from its parent)?",
    );
    run(&["check", "--device", "vfio-fd:0,iommufd=1000001"]).fails(
        1,
        "vfio-fd:0,iommufd=1000001: duplicate the iommufd fd 1000001: EBADF",
    );
}

/// Open fds that are not VFIO devices: stdin as /dev/null (a character
/// device, but not VFIO's) and as a pipe.
#[test]
fn fds_that_are_not_vfio_devices_are_refused_at_device_info() {
    let r = run(&[
        "save",
        "--device",
        "vfio-fd:0,container=2",
        "-o",
        "/dev/null",
    ]);
    let line = r.fails(
        1,
        "cannot open device: vfio-fd:0,container=2: VFIO_DEVICE_GET_INFO: not a VFIO device \
         fd (ENOTTY (errno 25: Inappropriate ioctl for device))",
    );
    assert!(!line.contains("device reset"), "{line}");
    let (read, _write) = rustix::pipe::pipe().unwrap();
    let out = bin()
        .args(["load", "--device", "vfio-fd:0,iommufd=2", "-i", "/dev/null"])
        .stdin(Stdio::from(std::fs::File::from(read)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("vfio-fd:0,iommufd=2: VFIO_DEVICE_GET_INFO: not a VFIO device fd (ENOTTY"),
        "{stderr}"
    );
}

#[test]
fn pass_fds_opens_vfio_mig_devices_only() {
    run(&["pass-fds", "--device", "sim", "--", "true"]).fails(
        2,
        "pass-fds: --device \"sim\": \"sim\" is not a vfio-mig: spec (pass-fds opens vfio-mig: \
         devices)",
    );
    run(&[
        "pass-fds",
        "--device",
        "vfio-mig:no-such-device-4711",
        "--",
        "true",
    ])
    .fails(
        1,
        "pass-fds: cannot open device: vfio-mig:no-such-device-4711: find the device in sysfs",
    );
    run(&["pass-fds", "--device", "vfio-mig:x"]).fails(2, "missing required argument");
}

#[test]
fn help_teaches_vfio_fd_and_pass_fds() {
    let help = run(&["pass-fds", "--help"]);
    let text = help.ok();
    for needle in [
        "{N} becomes the vfio-fd: spec of the N-th --device",
        "mlx5vf pass-fds --device vfio-mig:0000:3b:00.2 -- mlx5vf check --device {0}",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
    let text = run(&["check", "--help"]).ok().to_owned();
    for needle in [
        "vfio-fd:DEVICE_FD,container=FD",
        "vfio-fd:DEVICE_FD,iommufd=FD",
        "it maps no DMA",
        "mlx5vf check --device vfio-fd:7,iommufd=8",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
}
