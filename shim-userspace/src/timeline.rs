//! Where a migration's time goes, chunk by chunk: for each firmware image
//! (FW_DATA record) of the stream, when firmware SAVEd it, when the source
//! read it out of the device, when the destination wrote it into the
//! device, and when firmware LOADed it; and the moments the source stopped
//! and the destination ran again.
//!
//! Transfers report the reads and writes ([`Timeline::moved`]); a backend
//! that sees its firmware's commands (the simulated device) reports SAVE and
//! LOAD ([`Timeline::firmware`]). A SAVE or LOAD is matched to its image by
//! order: every SAVE yields the next FW_DATA record of the stream and every
//! LOAD takes the next one, each side one command at a time in order.
//!
//! Memory is bounded: [`MAX_IMAGES`] images are kept, later ones counted as
//! dropped.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Most images a timeline keeps: a 64 GiB state in 8 MiB chunks, and then
/// some (each costs 96 bytes: four optional bars).
pub const MAX_IMAGES: usize = 1 << 16;

/// The rows of a timeline, in the order an image passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Firmware saving the image into a device buffer.
    Save,
    /// The source reading it out of the device, straight into the sender
    /// (in `migrate` the read is the send: one copy into the pipe).
    Read,
    /// The destination writing it into a device buffer, as it arrives.
    Receive,
    /// Firmware loading it from the buffer.
    Load,
}

impl Lane {
    /// Every lane, top to bottom.
    pub const ALL: [Self; 4] = [Self::Save, Self::Read, Self::Receive, Self::Load];

    /// Its row name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Save => "SAVE",
            Self::Read => "read + send",
            Self::Receive => "receive",
            Self::Load => "LOAD",
        }
    }

    /// Its position in [`Lane::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Save => 0,
            Self::Read => 1,
            Self::Receive => 2,
            Self::Load => 3,
        }
    }
}

/// A moment worth a vertical line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The source stopped (STOP_COPY entered): downtime starts.
    Stopped,
    /// The destination runs again: downtime ends.
    Running,
}

impl Mark {
    /// Its label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Stopped => "source stopped",
            Self::Running => "destination running",
        }
    }
}

/// A bar: seconds since the timeline's origin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// Start.
    pub start: f64,
    /// End (at least `start`).
    pub end: f64,
}

/// What a timeline holds, for drawing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Per image, its bar in each lane ([`Lane::ALL`] order), where seen.
    pub images: Vec<[Option<Bar>; 4]>,
    /// The marks, in seconds since the origin.
    pub marks: Vec<(Mark, f64)>,
    /// Images beyond [`MAX_IMAGES`], not kept.
    pub dropped: u64,
}

impl Snapshot {
    /// The last moment anything ended.
    pub fn end(&self) -> f64 {
        let bars = self.images.iter().flatten().flatten().map(|b| b.end);
        let marks = self.marks.iter().map(|(_, t)| *t);
        bars.chain(marks).fold(0.0, f64::max)
    }
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: Snapshot,
    /// Firmware commands seen per lane (SAVE and LOAD ordinals).
    commands: [u64; 4],
}

/// A thread-safe recorder of a migration's timeline (module docs).
#[derive(Debug)]
pub struct Timeline {
    origin: Instant,
    inner: Mutex<Inner>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `lane` worked on images `first..=last` (stream ordinals of FW_DATA
    /// records) from `start` to `end`: each image's bar grows to cover it.
    pub fn moved(&self, lane: Lane, first: u64, last: u64, start: Instant, end: Instant) {
        let (start, end) = (
            self.seconds(start),
            self.seconds(end).max(self.seconds(start)),
        );
        self.with(|inner| {
            // Past the bound, one count per image without visiting each.
            let kept = last.min(MAX_IMAGES as u64);
            for image in first..=kept {
                widen(&mut inner.snapshot, image, lane, Bar { start, end });
            }
            inner.snapshot.dropped += last.saturating_sub(kept.max(first.saturating_sub(1)));
        });
    }

    /// Firmware ran the next command of `lane` (a SAVE or a LOAD) from
    /// `start` to `end`; it belongs to the next image of that lane.
    pub fn firmware(&self, lane: Lane, start: Instant, end: Instant) {
        let (start, end) = (
            self.seconds(start),
            self.seconds(end).max(self.seconds(start)),
        );
        self.with(|inner| {
            let Some(count) = inner.commands.get_mut(lane.index()) else {
                return;
            };
            let image = *count;
            *count += 1;
            widen(&mut inner.snapshot, image, lane, Bar { start, end });
        });
    }

    /// `mark` happened at `at`.
    pub fn mark(&self, mark: Mark, at: Instant) {
        let t = self.seconds(at);
        self.with(|inner| inner.snapshot.marks.push((mark, t)));
    }

    /// A copy of what was recorded.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|inner| inner.snapshot.clone())
    }
}

/// Grows `image`'s bar in `lane` to cover `bar`.
fn widen(s: &mut Snapshot, image: u64, lane: Lane, bar: Bar) {
    let Ok(at) = usize::try_from(image) else {
        s.dropped += 1;
        return;
    };
    if at >= MAX_IMAGES {
        s.dropped += 1;
        return;
    }
    if s.images.len() <= at {
        s.images.resize(at + 1, [None; 4]);
    }
    let Some(slot) = s.images.get_mut(at).and_then(|i| i.get_mut(lane.index())) else {
        return;
    };
    *slot = Some(match *slot {
        Some(old) => Bar {
            start: old.start.min(bar.start),
            end: old.end.max(bar.end),
        },
        None => bar,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bars_cover_every_span_of_their_image() {
        let t = Timeline::new();
        let o = t.origin;
        let ms = |n| o + Duration::from_millis(n);
        t.moved(Lane::Read, 0, 0, ms(10), ms(20));
        t.moved(Lane::Read, 0, 1, ms(25), ms(30));
        t.moved(Lane::Read, 1, 1, ms(31), ms(40));
        t.firmware(Lane::Save, ms(0), ms(9));
        t.firmware(Lane::Save, ms(9), ms(24));
        t.mark(Mark::Stopped, ms(5));
        let s = t.snapshot();
        let bar = |i: usize, lane: Lane| s.images[i][lane.index()].unwrap();
        assert_eq!(
            bar(0, Lane::Read),
            Bar {
                start: 0.010,
                end: 0.030
            }
        );
        assert_eq!(
            bar(1, Lane::Read),
            Bar {
                start: 0.025,
                end: 0.040
            }
        );
        assert_eq!(
            bar(0, Lane::Save),
            Bar {
                start: 0.0,
                end: 0.009
            }
        );
        assert_eq!(
            bar(1, Lane::Save),
            Bar {
                start: 0.009,
                end: 0.024
            }
        );
        assert_eq!(s.images[0][Lane::Load.index()], None);
        assert_eq!(s.marks, vec![(Mark::Stopped, 0.005)]);
        assert!((s.end() - 0.040).abs() < 1e-12);
    }

    #[test]
    fn images_beyond_the_bound_are_counted_not_kept() {
        let t = Timeline::new();
        let now = Instant::now();
        t.moved(
            Lane::Receive,
            MAX_IMAGES as u64 - 1,
            MAX_IMAGES as u64 + 1,
            now,
            now,
        );
        let s = t.snapshot();
        assert_eq!(s.images.len(), MAX_IMAGES);
        assert_eq!(s.dropped, 2);
    }
}
