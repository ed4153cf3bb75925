//! Why a command failed: the syndrome the sim writes into bytes 4..8 of a
//! failed command's output, one distinct value per reason.
//!
//! Real firmware syndromes are opaque 32-bit values; the sim's are grouped by
//! area in the high half (`0x5101_xxxx` framing, `…02…` functions,
//! `…03…` PDs, `…04…` mkeys and DMA, `…05…` VHCA state, `…06…` QUERY/SAVE,
//! `…07…` LOAD, `…08…` the dirty-page tracker, `…09…` the function's own
//! bring-up) so a log line is readable. Each reason is always reported with
//! the same status.
//!
//! | syndrome | status | name | reason |
//! |---|---|---|---|
//! | `0x51010001` | BAD_INP_LEN_ERR | `InputTooShort` | input shorter than the command's `_in` (CREATE_MKEY: 272 + 8·roundup(npages, 2)) |
//! | `0x51010002` | BAD_OUTP_LEN_ERR | `OutputTooShort` | output shorter than the command's `_out` |
//! | `0x51010003` | BAD_OP_ERR | `UnknownOpcode` | opcode not implemented |
//! | `0x51010004` | BAD_PARAM_ERR | `BadOpMod` | op_mod not valid for the opcode |
//! | `0x51010005` | BAD_PARAM_ERR | `ReservedBitsSet` | a reserved bit of the fixed input is set |
//! | `0x51010006` | BAD_PARAM_ERR | `UidNotSupported` | `uid` ≠ 0 (no DEVX user contexts) |
//! | `0x51020001` | BAD_PARAM_ERR | `UnknownFunction` | QUERY_HCA_CAP `function_id` names no function |
//! | `0x51020002` | BAD_PARAM_ERR | `EcVfFunction` | `ec_vf_function` set (embedded-CPU VFs are not modelled) |
//! | `0x51020003` | BAD_PARAM_ERR | `UnknownVhca` | `vhca_id` names no VF |
//! | `0x51020004` | BAD_PARAM_ERR | `VfDetached` | the VF is detached (fault knob) |
//! | `0x51020005` | BAD_PARAM_ERR | `NotMigratable` | the VF's `migratable` cap is off |
//! | `0x51020006` | BAD_PARAM_ERR | `MigrationDisabled` | the PF's `migration` cap is off |
//! | `0x51030001` | LIM_ERR | `PdLimit` | no PD slot left (sim limit) |
//! | `0x51030002` | BAD_PARAM_ERR | `UnknownPd` | PD not allocated |
//! | `0x51030003` | RES_BUSY | `PdInUse` | DEALLOC_PD while mkeys use the PD |
//! | `0x51040001` | LIM_ERR | `MkeyLimit` | no mkey slot left (sim limit) |
//! | `0x51040002` | LIM_ERR | `MkeyTooFragmented` | too many IOVA-contiguous runs (sim limit) |
//! | `0x51040003` | LIM_ERR | `MkeyTooLarge` | more pages than the sim maps in one mkey |
//! | `0x51040004` | BAD_PARAM_ERR | `MkeyAccessMode` | not MTT mode (access_mode_1_0 = 1, access_mode_4_2 = 0) |
//! | `0x51040005` | BAD_PARAM_ERR | `MkeyPageSize` | `log_page_size` ≠ 12 |
//! | `0x51040006` | BAD_PARAM_ERR | `MkeyQpn` | `qpn` ≠ 0xffffff |
//! | `0x51040007` | BAD_PARAM_ERR | `MkeyLength` | `len` zero, not a multiple of 4096, or `length64` set |
//! | `0x51040008` | BAD_PARAM_ERR | `MkeyOctwords` | translation octword sizes ≠ ceil(npages / 2) |
//! | `0x51040009` | BAD_PARAM_ERR | `MkeyUmem` | `mkey_umem_valid` set (umem-backed mkeys are not modelled) |
//! | `0x5104000a` | BAD_PARAM_ERR | `MttNotAligned` | an MTT entry has low bits set beyond READ/WRITE |
//! | `0x5104000b` | BAD_PARAM_ERR | `UnknownMkey` | mkey index not allocated |
//! | `0x5104000c` | BAD_PARAM_ERR | `MkeyVariant` | key's low byte ≠ the mkey's `mkey_7_0` |
//! | `0x5104000d` | BAD_PARAM_ERR | `MkeyRange` | `va`/`size` reach outside the mkey |
//! | `0x5104000e` | INT_ERR | `DmaUnmapped` | DMA to an IOVA not registered with `iommu_map` (DMA fault) |
//! | `0x5104000f` | INT_ERR | `DmaHostFault` | the host `Dma` refused the access (DMA fault) |
//! | `0x51050001` | BAD_RES_STATE_ERR | `SuspendBadState` | SUSPEND_VHCA from a state that has no such arc |
//! | `0x51050002` | BAD_RES_STATE_ERR | `ResumeBadState` | RESUME_VHCA from a state that has no such arc |
//! | `0x51050003` | BAD_RES_STATE_ERR | `IncompleteImage` | RESUME_VHCA(RESPONDER) while the loaded state is incomplete |
//! | `0x51060001` | BAD_PARAM_ERR | `ImageExceeds32Bit` | image > u32::MAX; chunk mode required |
//! | `0x51060002` | BAD_PARAM_ERR | `ChunkNotSupported` | `chunk` = 1 but `migration_in_chunks` is off |
//! | `0x51060003` | BAD_PARAM_ERR | `TrackingNotSupported` | `set_track` = 1 but `migration_tracking_state` is off |
//! | `0x51060004` | BAD_RES_STATE_ERR | `NoSaveSession` | incremental QUERY/SAVE before any full image |
//! | `0x51060005` | BAD_RES_STATE_ERR | `SaveRunningUntracked` | SAVE on a running VF without tracking |
//! | `0x51060006` | BAD_PARAM_ERR | `BufferTooSmall` | SAVE buffer too small for the next image / object (VF suspended) |
//! | `0x51060007` | BAD_RES_STATE_ERR | `StateChanged` | SAVE buffer too small while the VF runs: state changed since QUERY |
//! | `0x51070001` | BAD_RES_STATE_ERR | `LoadNotSuspended` | LOAD on a VF that is not Suspended |
//! | `0x51070002` | BAD_PARAM_ERR | `ImageTruncated` | LOAD `size` smaller than the image header |
//! | `0x51070003` | BAD_PARAM_ERR | `ImageBadMagic` | not a sim image |
//! | `0x51070004` | BAD_PARAM_ERR | `ImageBadModel` | image from an incompatible model version |
//! | `0x51070005` | BAD_PARAM_ERR | `ImageHeaderChecksum` | image header checksum mismatch (corrupted) |
//! | `0x51070006` | BAD_PARAM_ERR | `ImageBadKind` | unknown image kind or non-zero reserved header field |
//! | `0x51070007` | BAD_PARAM_ERR | `ImageLengthMismatch` | header length ≠ LOAD `size`, or records do not end at it |
//! | `0x51070008` | BAD_PARAM_ERR | `ImageBadParams` | a full-start image carries invalid generator parameters |
//! | `0x51070009` | BAD_PARAM_ERR | `ImageNoFullStart` | continuation image before any full start |
//! | `0x5107000a` | BAD_PARAM_ERR | `ImageSessionMismatch` | continuation from another save session |
//! | `0x5107000b` | BAD_PARAM_ERR | `ImageDuplicate` | image already loaded (sequence number behind) |
//! | `0x5107000c` | BAD_PARAM_ERR | `ImageOutOfOrder` | image skips ahead (sequence gap: reordered or lost) |
//! | `0x5107000d` | BAD_PARAM_ERR | `ImageParamsMismatch` | continuation's generator parameters differ from the adopted ones |
//! | `0x5107000e` | BAD_PARAM_ERR | `RecordBadHeader` | object record header corrupted |
//! | `0x5107000f` | BAD_PARAM_ERR | `RecordBadIndex` | object index out of range or not ascending |
//! | `0x51070010` | BAD_PARAM_ERR | `RecordBadSize` | object size differs from the generator's |
//! | `0x51070011` | BAD_PARAM_ERR | `RecordContentMismatch` | object content differs from the regenerated bytes |
//! | `0x51070012` | BAD_PARAM_ERR | `SecondLoad` | another LOAD after a complete image, VF without `migration_multi_load` |
//! | `0x51070013` | INT_ERR | `ImageChangedDuringLoad` | host memory changed between LOAD's verify and apply passes |
//! | `0x51080001` | BAD_PARAM_ERR | `TrackerObjType` | general object type other than page track (0x46), or no `adv_virtualization` |
//! | `0x51080002` | BAD_PARAM_ERR | `TrackerParam` | page-tracker context outside the caps, bad ranges or report window |
//! | `0x51080003` | LIM_ERR | `TrackerLimit` | more ranges than `pg_track_max_num_range`, or a second tracker |
//! | `0x51080004` | BAD_PARAM_ERR | `TrackerUnknown` | no tracker with that `obj_id` |
//! | `0x51080005` | BAD_RES_STATE_ERR | `TrackerBadState` | MODIFY while REPORTING or in ERROR |
//! | `0x51080006` | BAD_PARAM_ERR | `TrackerNoChannel` | `reporting_qpn` names no open reporting channel |
//! | `0x51090001` | BAD_SYS_STATE_ERR | `HcaNotEnabled` | a command before the PF's ENABLE_HCA (register-level PF, [`crate::pf`]) |
//! | `0x51090002` | BAD_SYS_STATE_ERR | `HcaNotInitialized` | a PD, mkey, VF or migration command before INIT_HCA (or after TEARDOWN_HCA) |
//! | `0x51090003` | BAD_SYS_STATE_ERR | `PagesMissing` | QUERY/SET_HCA_CAP before the boot pages, or INIT_HCA before the init pages, were given |
//! | `0x51090004` | BAD_PARAM_ERR | `BadIssi` | SET_ISSI of an ISSI the PF does not support (only 0 and 1) |
//! | `0x51090005` | BAD_SYS_STATE_ERR | `HcaInitialized` | a bring-up step repeated after INIT_HCA, or DISABLE_HCA(0) before TEARDOWN_HCA |
//! | `0x51090006` | BAD_PARAM_ERR | `PageNotMapped` | MANAGE_PAGES(GIVE) of an unaligned page or one the device cannot reach |
//! | `0x51090007` | BAD_PARAM_ERR | `PagesNotRequested` | MANAGE_PAGES(GIVE) of more pages than the function asked for |
//! | `0x51090008` | LIM_ERR | `TooManyPages` | more firmware pages than the sim holds ([`crate::pf::MAX_FW_PAGES`]) |
//! | `0x51090009` | BAD_RES_STATE_ERR | `PagesInUse` | MANAGE_PAGES(TAKE) from a function still using its pages |
//! | `0x5109000a` | BAD_RES_STATE_ERR | `PagesNotReturned` | DISABLE_HCA(0) while firmware still holds pages |
//! | `0x5109000b` | BAD_PARAM_ERR | `BadCapType` | SET_HCA_CAP of a capability type the sim does not model |

