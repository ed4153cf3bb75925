//! Bringing the PF's function up and tearing it down, as a driver that
//! owns the PF must (`reference/mlx5-ifc.md` §5; what `mlx5_core` does
//! under Linux), and the pages firmware borrows meanwhile.
//!
//! Up: ENABLE_HCA(0) → QUERY_ISSI, SET_ISSI(1) → QUERY_PAGES(BOOT) +
//! MANAGE_PAGES(GIVE) → QUERY_HCA_CAP(general, current) + SET_HCA_CAP
//! (`cmdif_checksum` as configured) → QUERY_PAGES(INIT) + GIVE → INIT_HCA
//! → ENABLE_HCA(vf + 1) → QUERY_PAGES(REGULAR, vf + 1) + GIVE.
//!
//! Down (also after a failure part-way up, for the steps that were done):
//! DISABLE_HCA(vf + 1) → TEARDOWN_HCA → for the VF, then the PF,
//! MANAGE_PAGES(TAKE) of up to [`PAGES_PER_COMMAND`] pages at a time, by the
//! driver's own count of pages it gave the function, until it holds none
//! (as Linux's `mlx5_reclaim_startup_pages`; QUERY_PAGES is not asked) →
//! DISABLE_HCA(0). Memory of pages firmware returned is unmapped and freed;
//! pages it never returned stay mapped and allocated (quarantined, see
//! [`super::port::Quarantined`]) until the device is closed: firmware may
//! still use them.
//!
//! Not done (a real PF may need them; the model does not): ACCESS_REG's
//! host endianness, port and e-switch setup, event queues (QUERY_PAGES is
//! asked at bring-up only: page requests firmware makes later, which
//! arrive as events, are not served).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlx5vf_core::cmdq::SlotClass;
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::function::enable_hca_out;
use mlx5vf_core::ifc::function::{
    DisableHca, EnableHca, InitHca, MANAGE_PAGES_GIVE, MANAGE_PAGES_TAKE, PagesPhase, QueryIssi,
    QueryPages, SetIssi, TeardownHca, TeardownProfile, decode_manage_pages_out,
    encode_manage_pages_give, encode_manage_pages_take, encode_set_hca_cap, manage_pages_len,
};
use mlx5vf_core::ifc::hca_cap::{
    CAPABILITY_OFFSET, CapMode, CapTarget, CapType, QueryHcaCap, cmd_hca_cap, query_hca_cap_out,
};
use mlx5vf_core::ifc::{Opcode, checked_output};

use super::error::PfError;
use super::memory::{DmaRegion, PAGE};
use super::port::{Keep, Port};
use super::transport::Transport;
use mlx5vf_core::cmdq::Checksums;

/// Pages one MANAGE_PAGES carries (an 8 KiB list: 17 mailbox blocks).
pub const PAGES_PER_COMMAND: u32 = 1024;
/// How long taking back one function's pages may take in all. Every TAKE
/// must return a page (an empty answer stops at once), so this bounds a
/// firmware that answers slowly, not a loop: the most a function is given,
/// 2 × [`MAX_PAGES_ASKED`] pages (the PF's boot and init pages), is 2048
/// TAKEs, seconds at the milliseconds a command takes.
const RECLAIM_TIME: Duration = Duration::from_secs(60);
/// The most pages firmware may ask for at once (4 GiB); more is refused as
/// a firmware fault rather than granted.
const MAX_PAGES_ASKED: i64 = 1 << 20;

/// Runs a typed command through the queue.
fn run<T: Transport, C: Command>(
    port: &Port<T>,
    class: SlotClass,
    cmd: &C,
    step: &'static str,
) -> Result<C::Output, PfError> {
    let mut input = vec![0u8; C::IN_SIZE];
    cmd.encode(&mut input).map_err(PfError::encode(step))?;
    let mut output = vec![0u8; C::OUT_SIZE];
    port.exec(class, &input, &mut output)?;
    let r = cmd.decode(&output).map_err(PfError::firmware(step));
    if let Err(e) = &r {
        port.inner().record(e);
    }
    r
}

