//! The group consumer's background commit: at most one commit call running, polled alongside
//! the fetches so that handing out records never waits on the coordinator (a coordinator that
//! is failing over can take seconds to answer; partitions whose leaders are healthy keep
//! flowing meanwhile).
//!
//! It also holds the revoked partitions waiting to be released: a revoked partition is
//! released only once the commit that carries its last position has finished (whatever its
//! outcome), so its next owner starts at that commit.

use std::collections::BTreeSet;
use std::fmt;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::TopicPartition;
use crate::error::{Error, Result};

/// A commit call: the offsets it stores, once stored.
pub(crate) type CommitCall = BoxFuture<'static, Result<Vec<(TopicPartition, i64)>>>;

/// A commit that failed: what it tried to store and why. Yielded as
/// [`GroupEvent::CommitFailed`](super::GroupEvent::CommitFailed); the positions stay
/// uncommitted and go with the next commit.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    /// The offsets the commit carried (the position after the last record handed out).
    pub offsets: Vec<(TopicPartition, i64)>,
    /// Why it failed, after the client's retries.
    pub error: Error,
}

impl fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commit of")?;
        for (tp, offset) in &self.offsets {
            write!(f, " {tp}@{offset}")?;
        }
        write!(f, " failed: {}", self.error)
    }
}

/// Equal when they carried the same offsets and failed with the same message (`Error` itself
/// is not comparable: it can carry a `tonic::Status`).
impl PartialEq for CommitFailure {
    fn eq(&self, other: &Self) -> bool {
        self.offsets == other.offsets && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for CommitFailure {}

struct Running {
    call: CommitCall,
    offsets: Vec<(TopicPartition, i64)>,
}

/// The commit running in the background, if any, and what waits for it.
#[derive(Default)]
pub(crate) struct Committer {
    running: Option<Running>,
    /// Another commit was asked for while one ran: start it (with the positions of then)
    /// once the running one finishes.
    wanted: bool,
    /// Revoked partitions to release once the running commit (or the wanted one) finishes.
    releasing: BTreeSet<TopicPartition>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("running", &self.running.as_ref().map(|r| &r.offsets))
            .field("wanted", &self.wanted)
            .field("releasing", &self.releasing)
            .finish()
    }
}

impl Committer {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts `call`, storing `offsets`. Only when none is running.
    pub fn start(&mut self, call: CommitCall, offsets: Vec<(TopicPartition, i64)>) {
        debug_assert!(self.running.is_none(), "one commit at a time");
        self.running = Some(Running { call, offsets });
    }

    /// Asks for another commit after the running one.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// Whether another commit was asked for; clears the request.
    pub fn take_wanted(&mut self) -> bool {
        std::mem::take(&mut self.wanted)
    }

    /// Partitions revoked and not yet released.
    pub fn releasing(&self) -> &BTreeSet<TopicPartition> {
        &self.releasing
    }

    /// Releases `revoked` after the commit that carries their positions.
    pub fn release_later(&mut self, revoked: BTreeSet<TopicPartition>) {
        self.releasing.extend(revoked);
    }

    /// The partitions to release now.
    pub fn take_releasing(&mut self) -> BTreeSet<TopicPartition> {
        std::mem::take(&mut self.releasing)
    }

    /// Forgets what waited (every partition was lost); a running call is left to finish.
    pub fn forget_waiting(&mut self) {
        self.wanted = false;
        self.releasing.clear();
    }

    /// Polls the running commit: its outcome once finished, as stored offsets or the failure.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Vec<(TopicPartition, i64)>, CommitFailure>> {
        let Some(running) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let result = futures::ready!(running.call.poll_unpin(cx));
        let Running { offsets, .. } = self.running.take().expect("polled while running");
        Poll::Ready(result.map_err(|error| CommitFailure { offsets, error }))
    }
}
