//! What the engine asks its driver to do, and the buffers the driver hands
//! back: the output side of the sans-IO engine.

use heapless::Deque;

use super::{BufRef, SaveEngine, SaveError, SaveFailure, SaveRequest, Slot, Wanted};
use crate::macros::trace;

/// Actions one input can queue: the frees of a buffer search (at most
/// [`MAX_AVAIL`](super::MAX_AVAIL) too-small buffers), then one allocation
/// or SAVE, plus one more free (a discarded or recycled buffer). The driver
/// drains the queue after every input, so nothing accumulates across inputs;
/// an engine whose queue is full fails with [`SaveError::Capacity`].
pub const MAX_ACTIONS: usize = super::MAX_AVAIL + 2;

/// Something the driver must do for the engine, in the order
/// [`SaveEngine::poll_action`] returns them.
#[must_use = "an action the driver does not carry out stalls or leaks the file"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SaveAction {
    /// Issue this SAVE_VHCA_STATE; report its end with
    /// [`SaveEngine::handle_completion`] or
    /// [`SaveEngine::handle_save_failed`] (also when it cannot be issued).
    Save(SaveRequest),
    /// Allocate a device-writable buffer of `npages` pages and hand it over
    /// with [`SaveEngine::handle_buffer`] (or, when that fails,
    /// [`SaveEngine::fail`] with [`SaveFailure::NotStarted`]).
    Allocate {
        /// Pages.
        npages: u32,
    },
    /// Free a buffer the engine no longer holds.
    Free(BufRef),
}

impl SaveEngine {
    /// The next thing the driver must do, or `None` when nothing is due.
    /// Drain it after every `handle_*` call and every `start_*` request.
    pub fn poll_action(&mut self) -> Option<SaveAction> {
        self.actions.pop_front()
    }

    /// Whether actions are waiting to be polled.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub(super) fn act(&mut self, action: SaveAction) -> Result<(), SaveError> {
        self.actions
            .push_back(action)
            .map_err(|_| SaveError::Capacity)
    }

    /// Asks the driver for a buffer of `npages` for `what`.
    pub(super) fn want(&mut self, what: Wanted, npages: u32) -> Result<(), SaveError> {
        if self.wanted.is_some() {
            return Err(SaveError::WrongState);
        }
        self.wanted = Some(what);
        self.act(SaveAction::Allocate { npages })
    }

    /// The driver allocated the buffer a [`SaveAction::Allocate`] asked for;
    /// the SAVE that needed it is queued.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] when no allocation was asked for (the buffer
    /// stays the driver's to free); a failure queuing the SAVE fails the file.
    pub fn handle_buffer(&mut self, buf: BufRef) -> Result<(), SaveError> {
        let what = self.wanted.take().ok_or(SaveError::WrongState)?;
        let result = match what {
            Wanted::Slot(slot, chain) => match self.slots.get_mut(usize::from(slot)) {
                Some(Slot::Empty) => {
                    self.stats.grown = self.stats.grown.saturating_add(1);
                    trace!("save: slot {} buffer grown to {} pages", slot, buf.npages);
                    // Sized for this chunk when it was asked for: used as
                    // it is (a retune since applies to the next refill).
                    self.save_into(slot, buf, chain)
                }
                _ => Err(SaveError::WrongState),
            },
            Wanted::Fresh(kind) => {
                let req = self.request(buf, kind);
                self.act(SaveAction::Save(req))
            }
        };
        if let Err(e) = result {
            self.fail(SaveFailure::Engine(e));
        }
        result
    }

    /// Drops every queued action (a session closing discards them; its
    /// buffers go with the session).
    pub fn clear_actions(&mut self) {
        self.actions = Deque::new();
        self.wanted = None;
    }
}
