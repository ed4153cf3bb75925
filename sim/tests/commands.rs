//! Command framing, capabilities, PDs, mkeys and DMA: every refusal with
//! its status and syndrome.

mod common;

use common::*;
use mlx5vf_sim::{ExecError, Firmware, FirmwareConfig, NoDma, PfConfig, Syndrome, VfConfig};

#[test]
fn caps_report_pf_and_vf_bits_at_the_documented_bytes() {
    let mut rig = Rig::one("sim:vfs=3,chunks=off");
    // PF general caps (MAX): hca_cap_2, migration, adv_virtualization.
    let pf = rig.query_cap(0, None, 0x00);
    pf.ok();
    assert_eq!(pf.0[20] & 0x80, 0x80, "hca_cap_2");
    assert_eq!(pf.0[16 + 209] & 0x04, 0x04, "migration");
    assert_eq!(pf.0[16 + 175] & 0x40, 0x40, "adv_virtualization");
    // PF cap2 (CUR): multi_load + tracking on, in_chunks off (chunks=off).
    let pf2 = rig.query_cap(0, None, 0x41);
    pf2.ok();
    assert_eq!(pf2.0[16 + 25] & 0xc0, 0xc0);
    assert_eq!(pf2.0[16 + 26] & 0x80, 0);
    // VF cap2 (MAX, as Linux reads it): migratable.
    let vf2 = rig.query_cap(0, Some(2), 0x40);
    vf2.ok();
    assert_eq!(vf2.0[32] & 0x80, 0x80);
    // vhca_ids are not function ids.
    let ids: Vec<u16> = (0..3).map(|n| rig.vhca(0, n)).collect();
    assert_eq!(ids, [0x101, 0x104, 0x107]);
    for (n, id) in ids.iter().enumerate() {
        assert_ne!(u32::from(*id), n as u32 + 1);
        assert_eq!(rig.fw(0).vhca_id(n as u16), Some(*id));
    }
    // A driver using the function id as vhca_id is refused.
    rig.suspend(0, 1, false).refused(Syndrome::UnknownVhca);
    rig.query_cap(0, Some(4), 0x01)
        .refused(Syndrome::UnknownFunction);
    rig.query_cap(0, Some(0), 0x01)
        .refused(Syndrome::UnknownFunction);
    rig.query_cap(0, None, 0x04).refused(Syndrome::BadOpMod); // cap_type ODP
    let mut ec = Cmd::new(op::QUERY_HCA_CAP, 1, 16);
    ec.or8(8, 0xc0).put16(10, 1);
    rig.exec(0, &ec, 4112).refused(Syndrome::EcVfFunction);
    rig.exec(0, &Cmd::new(op::QUERY_HCA_CAP, 1, 16), 4111)
        .refused(Syndrome::OutputTooShort);
    rig.assert_clean();
}

