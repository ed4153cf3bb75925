//! The saving policy: the Linux driver's buffer sizes and slot count as
//! parameters, and the buffers a saving file opens with.

use crate::ifc::migration::MigrationStateSize;

use super::SaveError;
use crate::stream::StreamInfo;
use crate::vfio::SaveMode;

/// How firmware hands the state over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ImageMode {
    /// One SAVE holds the whole stop-copy image (at most 4 GiB - 1 page).
    Single,
    /// `migration_in_chunks`: the image comes in bounded chunks, each SAVE
    /// saying how big the next must be.
    Chunked,
}

/// The Linux driver's chunk size (`MAX_CHUNK_SIZE`).
pub const LINUX_CHUNK_SIZE: u64 = 8 << 20;
/// The Linux driver's number of chunk slots (`MAX_NUM_CHUNKS`).
pub const LINUX_CHUNK_SLOTS: u8 = 2;
/// Most chunk slots a session may use. More slots than this buys no
/// parallelism (one SAVE is in flight at a time) and only adds memory.
pub const MAX_CHUNK_SLOTS: usize = 8;
/// Largest SAVE buffer: the `size` field is 32 bits and Linux keeps one page
/// of margin (`BIT(32) - PAGE_SIZE`).
pub const MAX_SAVE_BUFFER: u64 = (1 << 32) - 4096;

/// A buffer the device holds on the engine's behalf: the device's index for
/// it and its size in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufRef {
    /// The device's buffer-table index.
    pub index: u16,
    /// Pages.
    pub npages: u32,
}

/// How PRE_COPY moves a chunk-mode state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PrecopyPolicy {
    /// As the Linux driver: the initial SAVE into a fresh buffer, then one
    /// chunk per precopy-info call on a drained queue, and `dirty_bytes`
    /// is the next chunk's size (`required_umem_size`). A VMM then sees a
    /// converged device while most of the state is still in firmware.
    Linux,
    /// Every PRE_COPY image (the initial one, and each incremental one)
    /// is saved chunk after chunk into the stop-copy slots, with the same
    /// read-ahead and back-pressure as STOP_COPY; `initial_bytes` and
    /// `dirty_bytes` count what firmware still holds
    /// (`remaining_total_size`). Outside chunk mode it is the Linux policy.
    Chunked,
}

/// Parameters of a saving session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveConfig {
    /// One image or chunks.
    pub image: ImageMode,
    /// Stop-copy only, or PRE_COPY first (dirty tracking).
    pub mode: SaveMode,
    /// How PRE_COPY moves a chunk-mode state.
    pub precopy: PrecopyPolicy,
    /// Largest chunk buffer the policy starts with (Linux: 8 MiB).
    pub chunk_size: u64,
    /// Chunk slots (Linux: 2).
    pub chunk_slots: u8,
    /// Bytes per page.
    pub page_size: u64,
    /// Cap on any SAVE buffer (at most [`MAX_SAVE_BUFFER`]).
    pub max_buffer: u64,
    /// Our stream-info record to put first; with it, an end record closes the
    /// stream. `None` writes exactly what Linux writes.
    pub stream_info: Option<StreamInfo>,
}

impl SaveConfig {
    /// The Linux policy: 8 MiB chunks, 2 slots, 4 KiB pages, Linux PRE_COPY
    /// accounting, no records of ours.
    pub const fn linux(image: ImageMode, mode: SaveMode) -> Self {
        Self {
            image,
            mode,
            precopy: PrecopyPolicy::Linux,
            chunk_size: LINUX_CHUNK_SIZE,
            chunk_slots: LINUX_CHUNK_SLOTS,
            page_size: 4096,
            max_buffer: MAX_SAVE_BUFFER,
            stream_info: None,
        }
    }

    pub(super) const fn chunked(&self) -> bool {
        matches!(self.image, ImageMode::Chunked)
    }

    pub(super) const fn tracking(&self) -> bool {
        matches!(self.mode, SaveMode::PreCopy)
    }

    /// PRE_COPY images go chunk by chunk through the slots.
    pub(super) const fn chunked_precopy(&self) -> bool {
        self.chunked() && self.tracking() && matches!(self.precopy, PrecopyPolicy::Chunked)
    }

    pub(super) fn slots(&self) -> usize {
        if self.chunked() {
            usize::from(self.chunk_slots).clamp(1, MAX_CHUNK_SLOTS)
        } else {
            1
        }
    }

    pub(super) fn pages_for(&self, bytes: u64) -> u32 {
        let pages = bytes.div_ceil(self.page_size.max(1)).max(1);
        u32::try_from(pages).unwrap_or(u32::MAX)
    }

    pub(super) fn bytes_of(&self, npages: u32) -> u64 {
        u64::from(npages).saturating_mul(self.page_size)
    }
}

/// The sizes decided when a saving file opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpenPlan {
    /// Pages of each stop-copy slot buffer.
    pub slot_pages: u32,
    /// Number of slot buffers to allocate.
    pub slots: u8,
    /// For PRE_COPY under the Linux policy, pages of the fresh buffer the
    /// initial SAVE uses (the slot buffers stay reserved for stop-copy);
    /// chunked PRE_COPY saves into the slots.
    pub initial_pages: Option<u32>,
    /// The state's size as firmware reported it (`remaining_total_size`;
    /// chunk mode only): how much the first chunked PRE_COPY image moves.
    pub state_bytes: u64,
}

/// Computes the buffers a saving file starts with, from the first
/// QUERY_VHCA_MIGRATION_STATE (full scope) answer.
///
/// # Errors
/// [`SaveError::TooLarge`] when firmware needs more than one SAVE can hold.
pub fn plan_open(cfg: &SaveConfig, query: MigrationStateSize) -> Result<OpenPlan, SaveError> {
    let required = u64::from(query.required_umem_size);
    let limit = cfg.max_buffer.min(MAX_SAVE_BUFFER);
    if required > limit {
        return Err(SaveError::TooLarge {
            required,
            limit,
            image: cfg.image,
        });
    }
    let size = if cfg.chunked() {
        let total = query.remaining_total_size;
        required.max(cfg.chunk_size.min(total))
    } else if cfg.tracking() {
        // Room for the stop-copy image to grow by 10 % while PRE_COPY runs.
        required.checked_add(required / 10).unwrap_or(required)
    } else {
        required
    };
    let size = size.min(limit);
    let slot_pages = cfg.pages_for(size);
    // CAST: slots() <= MAX_CHUNK_SLOTS = 8.
    let slots = cfg.slots() as u8;
    Ok(OpenPlan {
        slot_pages,
        slots,
        initial_pages: (cfg.tracking() && !cfg.chunked_precopy()).then_some(slot_pages),
        state_bytes: query.remaining_total_size,
    })
}
