//! Help text the commands share, built from the tables the parsers use, and
//! the one-line form of clap's usage errors.
//!
//! The device-spec section of `--help` lists the `sim:` keys from
//! [`mlx5vf_sim::spec::KEYS`] (the table the spec parser looks names up in,
//! defaults from [`mlx5vf_sim::SimSpec::DEFAULT`]) and the `iommu=` values
//! from [`IommuPath::CHOICES`], so the help cannot offer a key the parser
//! refuses or miss one it accepts; every example's specs parse (a test).

use std::fmt::Write as _;

use clap::CommandFactory;
use clap::error::ErrorKind;
use mlx5vf_sim::spec::KEYS;

use super::Cli;
use crate::vfio::{BUSES, IommuPath};

/// Examples of `mlx5vf save`.
pub const SAVE_EXAMPLES: &[&str] = &[
    "mlx5vf save --device sim:state=4G -o state.bin",
    "mlx5vf save --device sim:state=4G,dirty=1M --precopy -o tls://dest.example:7000 --tls-creds /etc/pki/qemu",
    "mlx5vf save --device sim:state=64M -o tcp://127.0.0.1:7000",
    "mlx5vf save --device sim:state=64M,chunks=off -o - | mlx5vf load --device sim",
    "mlx5vf save --device vfio-mig:0000:3b:00.2 -o vf.bin",
    "mlx5vf save --device vfio-fd:5,container=4 -o vf.bin",
    "mlx5vf save --device vfio-pf:0000:3b:00.0,vf=1 -o vf.bin",
];

/// Examples of `mlx5vf load`.
pub const LOAD_EXAMPLES: &[&str] = &[
    "mlx5vf load --device sim -i state.bin",
    "mlx5vf load --device sim:vfs=2,seed=7 -i tls-listen://0.0.0.0:7000 --tls-creds /etc/pki/qemu",
    "mlx5vf load --device sim -i tcp-listen://127.0.0.1:7000 --accept-timeout 30s",
    "mlx5vf load --device vfio-mig:/sys/bus/pci/devices/0000:3c:00.2 -i vf.bin",
];

/// Examples of `mlx5vf migrate`.
pub const MIGRATE_EXAMPLES: &[&str] = &[
    "mlx5vf migrate --from sim:state=4G,dirty=2M,fw-rate=4G/s --to sim --precopy",
    "mlx5vf migrate --from sim:state=1G,object=4K-1M --to sim:seed=9 --chunk-slots 4",
    "mlx5vf migrate --from vfio-mig:0000:3b:00.2 --to vfio-mig:0000:3b:00.3,iommu=group",
    "mlx5vf migrate --from sim:state=1G,transport=cmdq --to sim:transport=cmdq",
    "mlx5vf migrate --from vfio-pf:0000:3b:00.0,vf=0 --to vfio-pf:0000:3c:00.0,vf=0,timeout=30s",
    "mlx5vf pass-fds --device vfio-mig:0000:3b:00.2 -- mlx5vf migrate --from {0} --to sim",
];

/// Examples of `mlx5vf check`.
pub const CHECK_EXAMPLES: &[&str] = &[
    "mlx5vf check --device sim:state=32M,latency=200us --strict",
    "mlx5vf check --device sim:precopy=off",
    "mlx5vf check --device sim:state=32M,transport=cmdq --strict",
    "mlx5vf check --device vfio-mig:0000:3b:00.2,iommu=cdev --strict --require-eagain",
    "mlx5vf check --device vfio-fd:7,iommufd=8",
];

/// Examples of `mlx5vf pass-fds`.
pub const PASS_FDS_EXAMPLES: &[&str] = &[
    "mlx5vf pass-fds --device vfio-mig:0000:3b:00.2 -- mlx5vf check --device {0} --strict",
    "mlx5vf pass-fds --device vfio-mig:0000:3b:00.2 --device vfio-mig:0000:3b:00.3 -- \
     mlx5vf migrate --from {0} --to {1}",
];

/// An `Examples:` section.
pub fn examples(examples: &[&str]) -> String {
    let mut s = String::from("Examples:");
    for example in examples {
        let _ = write!(s, "\n  {example}");
    }
    s
}

/// Width of the name column of the key lists.
const NAME_COLUMN: usize = 22;

