//! Gives a request that is larger than `limits.max_request_bytes` the status gRPC prescribes.
//!
//! tonic refuses such a message while decoding it, before any Cairn handler runs, and answers
//! OUT_OF_RANGE without details. gRPC's own implementations use RESOURCE_EXHAUSTED for a message
//! over the receive limit, and Cairn promises an `ErrorInfo` on every error, so the edge layer
//! ([`super::edge`]) rewrites that one trailers-only answer (its status lives in the response headers) into
//! RESOURCE_EXHAUSTED with reason `REQUEST_TOO_LARGE`. Every other response passes untouched.

use tonic::Code;
use tonic::codegen::http;

use super::error::{reason, status};

/// The prefix of tonic's decode-limit message (tonic 0.14, `codec/decode.rs`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's over-limit status in `headers`, if that is what they carry.
pub(crate) fn rewrite(headers: &mut http::HeaderMap) {
    let Some(original) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if original.code() != Code::OutOfRange || !original.message().starts_with(TONIC_TOO_LARGE) {
        return;
    }
    let replacement = status(
        Code::ResourceExhausted,
        reason::REQUEST_TOO_LARGE,
        format!(
            "{}; raise limits.max_request_bytes on the broker or send smaller requests",
            original.message().trim_start_matches("Error, ")
        ),
        &[],
    );
    // `add_header` only fails on a message it cannot encode as a header, which ours is not.
    let _ = replacement.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn headers_of(s: &tonic::Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        s.add_header(&mut h).unwrap();
        h
    }

    #[test]
    fn tonic_decode_limit_becomes_resource_exhausted_with_a_reason() {
        let mut h = headers_of(&tonic::Status::out_of_range(
            "Error, decoded message length too large: found 100 bytes, the limit is: 10 bytes",
        ));
        rewrite(&mut h);
        let s = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("found 100 bytes"));
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "REQUEST_TOO_LARGE"
        );
    }

    #[test]
    fn other_statuses_pass_untouched() {
        let original = tonic::Status::out_of_range("offset 9 is out of range");
        let mut h = headers_of(&original);
        rewrite(&mut h);
        assert_eq!(
            tonic::Status::from_header_map(&h).unwrap().code(),
            Code::OutOfRange
        );
        let mut empty = http::HeaderMap::new();
        rewrite(&mut empty);
        assert!(empty.is_empty());
    }
}
