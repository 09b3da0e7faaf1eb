//! The envelope fields a record carries besides its type and payload, packed into one column.
//!
//! Loads and rebuilds read every record's envelope, and SQLite charges per column read, so the
//! six fields that are rarely looked at on their own (event id, timestamp, command id,
//! correlation and causation ids, metadata) travel as one blob:
//!
//! ```text
//! byte 0       format version (1)
//! byte 1       flags: 1 command id, 2 correlation id, 4 causation id, 8 metadata
//! bytes 2..18  event id (UUID, 16 bytes)
//! bytes 18..26 timestamp (i64, little endian, microseconds since the epoch)
//! then, each when its flag is set:
//!              correlation id (16 bytes), causation id (16 bytes),
//!              command id (u16 length, little endian, then UTF-8),
//!              metadata (u32 length, little endian, then JSON)
//! ```
//!
//! Decoding checks every length against what is there: a damaged blob is an error naming what
//! is wrong, never a panic.

use uuid::Uuid;

use crate::envelope::{Metadata, Timestamp};
use crate::ids::CommandId;

const FORMAT: u8 = 1;
const COMMAND: u8 = 1;
const CORRELATION: u8 = 2;
const CAUSATION: u8 = 4;
const METADATA: u8 = 8;

/// The packed fields, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Envelope {
    pub(super) event_id: Uuid,
    pub(super) timestamp: Timestamp,
    pub(super) command_id: Option<CommandId>,
    pub(super) correlation_id: Option<Uuid>,
    pub(super) causation_id: Option<Uuid>,
    pub(super) metadata: Metadata,
}

/// Packs the fields; `metadata` is the JSON already checked against its limit (empty for
/// none).
pub(super) fn pack(
    event_id: Uuid,
    timestamp: Timestamp,
    command_id: Option<&CommandId>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    metadata: &str,
) -> Vec<u8> {
    let mut flags = 0;
    let mut len = 26;
    if let Some(c) = command_id {
        flags |= COMMAND;
        len += 2 + c.as_str().len();
    }
    if correlation_id.is_some() {
        flags |= CORRELATION;
        len += 16;
    }
    if causation_id.is_some() {
        flags |= CAUSATION;
        len += 16;
    }
    if !metadata.is_empty() {
        flags |= METADATA;
        len += 4 + metadata.len();
    }
    let mut out = Vec::with_capacity(len);
    out.push(FORMAT);
    out.push(flags);
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(&timestamp.0.to_le_bytes());
    if let Some(id) = correlation_id {
        out.extend_from_slice(id.as_bytes());
    }
    if let Some(id) = causation_id {
        out.extend_from_slice(id.as_bytes());
    }
    if let Some(c) = command_id {
        // Command ids are at most `MAX_ID_BYTES` (256) long: the length fits.
        let n = u16::try_from(c.as_str().len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(c.as_str().as_bytes());
    }
    if !metadata.is_empty() {
        // Metadata is at most `MAX_METADATA_BYTES` (16 KiB) long: the length fits.
        let n = u32::try_from(metadata.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(metadata.as_bytes());
    }
    out
}

/// A cursor over a blob that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "envelope ends before its {what} ({} of {n} bytes)",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn uuid(&mut self, what: &str) -> Result<Uuid, String> {
        Uuid::from_slice(self.take(16, what)?).map_err(|e| format!("{what}: {e}"))
    }
}

/// Unpacks the fields, or says what is damaged.
pub(super) fn unpack(bytes: &[u8]) -> Result<Envelope, String> {
    let mut r = Reader { bytes };
    let head = r.take(2, "header")?;
    let (format, flags) = (head[0], head[1]);
    if format != FORMAT {
        return Err(format!(
            "envelope format {format}; this keel reads {FORMAT}"
        ));
    }
    if flags & !(COMMAND | CORRELATION | CAUSATION | METADATA) != 0 {
        return Err(format!("envelope flags {flags:#04x} name unknown fields"));
    }
    let event_id = r.uuid("event id")?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(r.take(8, "timestamp")?);
    let correlation_id = (flags & CORRELATION != 0)
        .then(|| r.uuid("correlation id"))
        .transpose()?;
    let causation_id = (flags & CAUSATION != 0)
        .then(|| r.uuid("causation id"))
        .transpose()?;
    let command_id = if flags & COMMAND != 0 {
        let mut n = [0u8; 2];
        n.copy_from_slice(r.take(2, "command id length")?);
        let id = r.take(usize::from(u16::from_le_bytes(n)), "command id")?;
        Some(CommandId::from_bytes(id).map_err(|e| format!("command id: {e}"))?)
    } else {
        None
    };
    let metadata = if flags & METADATA != 0 {
        let mut n = [0u8; 4];
        n.copy_from_slice(r.take(4, "metadata length")?);
        let len = usize::try_from(u32::from_le_bytes(n)).unwrap_or(usize::MAX);
        serde_json::from_slice(r.take(len, "metadata")?).map_err(|e| format!("metadata: {e}"))?
    } else {
        Metadata::new()
    };
    if !r.bytes.is_empty() {
        return Err(format!(
            "envelope has {} bytes past its last field",
            r.bytes.len()
        ));
    }
    Ok(Envelope {
        event_id,
        timestamp: Timestamp(i64::from_le_bytes(ts)),
        command_id,
        correlation_id,
        causation_id,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(full: bool) -> (Vec<u8>, Envelope) {
        let command = CommandId::new("cmd-1").expect("a valid id");
        let metadata: Metadata = [("who".to_owned(), "alice".to_owned())].into();
        let json = serde_json::to_string(&metadata).expect("json");
        let envelope = Envelope {
            event_id: Uuid::now_v7(),
            timestamp: Timestamp(-42),
            command_id: full.then(|| command.clone()),
            correlation_id: full.then(Uuid::now_v7),
            causation_id: full.then(Uuid::now_v7),
            metadata: if full { metadata } else { Metadata::new() },
        };
        let bytes = pack(
            envelope.event_id,
            envelope.timestamp,
            envelope.command_id.as_ref(),
            envelope.correlation_id,
            envelope.causation_id,
            if full { &json } else { "" },
        );
        (bytes, envelope)
    }

    #[test]
    fn envelopes_round_trip() {
        for full in [false, true] {
            let (bytes, envelope) = sample(full);
            assert_eq!(unpack(&bytes), Ok(envelope));
        }
        assert_eq!(sample(false).0.len(), 26);
    }

    #[test]
    fn every_damage_is_an_error_not_a_panic() {
        let (bytes, _) = sample(true);
        // Every truncation, every extension and every flipped byte either decodes to a valid
        // envelope or names what is wrong.
        for len in 0..bytes.len() {
            assert!(unpack(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(unpack(&longer).is_err());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let _ = unpack(&damaged);
            }
        }
        let mut unknown = bytes;
        unknown[1] |= 0x80;
        assert!(
            unpack(&unknown)
                .expect_err("unknown flag")
                .contains("flags")
        );
    }
}
