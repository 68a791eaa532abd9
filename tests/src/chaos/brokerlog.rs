//! Reads the brokers' logs (`broker-<id>.log`, written by the cluster's `log_dir`) for what the
//! metadata poller cannot see: every time a broker acting as controller decided to fence a
//! broker, even when it could not commit the decision (a deposed controller) or the fence was
//! undone before the next sample.
//!
//! The line is the controller's `tracing` warning, `<RFC 3339 UTC time>  WARN ...: broker lease
//! expired: fencing it broker=<id>`; its time is placed on the run's clock.

use std::path::Path;

use super::history::{Clock, FenceLogged};

/// What the controller's warning says when it fences a broker (server/src/metadata/
/// controller.rs); the fenced broker is the event's `broker=` field. Older brokers wrote
/// `broker lease expired: fencing it broker=<id>`, newer ones `...: fencing it broker=<id>
/// session_ms=<ms>`.
const FENCE_MESSAGE: &str = "fencing it";

/// The field naming the fenced broker.
const BROKER_FIELD: &str = " broker=";

/// Every fence decision in `dir/broker-<id>.log` for `ids`, in time order. A missing log reads
/// as empty.
pub fn fence_decisions(dir: &Path, ids: &[u32], clock: Clock) -> Vec<FenceLogged> {
    let mut out = Vec::new();
    for &by in ids {
        let log = std::fs::read_to_string(dir.join(format!("broker-{by}.log"))).unwrap_or_default();
        out.extend(log.lines().filter_map(|line| parse_fence(line, by, clock)));
    }
    out.sort_by_key(|f| f.t_ns);
    out
}

/// A fence decision from one log line, if it is one and falls inside the run.
fn parse_fence(line: &str, by: u32, clock: Clock) -> Option<FenceLogged> {
    let (_, fields) = line.split_once(FENCE_MESSAGE)?;
    let (_, rest) = fields.split_once(BROKER_FIELD)?;
    let broker = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let wall = parse_utc_ns(line.split_whitespace().next()?)?;
    Some(FenceLogged {
        t_ns: clock.from_wall(wall)?,
        by,
        broker,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as ns since the Unix epoch.
pub fn parse_utc_ns(stamp: &str) -> Option<u64> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let digits = frac.len().min(9);
    let nanos: i64 = frac.get(..digits)?.parse::<i64>().ok()? * 10i64.pow(9 - digits as u32);
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3_600 + min * 60 + s;
    u64::try_from(secs * 1_000_000_000 + nanos).ok()
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_parse_to_epoch_nanoseconds() {
        assert_eq!(parse_utc_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_ns("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000_000)
        );
        assert_eq!(
            parse_utc_ns("2026-12-07T04:02:07.173259Z"),
            Some(1_796_616_127_173_259_000)
        );
        assert_eq!(parse_utc_ns("yesterday"), None);
    }

    #[test]
    fn a_fence_line_names_the_fenced_broker() {
        let clock = Clock::start();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            + 5;
        let stamp = format_utc(now);
        for message in [
            "broker lease expired: fencing it broker=3",
            "no heartbeat from the broker for a whole session of this controller's running \
             time: fencing it broker=3 session_ms=3000",
        ] {
            let line = format!("{stamp}  WARN cairn_server::metadata::controller: {message}");
            let f = parse_fence(&line, 2, clock).expect("a fence line");
            assert_eq!((f.by, f.broker), (2, 3));
            assert!(f.t_ns > 3_000_000_000 && f.t_ns < 6_000_000_000, "{f:?}");
        }
        assert_eq!(
            parse_fence("2026-12-07T04:02:07Z INFO unfenced broker", 2, clock),
            None
        );
    }

    /// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`, by search over days (test only).
    fn format_utc(secs: u64) -> String {
        let secs = secs as i64;
        let days = secs / 86_400;
        let (mut y, mut m) = (1970, 1);
        while days_from_civil(y + 1, 1, 1) <= days {
            y += 1;
        }
        while m < 12 && days_from_civil(y, m + 1, 1) <= days {
            m += 1;
        }
        let d = days - days_from_civil(y, m, 1) + 1;
        let rem = secs % 86_400;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}
