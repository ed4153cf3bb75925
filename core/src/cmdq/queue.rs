//! Slots, tokens and deadlines: the completion state machine of one
//! command queue.
//!
//! # Call order
//! 1. [`CmdQueue::post`] reserves a slot for a command, gives it a token
//!    and its deadline, and returns a [`Posted`] the platform writes the
//!    entry with and rings the doorbell for.
//! 2. The platform reads the slot's entry back (after a completion signal,
//!    or by polling) and hands it to [`CmdQueue::handle_entry`] with the
//!    time: [`Progress::Pending`] until firmware returns the entry, then
//!    [`Progress::Done`] with the first 16 output bytes, or an error. The
//!    slot is free again after `Done` or any error of a returned entry.
//! 3. [`CmdQueue::poll_timeout`] says when the earliest deadline falls, so
//!    the platform knows how long it may sleep.
//!
//! # Slot states
//! ```text
//!  Free ──post──► InFlight ──entry returned (ok or error)──► Free
//!                    │
//!                    └─deadline passed / signalled but still owned─► Stuck
//!  Stuck ──entry returned (reclaim)──► Free
//! ```
//! A stuck slot is not reused: firmware still owns its entry and may write
//! it at any time (Linux likewise keeps a timed-out slot until firmware
//! completes it or the function is reset).

use core::time::Duration;

use super::entry::{Descriptor, decode_completion, owned_by_hardware};
use super::error::CmdqError;
use super::iseg::Geometry;
use super::{Checksums, ENTRY_SIZE, INLINE_LEN, MAX_SLOTS, Token};

/// A point in time on the platform's monotonic clock, in nanoseconds from
/// any origin. The queue only compares instants and adds durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The instant `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the clock's origin.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Which slots a command may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotClass {
    /// Any slot but the last (all of a one-slot queue).
    Command,
    /// The last slot, kept for MANAGE_PAGES so that giving firmware pages
    /// never waits behind commands that need them (Linux's page queue).
    Pages,
}

/// A command the queue accepted: where to write its entry and what to
/// ring. Carries the token the entry and every block must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a posted command must be written and rung, or its slot stays taken"]
pub struct Posted {
    slot: u8,
    token: Token,
    descriptor: Descriptor,
}

impl Posted {
    /// The slot.
    pub const fn slot(&self) -> u8 {
        self.slot
    }

    /// The token.
    pub const fn token(&self) -> Token {
        self.token
    }

    /// The descriptor the entry is written from.
    pub const fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The value to write to `cmd_dbell` (big-endian on the bus).
    pub const fn doorbell(&self) -> u32 {
        1 << (self.slot & 0x1f)
    }

    /// Writes the slot's entry for `input` (see [`Descriptor::encode`]).
    ///
    /// # Errors
    /// [`CmdqError::BadLength`] when `input` is not the posted length.
    pub fn encode_entry(
        &self,
        entry: &mut [u8; ENTRY_SIZE],
        input: &[u8],
    ) -> Result<(), CmdqError> {
        self.descriptor.encode(entry, input, self.token)
    }
}