/// Pages given to firmware: the regions they live in, by page address.
#[derive(Default)]
pub struct FwPages {
    /// Regions by IOVA, with the pages of each still held by firmware.
    regions: BTreeMap<u64, (Arc<DmaRegion>, u64)>,
    /// Page address → (function, region IOVA).
    held: BTreeMap<u64, (u16, u64)>,
}

impl FwPages {
    /// Pages firmware holds.
    pub fn count(&self) -> usize {
        self.held.len()
    }

    /// Pages of `function` firmware holds.
    fn count_of(&self, function: u16) -> usize {
        self.held.values().filter(|(f, _)| *f == function).count()
    }
}

/// How far the function got, so teardown undoes exactly that.
#[derive(Default)]
pub struct Lifecycle {
    enabled: bool,
    initialized: bool,
    vf_enabled: Option<u16>,
    pages: FwPages,
}

impl Lifecycle {
    /// Pages firmware holds now.
    pub fn fw_pages(&self) -> usize {
        self.pages.count()
    }
}

/// Brings the function up and enables VF `vf` (see the module docs). On
/// failure, what was done is undone before the error returns.
///
/// # Errors
/// The step that failed.
pub fn bring_up<T: Transport>(
    port: &Port<T>,
    vf: u16,
    checksums: Checksums,
) -> Result<Lifecycle, PfError> {
    let mut lc = Lifecycle::default();
    match up(port, &mut lc, vf, checksums) {
        Ok(()) => Ok(lc),
        Err(e) => {
            port.inner().record(&e);
            let _ = tear_down(port, &mut lc);
            Err(e)
        }
    }
}

fn up<T: Transport>(
    port: &Port<T>,
    lc: &mut Lifecycle,
    vf: u16,
    checksums: Checksums,
) -> Result<(), PfError> {
    let c = SlotClass::Command;
    run(port, c, &EnableHca { function_id: 0 }, "ENABLE_HCA(0)")?;
    lc.enabled = true;
    let issi = run(port, c, &QueryIssi, "QUERY_ISSI")?;
    if issi.supports(1) {
        run(port, c, &SetIssi { issi: 1 }, "SET_ISSI(1)")?;
    } else if issi.current != 0 {
        return Err(PfError::Protocol(format!(
            "firmware runs ISSI {} and does not offer ISSI 1",
            issi.current
        )));
    }
    give_pages(port, lc, 0, PagesPhase::Boot)?;
    set_general_caps(port, checksums)?;
    port.set_checksums(checksums);
    give_pages(port, lc, 0, PagesPhase::Init)?;
    run(port, c, &InitHca, "INIT_HCA")?;
    lc.initialized = true;
    let function_id = vf
        .checked_add(1)
        .ok_or_else(|| PfError::Protocol(format!("VF {vf} has no function id")))?;
    run(port, c, &EnableHca { function_id }, "ENABLE_HCA(VF)")?;
    lc.vf_enabled = Some(function_id);
    give_pages(port, lc, function_id, PagesPhase::Regular)?;
    Ok(())
}

