//! The device specs of the VFIO client: `vfio-mig:` (the tool opens the
//! device) and `vfio-fd:` (it adopts descriptors its parent opened).

use std::os::fd::RawFd;

/// How the device is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuPath {
    /// iommufd cdev if the kernel has it for the device, else group.
    Auto,
    /// `/dev/vfio/vfio` container and `/dev/vfio/GROUP`.
    Group,
    /// `/dev/vfio/devices/vfioN` bound to `/dev/iommu`.
    Cdev,
}

impl IommuPath {
    /// Every value of `iommu=`: its name, the path, and what it takes. The
    /// parser looks names up here and `--help` lists it; the first is the
    /// default.
    pub const CHOICES: [(&'static str, Self, &'static str); 3] = [
        (
            "auto",
            Self::Auto,
            "cdev when the kernel has one for the device, else group (as QEMU does)",
        ),
        (
            "group",
            Self::Group,
            "the /dev/vfio/vfio container (type1v2 IOMMU) and /dev/vfio/GROUP",
        ),
        (
            "cdev",
            Self::Cdev,
            "iommufd: /dev/vfio/devices/vfioN bound to /dev/iommu",
        ),
    ];

    /// Its name in a spec.
    pub fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, path, _)| *path == self)
            .map_or("auto", |(name, _, _)| name)
    }
}

/// A parsed `vfio-mig:` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioSpec {
    /// The device as written.
    pub device: String,
    /// How to reach it.
    pub iommu: IommuPath,
}

impl VfioSpec {
    /// Parses `vfio-mig:DEVICE[,iommu=auto|group|cdev]`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    ///
    /// # Example
    /// ```
    /// use mlx5vf::vfio::{IommuPath, VfioSpec};
    /// let s = VfioSpec::parse("vfio-mig:0000:3b:00.2,iommu=group").unwrap();
    /// assert_eq!(s.device, "0000:3b:00.2");
    /// assert_eq!(s.iommu, IommuPath::Group);
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        let rest = spec
            .strip_prefix("vfio-mig:")
            .ok_or_else(|| format!("{spec:?} is not a vfio-mig: spec"))?;
        let mut parts = rest.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() {
            return Err(
                "vfio-mig: needs a device: a sysfs path, a device name (0000:3b:00.2) or \
                 /dev/vfio/devices/vfioN"
                    .to_owned(),
            );
        }
        let mut iommu = IommuPath::Auto;
        for part in parts {
            match part.split_once('=') {
                Some(("iommu", v)) => {
                    iommu = IommuPath::CHOICES
                        .iter()
                        .find(|(name, _, _)| *name == v)
                        .map(|(_, path, _)| *path)
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                IommuPath::CHOICES.iter().map(|(n, _, _)| *n).collect();
                            format!("vfio-mig: iommu={v:?}: expected {}", names.join(", "))
                        })?;
                }
                _ => return Err(format!("vfio-mig: unknown option {part:?} (known: iommu=)")),
            }
        }
        Ok(Self {
            device: device.to_owned(),
            iommu,
        })
    }
}

/// The IOMMU context an adopted device fd came with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuFdNumber {
    /// The VFIO container the device's group is attached to (legacy path).
    Container(RawFd),
    /// The iommufd the device's character device is bound to (cdev path).
    Iommufd(RawFd),
}

/// A parsed `vfio-fd:` spec: descriptor numbers this process inherited
/// from its parent, as QEMU's `fd=` options take a VMM's descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdSpec {
    /// The VFIO device fd.
    pub device: RawFd,
    /// Its container or iommufd.
    pub iommu: IommuFdNumber,
}