/// The device-spec section of the `--help` of a command that takes a
/// device, followed by `examples`.
pub fn device_specs(examples: &[&str]) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(s, "Device specs (SPEC):");
    let _ = writeln!(s, "  sim[:KEY=VALUE,...]");
    let _ = writeln!(
        s,
        "      The built-in simulated mlx5 PF with migratable VFs; the driver runs in this\n      \
         process, on VF 0. Bare `sim` takes every default; each key at most once."
    );
    for key in &KEYS {
        let mut name = format!("{}={}", key.name, key.value);
        if let Some(alias) = key.alias {
            let _ = write!(name, " (or {alias}=)");
        }
        let _ = writeln!(
            s,
            "        {name:<NAME_COLUMN$} {} [default: {}]",
            key.meaning,
            key.default_value()
        );
    }
    let _ = writeln!(
        s,
        "      SIZE: digits with an optional K, M, G or T (binary, any case). DURATION: 0, or\n      \
         digits with ns, us, ms or s."
    );
    let choices: Vec<&str> = IommuPath::CHOICES.iter().map(|(n, _, _)| *n).collect();
    let _ = writeln!(s, "  vfio-mig:DEVICE[,iommu={}]", choices.join("|"));
    let _ = writeln!(
        s,
        "      A device behind the kernel's VFIO migration uAPI v2, e.g. a ConnectX VF bound to\n      \
         mlx5_vfio_pci (needs access to /dev/vfio). Its driver has its own policy: the\n      \
         saving and loading policy flags apply to sim devices only. DEVICE is a sysfs device\n      \
         directory (/sys/bus/pci/devices/0000:3b:00.2), a device name found under\n      \
         /sys/bus/{{{}}}/devices (0000:3b:00.2), or a VFIO character device\n      \
         (/dev/vfio/devices/vfioN).",
        BUSES.join(",")
    );
    for (i, (name, _, meaning)) in IommuPath::CHOICES.iter().enumerate() {
        let default = if i == 0 { " [default]" } else { "" };
        let _ = writeln!(
            s,
            "        {:<NAME_COLUMN$} {meaning}{default}",
            format!("iommu={name}")
        );
    }
    let _ = writeln!(
        s,
        "  vfio-fd:DEVICE_FD,container=FD\n  vfio-fd:DEVICE_FD,iommufd=FD"
    );
    let _ = writeln!(
        s,
        "      The same device through descriptors this process inherited from its parent\n      \
         (a VMM's, as QEMU's fd= options take them): a VFIO device fd with the container its\n      \
         group is attached to, or a VFIO character-device fd with the iommufd it is bound\n      \
         to. The tool checks them (VFIO_DEVICE_GET_INFO, the container's API version or the\n      \
         iommufd's IOMMU_OPTION, migration with STOP_COPY), works on duplicates and leaves\n      \
         the inherited fds open; it maps no DMA (migration needs none), so the VMM's\n      \
         mappings stay as they are. `mlx5vf pass-fds` opens devices and runs a program so."
    );
    let _ = writeln!(
        s,
        "  vfio-pf:PF[,vf=N][,iommu={}][,timeout=DURATION][,checksums=on|off]",
        choices.join("|")
    );
    let _ = writeln!(
        s,
        "      A ConnectX PF bound to vfio-pci with SR-IOV on, driven by this process itself: its\n      \
         command queue through BAR0 and DMA memory mapped through the IOMMU, the function\n      \
         brought up and torn down here, the driver (and its policy flags) on VF N [default: 0].\n      \
         timeout: each command's deadline [default: the firmware's cmd_exec_to];\n      \
         checksums: signed entries and mailboxes [default: off, as Linux]. PF is named as\n      \
         for vfio-mig:. sim:...,transport=cmdq runs the same code over the simulated PF."
    );
    let _ = writeln!(s, "\nExamples:");
    for example in examples {
        let _ = writeln!(s, "  {example}");
    }
    s.truncate(s.trim_end().len());
    s
}

/// The short pointer `-h` shows in place of the device-spec section.
pub const DEVICE_SPECS_SHORT: &str = "SPEC is sim[:KEY=VALUE,...], vfio-mig:DEVICE[,iommu=...], \
     vfio-fd:FD,container=FD|iommufd=FD or vfio-pf:PF[,vf=N,...]; --help lists the keys, their \
     defaults and examples.";

/// A clap error as the one line `main` prints after `mlx5vf: `: clap's
/// message (a list of missing arguments joined onto it), its tip if it has
/// one, and the help of the (sub)command `args` named. clap's own rendering
/// spans several lines (message, tip, usage, "for more information").
///
/// `args` are the command line without the program name.
pub fn usage_error_line<S: AsRef<str>>(err: &clap::Error, args: &[S]) -> String {
    let rendered = err.render().to_string();
    let mut message = Vec::new();
    let mut tips = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip);
        } else if !line.is_empty()
            && !line.starts_with("Usage: ")
            && !line.starts_with("For more information")
        {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut line = match (err.kind(), message.split_first()) {
        // "the following required arguments were not provided:" and then
        // one argument per line.
        (ErrorKind::MissingRequiredArgument, Some((_, missing))) if !missing.is_empty() => {
            format!("missing required argument(s): {}", missing.join(" "))
        }
        // clap renders the whole help here.
        (ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, _) => {
            "a subcommand is required".to_owned()
        }
        _ => message.join(" "),
    };
    for tip in tips {
        let _ = write!(line, " ({tip})");
    }
    let _ = write!(line, "; see '{} --help'", subcommand_path(args));
    line
}

