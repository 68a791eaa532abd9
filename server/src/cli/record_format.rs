//! How `topic consume` prints a record: a kcat-style format string (`-f '%k=%v\n'`) or one
//! JSON object per line.
//!
//! The format string is parsed once into [`Piece`]s, then rendered per record straight into
//! the output buffer, with keys and values written as raw bytes.

use std::io::Write;

use anyhow::bail;
use cairn_client::ConsumerRecord;
use serde_json::{Map, Value, json};

use super::output::base64;

/// One element of a parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal bytes (escapes already resolved).
    Text(Vec<u8>),
    /// `%t`.
    Topic,
    /// `%p`.
    Partition,
    /// `%o`.
    Offset,
    /// `%k`: the key, empty when there is none.
    Key,
    /// `%K`: the key's length, -1 when there is none.
    KeyLen,
    /// `%v` or `%s`.
    Value,
    /// `%V` or `%S`.
    ValueLen,
    /// `%T`: timestamp, ms since the Unix epoch.
    Timestamp,
    /// `%h`: headers as `name=value` pairs separated by commas.
    Headers,
}

/// Parses a format string: `%t %p %o %k %K %v %s %V %S %T %h %%` and `\n \t \r \\`.
///
/// # Errors
///
/// An unknown `%` token or a trailing lone `%`.
pub(crate) fn parse(format: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('K') => Piece::KeyLen,
                Some('v' | 's') => Piece::Value,
                Some('V' | 'S') => Piece::ValueLen,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                Some(other) => bail!("unknown format token %{other} in {format:?}"),
                None => bail!("format {format:?} ends with a lone %"),
            },
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') | None => '\\',
                    Some(other) => {
                        text.push(b'\\');
                        other
                    }
                };
                let mut buf = [0; 4];
                text.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            other => {
                let mut buf = [0; 4];
                text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Writes `record` as `pieces` say.
///
/// # Errors
///
/// When `out` fails (a closed pipe).
pub(crate) fn render(
    pieces: &[Piece],
    record: &ConsumerRecord,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.write_all(t)?,
            Piece::Topic => out.write_all(record.topic.as_bytes())?,
            Piece::Partition => write!(out, "{}", record.partition)?,
            Piece::Offset => write!(out, "{}", record.offset)?,
            Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
            Piece::KeyLen => match &record.key {
                Some(k) => write!(out, "{}", k.len())?,
                None => out.write_all(b"-1")?,
            },
            Piece::Value => out.write_all(&record.value)?,
            Piece::ValueLen => write!(out, "{}", record.value.len())?,
            Piece::Timestamp => write!(out, "{}", record.timestamp)?,
            Piece::Headers => {
                for (i, (name, value)) in record.headers.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(name.as_bytes())?;
                    out.write_all(b"=")?;
                    out.write_all(value)?;
                }
            }
        }
    }
    Ok(())
}

/// Puts `bytes` into `object` under `field`: as text when it is UTF-8, otherwise as base64
/// with `<field>_encoding: "base64"` beside it.
fn put_bytes(object: &mut Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    let value = match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => {
                object.insert(format!("{field}_encoding"), json!("base64"));
                Value::String(base64(b))
            }
        },
    };
    object.insert(field.to_owned(), value);
}

/// The record as one JSON object: topic, partition, offset, timestamp, key, value, headers.
pub(crate) fn to_json(record: &ConsumerRecord) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), json!(&*record.topic));
    object.insert("partition".into(), json!(record.partition));
    object.insert("offset".into(), json!(record.offset));
    object.insert("timestamp".into(), json!(record.timestamp));
    put_bytes(&mut object, "key", record.key.as_deref());
    put_bytes(&mut object, "value", Some(&record.value));
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|(name, value)| {
            let mut h = Map::new();
            h.insert("key".into(), json!(name));
            put_bytes(&mut h, "value", Some(value));
            Value::Object(h)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            headers: vec![
                ("a".into(), Bytes::from_static(b"1")),
                ("b".into(), Bytes::from_static(b"2")),
            ],
        }
    }

    fn show(format: &str, r: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        render(&parse(format).unwrap(), r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tokens_and_escapes_render() {
        let r = record();
        assert_eq!(
            show(r"%t/%p@%o %k=%v %h %T %K %V 100%%\t|\n", &r),
            "t/2@7 k=v a=1,b=2 1700000000000 1 1 100%\t|\n"
        );
        let keyless = ConsumerRecord { key: None, ..r };
        assert_eq!(show("[%k][%K]", &keyless), "[][-1]");
    }

    #[test]
    fn bad_tokens_are_errors() {
        assert!(parse("%x").is_err());
        assert!(parse("abc%").is_err());
    }

    #[test]
    fn json_flags_binary_values() {
        let mut r = record();
        r.value = Bytes::from_static(&[0xff, 0x00]);
        let j = to_json(&r);
        assert_eq!(j["key"], "k");
        assert_eq!(j["value"], "/wA=");
        assert_eq!(j["value_encoding"], "base64");
        assert!(j.get("key_encoding").is_none());
        assert_eq!(j["headers"][1]["key"], "b");
        assert_eq!(j["headers"][1]["value"], "2");
    }
}
