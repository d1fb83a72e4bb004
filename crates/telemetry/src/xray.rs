//! X-Ray's trace header, the form SQS's `AWSTraceHeader` system attribute
//! takes: `Root=1-{8 hex: epoch seconds}-{24 hex};Parent={16 hex};Sampled={0|1}`
//! (<https://docs.aws.amazon.com/xray/latest/devguide/xray-concepts.html#xray-concepts-tracingheader>).
//! An OpenTelemetry trace id is the root's 32 hex digits without the dashes.

use std::fmt;

/// A parsed X-Ray trace header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader {
    pub trace_id: [u8; 16],
    /// The span the header was sent from; a header may carry only a root.
    pub parent: Option<[u8; 8]>,
    /// `None` when the sender had not decided (`Sampled=?` or absent).
    pub sampled: Option<bool>,
}

impl TraceHeader {
    /// Parses a header; `None` when it has no valid `Root`. Unknown keys
    /// (`Lineage`, `Self`) are ignored; a malformed `Parent` drops the parent.
    pub fn parse(header: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = None;
        for part in header.split(';') {
            let Some((key, value)) = part.trim().split_once('=') else {
                continue;
            };
            match key {
                "Root" => root = parse_root(value),
                "Parent" => parent = hex::<8>(value),
                "Sampled" => {
                    sampled = match value {
                        "1" => Some(true),
                        "0" => Some(false),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        let trace_id = root?;
        if trace_id == [0; 16] {
            return None;
        }
        Some(Self {
            trace_id,
            parent: parent.filter(|p| *p != [0; 8]),
            sampled,
        })
    }

    /// The trace id as OpenTelemetry writes it: 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
}

impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = to_hex(&self.trace_id);
        write!(f, "Root=1-{}-{}", &id[..8], &id[8..])?;
        if let Some(parent) = &self.parent {
            write!(f, ";Parent={}", to_hex(parent))?;
        }
        match self.sampled {
            Some(true) => f.write_str(";Sampled=1"),
            Some(false) => f.write_str(";Sampled=0"),
            None => Ok(()),
        }
    }
}

/// X-Ray's form of a 32-hex-digit trace id (`1-xxxxxxxx-yyyy…`), for a
/// console link; `None` when `trace_id` is not 32 hex digits.
pub fn xray_trace_id(trace_id: &str) -> Option<String> {
    hex::<16>(trace_id)?;
    Some(format!("1-{}-{}", &trace_id[..8], &trace_id[8..]))
}

fn parse_root(value: &str) -> Option<[u8; 16]> {
    let mut parts = value.split('-');
    let (Some("1"), Some(time), Some(random), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if time.len() != 8 || random.len() != 24 {
        return None;
    }
    hex::<16>(&format!("{time}{random}"))
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of X-Ray's developer guide ("Tracing header").
    const GUIDE: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

    #[test]
    fn reads_and_writes_the_guides_example() {
        let h = TraceHeader::parse(GUIDE).expect("parses");
        assert_eq!(h.trace_id_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(
            h.parent,
            Some([0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8])
        );
        assert_eq!(h.sampled, Some(true));
        assert_eq!(h.to_string(), GUIDE);
    }

    #[test]
    fn a_root_alone_and_unknown_keys_are_accepted() {
        let h = TraceHeader::parse("Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678;Sampled=?;Lineage=a87bd80c:1|68fd508a:5")
            .expect("parses");
        assert_eq!(h.trace_id_hex(), "67891233abcdef012345678912345678");
        assert_eq!(h.parent, None);
        assert_eq!(h.sampled, None);
        assert_eq!(h.to_string(), "Root=1-67891233-abcdef012345678912345678");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "Root=",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e98-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a99427279z",
            "Root=1-00000000-000000000000000000000000",
            "Parent=53995c3f42cd8ad8;Sampled=1",
        ] {
            assert_eq!(TraceHeader::parse(bad), None, "{bad}");
        }
        let h = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz")
            .expect("root is fine");
        assert_eq!(h.parent, None);
    }

    #[test]
    fn a_trace_id_gets_its_xray_form() {
        assert_eq!(
            xray_trace_id("5759e988bd862e3fe1be46a994272793").as_deref(),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(xray_trace_id("5759e988"), None);
        assert_eq!(xray_trace_id("5759e988bd862e3fe1be46a99427279g"), None);
    }
}
