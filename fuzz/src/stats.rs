//! Counters of how deep the targets get, for `tests/corpus.rs`'s report of
//! a corpus (`MLX5VF_FUZZ_STATS=<target>:<dir>`). Relaxed atomics: free
//! enough to stay on while fuzzing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares [`Hit`] and its list of variants in one place.
macro_rules! hits {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Something a target reached.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Hit {
            $($(#[doc = $doc])* $name,)*
        }

        impl Hit {
            /// Every variant, in declaration order.
            pub const ALL: &[Hit] = &[$(Hit::$name,)*];
        }
    };
}

hits! {
    /// resume: started from a valid base stream.
    ResumeFromBase,
    /// resume: the resuming file opened.
    ResumeOpened,
    /// The destination LOADed asynchronously (pipelined resume).
    ResumeAsyncLoad,
    /// resume: RESUMING -> STOP succeeded.
    ResumeStopOk,
    /// resume: STOP -> RUNNING succeeded after it.
    ResumeRunOk,
    /// resume: the destination digest was compared with the source's.
    ResumeDigestChecked,
    /// resume: a stream with different images was accepted.
    ResumeOtherImagesAccepted,
    /// resume: a write failed.
    ResumeWriteError,
    /// save: a stream was read to its end.
    SaveEof,
    /// save: the end record caught bytes a lying firmware changed after
    /// their CRC was taken.
    SaveLieCaughtByIntegrity,
    /// save: a stream read to its end was loaded and its digest matched.
    SaveDigestChecked,
    /// save: `precopy_info` answered.
    SavePrecopyInfo,
    /// save: `precopy_info` answered REINIT.
    SaveReinit,
    /// save: the saving file failed.
    SaveFileFailed,
    /// save: a `set_state` had to wait for a SAVE.
    SaveWaited,
    /// save: a write to the resuming file waited for a SAVE.
    SaveWriteWaited,
    /// save: RESUMING -> STOP closed a resuming file on the saving device.
    SaveResumeFinished,
    /// save: ...and the VF held the state of the stream written.
    SaveResumeDigestChecked,
    /// state: `set_state` reached its target.
    StateOk,
    /// state: `set_state` refused by the graph.
    StateRefused,
    /// state: `set_state` failed on a command or the platform.
    StateFailed,
    /// state: the firmware's VHCA state was compared with the device's.
    StateFirmwareChecked,
}

const N: usize = Hit::ALL.len();

static COUNTS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

/// Counts a hit.
pub fn hit(h: Hit) {
    COUNTS[h as usize].fetch_add(1, Ordering::Relaxed);
}

/// Every counter, by name.
pub fn snapshot() -> Vec<(String, u64)> {
    Hit::ALL
        .iter()
        .map(|&h| (format!("{h:?}"), COUNTS[h as usize].load(Ordering::Relaxed)))
        .collect()
}