#[test]
fn framing_refusals() {
    let mut rig = Rig::one("sim:state=1M");
    let vhca = rig.vhca(0, 0);
    // Output too short to report anything.
    let mut fw = Firmware::new(&FirmwareConfig::default()).unwrap();
    assert_eq!(
        fw.exec(&Cmd::new(op::ALLOC_PD, 0, 16).0, &mut [0u8; 15], &mut NoDma),
        Err(ExecError::OutputTooShort)
    );
    // Input shorter than the header / than the command's _in.
    rig.exec(0, &Cmd(vec![0x08, 0x00]), 16)
        .refused(Syndrome::InputTooShort);
    let mut short_save = Rig::save_cmd(
        vhca,
        false,
        false,
        Buf {
            iova: 0,
            len: 0,
            key: 0,
        },
        0,
    );
    short_save.0.truncate(31);
    rig.exec(0, &short_save, 16)
        .refused(Syndrome::InputTooShort);
    // Unknown opcode.
    rig.exec(0, &Cmd::new(0x0b0d, 0, 16), 16)
        .refused(Syndrome::UnknownOpcode);
    // Bad op_mods.
    rig.exec(0, &Cmd::new(op::ALLOC_PD, 1, 16), 16)
        .refused(Syndrome::BadOpMod);
    rig.exec(0, &Rig::vhca_cmd(op::SUSPEND_VHCA, 2, vhca), 16)
        .refused(Syndrome::BadOpMod);
    rig.exec(0, &Rig::vhca_cmd(op::RESUME_VHCA, 2, vhca), 16)
        .refused(Syndrome::BadOpMod);
    let mut q = Rig::query_cmd(vhca, false, false);
    q.put16(6, 1);
    rig.exec(0, &q, 64).refused(Syndrome::BadOpMod);
    // Output shorter than _out: BAD_OUTP_LEN in the first 16 bytes.
    rig.exec(0, &Rig::query_cmd(vhca, false, false), 63)
        .refused(Syndrome::OutputTooShort);
    // Reserved bits, in every fixed-size command family.
    let mut r = Rig::vhca_cmd(op::SUSPEND_VHCA, 0, vhca);
    r.or8(8, 0x01);
    rig.exec(0, &r, 16).refused(Syndrome::ReservedBitsSet);
    let mut r = Rig::query_cmd(vhca, false, false);
    r.or8(8, 0x20);
    rig.exec(0, &r, 64).refused(Syndrome::ReservedBitsSet);
    let mut r = Rig::save_cmd(
        vhca,
        false,
        false,
        Buf {
            iova: 0,
            len: 0,
            key: 0,
        },
        0,
    );
    r.or8(15, 1);
    rig.exec(0, &r, 16).refused(Syndrome::ReservedBitsSet);
    let mut r = Rig::load_cmd(
        vhca,
        Buf {
            iova: 0,
            len: 0,
            key: 0,
        },
        0,
    );
    r.or8(8, 0x80); // LOAD has no incremental bit
    rig.exec(0, &r, 16).refused(Syndrome::ReservedBitsSet);
    let mut r = Cmd::new(op::ALLOC_PD, 0, 16);
    r.or8(12, 1);
    rig.exec(0, &r, 16).refused(Syndrome::ReservedBitsSet);
    let mut r = Cmd::new(op::DEALLOC_PD, 0, 16);
    r.or8(8, 1);
    rig.exec(0, &r, 16).refused(Syndrome::ReservedBitsSet);
    // uid.
    let mut r = Cmd::new(op::ALLOC_PD, 0, 16);
    r.put16(2, 7);
    rig.exec(0, &r, 16).refused(Syndrome::UidNotSupported);
    // Nothing happened.
    assert_eq!(
        rig.fw(0).vf_state(0).unwrap().suspend,
        mlx5vf_sim::SuspendState::Running
    );
    rig.assert_clean();
}

#[test]
fn pd_rules() {
    let mut rig = Rig::one("sim:state=1M");
    let pd = rig.alloc_pd(0);
    assert_ne!(pd, 0);
    assert_eq!(rig.fw(0).accounting().pds, 1);
    rig.dealloc_pd(0, pd + 1).refused(Syndrome::UnknownPd);
    rig.mem.add(0x10_0000, 4096);
    rig.fw(0).iommu_map(0x10_0000, 4096).unwrap();
    let key = rig.create_mkey(0, pd, &[0x10_0000], 1);
    rig.dealloc_pd(0, pd).refused(Syndrome::PdInUse);
    rig.destroy_mkey(0, key).ok();
    rig.dealloc_pd(0, pd).ok();
    rig.dealloc_pd(0, pd).refused(Syndrome::UnknownPd);
    let pds: Vec<u32> = (0..mlx5vf_sim::firmware::MAX_PDS)
        .map(|_| rig.alloc_pd(0))
        .collect();
    rig.exec(0, &Cmd::new(op::ALLOC_PD, 0, 16), 16)
        .refused(Syndrome::PdLimit);
    for p in pds {
        rig.dealloc_pd(0, p).ok();
    }
    rig.fw(0).iommu_unmap(0x10_0000, 4096).unwrap();
    rig.assert_clean();
}

/// Breaks one field of a good CREATE_MKEY.
type Breaker = Box<dyn Fn(&mut Cmd)>;

