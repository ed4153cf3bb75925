//! A hostile platform: calls that fail and firmware that lies, each firing
//! once, after a chosen number of calls succeed.
//!
//! [`Knobs`] is the one implementation of that schedule. [`TestHal`] applies
//! it where it talks to the firmware, so a lie can hit the CREATE_MKEY and
//! DESTROY_MKEY commands it issues itself inside `map_buffers` and
//! `unmap_buffers`; [`FaultInjector`] applies it around any other [`Hal`],
//! where only the calls the device makes are visible.
//!
//! [`TestHal`]: super::TestHal

use mlx5vf_core::hal::{BufferId, DmaDirection, Hal, HalError, HalErrorKind, LoadToken, SaveToken};
use mlx5vf_core::ifc::mkey::Mkey;
use mlx5vf_core::ifc::pd::Pd;

use super::{Platform, TestHal};
use crate::wire::opcode;

/// Fail one call after `after` more succeed, with `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailAfter {
    /// Calls to let through first.
    pub after: u32,
    /// The error the failing call returns.
    pub kind: HalErrorKind,
}

impl FailAfter {
    /// Fail one call after `after` more succeed, with `kind`.
    pub const fn new(after: u32, kind: HalErrorKind) -> Self {
        Self { after, kind }
    }
}

/// Fail one command of `opcode` sent through `exec` (without running it)
/// after `skip` more of that opcode succeed, with `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailOpcode {
    /// The opcode (the big-endian `u16` the command input starts with).
    pub opcode: u16,
    /// Commands of that opcode to let through first.
    pub skip: u32,
    /// The error the failing `exec` returns.
    pub kind: HalErrorKind,
}

/// A command output firmware lies about: XOR one byte of the output of the
/// `skip + 1`-th command of `opcode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecCorruption {
    /// The opcode whose output is corrupted.
    pub opcode: u16,
    /// Commands of that opcode to let through first.
    pub skip: u32,
    /// Byte of the output (modulo its length).
    pub byte: u16,
    /// Bits to flip (non-zero).
    pub xor: u8,
}

/// Ways the platform (or firmware) misbehaves, each firing once and then
/// disarming itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Fail one `alloc_buffer`.
    pub fail_alloc: Option<FailAfter>,
    /// Fail one `map_buffers`.
    pub fail_map: Option<FailAfter>,
    /// Fail one `start_save`.
    pub fail_start_save: Option<FailAfter>,
    /// Fail delivery of one command: `exec` returns the error without
    /// running it.
    pub fail_exec: Option<FailAfter>,
    /// Fail delivery of one command of one opcode.
    pub fail_opcode: Option<FailOpcode>,
    /// Corrupt one command output.
    pub corrupt_exec: Option<ExecCorruption>,
}

/// What the platform saw firmware do, for invariants that only hold while
/// firmware tells the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taint {
    /// Firmware lied in an output that allocates or frees a firmware
    /// resource (PD, mkey), so the sim's resource accounting and the
    /// device's leak counters no longer have to agree.
    pub resource_lie: bool,
    /// Firmware lied in any output (including SAVE completions, which
    /// harnesses corrupt themselves and record here too).
    pub lied: bool,
}

impl Taint {
    /// Records a lie in the output of a command of `op`.
    pub fn record(&mut self, op: u16) {
        self.lied = true;
        self.resource_lie |= matches!(
            op,
            opcode::ALLOC_PD | opcode::DEALLOC_PD | opcode::CREATE_MKEY | opcode::DESTROY_MKEY
        );
    }

    /// Both records together.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self {
            resource_lie: self.resource_lie || other.resource_lie,
            lied: self.lied || other.lied,
        }
    }
}

/// The opcode of a command input; `u16::MAX` (no opcode) when it is too
/// short to hold one.
pub fn opcode_of(input: &[u8]) -> u16 {
    match input {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => u16::MAX,
    }
}

/// Counts `skip` down; `true` (and disarms `knob`) when it reaches zero.
fn count_down<T>(knob: &mut Option<T>, skip: impl FnOnce(&mut T) -> &mut u32) -> Option<T>
where
    T: Copy,
{
    let armed = knob.as_mut()?;
    let left = skip(armed);
    if *left > 0 {
        *left -= 1;
        return None;
    }
    knob.take()
}

fn fire(knob: &mut Option<FailAfter>) -> Result<(), HalErrorKind> {
    match count_down(knob, |k| &mut k.after) {
        Some(k) => Err(k.kind),
        None => Ok(()),
    }
}

