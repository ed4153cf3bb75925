//! The device dirty-page tracker model: a guest whose device DMA dirties
//! guest pages, the page-track object firmware keeps, and the reporting
//! channel through which firmware sends dirty addresses.
//!
//! # Guest memory
//! Guest memory is IOVA `[0, guest_pages * 4 KiB)`. [`TrackerModel::guest_write`]
//! and [`TrackerModel::guest_dma`] (PRNG-chosen pages, inside and outside
//! the tracked ranges) stand for the VF's DMA writes. Every written page is
//! recorded in the *ground truth* (taken and cleared by tests and
//! `mlx5vf dirty --verify`); a written page inside a tracked range is also
//! recorded in the tracker's dirty set.
//!
//! # Reporting
//! A report (MODIFY to REPORTING) drains the dirty set of the requested
//! window at tracked-page granularity into messages of `2^log_msg_size`
//! bytes, one big-endian address per dirty tracked page, clearing what it
//! sends. Messages are produced one per [`TrackerModel::poll`] into the next
//! posted receive slot, written through the channel's mkey as real DMA;
//! the CQE carries the state after the message (REPORTING while more remain,
//! then TRACKING). A message that is exactly full and the last carries
//! TRACKING itself unless [`TrackerConfig::end_marker`] asks for a separate
//! zero-length end message.
//!
//! The channel stands for the CQ and the two loopback QPs: it is opened
//! with [`TrackerModel::open_channel`] (a sim call, not CREATE_CQ/QP
//! commands), which names the mkey of the receive buffer and the slot
//! geometry, and returns the firmware QP number CREATE must name.
//!
//! # Faults
//! [`TrackerFault`]: ERROR with or without a final CQE (the latter wakes the
//! driver only by an object-change event), a firmware that goes silent, a
//! reported address outside the ranges, spurious object-change events.

mod pages;
pub(crate) mod wire;

pub use pages::{MAX_GUEST_PAGES, PageBits};

/// Bytes of a guest page (the ground truth's granularity).
pub const GUEST_PAGE: u64 = 4096;
/// Ranges one tracker may hold in the sim (its `pg_track_max_num_range`
/// is at most this).
pub const MAX_SIM_RANGES: usize = 64;

/// The tracker capabilities the sim reports and enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// `pg_track_max_num_range` (1..=[`MAX_SIM_RANGES`]).
    pub max_num_range: u8,
    /// `pg_track_log_min_page_size`.
    pub log_min_page: u8,
    /// `pg_track_log_max_page_size`.
    pub log_max_page: u8,
    /// `pg_track_log_min_msg_size`.
    pub log_min_msg: u8,
    /// `pg_track_log_max_msg_size`.
    pub log_max_msg: u8,
    /// `pg_track_log_min_addr_space`.
    pub log_min_addr_space: u8,
    /// `pg_track_log_max_addr_space`.
    pub log_max_addr_space: u8,
    /// Guest memory in 4 KiB pages (at most [`MAX_GUEST_PAGES`]).
    pub guest_pages: u32,
    /// End every report with a zero-length message instead of marking the
    /// last data message TRACKING.
    pub end_marker: bool,
}

impl TrackerConfig {
    /// Plausible hardware values: 4 ranges, 4 KiB..2 MiB pages, 4 KiB
    /// messages, address spaces of 2^12..2^52, 128 MiB of guest memory.
    pub const DEFAULT: Self = Self {
        max_num_range: 4,
        log_min_page: 12,
        log_max_page: 21,
        log_min_msg: 12,
        log_max_msg: 12,
        log_min_addr_space: 12,
        log_max_addr_space: 52,
        guest_pages: MAX_GUEST_PAGES,
        end_marker: false,
    };
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A failure to inject into the tracker, armed with
/// [`TrackerModel::set_fault`]; `after` counts report messages sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerFault {
    /// Nothing.
    None,
    /// After `after` messages the tracker goes to ERROR and a zero-length
    /// CQE carrying ERROR reports it.
    ErrorWithReport {
        /// Messages sent first.
        after: u64,
    },
    /// After `after` messages the tracker goes to ERROR with no CQE; an
    /// object-change event is the only news.
    ErrorSilently {
        /// Messages sent first.
        after: u64,
    },
    /// After `after` messages firmware sends nothing more (the driver must
    /// time out).
    Silent {
        /// Messages sent first.
        after: u64,
    },
    /// Message number `after` reports an address outside every range.
    BadAddress {
        /// Messages sent first.
        after: u64,
    },
    /// One spurious object-change event before the next message.
    SpuriousEvent,
    /// An object-change event at every poll, the tracker staying in
    /// REPORTING and sending nothing (a firmware raising events in a loop).
    EventStorm,
}

