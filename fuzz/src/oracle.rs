//! An independent model of the Linux VFIO migration state machine, written
//! from `reference/vfio-uapi.md` §2 (not from `core::vfio`): the raw
//! `vfio_from_fsm_table`, `state_flags_table`, the walk of
//! `vfio_mig_get_next_state()` with the fix that ends it at ERROR, and the
//! direct arcs a driver must implement per flag set (§2.4).

/// `VFIO_DEVICE_STATE_*` values.
pub mod state {
    /// ERROR.
    pub const ERROR: u32 = 0;
    /// STOP.
    pub const STOP: u32 = 1;
    /// RUNNING.
    pub const RUNNING: u32 = 2;
    /// STOP_COPY.
    pub const STOP_COPY: u32 = 3;
    /// RESUMING.
    pub const RESUMING: u32 = 4;
    /// RUNNING_P2P.
    pub const RUNNING_P2P: u32 = 5;
    /// PRE_COPY.
    pub const PRE_COPY: u32 = 6;
    /// PRE_COPY_P2P.
    pub const PRE_COPY_P2P: u32 = 7;
    /// `VFIO_DEVICE_STATE_NR`.
    pub const NR: u32 = 8;
}

/// `VFIO_MIGRATION_STOP_COPY`.
pub const FLAG_STOP_COPY: u64 = 1 << 0;
/// `VFIO_MIGRATION_P2P`.
pub const FLAG_P2P: u64 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`.
pub const FLAG_PRE_COPY: u64 = 1 << 2;

use state::*;

/// §2.1, row = current state, column = requested state, value = next step.
const FSM: [[u32; 8]; 8] = {
    const E: u32 = ERROR;
    const S: u32 = STOP;
    const R: u32 = RUNNING;
    const SC: u32 = STOP_COPY;
    const RS: u32 = RESUMING;
    const RP: u32 = RUNNING_P2P;
    const PC: u32 = PRE_COPY;
    const PP: u32 = PRE_COPY_P2P;
    [
        //   ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P
        [E, E, E, E, E, E, E, E],        // ERROR
        [E, S, RP, SC, RS, RP, RP, RP],  // STOP
        [E, RP, R, RP, RP, RP, PC, RP],  // RUNNING
        [E, S, S, SC, S, S, E, E],       // STOP_COPY
        [E, S, S, S, RS, S, S, S],       // RESUMING
        [E, S, R, S, S, RP, R, PP],      // RUNNING_P2P
        [E, R, R, PP, R, R, PC, PP],     // PRE_COPY
        [E, RP, RP, SC, RP, RP, PC, PP], // PRE_COPY_P2P
    ]
};

/// §2.2 `state_flags_table`, except ERROR: the doc states ERROR is never
/// supported (the kernel's `~0U` entry against a `u32` flags word).
const STATE_FLAGS: [u64; 8] = [
    u64::MAX,
    FLAG_STOP_COPY,
    FLAG_STOP_COPY,
    FLAG_STOP_COPY,
    FLAG_STOP_COPY,
    FLAG_STOP_COPY | FLAG_P2P,
    FLAG_STOP_COPY | FLAG_PRE_COPY,
    FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
];

/// Whether a device with `flags` supports state `s`.
pub fn supported(s: u32, flags: u64) -> bool {
    if s == ERROR || s >= NR {
        return false;
    }
    let need = STATE_FLAGS[s as usize];
    need & flags == need
}

/// Which check of §2.3 refused a transition (all are `-EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Step 1: the current state is out of range or unsupported.
    Current,
    /// Step 2: the requested state is out of range or unsupported.
    Target,
    /// Step 5: the walk reached ERROR.
    NoPath,
}

/// `vfio_mig_get_next_state()` with the fix (§2.3).
///
/// # Errors
/// The step that refused.
pub fn next_state(cur: u32, new: u32, flags: u64) -> Result<u32, Refusal> {
    if !supported(cur, flags) {
        return Err(Refusal::Current);
    }
    if !supported(new, flags) {
        return Err(Refusal::Target);
    }
    let mut next = FSM[cur as usize][new as usize];
    while next != ERROR && !supported(next, flags) {
        next = FSM[next as usize][new as usize];
    }
    if next == ERROR {
        Err(Refusal::NoPath)
    } else {
        Ok(next)
    }
}

/// The direct arcs a driver with `flags` must implement (§2.4).
pub fn direct_arcs(flags: u64) -> Vec<(u32, u32)> {
    let mut arcs = vec![
        (RESUMING, STOP),
        (STOP, RESUMING),
        (STOP, STOP_COPY),
        (STOP_COPY, STOP),
    ];
    let p2p = flags & FLAG_P2P != 0;
    let pre_copy = flags & FLAG_PRE_COPY != 0;
    if p2p {
        arcs.extend([
            (RUNNING, RUNNING_P2P),
            (RUNNING_P2P, RUNNING),
            (RUNNING_P2P, STOP),
            (STOP, RUNNING_P2P),
        ]);
    } else {
        arcs.extend([(RUNNING, STOP), (STOP, RUNNING)]);
    }
    if pre_copy && !p2p {
        arcs.extend([
            (RUNNING, PRE_COPY),
            (PRE_COPY, RUNNING),
            (PRE_COPY, STOP_COPY),
        ]);
    }
    if pre_copy && p2p {
        arcs.extend([
            (PRE_COPY, RUNNING),
            (PRE_COPY, PRE_COPY_P2P),
            (PRE_COPY_P2P, PRE_COPY),
            (PRE_COPY_P2P, RUNNING_P2P),
            (PRE_COPY_P2P, STOP_COPY),
            (RUNNING, PRE_COPY),
            (RUNNING_P2P, PRE_COPY_P2P),
        ]);
    }
    arcs
}

/// Arcs that return a new data fd (§1.7, §2.4).
pub fn opens_fd(from: u32, to: u32) -> bool {
    matches!(
        (from, to),
        (RUNNING, PRE_COPY) | (RUNNING_P2P, PRE_COPY_P2P) | (STOP, STOP_COPY) | (STOP, RESUMING)
    )
}
