//! W3C Trace Context `traceparent` values (<https://www.w3.org/TR/trace-context/#traceparent-header>),
//! which an appliance puts into the envelope of each event so one trace runs from its failover
//! through the cloud's ingest and alert to the webhook delivery.
//!
//! Pure functions, no randomness of their own and no I/O: the caller supplies the random ids, so
//! this compiles for wasm32 and the appliance and cloud format and check the same syntax.

/// A parsed `traceparent` of version `00`: the trace id, the parent span id and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

/// The `sampled` bit of the flags.
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new root context from caller-supplied random ids, sampled. `None` if either id is zero,
    /// which the specification forbids (draw again).
    pub fn new_root(trace_id: u128, span_id: u64) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags: SAMPLED,
        })
    }

    /// Parses a version-`00` `traceparent`: `00-{32 lowercase hex}-{16 lowercase hex}-{2 hex}`,
    /// neither id all zeros. Anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() != 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let (version, trace, span, flags) =
            (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
        if version != "00" || ![version, trace, span, flags].into_iter().all(lower_hex) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Whether the sender sampled (recorded) this trace.
    pub const fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_formats_back() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn a_new_root_is_sampled_zero_padded_and_parses_back() {
        let root = TraceParent::new_root(1, 2).expect("non-zero ids");
        assert_eq!(
            root.to_string(),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        assert_eq!(TraceParent::new_root(0, 2), None);
        assert_eq!(TraceParent::new_root(1, 0), None);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "garbage",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero trace id, all-zero span id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Another version, or the reserved ff.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Wrong separators, lengths, a sign where from_str_radix would accept one.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // Multi-byte characters with the right byte length must not panic on slicing.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
