//! What `stayopen-cloud evidence verify FILE.zip [--public-key FILE]` checks, offline, in this
//! order, stopping at the first thing that does not match:
//!
//! 1. the zip's structure is exactly what the builder writes: every local header agrees with its
//!    central-directory entry field by field, entries are contiguous from byte 0, no extra fields,
//!    comments, data descriptors or encryption, one timestamp for all, and the end record closes
//!    the file — so a changed byte anywhere in the headers is caught, not only in the data;
//! 2. every entry decompresses to its declared size and CRC-32;
//! 3. `manifest.sig` is the Ed25519 signature of the exact bytes of `manifest.json` by the given
//!    key (or, without one, by the package's own `public_key.pem`, which proves the package is
//!    intact but not who made it — the report says so);
//! 4. the manifest is of a known format and its timestamp is the entries' timestamp;
//! 5. every file the manifest lists is there with its size and SHA-256, and nothing else is;
//! 6. every audit entry's hash recomputes, consecutive entries link, and the chain head covers
//!    them.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::package::{
    AUDIT_LOG, CHAIN_HEAD, FORMAT, MANIFEST, Manifest, PUBLIC_KEY, SIGNATURE, zip_time,
};
use super::{AuditRecord, ChainHead};
use crate::infra::evidence_key::EvidencePublic;

/// The first thing that does not match, in words (`summary.pdf: SHA-256 does not match the
/// manifest`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(message.into()))
}

/// Which key the signature must verify with.
#[derive(Debug, Clone)]
pub enum TrustedKey {
    /// A key the verifier was given (`--public-key`): proves who signed.
    Given(EvidencePublic),
    /// None given: the package's own `public_key.pem`, which proves only integrity.
    Embedded,
}

/// What a package that verified contains.
#[derive(Debug, Clone)]
pub struct Report {
    pub manifest: Manifest,
    pub key_fingerprint: String,
    /// Whether the key came from the package itself rather than the verifier.
    pub key_from_package: bool,
    pub files: usize,
    pub bytes: u64,
    pub audit_entries: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        writeln!(f, "practice:      {} ({})", m.practice.name, m.practice.id)?;
        writeln!(f, "managed by:    {} ({})", m.tenant.name, m.tenant.id)?;
        let range = format!("{} to {}", m.period.from, m.period.to);
        if m.period.label == range {
            writeln!(f, "period:        {range}")?;
        } else {
            writeln!(f, "period:        {} ({range})", m.period.label)?;
        }
        writeln!(f, "generated at:  {}", m.generated_at.to_rfc3339())?;
        writeln!(f, "zip structure: ok")?;
        writeln!(
            f,
            "signature:     ok, manifest.json signed by {}",
            self.key_fingerprint
        )?;
        writeln!(
            f,
            "files:         ok, {} files, {} bytes, each matching its SHA-256 and size",
            self.files, self.bytes
        )?;
        writeln!(
            f,
            "audit log:     ok, {} entries, every hash recomputed, chain head at entry {}",
            self.audit_entries, m.audit.chain_head_seq
        )?;
        if self.key_from_package {
            writeln!(
                f,
                "WARNING: no --public-key was given, so the signature was checked with the package's own public_key.pem. This shows the package is intact, not who made it: compare {} with the cloud's key (GET /api/v1/evidence/public-key) or verify again with --public-key.",
                self.key_fingerprint
            )?;
        }
        write!(f, "VERIFIED")
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const DEFLATE: u16 = 8;

/// One entry's header fields as both headers carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    version_needed: u16,
    flags: u16,
    method: u16,
    time: u16,
    date: u16,
    crc: u32,
    compressed: u32,
    size: u32,
    name: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    time: u16,
    date: u16,
    crc: u32,
    size: u32,
    /// Where its compressed data lies in the archive.
    data: std::ops::Range<usize>,
}