impl Knobs {
    /// Before an `alloc_buffer`.
    ///
    /// # Errors
    /// The armed failure, when it fires now.
    pub fn on_alloc(&mut self) -> Result<(), HalErrorKind> {
        fire(&mut self.fail_alloc)
    }

    /// Before a `map_buffers`.
    ///
    /// # Errors
    /// The armed failure, when it fires now.
    pub fn on_map(&mut self) -> Result<(), HalErrorKind> {
        fire(&mut self.fail_map)
    }

    /// Before a `start_save`.
    ///
    /// # Errors
    /// The armed failure, when it fires now.
    pub fn on_start_save(&mut self) -> Result<(), HalErrorKind> {
        fire(&mut self.fail_start_save)
    }

    /// Before an `exec` of `input`: every command counts towards
    /// [`Knobs::fail_exec`], those of its opcode towards
    /// [`Knobs::fail_opcode`].
    ///
    /// # Errors
    /// The armed failure, when it fires now.
    pub fn on_exec(&mut self, input: &[u8]) -> Result<(), HalErrorKind> {
        fire(&mut self.fail_exec)?;
        let op = opcode_of(input);
        if self.fail_opcode.is_some_and(|f| f.opcode == op) {
            if let Some(f) = count_down(&mut self.fail_opcode, |f| &mut f.skip) {
                return Err(f.kind);
            }
        }
        Ok(())
    }

    /// After firmware wrote `out` for `input`: applies
    /// [`Knobs::corrupt_exec`] and records the lie in `taint`.
    pub fn after_exec(&mut self, input: &[u8], out: &mut [u8], taint: &mut Taint) {
        let op = opcode_of(input);
        if self.corrupt_exec.is_none_or(|c| c.opcode != op) {
            return;
        }
        let Some(c) = count_down(&mut self.corrupt_exec, |c| &mut c.skip) else {
            return;
        };
        if !out.is_empty() {
            out[usize::from(c.byte) % out.len()] ^= c.xor;
            taint.record(op);
        }
    }
}

/// Any [`Hal`] with [`Knobs`] around it: the calls the device makes fail
/// on schedule, and command outputs it receives through `exec` lie.
///
/// Errors of the wrapped `Hal` pass through as their [`HalErrorKind`].
/// Dereferences to the wrapped `Hal`, so a test reaches its firmware and
/// buffers as before.
#[derive(Debug)]
pub struct FaultInjector<H> {
    inner: H,
    /// The failures and lies to inject.
    pub knobs: Knobs,
    /// Lies told through this wrapper.
    pub taint: Taint,
}

impl<H: Hal> FaultInjector<H> {
    /// `inner`, with nothing armed.
    pub fn new(inner: H) -> Self {
        Self {
            inner,
            knobs: Knobs::default(),
            taint: Taint::default(),
        }
    }

    /// The wrapped `Hal`.
    pub fn into_inner(self) -> H {
        self.inner
    }
}

impl<H> core::ops::Deref for FaultInjector<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.inner
    }
}

impl<H> core::ops::DerefMut for FaultInjector<H> {
    fn deref_mut(&mut self) -> &mut H {
        &mut self.inner
    }
}

fn kind<T, E: HalError>(r: Result<T, E>) -> Result<T, HalErrorKind> {
    r.map_err(|e| e.kind())
}

impl<H: Hal> Hal for FaultInjector<H> {
    type Error = HalErrorKind;

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        self.knobs.on_exec(input)?;
        kind(self.inner.exec(input, output))?;
        self.knobs.after_exec(input, output, &mut self.taint);
        Ok(())
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        self.knobs.on_start_save()?;
        kind(self.inner.start_save(input, token))
    }

    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, HalErrorKind> {
        // Forwarded untouched: a platform that LOADs synchronously answers
        // `false` and the core sends the LOAD through `exec`, where the exec
        // knobs apply (applying them here too would count it twice).
        kind(self.inner.start_load(input, token))
    }

    fn alloc_buffer(&mut self, npages: u32, dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        self.knobs.on_alloc()?;
        kind(self.inner.alloc_buffer(npages, dir))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, HalErrorKind> {
        self.knobs.on_map()?;
        kind(self.inner.map_buffers(pd, buffers))
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), HalErrorKind> {
        kind(self.inner.unmap_buffers(mkey, buffers))
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        self.inner.free_buffer(buffer);
    }

    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        self.inner.crc32c(buffer, offset, len, crc)
    }
}