use crate::wire::status;

macro_rules! syndromes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $status:ident; )*) => {
        /// A reason for a failed command (see the module table).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Syndrome {
            $( $(#[$doc])* $name, )*
        }

        impl Syndrome {
            /// Every syndrome, in table order.
            pub const ALL: &'static [Self] = &[$( Self::$name, )*];

            /// The 32-bit value written into the output's syndrome field.
            #[must_use]
            pub const fn code(self) -> u32 {
                match self { $( Self::$name => $code, )* }
            }

            /// The status the sim reports this syndrome with.
            #[must_use]
            pub const fn status(self) -> u8 {
                match self { $( Self::$name => status::$status, )* }
            }

            /// The variant's name, as in the table.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $( Self::$name => stringify!($name), )* }
            }

            /// The syndrome with this code, if the sim defines one.
            #[must_use]
            pub fn from_code(code: u32) -> Option<Self> {
                match code { $( $code => Some(Self::$name), )* _ => None }
            }
        }
    };
}

syndromes! {
    /// Input shorter than the command's `_in`.
    InputTooShort = 0x5101_0001, BAD_INP_LEN_ERR;
    /// Output shorter than the command's `_out`.
    OutputTooShort = 0x5101_0002, BAD_OUTP_LEN_ERR;
    /// Opcode not implemented.
    UnknownOpcode = 0x5101_0003, BAD_OP_ERR;
    /// op_mod not valid for the opcode.
    BadOpMod = 0x5101_0004, BAD_PARAM_ERR;
    /// A reserved bit of the fixed input is set.
    ReservedBitsSet = 0x5101_0005, BAD_PARAM_ERR;
    /// `uid` ≠ 0.
    UidNotSupported = 0x5101_0006, BAD_PARAM_ERR;
    /// QUERY_HCA_CAP `function_id` names no function.
    UnknownFunction = 0x5102_0001, BAD_PARAM_ERR;
    /// `ec_vf_function` set.
    EcVfFunction = 0x5102_0002, BAD_PARAM_ERR;
    /// `vhca_id` names no VF.
    UnknownVhca = 0x5102_0003, BAD_PARAM_ERR;
    /// The VF is detached.
    VfDetached = 0x5102_0004, BAD_PARAM_ERR;
    /// The VF's `migratable` cap is off.
    NotMigratable = 0x5102_0005, BAD_PARAM_ERR;
    /// The PF's `migration` cap is off.
    MigrationDisabled = 0x5102_0006, BAD_PARAM_ERR;
    /// No PD slot left.
    PdLimit = 0x5103_0001, LIM_ERR;
    /// PD not allocated.
    UnknownPd = 0x5103_0002, BAD_PARAM_ERR;
    /// DEALLOC_PD while mkeys use the PD.
    PdInUse = 0x5103_0003, RES_BUSY;
    /// No mkey slot left.
    MkeyLimit = 0x5104_0001, LIM_ERR;
    /// Too many IOVA-contiguous runs.
    MkeyTooFragmented = 0x5104_0002, LIM_ERR;
    /// More pages than the sim maps in one mkey.
    MkeyTooLarge = 0x5104_0003, LIM_ERR;
    /// Not MTT access mode.
    MkeyAccessMode = 0x5104_0004, BAD_PARAM_ERR;
    /// `log_page_size` ≠ 12.
    MkeyPageSize = 0x5104_0005, BAD_PARAM_ERR;
    /// `qpn` ≠ 0xffffff.
    MkeyQpn = 0x5104_0006, BAD_PARAM_ERR;
    /// Bad `len` / `length64`.
    MkeyLength = 0x5104_0007, BAD_PARAM_ERR;
    /// Translation octword sizes inconsistent.
    MkeyOctwords = 0x5104_0008, BAD_PARAM_ERR;
    /// `mkey_umem_valid` set.
    MkeyUmem = 0x5104_0009, BAD_PARAM_ERR;
    /// MTT entry has low bits set beyond READ/WRITE.
    MttNotAligned = 0x5104_000a, BAD_PARAM_ERR;
    /// mkey index not allocated.
    UnknownMkey = 0x5104_000b, BAD_PARAM_ERR;
    /// Key variant byte mismatch.
    MkeyVariant = 0x5104_000c, BAD_PARAM_ERR;
    /// Access outside the mkey.
    MkeyRange = 0x5104_000d, BAD_PARAM_ERR;
    /// DMA to an unmapped IOVA.
    DmaUnmapped = 0x5104_000e, INT_ERR;
    /// The host `Dma` refused the access.
    DmaHostFault = 0x5104_000f, INT_ERR;
    /// SUSPEND_VHCA from a wrong state.
    SuspendBadState = 0x5105_0001, BAD_RES_STATE_ERR;
    /// RESUME_VHCA from a wrong state.
    ResumeBadState = 0x5105_0002, BAD_RES_STATE_ERR;
    /// RESUME_VHCA(RESPONDER) with an incomplete loaded state.
    IncompleteImage = 0x5105_0003, BAD_RES_STATE_ERR;
    /// Image > u32::MAX without chunk mode.
    ImageExceeds32Bit = 0x5106_0001, BAD_PARAM_ERR;
    /// `chunk` = 1 without `migration_in_chunks`.
    ChunkNotSupported = 0x5106_0002, BAD_PARAM_ERR;
    /// `set_track` = 1 without `migration_tracking_state`.
    TrackingNotSupported = 0x5106_0003, BAD_PARAM_ERR;
    /// Incremental QUERY/SAVE before any full image.
    NoSaveSession = 0x5106_0004, BAD_RES_STATE_ERR;
    /// SAVE on a running VF without tracking.
    SaveRunningUntracked = 0x5106_0005, BAD_RES_STATE_ERR;
    /// SAVE buffer too small (VF suspended).
    BufferTooSmall = 0x5106_0006, BAD_PARAM_ERR;
    /// SAVE buffer too small while the VF runs.
    StateChanged = 0x5106_0007, BAD_RES_STATE_ERR;
    /// LOAD on a VF that is not Suspended.
    LoadNotSuspended = 0x5107_0001, BAD_RES_STATE_ERR;
    /// LOAD `size` smaller than the image header.
    ImageTruncated = 0x5107_0002, BAD_PARAM_ERR;
    /// Not a sim image.
    ImageBadMagic = 0x5107_0003, BAD_PARAM_ERR;
    /// Incompatible model version.
    ImageBadModel = 0x5107_0004, BAD_PARAM_ERR;
    /// Header checksum mismatch.
    ImageHeaderChecksum = 0x5107_0005, BAD_PARAM_ERR;
    /// Unknown kind / reserved header field set.
    ImageBadKind = 0x5107_0006, BAD_PARAM_ERR;
    /// Length mismatch.
    ImageLengthMismatch = 0x5107_0007, BAD_PARAM_ERR;
    /// Invalid generator parameters in a full start.
    ImageBadParams = 0x5107_0008, BAD_PARAM_ERR;
    /// Continuation before any full start.
    ImageNoFullStart = 0x5107_0009, BAD_PARAM_ERR;
    /// Continuation from another session.
    ImageSessionMismatch = 0x5107_000a, BAD_PARAM_ERR;
    /// Image already loaded.
    ImageDuplicate = 0x5107_000b, BAD_PARAM_ERR;
    /// Sequence gap.
    ImageOutOfOrder = 0x5107_000c, BAD_PARAM_ERR;
    /// Continuation parameters differ.
    ImageParamsMismatch = 0x5107_000d, BAD_PARAM_ERR;
    /// Record header corrupted.
    RecordBadHeader = 0x5107_000e, BAD_PARAM_ERR;
    /// Record index out of range or not ascending.
    RecordBadIndex = 0x5107_000f, BAD_PARAM_ERR;
    /// Record size differs from the generator's.
    RecordBadSize = 0x5107_0010, BAD_PARAM_ERR;
    /// Record content differs.
    RecordContentMismatch = 0x5107_0011, BAD_PARAM_ERR;
    /// Second LOAD without multi-load.
    SecondLoad = 0x5107_0012, BAD_PARAM_ERR;
    /// Host memory changed during LOAD.
    ImageChangedDuringLoad = 0x5107_0013, INT_ERR;
    /// General object of a type the sim does not model (only page track).
    TrackerObjType = 0x5108_0001, BAD_PARAM_ERR;
    /// A page-tracker context value outside the device's caps.
    TrackerParam = 0x5108_0002, BAD_PARAM_ERR;
    /// More ranges than `pg_track_max_num_range`, or a second tracker.
    TrackerLimit = 0x5108_0003, LIM_ERR;
    /// No tracker with that id.
    TrackerUnknown = 0x5108_0004, BAD_PARAM_ERR;
    /// MODIFY while reporting or in ERROR.
    TrackerBadState = 0x5108_0005, BAD_RES_STATE_ERR;
    /// `reporting_qpn` names no open reporting channel.
    TrackerNoChannel = 0x5108_0006, BAD_PARAM_ERR;
    /// A command before the PF's ENABLE_HCA.
    HcaNotEnabled = 0x5109_0001, BAD_SYS_STATE_ERR;
    /// A command that needs INIT_HCA before it.
    HcaNotInitialized = 0x5109_0002, BAD_SYS_STATE_ERR;
    /// Boot or init pages not given yet.
    PagesMissing = 0x5109_0003, BAD_SYS_STATE_ERR;
    /// SET_ISSI of an unsupported ISSI.
    BadIssi = 0x5109_0004, BAD_PARAM_ERR;
    /// A bring-up step out of order after INIT_HCA.
    HcaInitialized = 0x5109_0005, BAD_SYS_STATE_ERR;
    /// A given page is unaligned or unreachable.
    PageNotMapped = 0x5109_0006, BAD_PARAM_ERR;
    /// More pages given than asked for.
    PagesNotRequested = 0x5109_0007, BAD_PARAM_ERR;
    /// More firmware pages than the sim holds.
    TooManyPages = 0x5109_0008, LIM_ERR;
    /// TAKE from a function still using its pages.
    PagesInUse = 0x5109_0009, BAD_RES_STATE_ERR;
    /// DISABLE_HCA(0) while firmware holds pages.
    PagesNotReturned = 0x5109_000a, BAD_RES_STATE_ERR;
    /// SET_HCA_CAP of an unmodelled capability type.
    BadCapType = 0x5109_000b, BAD_PARAM_ERR;
}

