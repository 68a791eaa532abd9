//! Partition replication's decisions, as Kafka makes them (DESIGN.md §5): the leader-epoch
//! cache, the high watermark, ISR shrink and expand, and the follower's truncation point.
//!
//! This module owns the *pure core*: plain functions and one small data structure, table-tested
//! against the scenarios of Kafka KIP-101 and KIP-279. Its only I/O is the leader-epoch
//! checkpoint file. It must not know gRPC, tokio, Raft or the partition log's files: the
//! follower fetcher, `acks` and the replication RPCs (the async shell) feed it offsets, epochs
//! and times, and carry out what it decides (truncate the log, propose an ISR to the
//! controller, publish a high watermark).
//!
//! # Layout
//!
//! - `epoch_cache`: [`LeaderEpochCache`], which epoch began at which offset, persisted in
//!   `<partition-dir>/leader-epoch-checkpoint`; answers [`LeaderEpochCache::end_offset_for`].
//! - `hw`: [`high_watermark`] (the smallest log end in the ISR) and [`advance`] (never back).
//! - `isr`: [`FollowerState`] (a follower's log end and last catch-up), [`shrink`], [`expand`].
//! - `truncation`: [`truncation_offset`], where a follower cuts its log, by epoch.
//! - `tests`: step-by-step simulations of KIP-101's two scenarios and KIP-279's double
//!   failover over a model log.

pub mod alter;
mod epoch_cache;
pub mod fetcher;
mod hw;
mod isr;
mod truncation;

#[cfg(test)]
mod tests;

pub use epoch_cache::{CHECKPOINT_FILE, EpochCacheError, EpochEntry, LeaderEpochCache};
pub use hw::{advance, high_watermark};
pub use isr::{FollowerState, UNKNOWN_OFFSET, drop_silent, expand, is_follower_in_sync, shrink};
pub use truncation::{Truncation, truncation_offset};