impl<H: Platform> Platform for FaultInjector<H> {
    fn test_hal(&self) -> &TestHal {
        self.inner.test_hal()
    }

    fn test_hal_mut(&mut self) -> &mut TestHal {
        self.inner.test_hal_mut()
    }

    fn taint(&self) -> Taint {
        self.taint.union(self.inner.taint())
    }

    fn disarm(&mut self) {
        self.knobs = Knobs::default();
        self.inner.disarm();
    }
}

#[cfg(test)]
mod tests {
    use mlx5vf_core::device::{Config, Device};
    use mlx5vf_core::hal::{DmaDirection, Hal, HalErrorKind};

    use super::*;
    use crate::testkit::{self, PAGE};

    const SPEC: &str = "sim:state=64K,object=4K-16K,seed=3";

    fn injector() -> FaultInjector<TestHal> {
        FaultInjector::new(TestHal::new(SPEC))
    }

    fn alloc_pd_input() -> [u8; 16] {
        let mut input = [0u8; 16];
        input[..2].copy_from_slice(&opcode::ALLOC_PD.to_be_bytes());
        input
    }

    #[test]
    fn a_call_fails_once_after_the_chosen_number_succeed() {
        let mut hal = injector();
        hal.knobs.fail_alloc = Some(FailAfter::new(2, HalErrorKind::Timeout));
        let mut results = std::vec::Vec::new();
        for _ in 0..4 {
            results.push(hal.alloc_buffer(1, DmaDirection::FromDevice).map(|_| ()));
        }
        assert_eq!(
            results,
            [Ok(()), Ok(()), Err(HalErrorKind::Timeout), Ok(())]
        );
        assert_eq!(hal.knobs, Knobs::default(), "the failure disarms itself");
        assert_eq!(hal.live_buffers, 3);
        assert_eq!(hal.live_bytes, 3 * PAGE);
    }

    #[test]
    fn an_opcode_failure_skips_other_opcodes_and_never_reaches_firmware() {
        let mut hal = injector();
        hal.knobs.fail_opcode = Some(FailOpcode {
            opcode: opcode::ALLOC_PD,
            skip: 1,
            kind: HalErrorKind::Delivery,
        });
        let mut out = [0u8; 16];
        let mut query = [0u8; 16];
        query[..2].copy_from_slice(&opcode::QUERY_HCA_CAP.to_be_bytes());
        let _ = hal.exec(&query, &mut out);
        assert_eq!(hal.exec(&alloc_pd_input(), &mut out), Ok(()));
        assert_eq!(
            hal.exec(&alloc_pd_input(), &mut out),
            Err(HalErrorKind::Delivery)
        );
        assert_eq!(hal.fw.command_count(opcode::ALLOC_PD), 1);
        assert_eq!(hal.exec(&alloc_pd_input(), &mut out), Ok(()));
        assert_eq!(hal.fw.command_count(opcode::ALLOC_PD), 2);
    }

    #[test]
    fn a_corrupted_output_is_flipped_once_and_recorded() {
        let mut hal = injector();
        hal.knobs.corrupt_exec = Some(ExecCorruption {
            opcode: opcode::ALLOC_PD,
            skip: 0,
            byte: 16 + 8,
            xor: 0x80,
        });
        let (mut lied, mut honest) = ([0u8; 16], [0u8; 16]);
        assert_eq!(hal.exec(&alloc_pd_input(), &mut lied), Ok(()));
        assert_eq!(hal.exec(&alloc_pd_input(), &mut honest), Ok(()));
        // Byte 24 modulo 16: the PD's top byte; firmware hands out small,
        // consecutive PD numbers.
        assert_eq!(lied[8], 0x80 ^ honest[8]);
        assert_eq!(
            hal.taint(),
            Taint {
                resource_lie: true,
                lied: true
            }
        );
        assert_eq!(hal.test_hal().taint, Taint::default(), "the wrapper lied");
    }

    #[test]
    fn a_device_over_the_injector_fails_then_recovers() {
        let mut hal = injector();
        hal.knobs.fail_opcode = Some(FailOpcode {
            opcode: opcode::QUERY_HCA_CAP,
            skip: 0,
            kind: HalErrorKind::Timeout,
        });
        let mut dev = Device::new(hal, Config::default());
        assert!(testkit::probe(&mut dev).is_err());
        dev.hal_mut().disarm();
        assert!(testkit::probe(&mut dev).is_ok());
        testkit::recover(&mut dev);
        testkit::assert_clean(&dev);
    }
}