fn read_header(bytes: &[u8], at: usize, fields: usize) -> Option<(Header, u16)> {
    // `fields` is where the common fields start: 4 in a local header, 6 in a central one.
    let name_len = usize::from(u16_at(bytes, at + fields + 22)?);
    let extra_len = u16_at(bytes, at + fields + 24)?;
    let name_start = at + if fields == 4 { 30 } else { 46 };
    Some((
        Header {
            version_needed: u16_at(bytes, at + fields)?,
            flags: u16_at(bytes, at + fields + 2)?,
            method: u16_at(bytes, at + fields + 4)?,
            time: u16_at(bytes, at + fields + 6)?,
            date: u16_at(bytes, at + fields + 8)?,
            crc: u32_at(bytes, at + fields + 10)?,
            compressed: u32_at(bytes, at + fields + 14)?,
            size: u32_at(bytes, at + fields + 18)?,
            name: bytes.get(name_start..name_start + name_len)?.to_vec(),
        },
        extra_len,
    ))
}

/// The most common value, for fields every entry should share.
fn usual(values: &[u32]) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(*v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(v, n)| (*n, std::cmp::Reverse(*v)))
        .map_or(0, |(v, _)| v)
}

/// Step 1: the zip's structure, byte by byte.
fn check_structure(bytes: &[u8]) -> Result<Vec<Entry>, Failure> {
    let len = bytes.len();
    let Some(end) = len.checked_sub(22) else {
        return fail(format!(
            "zip: not a zip archive ({len} bytes, too short for one)"
        ));
    };
    if u32_at(bytes, end) != Some(END_SIG) {
        return fail(format!(
            "zip: not a zip archive, or corrupt at byte {end}: no end-of-central-directory record where the file ends"
        ));
    }
    let field = |offset: usize| u16_at(bytes, end + offset).unwrap_or(u16::MAX);
    let (disk, cd_disk, on_disk, total) = (field(4), field(6), field(8), field(10));
    let cd_size = u32_at(bytes, end + 12).unwrap_or(u32::MAX) as usize;
    let cd_offset = u32_at(bytes, end + 16).unwrap_or(u32::MAX) as usize;
    if disk != 0 || cd_disk != 0 {
        return fail(format!(
            "zip: corrupt at byte {}: the archive claims to span disks",
            end + 4
        ));
    }
    if on_disk != total {
        return fail(format!(
            "zip: corrupt at byte {}: entry counts disagree ({on_disk} and {total})",
            end + 8
        ));
    }
    if field(20) != 0 {
        return fail(format!(
            "zip: corrupt at byte {}: the archive has a comment; packages have none",
            end + 20
        ));
    }
    if cd_offset.checked_add(cd_size) != Some(end) {
        return fail(format!(
            "zip: corrupt at byte {}: the central directory's offset and size do not end where the end record starts",
            end + 12
        ));
    }
    let count = usize::from(total);
    // Local headers, contiguous from byte 0.
    let mut locals: Vec<(usize, Header)> = Vec::with_capacity(count);
    let mut at = 0usize;
    for i in 0..count {
        if u32_at(bytes, at) != Some(LOCAL_SIG) {
            return fail(format!(
                "zip: corrupt at byte {at}: entry {} does not start with a local file header",
                i + 1
            ));
        }
        let Some((header, extra)) = read_header(bytes, at, 4) else {
            return fail(format!(
                "zip: corrupt at byte {at}: entry {} is cut short",
                i + 1
            ));
        };
        if extra != 0 {
            return fail(format!(
                "zip: corrupt at byte {}: entry {} has an extra field; packages have none",
                at + 28,
                i + 1
            ));
        }
        let next = at + 30 + header.name.len() + header.compressed as usize;
        if next > cd_offset {
            return fail(format!(
                "zip: corrupt at byte {}: entry {}'s data runs into the central directory",
                at + 18,
                i + 1
            ));
        }
        locals.push((at, header));
        at = next;
    }
    if at != cd_offset {
        return fail(format!(
            "zip: corrupt at byte {at}: {} bytes between the last entry and the central directory",
            cd_offset.saturating_sub(at)
        ));
    }
    // The central directory, entry by entry against the local headers.
    let mut at = cd_offset;
    let mut made_by = Vec::with_capacity(count);
    let mut attributes = Vec::with_capacity(count);
    let mut central_at = Vec::with_capacity(count);
    let mut entries = Vec::with_capacity(count);
    for (local_at, local) in &locals {
        let name = String::from_utf8_lossy(&local.name).into_owned();
        if u32_at(bytes, at) != Some(CENTRAL_SIG) {
            return fail(format!(
                "zip: corrupt at byte {at}: the central directory entry of {name} is not where it should be"
            ));
        }
        let Some((central, extra)) = read_header(bytes, at, 6) else {
            return fail(format!(
                "zip: corrupt at byte {at}: the central directory is cut short"
            ));
        };
        let comment = u16_at(bytes, at + 32).unwrap_or(u16::MAX);
        let disk_start = u16_at(bytes, at + 34).unwrap_or(u16::MAX);
        let internal = u16_at(bytes, at + 36).unwrap_or(u16::MAX);
        let offset = u32_at(bytes, at + 42).unwrap_or(u32::MAX) as usize;
        let differs = [
            (
                local.version_needed != central.version_needed,
                "version needed",
                4,
                6,
            ),
            (local.flags != central.flags, "flags", 6, 8),
            (local.method != central.method, "compression method", 8, 10),
            (local.time != central.time, "modification time", 10, 12),
            (local.date != central.date, "modification date", 12, 14),
            (local.crc != central.crc, "CRC-32", 14, 16),
            (
                local.compressed != central.compressed,
                "compressed size",
                18,
                20,
            ),
            (local.size != central.size, "size", 22, 24),
            (local.name != central.name, "name", 30, 46),
        ];
        if let Some((_, what, l, c)) = differs.iter().find(|d| d.0) {
            return fail(format!(
                "zip: corrupt at byte {} or {}: the local header and the central directory of {name} disagree on its {what}",
                local_at + l,
                at + c
            ));
        }
        let problem = if extra != 0 {
            Some((30, "has an extra field"))
        } else if comment != 0 {
            Some((32, "has a comment"))
        } else if disk_start != 0 {
            Some((34, "names another disk"))
        } else if internal != 0 {
            Some((36, "has internal attributes"))
        } else if offset != *local_at {
            Some((42, "points to the wrong local header"))
        } else if local.flags & !0x0800 != 0 {
            Some((
                8,
                "has flags (encryption or a data descriptor) packages never use",
            ))
        } else if local.method != DEFLATE {
            Some((10, "is not deflated"))
        } else {
            None
        };
        if let Some((offset, what)) = problem {
            return fail(format!(
                "zip: corrupt at byte {}: the central directory entry of {name} {what}",
                at + offset
            ));
        }
        made_by.push(u32::from(u16_at(bytes, at + 4).unwrap_or(0)));
        attributes.push(u32_at(bytes, at + 38).unwrap_or(0));
        central_at.push(at);
        let data_at = local_at + 30 + local.name.len();
        entries.push(Entry {
            name,
            time: local.time,
            date: local.date,
            crc: local.crc,
            size: local.size,
            data: data_at..data_at + local.compressed as usize,
        });
        at += 46 + central.name.len();
    }
    if at != end {
        return fail(format!(
            "zip: corrupt at byte {at}: the central directory does not end where the end record starts"
        ));
    }
    // Fields every entry shares: the odd one out is the changed one.
    let timestamps: Vec<u32> = entries
        .iter()
        .map(|e| u32::from(e.date) << 16 | u32::from(e.time))
        .collect();
    for (values, what, offset) in [
        (&made_by, "\"version made by\"", 4),
        (&attributes, "file attributes", 38),
        (&timestamps, "timestamp", 12),
    ] {
        let usual = usual(values);
        if let Some(i) = values.iter().position(|v| *v != usual) {
            return fail(format!(
                "zip: corrupt at byte {}: the {what} of {} differs from every other entry's",
                central_at[i] + offset,
                entries[i].name
            ));
        }
    }
    Ok(entries)
}