impl core::fmt::Display for Syndrome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:08x})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for (i, a) in Syndrome::ALL.iter().enumerate() {
            assert_eq!(Syndrome::from_code(a.code()), Some(*a));
            for b in &Syndrome::ALL[i + 1..] {
                assert_ne!(a.code(), b.code(), "{a:?} and {b:?}");
            }
        }
    }

    /// The module table is hand-written for readers; keep it honest.
    #[test]
    fn module_table_matches_definitions() {
        let src = include_str!("syndrome.rs");
        for s in Syndrome::ALL {
            let status_name = match s.status() {
                status::INT_ERR => "INT_ERR",
                status::BAD_OP_ERR => "BAD_OP_ERR",
                status::BAD_PARAM_ERR => "BAD_PARAM_ERR",
                status::BAD_SYS_STATE_ERR => "BAD_SYS_STATE_ERR",
                status::RES_BUSY => "RES_BUSY",
                status::LIM_ERR => "LIM_ERR",
                status::BAD_RES_STATE_ERR => "BAD_RES_STATE_ERR",
                status::BAD_INP_LEN_ERR => "BAD_INP_LEN_ERR",
                status::BAD_OUTP_LEN_ERR => "BAD_OUTP_LEN_ERR",
                other => panic!("unexpected status {other}"),
            };
            let row = std::format!(
                "//! | `0x{:08x}` | {} | `{}` |",
                s.code(),
                status_name,
                s.name()
            );
            assert!(src.contains(&row), "missing or wrong table row: {row}");
        }
    }
}
