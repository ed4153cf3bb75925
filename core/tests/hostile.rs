//! Hostile firmware: sizes that lie, completions that repeat. Errors, no
//! out-of-bounds access, no panic, nothing leaked.
mod common;

use common::*;
use mlx5vf_core::device::{Config, DeviceError};
use mlx5vf_core::save::FileState;
use mlx5vf_core::vfio::MigState;

const SMALL: &str = "sim:state=20M,object=1M-2M,seed=5";

fn finish(mut d: mlx5vf_core::device::Device<TestHal>) {
    // Leaving PRE_COPY with a failed file reports EIO once, then succeeds.
    if let Err(e) = set_state(&mut d, MigState::Running) {
        assert_eq!(e, DeviceError::SaveFileFailed);
        set_state(&mut d, MigState::Running).unwrap();
    }
    while complete_one(&mut d) {}
    assert!(d.is_idle(), "{d:?}");
    assert!(d.hal().accounting().is_zero(), "{:?}", d.hal().accounting());
    assert_eq!(d.hal().live_buffers, 0);
}

#[test]
fn actual_image_size_larger_than_the_buffer() {
    for precopy in [false, true] {
        let mut d = device(SMALL, Config::default());
        let target = if precopy {
            MigState::PreCopy
        } else {
            MigState::StopCopy
        };
        let f = set_state(&mut d, target).unwrap().unwrap();
        d.hal_mut().fw.faults_mut().oversize_next_save(4096);
        complete_one(&mut d);
        assert_eq!(d.save_engine().unwrap().state(), FileState::Error);
        // The reader gets what was queued before (our records), then ENODEV;
        // the lying image is never handed out.
        let mut out = vec![];
        let e = loop {
            match read(&mut d, f, 1 << 20, &mut out) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e, DeviceError::FileFailed);
        assert!(out.len() < 4096);
        finish(d);
    }
}

#[test]
fn absurd_next_required_umem_size() {
    let mut d = device(SMALL, Config::default());
    let f = set_state(&mut d, MigState::StopCopy).unwrap().unwrap();
    d.hal_mut()
        .fw
        .faults_mut()
        .next_required_umem_size(0xffff_ffff);
    let before = d.stats().buffer_bytes;
    complete_one(&mut d);
    // No 4 GiB buffer: the file failed instead.
    assert_eq!(d.stats().buffer_bytes, before);
    assert!(d.stats().peak_buffer_bytes < 64 << 20);
    assert_eq!(d.save_engine().unwrap().state(), FileState::Error);
    let mut out = vec![];
    while read(&mut d, f, 1 << 20, &mut out).is_ok() {}
    assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::FileFailed);
    finish(d);
}

#[test]
fn a_completion_twice_or_for_another_session() {
    let mut d = device(SMALL, Config::default());
    let f = set_state(&mut d, MigState::StopCopy).unwrap().unwrap();
    let (t1, out1) = d.hal_mut().run_save().unwrap();
    d.handle_save_completion(t1, &out1).unwrap();
    assert_eq!(
        d.handle_save_completion(t1, &out1),
        Err(DeviceError::StaleCompletion)
    );
    // Close that session with a SAVE in flight, open another: the old
    // completion must not be taken for the new session's SAVE.
    set_state(&mut d, MigState::Stop).unwrap();
    let (t2, out2) = d.hal_mut().run_save().unwrap();
    assert!(d.save_in_flight());
    d.handle_save_completion(t2, &out2).unwrap(); // frees the doomed buffer
    let f2 = set_state(&mut d, MigState::StopCopy).unwrap().unwrap();
    assert_ne!(f, f2);
    assert_eq!(
        d.handle_save_completion(t2, &out2),
        Err(DeviceError::StaleCompletion)
    );
    assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::NoFile);
    // Garbage output for the real token: the file fails, nothing else.
    let (t3, _) = d.hal_mut().run_save().unwrap();
    d.handle_save_completion(t3, &[0xff; 3]).unwrap();
    assert_eq!(d.save_engine().unwrap().state(), FileState::Error);
    set_state(&mut d, MigState::Stop).unwrap();
    finish(d);
}
