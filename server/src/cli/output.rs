//! What the client commands share for printing: rpk-style tables (upper-case headers, no
//! borders), JSON documents, and base64 for bytes that are not UTF-8 text.
//!
//! Nothing here talks to a broker.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};

/// A borderless table with `headers`, in the style of rpk.
pub(crate) fn table<const N: usize>(headers: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers);
    // comfy-table pads every cell with a space on either side; keep the first column flush.
    if let Some(c) = t.column_mut(0) {
        c.set_padding((0, 1));
    }
    t
}

/// Prints a table to stdout. If the reader went away (`cairn group describe g | head`), the
/// command ends quietly, as Unix tools do, instead of panicking on the broken pipe.
pub(crate) fn print_table(t: &Table) {
    let mut out = std::io::stdout().lock();
    for line in t.lines() {
        if let Err(e) = writeln!(out, "{}", line.trim_end()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints `value` as one line of JSON to stdout.
///
/// # Errors
///
/// If stdout is closed.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// `ids` as `1,2,3`.
pub(crate) fn id_list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4). Hand-written because it is ten lines and the
/// only place that needs it.
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (raw, encoded) in cases {
            assert_eq!(base64(raw.as_bytes()), encoded, "{raw:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn tables_have_no_borders_and_upper_case_headers() {
        let mut t = table(["NAME", "PARTITIONS"]);
        t.add_row(["orders", "3"]);
        let lines: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
        assert!(lines[0].starts_with("NAME"), "{lines:?}");
        assert!(lines[1].starts_with("orders"), "{lines:?}");
    }
}
