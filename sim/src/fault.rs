//! Fault injection knobs, for tests of everything driven against the sim.
//!
//! The knobs here act on command execution; detaching and resetting a VF are
//! [`Firmware`](crate::Firmware) methods (`detach_vf`, `attach_vf`,
//! `reset_vf`) because they change the device, not a command.

use core::fmt;

/// How many "fail the n-th command" rules can be armed at once.
///
/// Tests arm one or two; eight leaves room for a fuzzer-style schedule while
/// keeping the check on every command a short scan.
pub const MAX_FAIL_RULES: usize = 8;

/// One armed "fail the n-th command of this opcode" rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FailRule {
    opcode: u16,
    /// Commands of `opcode` still to let through before failing one.
    skip: u32,
    status: u8,
    syndrome: u32,
}

/// A forced command failure: the status and syndrome to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFailure {
    /// Status byte to report.
    pub status: u8,
    /// Syndrome to report.
    pub syndrome: u32,
}

/// Why a fault could not be armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultError {
    /// `nth` is 0 (commands are counted from 1).
    ZeroNth,
    /// [`MAX_FAIL_RULES`] rules are already armed.
    TooManyRules,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroNth => "fault: commands are counted from 1",
            Self::TooManyRules => "fault: too many failure rules armed",
        })
    }
}

impl core::error::Error for FaultError {}

/// The fault knobs of one [`Firmware`](crate::Firmware).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: heapless::Vec<FailRule, MAX_FAIL_RULES>,
    oversize_next_save: Option<u32>,
    next_required_override: Option<u32>,
    report_init: bool,
}

impl Faults {
    /// No faults armed.
    pub const EMPTY: Self = Self {
        rules: heapless::Vec::new(),
        oversize_next_save: None,
        next_required_override: None,
        report_init: false,
    };

    /// Fail the `nth` command of `opcode` (1-based, counted from now) with
    /// `status` and `syndrome`. The failed command has no side effect at all
    /// (not even a workload tick); the rule is then disarmed.
    ///
    /// # Errors
    /// [`FaultError`] for `nth == 0` or a full rule table.
    pub fn fail_nth(
        &mut self,
        opcode: u16,
        nth: u32,
        status: u8,
        syndrome: u32,
    ) -> Result<(), FaultError> {
        let skip = nth.checked_sub(1).ok_or(FaultError::ZeroNth)?;
        self.rules
            .push(FailRule {
                opcode,
                skip,
                status,
                syndrome,
            })
            .map_err(|_| FaultError::TooManyRules)
    }

    /// Make the next successful SAVE report an `actual_image_size` of the
    /// buffer `size` plus `by` bytes (saturating), as a lying firmware would.
    pub fn oversize_next_save(&mut self, by: u32) {
        self.oversize_next_save = Some(by);
    }

    /// Make the next successful SAVE report `value` as its
    /// `next_required_umem_size` (e.g. `0xffff_ffff`).
    pub fn next_required_umem_size(&mut self, value: u32) {
        self.next_required_override = Some(value);
    }

    /// Make the next incremental QUERY report `migration_state` = INIT (new
    /// initial data appeared: the driver reports PRECOPY_INFOv2 REINIT).
    pub fn report_init_on_next_query(&mut self) {
        self.report_init = true;
    }

    pub(crate) fn take_report_init(&mut self) -> bool {
        core::mem::take(&mut self.report_init)
    }

    /// Disarm every knob.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// `true` when nothing is armed.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty()
            && self.oversize_next_save.is_none()
            && self.next_required_override.is_none()
            && !self.report_init
    }

    /// Count one command of `opcode`; the failure to report if a rule fires.
    pub(crate) fn on_command(&mut self, opcode: u16) -> Option<InjectedFailure> {
        let mut fired = None;
        let mut i = 0;
        while let Some(rule) = self.rules.get_mut(i) {
            if rule.opcode == opcode && fired.is_none() {
                if rule.skip == 0 {
                    fired = Some(InjectedFailure {
                        status: rule.status,
                        syndrome: rule.syndrome,
                    });
                    self.rules.remove(i);
                    continue;
                }
                rule.skip = rule.skip.saturating_sub(1);
            } else if rule.opcode == opcode {
                // Another rule for the same opcode also counts this command.
                rule.skip = rule.skip.saturating_sub(1);
            }
            i = i.saturating_add(1);
        }
        fired
    }

    /// Take the SAVE output overrides (each applies to one SAVE).
    pub(crate) fn take_save_overrides(&mut self) -> (Option<u32>, Option<u32>) {
        (
            self.oversize_next_save.take(),
            self.next_required_override.take(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_counts_from_arming() {
        let mut f = Faults::default();
        f.fail_nth(0x118, 2, 0x09, 7).unwrap();
        assert_eq!(f.on_command(0x117), None);
        assert_eq!(f.on_command(0x118), None);
        assert_eq!(
            f.on_command(0x118),
            Some(InjectedFailure {
                status: 0x09,
                syndrome: 7
            })
        );
        assert_eq!(f.on_command(0x118), None);
        assert!(f.is_idle());
        assert_eq!(f.fail_nth(1, 0, 1, 1), Err(FaultError::ZeroNth));
        for _ in 0..MAX_FAIL_RULES {
            f.fail_nth(1, 1, 1, 1).unwrap();
        }
        assert_eq!(f.fail_nth(1, 1, 1, 1), Err(FaultError::TooManyRules));
    }
}
