//! The `vfio-pf:` spec.

use std::time::Duration;

use crate::vfio::IommuPath;

/// A parsed `vfio-pf:PF[,vf=N][,iommu=auto|group|cdev][,timeout=DURATION][,checksums=on|off]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PfSpec {
    /// The PF as written: a sysfs path or a PCI name (`0000:3b:00.0`).
    pub device: String,
    /// The VF to migrate (0-based; function id `vf + 1`).
    pub vf: u16,
    /// How to reach the IOMMU.
    pub iommu: IommuPath,
    /// The command deadline (default: what firmware advertises).
    pub timeout: Option<Duration>,
    /// Signatures on entries and mailboxes.
    pub checksums: bool,
}

/// Parses `0`, `250ms`, `50us`, `60s`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        _ => None,
    }
    .filter(|d| !d.is_zero())
}

impl PfSpec {
    /// Parses a `vfio-pf:` spec.
    ///
    /// # Errors
    /// A message naming what is wrong.
    ///
    /// # Example
    /// ```
    /// use mlx5vf::vfio_pf::PfSpec;
    /// let s = PfSpec::parse("vfio-pf:0000:3b:00.0,vf=2,timeout=5s").unwrap();
    /// assert_eq!((s.device.as_str(), s.vf), ("0000:3b:00.0", 2));
    /// assert_eq!(s.timeout, Some(std::time::Duration::from_secs(5)));
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        let rest = spec
            .strip_prefix("vfio-pf:")
            .ok_or_else(|| format!("{spec:?} is not a vfio-pf: spec"))?;
        let mut parts = rest.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() {
            return Err(
                "vfio-pf: needs the PF: a sysfs path or a PCI name such as 0000:3b:00.0".into(),
            );
        }
        let mut s = Self {
            device: device.to_owned(),
            vf: 0,
            iommu: IommuPath::Auto,
            timeout: None,
            checksums: false,
        };
        for part in parts {
            let bad = || format!("vfio-pf: bad option {part:?}");
            match part.split_once('=') {
                Some(("vf", v)) => s.vf = v.parse().map_err(|_| bad())?,
                Some(("iommu", v)) => {
                    s.iommu = IommuPath::CHOICES
                        .iter()
                        .find(|(name, _, _)| *name == v)
                        .map(|(_, p, _)| *p)
                        .ok_or_else(|| {
                            format!("vfio-pf: iommu={v:?}: expected auto, group or cdev")
                        })?;
                }
                Some(("timeout", v)) => s.timeout = Some(duration(v).ok_or_else(bad)?),
                Some(("checksums", "on")) => s.checksums = true,
                Some(("checksums", "off")) => s.checksums = false,
                _ => {
                    return Err(format!(
                        "vfio-pf: unknown option {part:?} (known: vf=, iommu=, timeout=, checksums=)"
                    ));
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let s = PfSpec::parse("vfio-pf:/sys/bus/pci/devices/0000:3b:00.0").unwrap();
        assert_eq!(
            (s.vf, s.iommu, s.timeout, s.checksums),
            (0, IommuPath::Auto, None, false)
        );
        let s = PfSpec::parse("vfio-pf:0000:3b:00.0,vf=3,iommu=cdev,timeout=250ms,checksums=on")
            .unwrap();
        assert_eq!((s.vf, s.iommu), (3, IommuPath::Cdev));
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        assert!(s.checksums);
        for bad in [
            "vfio-pf:",
            "vfio-pf:,vf=1",
            "vfio-pf:x,vf=-1",
            "vfio-pf:x,iommu=smmu",
            "vfio-pf:x,timeout=5",
            "vfio-pf:x,timeout=0s",
            "vfio-pf:x,checksums=yes",
            "vfio-pf:x,color=red",
            "vfio-mig:x",
        ] {
            assert!(PfSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