/// SET_HCA_CAP(general) from the current caps, with `cmdif_checksum` as
/// configured (0: off, as Linux and rdma-core; 3: on).
fn set_general_caps<T: Transport>(port: &Port<T>, checksums: Checksums) -> Result<(), PfError> {
    let query = QueryHcaCap {
        target: CapTarget::SelfFunction,
        cap: CapType::General,
        mode: CapMode::Current,
    };
    let mut input = [0u8; 16];
    query
        .encode(&mut input)
        .map_err(PfError::encode("QUERY_HCA_CAP"))?;
    let mut out = vec![0u8; query_hca_cap_out::SIZE];
    port.exec(SlotClass::Command, &input, &mut out)?;
    checked_output::<query_hca_cap_out::Bits>(Opcode::QueryHcaCap, query.raw_op_mod(), &out)
        .map_err(PfError::firmware("QUERY_HCA_CAP"))?;
    let mut cap = out.get(CAPABILITY_OFFSET..).unwrap_or_default().to_vec();
    let value = match checksums {
        Checksums::Off => 0,
        Checksums::On => 3,
    };
    cmd_hca_cap::cmdif_checksum
        .set(&mut cap, value)
        .map_err(|e| PfError::Protocol(format!("SET_HCA_CAP: {e}")))?;
    let mut set = vec![0u8; 16 + cap.len()];
    let len = encode_set_hca_cap(&mut set, CapType::General, &cap)
        .map_err(PfError::encode("SET_HCA_CAP"))?;
    let mut out = [0u8; 16];
    port.exec(
        SlotClass::Command,
        set.get(..len).unwrap_or_default(),
        &mut out,
    )?;
    checked_output::<enable_hca_out::Bits>(Opcode::SetHcaCap, 0, &out)
        .map_err(PfError::firmware("SET_HCA_CAP"))?;
    Ok(())
}

/// Gives `function` the pages QUERY_PAGES(`phase`) asks for.
fn give_pages<T: Transport>(
    port: &Port<T>,
    lc: &mut Lifecycle,
    function: u16,
    phase: PagesPhase,
) -> Result<(), PfError> {
    let asked = run(
        port,
        SlotClass::Command,
        &QueryPages {
            function_id: function,
            phase,
        },
        "QUERY_PAGES",
    )?;
    let asked = i64::from(asked);
    if asked <= 0 {
        return Ok(());
    }
    if asked > MAX_PAGES_ASKED {
        return Err(PfError::Protocol(format!(
            "firmware asks for {asked} pages for function {function} (at most {MAX_PAGES_ASKED} are given)"
        )));
    }
    let npages = u64::try_from(asked).unwrap_or(0);
    let region = port.inner().allocate(npages, true, "firmware pages")?;
    let base = region.iova();
    lc.pages.regions.insert(base, (Arc::clone(&region), 0));
    let mut done = 0u64;
    while done < npages {
        let n = (npages - done).min(u64::from(PAGES_PER_COMMAND));
        let first = base + done * PAGE;
        let addrs: Vec<u64> = (0..n).map(|i| first + i * PAGE).collect();
        let mut input = vec![0u8; manage_pages_len(n as u32)];
        let len = encode_manage_pages_give(&mut input, function, addrs.iter().copied())
            .map_err(PfError::encode("MANAGE_PAGES(GIVE)"))?;
        let mut out = [0u8; 16];
        port.exec(
            SlotClass::Pages,
            input.get(..len).unwrap_or_default(),
            &mut out,
        )?;
        decode_manage_pages_out(&out, MANAGE_PAGES_GIVE)
            .map_err(PfError::firmware("MANAGE_PAGES(GIVE)"))?;
        for a in addrs {
            lc.pages.held.insert(a, (function, base));
        }
        if let Some((_, count)) = lc.pages.regions.get_mut(&base) {
            *count += n;
        }
        done += n;
    }
    Ok(())
}

