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

/// The keys a spec takes, in the order `--help` shows them.
const KEYS: [&str; 4] = ["vf", "iommu", "timeout", "checksums"];
/// The largest VF index: its function id (`vf + 1`) is 16 bits.
const MAX_VF: u16 = u16::MAX - 1;

/// Parses a positive duration with its unit: `250ms`, `50us`, `60s` (a
/// bare number, and zero, are refused).
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

/// The message for a bad value of `key`: the value and the form expected.
fn expected(key: &str, value: Option<&str>) -> String {
    let form = match key {
        "vf" => format!("vf=N with N in 0..={MAX_VF}"),
        "iommu" => "iommu=auto|group|cdev".to_owned(),
        "timeout" => "timeout=<n>us|ms|s with n > 0, e.g. timeout=30s".to_owned(),
        _ => "checksums=on|off".to_owned(),
    };
    match value {
        Some(v) => format!("vfio-pf: {key}={v:?}: expected {form}"),
        None => format!("vfio-pf: {key} needs a value: expected {form}"),
    }
}

impl PfSpec {
    /// Parses a `vfio-pf:` spec. Each key may be given once.
    ///
    /// # Errors
    /// One message per mistake, naming the key and the form it takes: a
    /// missing PF, a PF that looks like an option (`vfio-pf:vf=1`), an
    /// empty option or key, a key given twice, an unknown key, a bad value.
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
        if device.contains('=') {
            return Err(format!(
                "vfio-pf: {device:?} is an option, not a PF: the PF comes first \
                 (vfio-pf:0000:3b:00.0,{device})"
            ));
        }
        let mut s = Self {
            device: device.to_owned(),
            vf: 0,
            iommu: IommuPath::Auto,
            timeout: None,
            checksums: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            if key.is_empty() {
                return Err(format!(
                    "vfio-pf: an empty option{} (a stray comma?)",
                    value.map_or(String::new(), |v| format!(" key before ={v:?}"))
                ));
            }
            if !KEYS.contains(&key) {
                return Err(format!(
                    "vfio-pf: unknown option {key:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
            if seen.contains(&key) {
                return Err(format!("vfio-pf: {key}= is given twice"));
            }
            seen.push(key);
            let bad = || expected(key, value);
            let v = value.ok_or_else(bad)?;
            match key {
                "vf" => {
                    s.vf = v.parse().ok().filter(|n| *n <= MAX_VF).ok_or_else(bad)?;
                }
                "iommu" => {
                    s.iommu = IommuPath::CHOICES
                        .iter()
                        .find(|(name, _, _)| *name == v)
                        .map(|(_, p, _)| *p)
                        .ok_or_else(bad)?;
                }
                "timeout" => s.timeout = Some(duration(v).ok_or_else(bad)?),
                _ => {
                    s.checksums = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad()),
                    };
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
        let s = PfSpec::parse("vfio-pf:x,vf=65534,timeout=50us,checksums=off").unwrap();
        assert_eq!((s.vf, s.timeout), (65534, Some(Duration::from_micros(50))));
        assert!(!s.checksums);
    }

    /// Each mistake has one message, naming the key and the form expected.
    #[test]
    fn each_mistake_says_what_is_expected() {
        let vf = "expected vf=N with N in 0..=65534";
        let timeout = "expected timeout=<n>us|ms|s with n > 0, e.g. timeout=30s";
        let cases: [(&str, &str); 20] = [
            ("vfio-mig:x", "is not a vfio-pf: spec"),
            (
                "vfio-pf:",
                "vfio-pf: needs the PF: a sysfs path or a PCI name",
            ),
            ("vfio-pf:,vf=1", "vfio-pf: needs the PF"),
            (
                "vfio-pf:vf=1",
                "vfio-pf: \"vf=1\" is an option, not a PF: the PF comes first",
            ),
            ("vfio-pf:x,", "vfio-pf: an empty option (a stray comma?)"),
            (
                "vfio-pf:x,,vf=1",
                "vfio-pf: an empty option (a stray comma?)",
            ),
            ("vfio-pf:x,=3", "vfio-pf: an empty option key before =\"3\""),
            ("vfio-pf:x,vf=1,vf=2", "vfio-pf: vf= is given twice"),
            (
                "vfio-pf:x,checksums=on,checksums=on",
                "vfio-pf: checksums= is given twice",
            ),
            (
                "vfio-pf:x,color=red",
                "vfio-pf: unknown option \"color\" (known: vf, iommu, timeout, checksums)",
            ),
            ("vfio-pf:x,vf=abc", vf),
            ("vfio-pf:x,vf=70000", vf),
            ("vfio-pf:x,vf=65535", vf),
            ("vfio-pf:x,vf=-1", vf),
            ("vfio-pf:x,vf", "vfio-pf: vf needs a value: expected vf=N"),
            (
                "vfio-pf:x,iommu=smmu",
                "vfio-pf: iommu=\"smmu\": expected iommu=auto|group|cdev",
            ),
            ("vfio-pf:x,timeout=5", timeout),
            ("vfio-pf:x,timeout=0s", timeout),
            ("vfio-pf:x,timeout=5m", timeout),
            (
                "vfio-pf:x,checksums=yes",
                "vfio-pf: checksums=\"yes\": expected checksums=on|off",
            ),
        ];
        for (spec, want) in cases {
            let e = PfSpec::parse(spec).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
        let e = PfSpec::parse("vfio-pf:x,vf=abc").unwrap_err();
        assert_eq!(e, format!("vfio-pf: vf=\"abc\": {vf}"));
        let e = PfSpec::parse("vfio-pf:x,timeout=0").unwrap_err();
        assert_eq!(e, format!("vfio-pf: timeout=\"0\": {timeout}"));
    }
}
