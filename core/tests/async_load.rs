//! Pipelined resume: with a platform that LOADs asynchronously, the next
//! image arrives while firmware LOADs the last one, a third waits for a
//! completion, RESUMING → STOP waits for the last LOAD, and a file closed
//! under a LOAD gives its memory back when that LOAD completes.
mod common;

use common::*;
use mlx5vf_core::device::{Config, DeviceError, FileId};
use mlx5vf_core::load::LoadError;
use mlx5vf_core::vfio::MigState::*;
use mlx5vf_sim::testkit::ports::{OnWait, Strict, write_styled};

const MIB: u64 = 1 << 20;
/// Small chunks: many images, so the pipeline fills.
fn cfg() -> Config {
    Config {
        chunk_size: MIB,
        ..Config::default()
    }
}

/// A whole stream saved from `spec`, and the source's digest.
fn saved(spec: &str) -> (Vec<u8>, mlx5vf_sim::Digest) {
    let mut src = device(spec, cfg());
    let f = set_state(&mut src, StopCopy).unwrap().unwrap();
    let mut out = vec![];
    loop {
        match read(&mut src, f, 1 << 20, &mut out) {
            Ok(0) => break,
            Ok(_) => {}
            Err(DeviceError::WouldBlock) => assert!(complete_one(&mut src)),
            Err(e) => panic!("{e}"),
        }
    }
    set_state(&mut src, Stop).unwrap();
    (out, src.hal().fw.digest(0).unwrap())
}

fn async_dst() -> mlx5vf_core::device::Device<TestHal> {
    let mut d = device("sim:state=1M,seed=9", cfg());
    d.hal_mut().async_load = true;
    d
}

fn resuming(d: &mut mlx5vf_core::device::Device<TestHal>) -> FileId {
    set_state(d, Resuming).unwrap().unwrap()
}

#[test]
fn images_arrive_while_the_last_one_loads() {
    let (stream, digest) = saved("sim:state=12M,object=256K-512K,seed=4");
    let mut d = async_dst();
    let f = resuming(&mut d);
    // Write without waiting: the writer runs ahead until both image
    // buffers hold images (one LOADing, one complete), then must wait.
    let mut taken = 0usize;
    let blocked = write_styled(&mut d, f, &stream, &mut Strict, OnWait::Fail, &mut taken);
    // The kit's writer completes a LOAD whenever it is asked to wait for
    // one (firmware finishing its work), so the whole stream goes in.
    assert_eq!(blocked.map(|_| ()), Ok(()));
    assert_eq!(taken, stream.len());
    // Both image buffers were in use at once.
    let e = d.load_engine().unwrap();
    assert!(!e.segments(0).is_empty() && !e.segments(1).is_empty());
    // RESUMING -> STOP waits for the last LOAD (the kit completes it).
    set_state(&mut d, Stop).unwrap();
    assert!(!d.load_in_flight());
    set_state(&mut d, Running).unwrap();
    assert_eq!(d.hal().fw.digest(0), Some(digest));
    d.close();
    assert!(d.is_idle(), "{d:?}");
    assert_eq!(d.hal().live_buffers, 0);
    assert!(d.hal().accounting().is_zero());
}

#[test]
fn resuming_to_stop_refuses_to_skip_the_load_in_flight() {
    let (stream, _) = saved("sim:state=3M,object=256K-512K,seed=5");
    let mut d = async_dst();
    let f = resuming(&mut d);
    write(&mut d, f, &stream).unwrap();
    // The last image's LOAD still runs: the arc must wait for it.
    assert!(d.load_in_flight());
    let e = d.set_state(Stop).unwrap_err();
    assert_eq!((e.error, e.reached), (DeviceError::LoadInFlight, Resuming));
    // Each completion starts the next complete image; the arc goes through
    // once the last one is in.
    let mut loads = 0;
    while let Err(e) = d.set_state(Stop) {
        assert_eq!(e.error, DeviceError::LoadInFlight);
        assert!(complete_one(&mut d));
        loads += 1;
        assert!(loads <= 2, "more LOADs than image buffers were pending");
    }
    d.set_state(Running).unwrap();
    d.close();
    assert!(d.is_idle());
}

#[test]
fn a_file_closed_under_a_load_frees_its_memory_when_the_load_ends() {
    let (stream, _) = saved("sim:state=3M,object=256K-512K,seed=6");
    let mut d = async_dst();
    let f = resuming(&mut d);
    write(&mut d, f, &stream).unwrap();
    assert!(d.load_in_flight());
    // An FLR resets the VF and closes the file while the LOAD is queued.
    d.hal_mut().fw.reset_vf(0);
    d.handle_reset();
    // The segments under LOAD stay (firmware reads them) until it ends.
    assert!(d.hal().live_buffers > 0);
    // A new RESUMING waits for that LOAD (its segments still count).
    assert_eq!(
        d.set_state(Resuming).unwrap_err().error,
        DeviceError::LoadInFlight
    );
    assert!(complete_one(&mut d));
    assert!(d.is_idle(), "{d:?}");
    assert_eq!(d.hal().live_buffers, 0);
    assert!(d.hal().accounting().is_zero(), "{:?}", d.hal().accounting());
    // And the device works again.
    let f = resuming(&mut d);
    d.release(f);
    d.close();
    assert!(d.is_idle());
}

#[test]
fn a_refused_load_fails_the_file() {
    let (stream, _) = saved("sim:state=3M,object=256K-512K,seed=7");
    let mut d = async_dst();
    let f = resuming(&mut d);
    let half = stream.len() / 2;
    write(&mut d, f, &stream[..half]).unwrap();
    assert!(d.load_in_flight());
    // Firmware refuses the LOAD in flight.
    let (token, mut out) = d.hal_mut().run_load().unwrap();
    out[0] = 0x03; // BAD_PARAM
    d.handle_load_completion(token, &out).unwrap();
    // A stale or repeated completion changes nothing.
    assert_eq!(
        d.handle_load_completion(token, &out),
        Err(DeviceError::StaleCompletion)
    );
    // The refusal arrived after the bytes that completed the image were
    // taken: the next write, and leaving RESUMING, say what firmware said.
    let e = write(&mut d, f, &stream[half..]).unwrap_err();
    match e {
        DeviceError::Load(LoadError::Refused(c)) => {
            assert_eq!(c.opcode, mlx5vf_core::ifc::Opcode::LoadVhcaState);
            assert_eq!(c.status, mlx5vf_core::ifc::CmdStatus::BadParamErr);
        }
        other => panic!("expected the LOAD's refusal, got {other:?}"),
    }
    assert_eq!(e.errno(), mlx5vf_core::errno::Errno::EINVAL);
    assert!(d.set_state(Stop).is_err());
    d.hal_mut().fw.reset_vf(0);
    d.handle_reset();
    d.close();
    assert!(d.is_idle());
    assert_eq!(d.hal().live_buffers, 0);
}