/// What [`TrackerModel::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A CQE was written to the caller's buffer.
    Cqe,
    /// An object-change event for the tracker.
    ObjectChanged,
    /// Nothing happened (a real driver would wait; the sim never changes
    /// without a call).
    Nothing,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Report messages sent.
    pub messages: u64,
    /// Addresses sent.
    pub addresses: u64,
    /// Guest page writes (ground truth events).
    pub guest_writes: u64,
}

/// Tracker object states (`MLX5_PAGE_TRACK_STATE_*`).
pub mod state {
    /// Tracking.
    pub const TRACKING: u8 = 0;
    /// Reporting.
    pub const REPORTING: u8 = 1;
    /// Error.
    pub const ERROR: u8 = 2;
}

/// The page-track object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TrackerObject {
    pub(crate) id: u32,
    pub(crate) vhca_id: u16,
    pub(crate) state: u8,
    pub(crate) log_page: u8,
    pub(crate) log_msg: u8,
    pub(crate) log_addr_space: u8,
    pub(crate) qpn: u32,
    pub(crate) ranges: heapless::Vec<(u64, u64), MAX_SIM_RANGES>,
    /// Dirty guest pages inside the ranges (4 KiB granularity; reports
    /// round to the tracked page).
    pub(crate) dirty: PageBits,
    /// The report running: next guest page to look at, and the window end
    /// (exclusive, in bytes).
    pub(crate) report: Option<(u64, u64)>,
    /// A full last message was sent and an end marker is due.
    pub(crate) end_due: bool,
}

impl TrackerObject {
    fn tracks(&self, addr: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(s, l)| addr >= s && addr.saturating_sub(s) < l)
    }
}

/// The reporting channel (CQ and QPs, modelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Channel {
    pub(crate) qpn: u32,
    pub(crate) mkey: u32,
    pub(crate) msg_size: u32,
    pub(crate) slots: u32,
    /// Receive WQEs posted and not consumed.
    pub(crate) posted: u32,
    /// WQEs consumed so far (`wqe_counter` of the next CQE).
    pub(crate) rq_ci: u16,
}

/// The tracker side of the firmware. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerModel {
    pub(crate) cfg: TrackerConfig,
    pub(crate) object: Option<TrackerObject>,
    pub(crate) channel: Option<Channel>,
    written: PageBits,
    pub(crate) fault: TrackerFault,
    pub(crate) stats: TrackerStats,
    next_id: u32,
    next_qpn: u32,
    rng: u64,
}

impl TrackerModel {
    /// No tracker, no channel, nothing written.
    pub const EMPTY: Self = Self {
        cfg: TrackerConfig::DEFAULT,
        object: None,
        channel: None,
        written: PageBits::EMPTY,
        fault: TrackerFault::None,
        stats: TrackerStats {
            messages: 0,
            addresses: 0,
            guest_writes: 0,
        },
        next_id: 0x100,
        next_qpn: 0x40,
        rng: 0x9e37_79b9_7f4a_7c15,
    };

    /// Forgets everything but the configuration.
    pub fn reset(&mut self) {
        let cfg = self.cfg;
        *self = Self::EMPTY;
        self.cfg = cfg;
    }

    /// The configuration.
    pub const fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Replaces the configuration (takes effect for the next CREATE).
    /// Values outside the sim's bounds are clamped.
    pub fn set_config(&mut self, mut cfg: TrackerConfig) {
        // CAST: MAX_SIM_RANGES is 64.
        cfg.max_num_range = cfg.max_num_range.clamp(1, MAX_SIM_RANGES as u8);
        cfg.guest_pages = cfg.guest_pages.min(MAX_GUEST_PAGES);
        cfg.log_max_msg = cfg.log_max_msg.clamp(3, 21);
        cfg.log_min_msg = cfg.log_min_msg.clamp(3, cfg.log_max_msg);
        self.cfg = cfg;
    }

    /// Seeds the guest workload's PRNG.
    pub fn seed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    /// Arms a fault.
    pub fn set_fault(&mut self, fault: TrackerFault) {
        self.fault = fault;
    }

    /// Counters.
    pub const fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Whether a tracker object exists, and its state.
    pub fn object_state(&self) -> Option<u8> {
        self.object.as_ref().map(|o| o.state)
    }

    /// The ranges the tracker object holds (as the driver combined them)
    /// and its tracked page size, if one exists.
    pub fn object_ranges(&self) -> Option<(&[(u64, u64)], u64)> {
        self.object.as_ref().map(|o| {
            let page = 1u64.checked_shl(u32::from(o.log_page)).unwrap_or(0);
            (o.ranges.as_slice(), page)
        })
    }