#[test]
fn mkey_rules() {
    let mut rig = Rig::one("sim:state=1M");
    let pd = rig.alloc_pd(0);
    let pages = [0x20_0000u64, 0x20_1000 | 3, 0x20_2000 | 1];
    let good = Rig::mkey_cmd(pd, &pages, 0x11);
    // Each field the recipe fixes, broken one at a time.
    let cases: Vec<(Breaker, Syndrome)> = vec![
        (
            Box::new(|c| {
                c.put8(18, 0x3e);
            }),
            Syndrome::MkeyAccessMode,
        ), // KLM
        (
            Box::new(|c| {
                c.or8(16, 0x04);
            }),
            Syndrome::MkeyAccessMode,
        ), // access_mode_4_2
        (
            Box::new(|c| {
                c.put8(75, 13);
            }),
            Syndrome::MkeyPageSize,
        ),
        (
            Box::new(|c| {
                c.put24(20, 5);
            }),
            Syndrome::MkeyQpn,
        ),
        (
            Box::new(|c| {
                c.put64(40, 3 * 4096 + 1);
            }),
            Syndrome::MkeyLength,
        ),
        (
            Box::new(|c| {
                c.or8(28, 0x80);
            }),
            Syndrome::MkeyLength,
        ), // length64
        (
            Box::new(|c| {
                c.put32(68, 1);
            }),
            Syndrome::MkeyOctwords,
        ),
        (
            Box::new(|c| {
                c.put32(96, 3);
            }),
            Syndrome::MkeyOctwords,
        ),
        (
            Box::new(|c| {
                c.or8(12, 0x40);
            }),
            Syndrome::MkeyUmem,
        ),
        (
            Box::new(|c| {
                c.put64(272 + 8, 0x20_1004);
            }),
            Syndrome::MttNotAligned,
        ),
        (
            Box::new(|c| {
                c.put24(29, 0x777);
            }),
            Syndrome::UnknownPd,
        ),
        (
            Box::new(|c| {
                c.put64(40, 5 * 4096);
            }),
            Syndrome::InputTooShort,
        ), // 5 pages need 320 bytes
        (
            Box::new(|c| {
                c.put64(40, (1u64 << 32) + 4096);
            }),
            Syndrome::MkeyTooLarge,
        ),
        (
            Box::new(|c| {
                c.0.truncate(271);
            }),
            Syndrome::InputTooShort,
        ),
    ];
    for (i, (broken, syndrome)) in cases.iter().enumerate() {
        let mut c = good.clone();
        broken(&mut c);
        let out = rig.exec(0, &c, 16);
        assert_eq!(
            Syndrome::from_code(out.syndrome()),
            Some(*syndrome),
            "case {i}"
        );
        out.refused(*syndrome);
    }
    let scattered: Vec<u64> = (0..65).map(|i| 0x100_0000 + i * 0x2000).collect();
    rig.exec(0, &Rig::mkey_cmd(pd, &scattered, 1), 16)
        .refused(Syndrome::MkeyTooFragmented);
    assert_eq!(
        rig.fw(0).accounting().mkeys,
        0,
        "refused CREATE_MKEYs leave nothing"
    );
    // The good one; key = index << 8 | mkey_7_0.
    let out = rig.exec(0, &good, 16);
    let key = (out.ok().u24(9) << 8) | 0x11;
    assert_eq!(rig.fw(0).accounting().mkey_bytes, 3 * 4096);
    rig.destroy_mkey(0, key + 0x100)
        .refused(Syndrome::UnknownMkey);
    rig.destroy_mkey(0, key).ok();
    rig.destroy_mkey(0, key).refused(Syndrome::UnknownMkey);
    // MKEY limit.
    let keys: Vec<u32> = (0..mlx5vf_sim::firmware::MAX_MKEYS)
        .map(|_| rig.create_mkey(0, pd, &[0x20_0000], 9))
        .collect();
    rig.exec(0, &Rig::mkey_cmd(pd, &[0x20_0000], 9), 16)
        .refused(Syndrome::MkeyLimit);
    for k in keys {
        rig.destroy_mkey(0, k).ok();
    }
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn dma_through_mkeys_and_iommu() {
    let mut rig = Rig::one("sim:state=2M,object=64K-256K");
    let vhca = rig.vhca(0, 0);
    rig.stop(0, vhca);
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, 4 << 20);
    let (req, _) = rig.query_ok(0, vhca, false, false);
    // Unknown key, wrong variant byte, outside the mkey.
    rig.save(
        0,
        vhca,
        false,
        false,
        Buf {
            key: buf.key + 0x100,
            ..buf
        },
        req,
    )
    .refused(Syndrome::UnknownMkey);
    rig.save(
        0,
        vhca,
        false,
        false,
        Buf {
            key: buf.key ^ 1,
            ..buf
        },
        req,
    )
    .refused(Syndrome::MkeyVariant);
    rig.save(0, vhca, false, false, buf, (4 << 20) + 1)
        .refused(Syndrome::MkeyRange);
    let mut c = Rig::save_cmd(vhca, false, false, buf, req);
    c.put64(16, 4096); // va past start_addr 0: 4 KiB + req still fits…
    rig.exec(0, &c, 16).ok();
    c.put64(16, (4 << 20) - 4096); // …this does not.
    rig.exec(0, &c, 16).refused(Syndrome::MkeyRange);
    // The host refuses: DMA fault, INT_ERR.
    rig.mem.fail_calls = 1;
    rig.save(0, vhca, false, false, buf, req)
        .refused(Syndrome::DmaHostFault);
    // An mkey over an IOVA nobody mapped.
    let stray = rig.create_mkey(
        0,
        pd,
        &(0..512).map(|p| 0x7700_0000 + p * 4096).collect::<Vec<_>>(),
        3,
    );
    let unmapped = Buf {
        iova: 0x7700_0000,
        len: 2 << 20,
        key: stray,
    };
    rig.save(0, vhca, false, false, unmapped, req)
        .refused(Syndrome::DmaUnmapped);
    rig.load(0, vhca, unmapped, req)
        .refused(Syndrome::DmaUnmapped);
    rig.destroy_mkey(0, stray).ok();
    // IOMMU bookkeeping errors.
    assert!(rig.fw(0).iommu_map(buf.iova, 4096).is_err());
    assert!(rig.fw(0).iommu_unmap(buf.iova, 4096).is_err());
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.run(0, vhca);
    rig.assert_clean();
}

