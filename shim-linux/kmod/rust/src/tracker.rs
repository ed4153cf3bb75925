//! The simulated firmware's page tracker as the module reaches it: the
//! reporting channel behind the C ABI's `report_*` callbacks (opened over a
//! receive buffer the module allocated and put under an mkey), the guest
//! whose device DMA dirties pages, its ground truth, and fault injection
//! (the module's debugfs files).
//!
//! The PF has one tracker and one channel, as the model has: one VF tracks
//! at a time (a second CREATE is refused with LIM_ERR), and the guest and
//! its ground truth are the PF's. Every function runs under the same rule
//! as the rest of the crate: the C side holds its mutex, else `-EBUSY`.

use core::ffi::c_int;

use mlx5vf_sim::tracker::{ChannelEvent, MAX_GUEST_PAGES, TrackerConfig, TrackerFault};

use crate::{EINVAL, KernelMemory, with_firmware};

/// What [`mlx5vf_ksim_tracker_poll`] found: a CQE was written (the values
/// of `MLX5VF_REPORT_*` in `mlx5vf.h`, so the C side passes them through).
const REPORT_CQE: c_int = 0;
/// An object-change event for the tracker.
const REPORT_OBJECT_CHANGED: c_int = 1;
/// Nothing happened on this poll.
const REPORT_NOTHING: c_int = 3;

/// Bytes of a CQE the model writes (`mlx5_cqe64`).
const CQE_LEN: usize = 64;

/// Words of the ground-truth bitmap: one bit per guest page.
// CAST: MAX_GUEST_PAGES is 32 768.
pub const TRUTH_WORDS: usize = MAX_GUEST_PAGES as usize / 64;

/// Opens the reporting channel: `slots` receive slots of `msg_size` bytes
/// at `slot * msg_size` of memory key `mkey` (the module's buffer, mapped
/// for DMA). Writes the firmware QP number to `qpn`. Returns 0, `-EINVAL`
/// (a channel is open, or sizes that are not powers of two) or `-EBUSY`.
///
/// # Safety
/// `qpn` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_tracker_open(
    mkey: u32,
    msg_size: u32,
    slots: u32,
    qpn: *mut u32,
) -> c_int {
    if qpn.is_null() {
        return -EINVAL;
    }
    with_firmware(
        |fw| match fw.tracker_mut().open_channel(mkey, msg_size, slots) {
            Some(n) => {
                // SAFETY: valid for a write (caller).
                unsafe { qpn.write(n) };
                0
            }
            None => -EINVAL,
        },
    )
}

/// Lets firmware take one step on the channel: returns 0 with a CQE in
/// `cqe` (64 bytes; the message went to the receive buffer by DMA through
/// the mkey), 1 for an object-change event, 3 when nothing happened (the
/// model moves only when polled: the caller polls again until its
/// deadline), or `-EINVAL` / `-EBUSY`.
///
/// # Safety
/// `cqe` is null or valid for 64 bytes of writes, and is not memory
/// registered with the IOMMU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_tracker_poll(cqe: *mut u8) -> c_int {
    if cqe.is_null() {
        return -EINVAL;
    }
    // SAFETY: 64 writable bytes of the caller's, distinct from DMA memory.
    let out = unsafe { &mut *cqe.cast::<[u8; CQE_LEN]>() };
    with_firmware(|fw| match fw.tracker_poll(out, &mut KernelMemory) {
        ChannelEvent::Cqe => REPORT_CQE,
        ChannelEvent::ObjectChanged => REPORT_OBJECT_CHANGED,
        ChannelEvent::Nothing => REPORT_NOTHING,
    })
}

/// The host re-posted a receive slot.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_repost() -> c_int {
    with_firmware(|fw| {
        fw.tracker_mut().repost();
        0
    })
}

/// Closes the channel (after the tracker object is destroyed).
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_close() -> c_int {
    with_firmware(|fw| {
        fw.tracker_mut().close_channel();
        0
    })
}

/// The tracker object's state (0 TRACKING, 1 REPORTING, 2 ERROR), -1 when
/// there is none, or `-EBUSY`.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_state() -> c_int {
    with_firmware(|fw| fw.tracker().object_state().map_or(-1, c_int::from))
}

/// Whether a channel is open: 1 or 0 (or `-EBUSY`). A channel left open
/// after logging stopped is a leak the module reports.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_channel_open() -> c_int {
    with_firmware(|fw| c_int::from(fw.tracker().channel_open()))
}

/// Arms a tracker fault: `kind` 0 none, 1 ERROR with a final CQE, 2 ERROR
/// with only an object-change event, 3 silence, 4 object-change events in
/// a loop (the tracker staying REPORTING); `after` report messages first
/// (not for 4, which starts at once). Returns 0 or `-EINVAL` for another
/// kind.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_fault(kind: u32, after: u64) -> c_int {
    let fault = match kind {
        0 => TrackerFault::None,
        1 => TrackerFault::ErrorWithReport { after },
        2 => TrackerFault::ErrorSilently { after },
        3 => TrackerFault::Silent { after },
        4 => TrackerFault::EventStorm,
        _ => return -EINVAL,
    };
    with_firmware(|fw| {
        fw.tracker_mut().set_fault(fault);
        0
    })
}