impl FdSpec {
    /// Parses `vfio-fd:DEVICE_FD,container=FD` or
    /// `vfio-fd:DEVICE_FD,iommufd=FD`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    ///
    /// # Example
    /// ```
    /// use mlx5vf::vfio::{FdSpec, IommuFdNumber};
    /// let s = FdSpec::parse("vfio-fd:5,container=4").unwrap();
    /// assert_eq!(s.device, 5);
    /// assert_eq!(s.iommu, IommuFdNumber::Container(4));
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        const GRAMMAR: &str = "vfio-fd:DEVICE_FD,container=FD or vfio-fd:DEVICE_FD,iommufd=FD";
        let rest = spec
            .strip_prefix("vfio-fd:")
            .ok_or_else(|| format!("{spec:?} is not a vfio-fd: spec"))?;
        let mut parts = rest.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() {
            return Err(format!("vfio-fd: needs a device fd: {GRAMMAR}"));
        }
        let device = fd_number("the device fd", device)?;
        let mut iommu = None;
        for part in parts {
            let number = match part.split_once('=') {
                Some(("container", v)) => IommuFdNumber::Container(fd_number("container=", v)?),
                Some(("iommufd", v)) => IommuFdNumber::Iommufd(fd_number("iommufd=", v)?),
                _ => {
                    return Err(format!(
                        "vfio-fd: unknown option {part:?} (known: container=, iommufd=)"
                    ));
                }
            };
            if iommu.replace(number).is_some() {
                return Err("vfio-fd: give one of container= and iommufd=, once".to_owned());
            }
        }
        let iommu = iommu.ok_or_else(|| {
            format!("vfio-fd: needs the device's container=FD or iommufd=FD: {GRAMMAR}")
        })?;
        let other = match iommu {
            IommuFdNumber::Container(n) | IommuFdNumber::Iommufd(n) => n,
        };
        if other == device {
            return Err(format!(
                "vfio-fd: the device fd and its IOMMU fd are both {device}"
            ));
        }
        Ok(Self { device, iommu })
    }

    /// The spec as it is written.
    pub fn to_spec(self) -> String {
        match self.iommu {
            IommuFdNumber::Container(c) => format!("vfio-fd:{},container={c}", self.device),
            IommuFdNumber::Iommufd(i) => format!("vfio-fd:{},iommufd={i}", self.device),
        }
    }
}

/// A descriptor number: decimal digits, at least 0.
fn fd_number(what: &str, text: &str) -> Result<RawFd, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "vfio-fd: {what} {text:?} is not a file descriptor number"
        ));
    }
    text.parse()
        .map_err(|_| format!("vfio-fd: {what} {text:?} is too large for a file descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vfio_mig_specs() {
        let s = VfioSpec::parse("vfio-mig:/sys/bus/pci/devices/0000:3b:00.2").unwrap();
        assert_eq!(s.device, "/sys/bus/pci/devices/0000:3b:00.2");
        assert_eq!(s.iommu, IommuPath::Auto);
        let s = VfioSpec::parse("vfio-mig:/dev/vfio/devices/vfio3,iommu=cdev").unwrap();
        assert_eq!(s.iommu, IommuPath::Cdev);
        for bad in [
            "vfio-mig:",
            "vfio-mig:,iommu=group",
            "vfio-mig:x,iommu=smmu",
            "vfio-mig:x,y=z",
            "sim:",
        ] {
            assert!(VfioSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_vfio_fd_specs() {
        let s = FdSpec::parse("vfio-fd:5,container=4").unwrap();
        assert_eq!(
            s,
            FdSpec {
                device: 5,
                iommu: IommuFdNumber::Container(4)
            }
        );
        assert_eq!(s.to_spec(), "vfio-fd:5,container=4");
        let s = FdSpec::parse("vfio-fd:0,iommufd=12").unwrap();
        assert_eq!(s.iommu, IommuFdNumber::Iommufd(12));
        assert_eq!(s.to_spec(), "vfio-fd:0,iommufd=12");
        for (bad, says) in [
            ("vfio-fd:", "needs a device fd"),
            ("vfio-fd:,container=3", "needs a device fd"),
            ("vfio-fd:5", "needs the device's container=FD or iommufd=FD"),
            (
                "vfio-fd:x,container=3",
                "\"x\" is not a file descriptor number",
            ),
            (
                "vfio-fd:-1,container=3",
                "\"-1\" is not a file descriptor number",
            ),
            (
                "vfio-fd:+5,container=3",
                "\"+5\" is not a file descriptor number",
            ),
            (
                "vfio-fd:5,container=",
                "container= \"\" is not a file descriptor",
            ),
            ("vfio-fd:99999999999,container=3", "too large"),
            (
                "vfio-fd:5,container=4,iommufd=6",
                "one of container= and iommufd=",
            ),
            (
                "vfio-fd:5,container=4,container=4",
                "one of container= and iommufd=",
            ),
            ("vfio-fd:5,group=4", "unknown option \"group=4\""),
            ("vfio-fd:5,container=5", "both 5"),
            ("vfio-mig:5", "not a vfio-fd: spec"),
        ] {
            let e = FdSpec::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
