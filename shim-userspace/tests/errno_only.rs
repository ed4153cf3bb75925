//! Through a kernel, a driver's errors reach us as bare errnos. A device
//! that strips every message (as the VFIO uAPI does) still gets clear
//! errors from `load`, because the tool knows what it wrote.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]

use std::io::{self, BufReader, Read, Write};
use std::time::Duration;

use mlx5vf::backend::{self, DataFile, DriverOptions, MigrationDevice, Stats, errno_of};
use mlx5vf::transfer::{self, Quiet, SaveOptions};
use mlx5vf_core::save::PrecopyInfo;
use mlx5vf_core::vfio::{MigState, MigrationFlags};

/// An errno as the kernel returns it: no message, no driver error inside.
fn bare(e: io::Error) -> io::Error {
    match errno_of(&e) {
        Some(n) => io::Error::from_raw_os_error(n),
        None => e,
    }
}

struct ErrnoOnly(Box<dyn MigrationDevice>);
struct ErrnoOnlyFile(Box<dyn DataFile>);

impl Read for ErrnoOnlyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(bare)
    }
}

impl Write for ErrnoOnlyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(bare)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataFile for ErrnoOnlyFile {
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo> {
        self.0.precopy_info().map_err(bare)
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        self.0.wait_readable(timeout).map_err(bare)
    }
    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        self.0.set_nonblocking(on)
    }
}

impl MigrationDevice for ErrnoOnly {
    fn describe(&self) -> String {
        "errno-only".to_owned()
    }
    fn migration_flags(&self) -> MigrationFlags {
        self.0.migration_flags()
    }
    fn state(&mut self) -> io::Result<MigState> {
        self.0.state().map_err(bare)
    }
    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let f = self.0.set_state(target).map_err(bare)?;
        Ok(f.map(|f| Box::new(ErrnoOnlyFile(f)) as Box<dyn DataFile>))
    }
    fn data_size(&mut self) -> io::Result<u64> {
        self.0.data_size().map_err(bare)
    }
    fn reset(&mut self) -> io::Result<()> {
        self.0.reset().map_err(bare)
    }
    fn digest(&self) -> Option<String> {
        self.0.digest()
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
}

fn dev(spec: &str) -> ErrnoOnly {
    ErrnoOnly(backend::open(spec, &DriverOptions::default()).unwrap())
}

fn saved(spec: &str) -> Vec<u8> {
    let mut src = dev(spec);
    let mut out = Vec::new();
    transfer::save(&mut src, &mut out, &SaveOptions::default(), &Quiet).unwrap();
    out
}

#[test]
fn a_truncated_stream_is_named_even_when_the_device_says_only_einval() {
    let stream = saved("sim:state=4M,seed=3");
    for cut in [10, 100, stream.len() / 2, stream.len() - 1] {
        let mut dst = dev("sim:state=4M,seed=4");
        let mut input = BufReader::new(&stream[..cut]);
        let e = transfer::load(&mut dst, &mut input, &Quiet).unwrap_err();
        let msg = e.to_string();
        // Who refused, where, and the errno by name and number.
        assert!(
            msg.starts_with(&format!(
                "the device refused the stream on leaving RESUMING (RESUMING -> STOP, after \
                 {cut} bytes): EINVAL (errno 22: Invalid argument); the stream is truncated"
            )),
            "{msg}"
        );
        // The uAPI's way out of RESUMING.
        assert!(
            msg.ends_with("; device reset (VFIO_DEVICE_RESET), now RUNNING"),
            "{msg}"
        );
        assert_eq!(dst.state().unwrap(), MigState::Running);
    }
}

#[test]
fn a_whole_stream_loads_through_bare_errnos() {
    let stream = saved("sim:state=4M,seed=3");
    let mut dst = dev("sim:state=4M,seed=4");
    transfer::load(&mut dst, &mut BufReader::new(&stream[..]), &Quiet).unwrap();
    assert_eq!(dst.digest(), dev("sim:state=4M,seed=3").digest());
}