/// The tracker's limits for the next CREATE: `max_ranges`
/// (`pg_track_max_num_range`), tracked page sizes `2^log_min_page ..=
/// 2^log_max_page`, message size `2^log_msg` (min = max), and whether a
/// report ends with a separate zero-length message. Out-of-bounds values
/// are clamped as the model clamps them; page sizes must be ordered and
/// within 4 KiB..2^30. Returns 0 or `-EINVAL`.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_tracker_config(
    max_ranges: u8,
    log_min_page: u8,
    log_max_page: u8,
    log_msg: u8,
    end_marker: bool,
) -> c_int {
    if log_min_page < 12 || log_min_page > log_max_page || log_max_page > 30 {
        return -EINVAL;
    }
    with_firmware(|fw| {
        let t = fw.tracker_mut();
        let cfg = TrackerConfig {
            max_num_range: max_ranges,
            log_min_page,
            log_max_page,
            log_min_msg: log_msg,
            log_max_msg: log_msg,
            end_marker,
            ..*t.config()
        };
        t.set_config(cfg);
        0
    })
}

/// The guest's device writes `pages` guest pages chosen by a PRNG seeded
/// from `seed` (inside and outside any tracked range; every write lands in
/// the ground truth, those inside a range in the tracker's dirty set).
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_guest_dma(pages: u64, seed: u64) -> c_int {
    with_firmware(|fw| {
        let t = fw.tracker_mut();
        t.seed(mix(seed));
        t.guest_dma(pages);
        0
    })
}

/// SplitMix64's finaliser: the model's PRNG takes `seed | 1`, which would
/// give seeds `2k` and `2k + 1` the same pages; mixed, every seed differs.
const fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Guest memory in 4 KiB pages (`MAX_GUEST_PAGES` unless configured
/// smaller).
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_guest_pages() -> c_int {
    with_firmware(|fw| c_int::try_from(fw.tracker().config().guest_pages).unwrap_or(-EINVAL))
}

/// Takes the ground truth and clears it: bit `i` of `out` (`words` u64s,
/// at least [`TRUTH_WORDS`]) = guest page `i` (IOVA `i * 4096`) was written
/// since the previous take. Returns the number of pages set, or `-EINVAL`.
///
/// # Safety
/// `out` is null or valid for `words` u64 writes, and is not memory
/// registered with the IOMMU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_guest_truth(out: *mut u64, words: usize) -> c_int {
    if out.is_null() || words < TRUTH_WORDS {
        return -EINVAL;
    }
    // SAFETY: `words` writable u64s of the caller's (checked non-null).
    let out = unsafe { core::slice::from_raw_parts_mut(out, words) };
    out.fill(0);
    with_firmware(|fw| {
        let mut count: c_int = 0;
        let mut from = 0u32;
        while let Some(page) = fw.tracker().written().next_in(from, MAX_GUEST_PAGES) {
            from = page.saturating_add(1);
            let word = usize::try_from(page / 64).ok().and_then(|w| out.get_mut(w));
            if let Some(w) = word {
                *w |= 1u64 << (page % 64);
                count = count.saturating_add(1);
            }
        }
        fw.tracker_mut().clear_written();
        count
    })
}

/// The tracker object's ranges (as the driver combined them) and tracked
/// page size: 0 with both written, -1 when there is no tracker object, or
/// `-EINVAL` / `-EBUSY`.
///
/// # Safety
/// Each pointer is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_tracker_object(
    ranges: *mut u32,
    page_size: *mut u64,
) -> c_int {
    if ranges.is_null() || page_size.is_null() {
        return -EINVAL;
    }
    with_firmware(|fw| match fw.tracker().object_ranges() {
        Some((r, page)) => {
            // SAFETY: valid for writes (caller).
            unsafe {
                ranges.write(u32::try_from(r.len()).unwrap_or(u32::MAX));
                page_size.write(page);
            }
            0
        }
        None => -1,
    })
}

/// Counters of the model: report messages and addresses sent, guest page
/// writes. Returns 0 or `-EINVAL`.
///
/// # Safety
/// Each pointer is null or valid for a u64 write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_tracker_stats(
    messages: *mut u64,
    addresses: *mut u64,
    guest_writes: *mut u64,
) -> c_int {
    if messages.is_null() || addresses.is_null() || guest_writes.is_null() {
        return -EINVAL;
    }
    with_firmware(|fw| {
        let s = fw.tracker().stats();
        // SAFETY: valid for writes (caller).
        unsafe {
            messages.write(s.messages);
            addresses.write(s.addresses);
            guest_writes.write(s.guest_writes);
        }
        0
    })
}