#[test]
fn migration_caps_gate_commands() {
    // PF without `migration`.
    let mut cfg = FirmwareConfig::single(VfConfig::DEFAULT);
    cfg.pf = PfConfig {
        migration: false,
        ..PfConfig::DEFAULT
    };
    let mut rig = Rig::new(&[cfg]);
    let vhca = rig.vhca(0, 0);
    rig.suspend(0, vhca, false)
        .refused(Syndrome::MigrationDisabled);
    // VF not migratable.
    let mut rig = Rig::one("sim:migratable=off,state=1M");
    let vhca = rig.vhca(0, 0);
    assert_eq!(rig.query_cap(0, Some(1), 0x40).0[32] & 0x80, 0);
    rig.suspend(0, vhca, false).refused(Syndrome::NotMigratable);
    rig.query(0, vhca, false, false)
        .refused(Syndrome::NotMigratable);
    // No chunk mode / no tracking.
    let mut rig = Rig::one("sim:chunks=off,precopy=off,state=1M");
    let vhca = rig.vhca(0, 0);
    rig.query(0, vhca, false, true)
        .refused(Syndrome::ChunkNotSupported);
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, 2 << 20);
    rig.save(0, vhca, false, true, buf, 2 << 20)
        .refused(Syndrome::TrackingNotSupported);
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn config_errors_name_the_fix() {
    let too_many = mlx5vf_sim::SimSpec::parse("sim:state=1T,object=4K-8K").unwrap();
    let err = Firmware::new(&FirmwareConfig::from_spec(&too_many)).unwrap_err();
    assert!(
        err.to_string()
            .contains("raise the object= sizes or lower state="),
        "{err}"
    );
    let tiny = mlx5vf_sim::SimSpec::parse("sim:state=100").unwrap();
    let err = Firmware::new(&FirmwareConfig::from_spec(&tiny)).unwrap_err();
    assert!(err.to_string().contains("state too small"), "{err}");
    assert!(FirmwareConfig::with_vfs(&[]).is_err());
    assert!(FirmwareConfig::with_vfs(&[VfConfig::DEFAULT; 5]).is_err());
}