/// Takes back every page the driver gave `function`, by its own count
/// (see the module docs).
///
/// # Errors
/// A TAKE failed, returned no page, returned a page the driver never gave
/// `function`, or [`RECLAIM_TIME`] passed; the pages not returned stay in
/// `lc` for [`tear_down`] to quarantine.
fn reclaim<T: Transport>(port: &Port<T>, lc: &mut Lifecycle, function: u16) -> Result<(), PfError> {
    let deadline = Instant::now() + RECLAIM_TIME;
    loop {
        let held = lc.pages.count_of(function);
        if held == 0 {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PfError::Protocol(format!(
                "firmware did not return the {held} pages of function {function} within {}s",
                RECLAIM_TIME.as_secs()
            )));
        }
        let n = u32::try_from(held)
            .unwrap_or(u32::MAX)
            .min(PAGES_PER_COMMAND);
        let mut input = [0u8; 16];
        encode_manage_pages_take(&mut input, function, n)
            .map_err(PfError::encode("MANAGE_PAGES(TAKE)"))?;
        let mut out = vec![0u8; manage_pages_len(n)];
        port.exec_within(SlotClass::Pages, &input, &mut out, left)?;
        // No more than `n` entries: the decoder refuses a count beyond the
        // output's `n` slots.
        let pas = decode_manage_pages_out(&out, MANAGE_PAGES_TAKE)
            .map_err(PfError::firmware("MANAGE_PAGES(TAKE)"))?;
        if pas.is_empty() {
            return Err(PfError::Protocol(format!(
                "MANAGE_PAGES(TAKE) of function {function} returned no page; firmware keeps the \
                 {held} pages it was given"
            )));
        }
        let mut strangers = 0usize;
        let mut first_stranger = 0u64;
        for entry in pas.chunks_exact(8) {
            let addr = u64::from_be_bytes(entry.try_into().unwrap_or_default());
            if lc.pages.held.get(&addr).is_none_or(|(f, _)| *f != function) {
                if strangers == 0 {
                    first_stranger = addr;
                }
                strangers += 1;
                continue;
            }
            if let Some((_, region)) = lc.pages.held.remove(&addr) {
                let empty = lc.pages.regions.get_mut(&region).map(|(_, count)| {
                    *count = count.saturating_sub(1);
                    *count == 0
                });
                if empty == Some(true) {
                    if let Some((r, _)) = lc.pages.regions.remove(&region) {
                        port.inner().release(&r, true);
                    }
                }
            }
        }
        if strangers > 0 {
            return Err(PfError::Protocol(format!(
                "MANAGE_PAGES(TAKE) of function {function} returned {strangers} pages it was never \
                 given for it (first {first_stranger:#x})"
            )));
        }
    }
}

/// Tears the function down (see the module docs); every step is tried
/// even when an earlier one failed, and the first error is returned. Pages
/// firmware did not return are neither unmapped nor freed: their regions
/// are quarantined in the port (counted; [`Port::quarantined`]) until the
/// device is closed, since firmware may still use them.
///
/// # Errors
/// The first step that failed.
pub fn tear_down<T: Transport>(port: &Port<T>, lc: &mut Lifecycle) -> Result<(), PfError> {
    let mut first: Option<PfError> = None;
    let mut note = |r: Result<(), PfError>| {
        if let Err(e) = r {
            port.inner().record(&e);
            first.get_or_insert(e);
        }
    };
    if let Some(function_id) = lc.vf_enabled.take() {
        note(run(
            port,
            SlotClass::Command,
            &DisableHca { function_id },
            "DISABLE_HCA(VF)",
        ));
    }
    if lc.initialized {
        lc.initialized = false;
        note(
            run(
                port,
                SlotClass::Command,
                &TeardownHca {
                    profile: TeardownProfile::Graceful,
                },
                "TEARDOWN_HCA",
            )
            .and_then(|failed| {
                if failed {
                    Err(PfError::Protocol("TEARDOWN_HCA reports force_state".into()))
                } else {
                    Ok(())
                }
            }),
        );
    }
    let functions: std::collections::BTreeSet<u16> =
        lc.pages.held.values().map(|(f, _)| *f).collect();
    // VFs first, then the PF (function 0 sorts first: reverse).
    for f in functions.into_iter().rev() {
        note(reclaim(port, lc, f));
    }
    if lc.enabled {
        lc.enabled = false;
        note(run(
            port,
            SlotClass::Command,
            &DisableHca { function_id: 0 },
            "DISABLE_HCA(0)",
        ));
    }
    lc.pages.held.clear();
    for (_, (r, kept)) in std::mem::take(&mut lc.pages.regions) {
        if kept == 0 {
            // Allocated for a GIVE that failed: firmware never had it.
            port.inner().release(&r, true);
        } else {
            port.inner().quarantine(&r, Keep::FirmwarePages(kept));
        }
    }
    first.map_or(Ok(()), Err)
}
