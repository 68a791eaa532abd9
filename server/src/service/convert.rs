//! Conversions between protobuf messages and domain values. Every protobuf → domain conversion
//! refuses bad input with `INVALID_ARGUMENT` naming the field; nothing here panics on input.

use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};
use cairn_proto::v1::{
    self as pb, FsyncPolicy, RecordFormat, produce_record::KeyPayload, produce_record::ValuePayload,
};
use tonic::Status;
use tonic_types::StatusExt;

use super::error::invalid_argument;
use crate::metadata::{ClusterState, PartitionRecord};
use crate::node::{LocalLog, TopicInfo, now_ms};
use crate::topic::{Fsync, TopicConfig};

/// Encodes structured records as one batch. A zero timestamp means "now".
///
/// # Errors
///
/// `INVALID_ARGUMENT` for a header with both `value` and `value_text`.
pub fn encode_records(records: &[pb::ProduceRecord]) -> Result<Bytes, Status> {
    let now = now_ms();
    let mut builder = BatchBuilder::with_capacity(
        cairn_batch::HEADER_LEN + records.iter().map(|r| payload_len(r) + 16).sum::<usize>(),
    );
    for (i, r) in records.iter().enumerate() {
        let key = match &r.key_payload {
            None => None,
            Some(KeyPayload::Key(k)) => Some(k.clone()),
            Some(KeyPayload::KeyText(t)) => Some(Bytes::copy_from_slice(t.as_bytes())),
        };
        let value = match &r.value_payload {
            None => Bytes::new(),
            Some(ValuePayload::Value(v)) => v.clone(),
            Some(ValuePayload::ValueText(t)) => Bytes::copy_from_slice(t.as_bytes()),
        };
        let headers = r
            .headers
            .iter()
            .map(|h| match (h.value.is_empty(), h.value_text.is_empty()) {
                (false, false) => Err(invalid_argument(
                    "records.headers",
                    format!(
                        "header {:?} of record {i} sets both value and value_text",
                        h.key
                    ),
                )),
                (true, false) => Ok((
                    h.key.clone(),
                    Bytes::copy_from_slice(h.value_text.as_bytes()),
                )),
                _ => Ok((h.key.clone(), h.value.clone())),
            })
            .collect::<Result<_, _>>()?;
        builder.push(&Record {
            timestamp: if r.timestamp_ms == 0 {
                now
            } else {
                r.timestamp_ms
            },
            key,
            value,
            headers,
        });
    }
    Ok(builder.finish())
}

fn payload_len(r: &pb::ProduceRecord) -> usize {
    match &r.value_payload {
        Some(ValuePayload::Value(v)) => v.len(),
        Some(ValuePayload::ValueText(t)) => t.len(),
        None => 0,
    }
}

/// Decodes stored batches into structured records, skipping those before `from` (a batch may
/// start before the requested offset). With [`RecordFormat::Text`], valid UTF-8 keys and values
/// also come as text.
///
/// # Errors
///
/// `DATA_LOSS` if a stored batch does not decode: that is never the client's fault.
pub fn decode_records(
    batches: &Bytes,
    from: i64,
    format: RecordFormat,
) -> Result<Vec<pb::ConsumedRecord>, Status> {
    let text = format == RecordFormat::Text;
    let as_text = |b: &Bytes| -> Option<String> {
        text.then(|| std::str::from_utf8(b).ok().map(str::to_owned))
            .flatten()
    };
    let mut out = Vec::new();
    for batch in cairn_batch::batches(batches) {
        let batch = batch.map_err(corrupt)?;
        for record in cairn_batch::records(&batch) {
            let (offset, r) = record.map_err(corrupt)?;
            if offset < from {
                continue;
            }
            out.push(pb::ConsumedRecord {
                offset,
                timestamp_ms: r.timestamp,
                key_text: r.key.as_ref().and_then(as_text),
                value_text: as_text(&r.value),
                key: r.key,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(key, value)| pb::Header {
                        value_text: as_text(&value).unwrap_or_default(),
                        key,
                        value,
                    })
                    .collect(),
                value: r.value,
            });
        }
    }
    Ok(out)
}

fn corrupt(e: cairn_batch::BatchError) -> Status {
    tracing::error!(error = %e, "a stored batch failed to decode");
    Status::data_loss(format!("a stored batch failed to decode: {e}"))
}