    /// Whether a channel is open.
    pub const fn channel_open(&self) -> bool {
        self.channel.is_some()
    }

    /// The guest's device writes `[iova, iova + len)` (clipped to guest
    /// memory).
    pub fn guest_write(&mut self, iova: u64, len: u64) {
        let first = iova / GUEST_PAGE;
        let end = iova.saturating_add(len).div_ceil(GUEST_PAGE);
        let end = end.min(u64::from(self.cfg.guest_pages));
        let mut page = first;
        while page < end {
            self.write_page(page);
            page = page.saturating_add(1);
        }
    }

    /// The guest's device writes `pages` PRNG-chosen guest pages.
    pub fn guest_dma(&mut self, pages: u64) {
        for _ in 0..pages {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let page = self
                .rng
                .checked_rem(u64::from(self.cfg.guest_pages))
                .unwrap_or(0);
            self.write_page(page);
        }
    }

    fn write_page(&mut self, page: u64) {
        let Ok(index) = u32::try_from(page) else {
            return;
        };
        self.stats.guest_writes = self.stats.guest_writes.saturating_add(1);
        self.written.insert(index);
        let addr = page.saturating_mul(GUEST_PAGE);
        if let Some(o) = self.object.as_mut() {
            if o.state != state::ERROR && o.tracks(addr) {
                o.dirty.insert(index);
            }
        }
    }

    /// The ground truth: guest pages written since the last
    /// [`TrackerModel::clear_written`].
    pub const fn written(&self) -> &PageBits {
        &self.written
    }

    /// Compares a report with the ground truth: the guest pages written
    /// inside `ranges` (the caller's, before combining) and inside the
    /// bitmap's window whose bit is clear. `bitmap` has `iova_bitmap`
    /// semantics (bit `i` = page `iova + i * page_size`). Zero means nothing
    /// was missed.
    pub fn missed(&self, ranges: &[(u64, u64)], iova: u64, page_size: u64, bitmap: &[u64]) -> u64 {
        let shift = page_size.trailing_zeros();
        // CAST: a slice length fits u64.
        let pages = (bitmap.len() as u64).saturating_mul(64);
        let window_end = iova.saturating_add(pages.checked_shl(shift).unwrap_or(u64::MAX));
        let mut missed = 0u64;
        let mut from = 0u32;
        while let Some(p) = self.written.next_in(from, MAX_GUEST_PAGES) {
            from = p.saturating_add(1);
            let addr = u64::from(p).saturating_mul(GUEST_PAGE);
            let inside = ranges
                .iter()
                .any(|&(s, l)| addr >= s && addr.saturating_sub(s) < l);
            if !inside || addr < iova || addr >= window_end {
                continue;
            }
            let bit = addr.saturating_sub(iova) >> shift;
            let set = usize::try_from(bit / 64)
                .ok()
                .and_then(|w| bitmap.get(w))
                .is_some_and(|w| w >> (bit % 64) & 1 == 1);
            if !set {
                missed = missed.saturating_add(1);
            }
        }
        missed
    }

    /// Forgets the ground truth (after a test compared a report with it).
    pub fn clear_written(&mut self) {
        self.written.clear();
    }

    /// Opens the reporting channel: `slots` receive slots of `msg_size`
    /// bytes at offset `slot * msg_size` of `mkey`, all posted. Returns the
    /// firmware QP number, or `None` when a channel is open already or the
    /// geometry is not powers of two.
    pub fn open_channel(&mut self, mkey: u32, msg_size: u32, slots: u32) -> Option<u32> {
        if self.channel.is_some() || !msg_size.is_power_of_two() || !slots.is_power_of_two() {
            return None;
        }
        self.next_qpn = self.next_qpn.wrapping_add(2) & 0x00ff_ffff;
        let qpn = self.next_qpn;
        self.channel = Some(Channel {
            qpn,
            mkey,
            msg_size,
            slots,
            posted: slots,
            rq_ci: 0,
        });
        Some(qpn)
    }

    /// Closes the channel (the tracker, if any, can no longer report).
    pub fn close_channel(&mut self) {
        self.channel = None;
    }

    /// The host re-posts a receive slot.
    pub fn repost(&mut self) {
        if let Some(c) = self.channel.as_mut() {
            c.posted = c.posted.saturating_add(1).min(c.slots);
        }
    }

    /// The channel's receive geometry: `(mkey, msg_size, slots)`.
    pub fn channel_geometry(&self) -> Option<(u32, u32, u32)> {
        self.channel.map(|c| (c.mkey, c.msg_size, c.slots))
    }

    pub(crate) fn new_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }
}

mod report;
pub use report::MessageSink;

#[cfg(test)]
mod tests;