/// Step 2: every entry's content, inflated from exactly its compressed bytes: the deflate stream
/// must end where the data does (a changed end-of-block code otherwise passes unnoticed as a
/// stream that simply stops), and the result must have the header's size and CRC-32.
fn read_entries(bytes: &[u8], entries: &[Entry]) -> Result<HashMap<String, Vec<u8>>, Failure> {
    let mut files = HashMap::new();
    for entry in entries {
        let name = &entry.name;
        let compressed = &bytes[entry.data.clone()];
        let declared = entry.size as usize;
        // One byte of room past the declared size tells "longer than declared" from "exact".
        let mut content = Vec::with_capacity(declared.min(64 << 20) + 1);
        let mut inflater = flate2::Decompress::new(false);
        let status = inflater
            .decompress_vec(compressed, &mut content, flate2::FlushDecompress::Finish)
            .or_else(|e| fail(format!("zip: {name}: its compressed data is corrupt ({e})")))?;
        let consumed = inflater.total_in() as usize;
        if content.len() > declared {
            return fail(format!(
                "zip: {name}: decompresses to more than the {declared} bytes its header says"
            ));
        }
        if status != flate2::Status::StreamEnd {
            return fail(format!(
                "zip: {name}: its compressed data is corrupt (the deflate stream does not end)"
            ));
        }
        if consumed != compressed.len() {
            return fail(format!(
                "zip: {name}: its compressed data is corrupt at byte {}: the deflate stream ends {} bytes early",
                entry.data.start + consumed,
                compressed.len() - consumed
            ));
        }
        if content.len() != declared {
            return fail(format!(
                "zip: {name}: decompresses to {} bytes, not the {declared} its header says",
                content.len()
            ));
        }
        if crc32fast::hash(&content) != entry.crc {
            return fail(format!(
                "zip: {name}: its content does not match its CRC-32"
            ));
        }
        if files.insert(name.clone(), content).is_some() {
            return fail(format!("zip: {name} is in the archive twice"));
        }
    }
    Ok(files)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a package; `Err` names the first thing that does not match.
pub fn verify(bytes: &[u8], key: &TrustedKey) -> Result<Report, Failure> {
    let entries = check_structure(bytes)?;
    let mut files = read_entries(bytes, &entries)?;
    let Some(manifest_bytes) = files.remove(MANIFEST) else {
        return fail("manifest.json: missing from the zip");
    };
    let Some(signature) = files.remove(SIGNATURE) else {
        return fail("manifest.sig: missing from the zip");
    };
    let (public, key_from_package) = match key {
        TrustedKey::Given(public) => (public.clone(), false),
        TrustedKey::Embedded => {
            let Some(pem) = files.get(PUBLIC_KEY) else {
                return fail(
                    "public_key.pem: missing from the zip, and no --public-key was given to verify the signature with",
                );
            };
            let public = std::str::from_utf8(pem)
                .ok()
                .and_then(|pem| EvidencePublic::from_pem(pem).ok());
            let Some(public) = public else {
                return fail("public_key.pem: not an Ed25519 public key");
            };
            (public, true)
        }
    };
    let fingerprint = public.fingerprint();
    let signature = std::str::from_utf8(&signature).ok().and_then(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    });
    let Some(signature) = signature else {
        return fail("manifest.sig: not a base64 signature");
    };
    if !public.verifies(&manifest_bytes, &signature) {
        return fail(format!(
            "manifest.json: signature does not verify with key {fingerprint}"
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .or_else(|e| fail(format!("manifest.json: not a package manifest: {e}")))?;
    if manifest.format != FORMAT {
        return fail(format!(
            "manifest.json: unknown format {:?} (this verifier knows {FORMAT})",
            manifest.format
        ));
    }
    if manifest.key_fingerprint != fingerprint {
        return fail(format!(
            "manifest.json: names signing key {}, but it verifies with {fingerprint}",
            manifest.key_fingerprint
        ));
    }
    let stamped = zip_time(manifest.generated_at).map(|t| (t.datepart(), t.timepart()));
    if let Some(entry) = entries.iter().find(|e| Some((e.date, e.time)) != stamped) {
        return fail(format!(
            "zip: {}: its timestamp is not the package's generation time",
            entry.name
        ));
    }
    let mut listed = HashSet::new();
    let mut total = 0u64;
    for file in &manifest.files {
        listed.insert(file.name.as_str());
        let Some(content) = files.get(&file.name) else {
            return fail(format!(
                "{}: listed in the manifest but missing from the zip",
                file.name
            ));
        };
        if content.len() as u64 != file.size {
            return fail(format!(
                "{}: size {} does not match the manifest's {}",
                file.name,
                content.len(),
                file.size
            ));
        }
        if sha256_hex(content) != file.sha256 {
            return fail(format!(
                "{}: SHA-256 does not match the manifest",
                file.name
            ));
        }
        total += file.size;
    }
    if let Some(extra) = entries
        .iter()
        .map(|e| e.name.as_str())
        .find(|name| *name != MANIFEST && *name != SIGNATURE && !listed.contains(name))
    {
        return fail(format!("{extra}: in the zip but not in the manifest"));
    }
    let audit_entries = check_audit(&files, &manifest)?;
    Ok(Report {
        files: manifest.files.len(),
        bytes: total,
        audit_entries,
        key_fingerprint: fingerprint,
        key_from_package,
        manifest,
    })
}

/// Step 6: the audit entries against the hash chain.
fn check_audit(files: &HashMap<String, Vec<u8>>, manifest: &Manifest) -> Result<usize, Failure> {
    let Some(log) = files.get(AUDIT_LOG) else {
        return fail("audit_log.jsonl: missing from the package");
    };
    let Some(head) = files.get(CHAIN_HEAD) else {
        return fail("audit_chain_head.json: missing from the package");
    };
    let head: ChainHead = serde_json::from_slice(head)
        .or_else(|e| fail(format!("audit_chain_head.json: not a chain head: {e}")))?;
    if head.tenant_id != manifest.tenant.id {
        return fail("audit_chain_head.json: the chain head is another MSP's");
    }
    let text = std::str::from_utf8(log).or_else(|_| fail("audit_log.jsonl: not UTF-8"))?;
    let mut previous: Option<AuditRecord> = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        let entry: AuditRecord = serde_json::from_str(line).or_else(|e| {
            fail(format!(
                "audit_log.jsonl: line {} is not an audit entry: {e}",
                n + 1
            ))
        })?;
        if !entry.hash_matches() {
            return fail(format!(
                "audit_log.jsonl: entry {} (line {}): its hash does not match its content",
                entry.seq,
                n + 1
            ));
        }
        if let Some(prev) = &previous {
            if entry.seq <= prev.seq {
                return fail(format!(
                    "audit_log.jsonl: entry {} (line {}) is out of order",
                    entry.seq,
                    n + 1
                ));
            }
            if entry.seq == prev.seq + 1 && entry.prev_hash != prev.hash {
                return fail(format!(
                    "audit_log.jsonl: entry {} (line {}) does not link to entry {}",
                    entry.seq,
                    n + 1,
                    prev.seq
                ));
            }
        }
        if entry.seq > head.seq || (entry.seq == head.seq && entry.hash != head.hash) {
            return fail(format!(
                "audit_log.jsonl: entry {} is not covered by the chain head (entry {})",
                entry.seq, head.seq
            ));
        }
        previous = Some(entry);
        count += 1;
    }
    if count as u64 != manifest.audit.entries {
        return fail(format!(
            "audit_log.jsonl: {count} entries, the manifest says {}",
            manifest.audit.entries
        ));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evidence::package::{self, build, write_zip};
    use crate::domain::evidence::sample;
    use crate::infra::evidence_key::EvidenceKey;
    use std::io::{Cursor, Read};

    fn entries(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).expect("zip");
        (0..archive.len())
            .map(|i| {
                let mut file = archive.by_index(i).expect("entry");
                let mut content = Vec::new();
                file.read_to_end(&mut content).expect("read");
                (file.name().expect("name").into_owned(), content)
            })
            .collect()
    }

    fn rezip(list: &[(String, Vec<u8>)]) -> Vec<u8> {
        let refs: Vec<(&str, &[u8])> = list
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        write_zip(&refs, sample::input().generated_at).expect("zip")
    }

    fn given(key: &EvidenceKey) -> TrustedKey {
        TrustedKey::Given(key.public())
    }

    #[test]
    fn a_built_package_verifies_with_the_signing_key_and_lists_every_file() {
        let key = EvidenceKey::generate();
        let built = build(&sample::input(), &key).expect("build");
        let report = verify(&built.zip, &given(&key)).expect("verifies");
        assert!(!report.key_from_package);
        assert_eq!(report.audit_entries, 5);
        let names: Vec<&str> = built
            .manifest
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        for expected in [
            "summary.pdf",
            "availability_months.csv",
            "availability_days.csv",
            "drills.csv",
            "drill_apps.csv",
            "incidents.csv",
            "critical_apps.csv",
            "hipaa_mapping.csv",
            "audit_log.jsonl",
            "audit_chain_head.json",
            "public_key.pem",
        ] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        let shown = report.to_string();
        assert!(shown.ends_with("VERIFIED"), "{shown}");
        assert!(shown.contains(&key.public().fingerprint()), "{shown}");
    }

    #[test]
    fn the_same_input_builds_the_same_bytes() {
        let key = EvidenceKey::generate();
        let input = sample::input();
        assert_eq!(
            build(&input, &key).expect("build").zip,
            build(&input, &key).expect("build").zip
        );
    }

    /// Deflate is not one-to-one: a match copied from distance 1 or 2 inside a run of equal bytes
    /// inflates the same, so a few flips inside compressed data leave every file exactly as
    /// signed. Any flip must either be rejected or be one of those, never a changed file.
    #[test]
    fn flipping_any_one_byte_of_the_zip_is_rejected_unless_every_file_still_inflates_as_signed() {
        let key = EvidenceKey::generate();
        let zip = build(&sample::input(), &key).expect("build").zip;
        let trusted = given(&key);
        let signed = entries(&zip);
        let mut harmless = 0;
        for offset in 0..zip.len() {
            let mut changed = zip.clone();
            changed[offset] ^= 0xff;
            if verify(&changed, &trusted).is_ok() {
                assert_eq!(
                    entries(&changed),
                    signed,
                    "a change at byte {offset} of {} altered a file and went unnoticed",
                    zip.len()
                );
                harmless += 1;
            }
        }
        assert!(
            harmless * 1000 < zip.len(),
            "{harmless} of {} flips were accepted",
            zip.len()
        );
    }

    #[test]
    fn a_change_names_the_part_of_the_zip_it_is_in() {
        let key = EvidenceKey::generate();
        let zip = build(&sample::input(), &key).expect("build").zip;
        let trusted = given(&key);
        let flip = |offset: usize| {
            let mut changed = zip.clone();
            changed[offset] ^= 0xff;
            verify(&changed, &trusted).expect_err("rejected").0
        };
        // In summary.pdf's data (the first entry's data starts after its 30-byte header and name).
        let in_data = flip(30 + "summary.pdf".len() + 40);
        assert!(in_data.starts_with("zip: summary.pdf:"), "{in_data}");
        // In the central directory and the end record.
        let end = zip.len() - 22;
        let cd_offset = u32_at(&zip, end + 16).expect("cd offset") as usize;
        let in_cd = flip(cd_offset + 16);
        assert!(in_cd.contains("corrupt at byte"), "{in_cd}");
        assert!(flip(end + 17).contains("corrupt at byte"));
        assert!(flip(zip.len() - 1).contains("comment"));
        assert!(
            verify(b"not a zip at all, just some text", &trusted)
                .expect_err("rejected")
                .0
                .starts_with("zip: not a zip archive")
        );
    }

    #[test]
    fn a_file_changed_and_rezipped_is_named_by_its_digest() {
        let key = EvidenceKey::generate();
        let mut list = entries(&build(&sample::input(), &key).expect("build").zip);
        list[0].1[100] ^= 0x01;
        let failure = verify(&rezip(&list), &given(&key)).expect_err("rejected");
        assert_eq!(
            failure.0,
            "summary.pdf: SHA-256 does not match the manifest"
        );
    }

    #[test]
    fn a_manifest_or_signature_changed_and_rezipped_does_not_verify() {
        let key = EvidenceKey::generate();
        let list = entries(&build(&sample::input(), &key).expect("build").zip);
        let manifest_at = list
            .iter()
            .position(|(n, _)| n == "manifest.json")
            .expect("manifest");
        let mut edited = list.clone();
        let text = String::from_utf8(edited[manifest_at].1.clone()).expect("utf-8");
        edited[manifest_at].1 = text.replace("Maple Street", "Elm Street").into_bytes();
        let failure = verify(&rezip(&edited), &given(&key)).expect_err("rejected");
        assert_eq!(
            failure.0,
            format!(
                "manifest.json: signature does not verify with key {}",
                key.public().fingerprint()
            )
        );
        let sig_at = list
            .iter()
            .position(|(n, _)| n == "manifest.sig")
            .expect("sig");
        let mut edited = list.clone();
        edited[sig_at].1[10] = if edited[sig_at].1[10] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert!(verify(&rezip(&edited), &given(&key)).is_err());
    }

    #[test]
    fn a_package_signed_by_another_key_is_rejected() {
        let key = EvidenceKey::generate();
        let impostor = EvidenceKey::generate();
        let zip = build(&sample::input(), &impostor).expect("build").zip;
        let failure = verify(&zip, &given(&key)).expect_err("rejected");
        assert_eq!(
            failure.0,
            format!(
                "manifest.json: signature does not verify with key {}",
                key.public().fingerprint()
            )
        );
    }

    #[test]
    fn without_a_given_key_the_package_key_is_used_and_the_report_says_so() {
        let key = EvidenceKey::generate();
        let zip = build(&sample::input(), &key).expect("build").zip;
        let report = verify(&zip, &TrustedKey::Embedded).expect("verifies");
        assert!(report.key_from_package);
        assert!(report.to_string().contains("WARNING: no --public-key"));
    }

    #[test]
    fn a_file_added_or_removed_is_rejected() {
        let key = EvidenceKey::generate();
        let list = entries(&build(&sample::input(), &key).expect("build").zip);
        let mut added = list.clone();
        added.insert(3, ("notes.txt".into(), b"added later".to_vec()));
        assert_eq!(
            verify(&rezip(&added), &given(&key))
                .expect_err("rejected")
                .0,
            "notes.txt: in the zip but not in the manifest"
        );
        let removed: Vec<_> = list
            .iter()
            .filter(|(n, _)| n != "drills.csv")
            .cloned()
            .collect();
        assert_eq!(
            verify(&rezip(&removed), &given(&key))
                .expect_err("rejected")
                .0,
            "drills.csv: listed in the manifest but missing from the zip"
        );
        let mut doubled = list.clone();
        doubled.push(list[1].clone());
        assert!(verify(&rezip_allowing_duplicates(&doubled), &given(&key)).is_err());
    }

    /// The zip crate refuses duplicate names; a hand-made archive is what an attacker would use.
    fn rezip_allowing_duplicates(list: &[(String, Vec<u8>)]) -> Vec<u8> {
        let (last, rest) = list.split_last().expect("entries");
        let mut renamed = rest.to_vec();
        let mut twin = last.clone();
        // Same length, different name, then patched back to the duplicate's name.
        let placeholder: String = "#".repeat(twin.0.len());
        let original = std::mem::replace(&mut twin.0, placeholder.clone());
        renamed.push(twin);
        let mut bytes = rezip(&renamed);
        let needle = placeholder.as_bytes();
        let mut i = 0;
        while i + needle.len() <= bytes.len() {
            if &bytes[i..i + needle.len()] == needle {
                bytes[i..i + needle.len()].copy_from_slice(original.as_bytes());
            }
            i += 1;
        }
        bytes
    }

    #[test]
    fn an_audit_entry_changed_after_it_was_hashed_is_rejected_even_when_signed() {
        let key = EvidenceKey::generate();
        let mut input = sample::input();
        input.audit[2].after = Some(serde_json::json!({"practice_id": "forged"}));
        let zip = build(&input, &key).expect("build").zip;
        assert_eq!(
            verify(&zip, &given(&key)).expect_err("rejected").0,
            "audit_log.jsonl: entry 43 (line 3): its hash does not match its content"
        );
        let mut input = sample::input();
        input.audit.remove(2);
        let zip = build(&input, &key).expect("build").zip;
        assert!(
            verify(&zip, &given(&key)).is_ok(),
            "a gap in seq is another practice's entry, not a break"
        );
        let mut input = sample::input();
        input.chain_head.seq = 44;
        let zip = build(&input, &key).expect("build").zip;
        assert!(
            verify(&zip, &given(&key))
                .expect_err("rejected")
                .0
                .contains("not covered by the chain head")
        );
    }

    #[test]
    fn the_manifest_records_every_file_digest_and_the_signature_is_base64() {
        let key = EvidenceKey::generate();
        let built = build(&sample::input(), &key).expect("build");
        let list = entries(&built.zip);
        let sig = list
            .iter()
            .find(|(n, _)| n == package::SIGNATURE)
            .expect("sig");
        assert_eq!(sig.1.len(), 88);
        for file in &built.manifest.files {
            let content = &list.iter().find(|(n, _)| *n == file.name).expect("file").1;
            assert_eq!(file.sha256, sha256_hex(content));
            assert_eq!(file.size, content.len() as u64);
        }
    }
}
