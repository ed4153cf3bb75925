//! The simulated device's data file behaves like the kernel's data fd:
//! blocking and non-blocking reads, ENOMSG in PRE_COPY, EOF as Ok(0),
//! writes in any pieces, precopy info, data size.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]

use std::io::{self, Read, Write};

use mlx5vf::backend::{DataFile, DriverOptions, MigrationDevice, errno_of, is_no_message, open};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::MigState;

fn dev(spec: &str) -> Box<dyn MigrationDevice> {
    open(spec, &DriverOptions::default()).unwrap()
}

fn read_all(f: &mut dyn DataFile, piece: usize) -> Vec<u8> {
    let mut out = vec![];
    let mut buf = vec![0u8; piece];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn blocking_reads_end_with_eof_every_time() {
    let mut d = dev("sim:state=20M,seed=1");
    assert_eq!(d.state().unwrap(), MigState::Running);
    let size = d.data_size().unwrap();
    assert!(size >= 20 << 20);
    let mut f = d.set_state(MigState::StopCopy).unwrap().unwrap();
    let s = read_all(f.as_mut(), 100_000);
    assert!(s.len() as u64 >= size);
    let mut b = [0u8; 8];
    assert_eq!(f.read(&mut b).unwrap(), 0);
    assert_eq!(f.read(&mut b).unwrap(), 0);
    // Writing to a saving file is refused.
    assert_eq!(
        errno_of(&f.write(&[0]).unwrap_err()),
        Some(Errno::ENODEV.code())
    );
    drop(f);
    d.set_state(MigState::Stop).unwrap();
}

#[test]
fn non_blocking_reads_say_eagain_while_a_save_runs() {
    // A slow firmware: each SAVE takes a while, so the reader catches up.
    let mut d = dev("sim:state=64M,fw-rate=256M/s,seed=2");
    let mut f = d.set_state(MigState::StopCopy).unwrap().unwrap();
    f.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    let mut would_block = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert_eq!(errno_of(&e), Some(Errno::EAGAIN.code()));
                would_block += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(total > 64 << 20);
    assert!(would_block > 0, "the reader never had to wait");
}

#[test]
fn precopy_drains_with_enomsg_then_continues_in_stop_copy() {
    let mut src = dev("sim:state=30M,dirty=1M,seed=3");
    let mut dst = dev("sim:state=1M,seed=4");
    let mut w = dst.set_state(MigState::Resuming).unwrap().unwrap();
    let mut f = src.set_state(MigState::PreCopy).unwrap().unwrap();
    let info = f.precopy_info().unwrap();
    assert!(info.initial_bytes > 0);
    let mut buf = vec![0u8; 1 << 20];
    let mut rounds = 0;
    loop {
        match f.read(&mut buf) {
            Ok(n) => {
                assert!(n > 0);
                w.write_all(&buf[..n]).unwrap();
            }
            Err(e) if is_no_message(&e) => {
                rounds += 1;
                let i = f.precopy_info().unwrap();
                if rounds > 3 || (i.initial_bytes == 0 && i.dirty_bytes == 0) {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Same file continues in STOP_COPY; the precopy ioctl is EINVAL there.
    assert!(src.set_state(MigState::StopCopy).unwrap().is_none());
    assert_eq!(
        errno_of(&f.precopy_info().unwrap_err()),
        Some(Errno::EINVAL.code())
    );
    // The rest goes straight from the DMA buffers into the destination.
    while f.send_to(&mut *w, 1 << 20).unwrap() > 0 {}
    drop((f, w));
    src.set_state(MigState::Stop).unwrap();
    dst.set_state(MigState::Running).unwrap();
    assert_eq!(src.digest(), dst.digest());
}

#[test]
fn writes_in_odd_pieces_and_truncation_is_caught_at_stop() {
    let mut src = dev("sim:state=10M,seed=5");
    let mut f = src.set_state(MigState::StopCopy).unwrap().unwrap();
    let s = read_all(f.as_mut(), 1 << 20);
    drop(f);
    let mut dst = dev("sim:state=1M");
    let mut w = dst.set_state(MigState::Resuming).unwrap().unwrap();
    for piece in s[..s.len() - 1].chunks(4093) {
        w.write_all(piece).unwrap();
    }
    let Err(e) = dst.set_state(MigState::Stop) else {
        panic!("RESUMING -> STOP accepted a truncated stream")
    };
    assert_eq!(errno_of(&e), Some(Errno::EINVAL.code()));
    assert!(e.to_string().contains("missing 1 bytes"), "{e}");
    w.write_all(&s[s.len() - 1..]).unwrap();
    drop(w);
    dst.set_state(MigState::Running).unwrap();
    assert_eq!(src.digest(), dst.digest());
}

/// A read of a saving file that failed says why it failed (the firmware's
/// status), keeping ENODEV.
#[test]
fn a_failed_save_says_why() {
    let parsed = "sim:state=64M,precopy=off".parse().unwrap();
    let mut d = mlx5vf::sim::SimDevice::open("sim", &parsed, &DriverOptions::default()).unwrap();
    // The third SAVE fails with BAD_PARAM_ERR (status 3).
    d.firmware()
        .lock()
        .unwrap()
        .faults_mut()
        .fail_nth(0x118, 3, 3, 0x1234)
        .unwrap();
    let mut f = d.set_state(MigState::StopCopy).unwrap().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let e = loop {
        match f.read(&mut buf) {
            Ok(0) => panic!("end of stream despite a failed SAVE"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(errno_of(&e), Some(Errno::ENODEV.code()), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("firmware refused a SAVE (BAD_PARAM_ERR)"),
        "{text}"
    );
}