/// A status as an in-stream error (for `ProduceStream`).
pub fn error_status(s: &Status) -> pb::ErrorStatus {
    let info = s.get_details_error_info();
    pb::ErrorStatus {
        code: s.code() as i32,
        message: s.message().to_owned(),
        reason: info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
        metadata: info.map(|i| i.metadata).unwrap_or_default(),
    }
}

/// A request's topic config as the domain's.
///
/// # Errors
///
/// `INVALID_ARGUMENT` for an unknown fsync policy.
pub fn topic_config(c: Option<pb::TopicConfig>) -> Result<TopicConfig, Status> {
    let Some(c) = c else {
        return Ok(TopicConfig::default());
    };
    let fsync = match FsyncPolicy::try_from(c.fsync_policy) {
        Ok(FsyncPolicy::Unspecified) => None,
        Ok(FsyncPolicy::Always) => Some(Fsync::Always),
        Ok(FsyncPolicy::Interval) => Some(Fsync::Interval),
        Ok(FsyncPolicy::Never) => Some(Fsync::Never),
        Err(_) => {
            return Err(invalid_argument(
                "config.fsync_policy",
                format!("unknown fsync policy {}", c.fsync_policy),
            ));
        }
    };
    Ok(TopicConfig {
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        segment_bytes: c.segment_bytes,
        segment_ms: c.segment_ms,
        fsync,
        fsync_interval_ms: c.fsync_interval_ms,
        max_message_bytes: c.max_message_bytes,
        min_insync_replicas: c.min_insync_replicas,
        unclean_leader_election: c.unclean_leader_election,
    })
}

/// The domain's topic config as protobuf.
pub fn topic_config_pb(c: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        segment_bytes: c.segment_bytes,
        segment_ms: c.segment_ms,
        fsync_policy: match c.fsync {
            None => FsyncPolicy::Unspecified,
            Some(Fsync::Always) => FsyncPolicy::Always,
            Some(Fsync::Interval) => FsyncPolicy::Interval,
            Some(Fsync::Never) => FsyncPolicy::Never,
        } as i32,
        fsync_interval_ms: c.fsync_interval_ms,
        max_message_bytes: c.max_message_bytes,
        min_insync_replicas: c.min_insync_replicas,
        unclean_leader_election: c.unclean_leader_election,
    }
}

/// A described topic as protobuf. Offsets and sizes come from this broker's replica; they are
/// zero for partitions it does not host.
pub fn topic_description(info: &TopicInfo) -> pb::TopicDescription {
    pb::TopicDescription {
        name: info.name.to_string(),
        topic_id: info.record.topic_id.clone(),
        config: Some(topic_config_pb(&TopicConfig {
            min_insync_replicas: info.effective.min_insync_replicas.or_else(|| {
                Some(crate::node::default_min_insync(
                    info.replication_factor() as usize
                ))
            }),
            ..info.effective.clone()
        })),
        replication_factor: info.replication_factor(),
        partitions: info
            .partitions
            .iter()
            .map(|p| {
                let local = p.local.unwrap_or(LocalLog {
                    log_start_offset: 0,
                    high_watermark: 0,
                    size_bytes: 0,
                    segment_count: 0,
                });
                pb::PartitionDescription {
                    partition: p.index,
                    leader_id: p.record.leader.unwrap_or(0),
                    replicas: p.record.replicas.clone(),
                    isr: p.record.isr.clone(),
                    log_start_offset: local.log_start_offset,
                    high_watermark: local.high_watermark,
                    size_bytes: local.size_bytes,
                    segment_count: u32::try_from(local.segment_count).unwrap_or(u32::MAX),
                    leader_epoch: p.record.leader_epoch,
                }
            })
            .collect(),
    }
}

/// A partition's placement as the `Metadata` call describes it.
pub fn partition_metadata(index: u32, p: &PartitionRecord) -> pb::PartitionMetadata {
    pb::PartitionMetadata {
        partition: index,
        leader_id: p.leader.unwrap_or(0),
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader_epoch: p.leader_epoch,
    }
}

/// Every registered broker; alive means not fenced.
pub fn brokers(state: &ClusterState) -> Vec<pb::BrokerInfo> {
    state
        .brokers()
        .iter()
        .map(|(&id, b)| pb::BrokerInfo {
            id,
            address: b.addr.clone(),
            alive: !b.fenced,
        })
        .collect()
}