/// Where a command is after its entry was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum Progress {
    /// Firmware still owns the entry; the deadline has not passed.
    Pending,
    /// Delivered and executed: the first 16 output bytes (the rest, if
    /// any, is in the output chain).
    Done([u8; INLINE_LEN]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct InFlight {
    token: Token,
    opcode: u16,
    descriptor: Descriptor,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Slot {
    Free,
    InFlight(InFlight),
    /// Given up on; firmware still owns the entry.
    Stuck(InFlight),
}

/// The completion state machine of one command queue. See the module
/// documentation for the call order.
#[derive(Clone, Debug)]
pub struct CmdQueue {
    slots: [Slot; MAX_SLOTS],
    geometry: Geometry,
    checksums: Checksums,
    last_token: u8,
}

impl CmdQueue {
    /// A queue of the given shape with every slot free.
    pub const fn new(geometry: Geometry, checksums: Checksums) -> Self {
        Self {
            slots: [Slot::Free; MAX_SLOTS],
            geometry,
            checksums,
            last_token: 0,
        }
    }

    /// The queue's shape.
    pub const fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether signatures are on.
    pub const fn checksums(&self) -> Checksums {
        self.checksums
    }

    /// Turns signatures on or off for commands posted from now on (after
    /// SET_HCA_CAP changed `cmdif_checksum`: firmware checks and signs
    /// only then).
    pub fn set_checksums(&mut self, checksums: Checksums) {
        self.checksums = checksums;
    }

    /// The slots a class may use.
    fn range(&self, class: SlotClass) -> core::ops::Range<usize> {
        let n = usize::from(self.geometry.slots());
        match (class, n) {
            (_, 0 | 1) => 0..1,
            (SlotClass::Command, n) => 0..n.saturating_sub(1),
            (SlotClass::Pages, n) => n.saturating_sub(1)..n,
        }
    }

    /// A token no command in flight holds (there are at most 32 slots and
    /// 255 tokens, so one is always found within 33 tries).
    fn fresh_token(&mut self) -> Token {
        for _ in 0..=MAX_SLOTS {
            self.last_token = self.last_token.wrapping_add(1);
            if self.last_token == 0 {
                self.last_token = 1;
            }
            let candidate = self.last_token;
            let taken = self.slots.iter().any(|s| match s {
                Slot::InFlight(f) | Slot::Stuck(f) => f.token.raw() == candidate,
                Slot::Free => false,
            });
            if !taken {
                break;
            }
        }
        Token(self.last_token.max(1))
    }

    /// The slot [`CmdQueue::post`] would take for `class` now (the lowest
    /// free one), so a platform can size that slot's mailboxes first.
    pub fn next_free(&self, class: SlotClass) -> Option<u8> {
        let range = self.range(class);
        let index = self
            .slots
            .get(range.clone())?
            .iter()
            .position(|s| *s == Slot::Free)?
            .checked_add(range.start)?;
        u8::try_from(index).ok()
    }

    /// Reserves a slot of `class` for a command with `descriptor`, due
    /// before `now + timeout` (the slot [`CmdQueue::next_free`] names).
    ///
    /// # Errors
    /// [`CmdqError::NoFreeSlot`] when every slot of the class is in flight
    /// or stuck.
    pub fn post(
        &mut self,
        class: SlotClass,
        opcode: u16,
        descriptor: Descriptor,
        now: Instant,
        timeout: Duration,
    ) -> Result<Posted, CmdqError> {
        let index = self.next_free(class).ok_or(CmdqError::NoFreeSlot)?;
        let token = self.fresh_token();
        let slot = self
            .slots
            .get_mut(usize::from(index))
            .ok_or(CmdqError::NoFreeSlot)?;
        *slot = Slot::InFlight(InFlight {
            token,
            opcode,
            descriptor,
            deadline: now.saturating_add(timeout),
        });
        Ok(Posted {
            slot: index,
            token,
            descriptor,
        })
    }

    /// Judges slot `slot`'s entry as read back at `now`. `signalled` says
    /// the device reported this slot complete (an event or interrupt
    /// naming it); with polling it is `false`.
    ///
    /// # Errors
    /// - [`CmdqError::UnexpectedCompletion`]: signalled, nothing in flight;
    /// - [`CmdqError::NotInFlight`]: not signalled, nothing in flight;
    /// - [`CmdqError::BadOwnership`]: signalled but still owned by
    ///   hardware (the slot becomes stuck);
    /// - [`CmdqError::Timeout`]: still owned after the deadline (stuck);
    /// - anything [`decode_completion`] finds in a returned entry (the
    ///   slot is free again).
    pub fn handle_entry(
        &mut self,
        slot: u8,
        entry: &[u8; ENTRY_SIZE],
        signalled: bool,
        now: Instant,
    ) -> Result<Progress, CmdqError> {
        let checksums = self.checksums;
        let state = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(CmdqError::NotInFlight { slot })?;
        let flight = match *state {
            Slot::InFlight(f) => f,
            Slot::Free | Slot::Stuck(_) if signalled => {
                return Err(CmdqError::UnexpectedCompletion { slot });
            }
            Slot::Free | Slot::Stuck(_) => return Err(CmdqError::NotInFlight { slot }),
        };
        if owned_by_hardware(entry) {
            if signalled {
                *state = Slot::Stuck(flight);
                return Err(CmdqError::BadOwnership { slot });
            }
            if now >= flight.deadline {
                *state = Slot::Stuck(flight);
                return Err(CmdqError::Timeout {
                    slot,
                    opcode: flight.opcode,
                });
            }
            return Ok(Progress::Pending);
        }
        *state = Slot::Free;
        decode_completion(entry, &flight.descriptor, flight.token, checksums).map(Progress::Done)
    }

    /// Frees a stuck slot whose entry firmware has handed back at last;
    /// returns whether it did. The late output is dropped.
    pub fn reclaim(&mut self, slot: u8, entry: &[u8; ENTRY_SIZE]) -> bool {
        match self.slots.get_mut(usize::from(slot)) {
            Some(s @ Slot::Stuck(_)) if !owned_by_hardware(entry) => {
                *s = Slot::Free;
                true
            }
            _ => false,
        }
    }

    /// Forgets a posted command whose doorbell was never rung (writing its
    /// entry failed): the slot is free again at once, as nothing reached
    /// the device.
    pub fn cancel(&mut self, slot: u8) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            if matches!(s, Slot::InFlight(_)) {
                *s = Slot::Free;
            }
        }
    }

    /// Gives up on a command in flight without waiting for its deadline
    /// (the platform is tearing down): the slot becomes stuck.
    pub fn abandon(&mut self, slot: u8) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            if let Slot::InFlight(f) = *s {
                *s = Slot::Stuck(f);
            }
        }
    }

    /// The earliest deadline of a command in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::InFlight(f) => Some(f.deadline),
                Slot::Free | Slot::Stuck(_) => None,
            })
            .min()
    }

    /// Whether slot `slot` has a command in flight.
    pub fn is_in_flight(&self, slot: u8) -> bool {
        matches!(self.slots.get(usize::from(slot)), Some(Slot::InFlight(_)))
    }

    /// Bit mask of the stuck slots.
    pub fn stuck(&self) -> u32 {
        self.mask(|s| matches!(s, Slot::Stuck(_)))
    }

    /// Bit mask of the slots with a command in flight.
    pub fn in_flight(&self) -> u32 {
        self.mask(|s| matches!(s, Slot::InFlight(_)))
    }

    fn mask(&self, pick: impl Fn(&Slot) -> bool) -> u32 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| pick(s))
            .fold(0, |m, (i, _)| {
                m | 1u32
                    .checked_shl(u32::try_from(i).unwrap_or(32))
                    .unwrap_or(0)
            })
    }

    /// Forgets every command (after the function was reset, when firmware
    /// owns no entry any more).
    pub fn reset(&mut self) {
        self.slots = [Slot::Free; MAX_SLOTS];
    }
}