/// `mlx5vf` and the subcommands that lead `args` (`mlx5vf states next`).
fn subcommand_path<S: AsRef<str>>(args: &[S]) -> String {
    let root = Cli::command();
    let mut path = vec![root.get_name().to_owned()];
    let mut cmd = &root;
    for arg in args {
        match cmd.find_subcommand(arg.as_ref()) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                cmd = sub;
            }
            None => break,
        }
    }
    path.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every example in a `--help` is a command line the tool accepts, and
    /// every device spec in it parses.
    #[test]
    fn the_examples_parse() {
        let all = [
            SAVE_EXAMPLES,
            LOAD_EXAMPLES,
            MIGRATE_EXAMPLES,
            CHECK_EXAMPLES,
            PASS_FDS_EXAMPLES,
        ];
        for example in all.into_iter().flatten() {
            for command in example.split(" | ") {
                let words: Vec<&str> = command.split_whitespace().collect();
                // pass-fds runs a command line of its own after `--`, with
                // {N} standing for a vfio-fd: spec.
                if let Some(i) = words.iter().position(|w| *w == "--") {
                    let inner: Vec<String> = words[i + 1..]
                        .iter()
                        .map(|w| {
                            w.replace("{0}", "vfio-fd:5,container=4")
                                .replace("{1}", "vfio-fd:7,iommufd=6")
                        })
                        .collect();
                    if let Err(e) = Cli::try_parse_from(&inner) {
                        panic!("{command}: {}", usage_error_line(&e, &inner[1..]));
                    }
                }
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{command}: {}", usage_error_line(&e, &words[1..]));
                }
                for spec in words.iter().filter(|w| w.starts_with("sim")) {
                    mlx5vf_sim::SimSpec::parse(spec).unwrap();
                }
                for spec in words.iter().filter(|w| w.starts_with("vfio-mig:")) {
                    crate::vfio::VfioSpec::parse(spec).unwrap();
                }
                for spec in words.iter().filter(|w| w.starts_with("vfio-fd:")) {
                    crate::vfio::FdSpec::parse(spec).unwrap();
                }
                for spec in words.iter().filter(|w| w.starts_with("vfio-pf:")) {
                    crate::vfio_pf::PfSpec::parse(spec).unwrap();
                }
            }
        }
    }

    #[test]
    fn the_spec_section_lists_every_key_with_its_default() {
        let text = device_specs(&["mlx5vf check"]);
        for key in &KEYS {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{}=", key.name)))
                .unwrap_or_else(|| panic!("no line for {} in\n{text}", key.name));
            assert!(
                line.ends_with(&format!("[default: {}]", key.default_value())),
                "{line}"
            );
        }
        assert!(text.contains("vfs=N (or vf=)"), "{text}");
        assert!(
            text.contains("vfio-mig:DEVICE[,iommu=auto|group|cdev]"),
            "{text}"
        );
        assert!(text.contains("vfio-fd:DEVICE_FD,container=FD"), "{text}");
        assert!(text.contains("vfio-fd:DEVICE_FD,iommufd=FD"), "{text}");
        assert!(text.ends_with("Examples:\n  mlx5vf check"), "{text}");
    }

    fn parse_error(args: &[&str]) -> String {
        let err =
            Cli::try_parse_from(std::iter::once("mlx5vf").chain(args.iter().copied())).unwrap_err();
        usage_error_line(&err, args)
    }

    #[test]
    fn usage_errors_are_one_line_naming_the_subcommand() {
        assert_eq!(
            parse_error(&["states", "next"]),
            "missing required argument(s): <FROM> <TO>; see 'mlx5vf states next --help'"
        );
        assert_eq!(
            parse_error(&["save", "--josn"]),
            "unexpected argument '--josn' found (a similar argument exists: '--json'); \
             see 'mlx5vf save --help'"
        );
        assert_eq!(
            parse_error(&["load", "--chunk-size", "8M"]),
            "unexpected argument '--chunk-size' found; see 'mlx5vf load --help'"
        );
        assert_eq!(
            parse_error(&["save", "--chunk-size", "8Q"]),
            "invalid value '8Q' for '--chunk-size <SIZE>': \"8Q\" is not a size like 8M, \
             512K or 4096; see 'mlx5vf save --help'"
        );
        assert_eq!(
            parse_error(&[]),
            "a subcommand is required; see 'mlx5vf --help'"
        );
        assert_eq!(
            parse_error(&["states"]),
            "a subcommand is required; see 'mlx5vf states --help'"
        );
    }
}
