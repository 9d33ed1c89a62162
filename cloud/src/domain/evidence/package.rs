//! The package: a zip of `summary.pdf`, the CSV tables, the audit entries and chain head, the
//! signer's public key, `manifest.json` (the SHA-256 and size of every other file) and
//! `manifest.sig`, the detached Ed25519 signature of the exact bytes of `manifest.json`, written as
//! standard base64 (88 characters, no line break).
//!
//! Every entry is deflated and stamped with the package's `generated_at` (DOS time, 2 s
//! resolution), without extra fields or comments, in a fixed order, so the same input builds the
//! same bytes and `verify` can require the zip's structure to be exactly what this writes.

use std::io::{Cursor, Write};

use base64::Engine;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stayopen_shared::compliance::PeriodKind;
use stayopen_shared::{PracticeId, TenantId};

use super::{EvidenceInput, period_label};
use crate::infra::evidence_key::EvidenceKey;

/// The manifest's `format`; `verify` refuses any other.
pub const FORMAT: &str = "stayopen-evidence-package/1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const PUBLIC_KEY: &str = "public_key.pem";
pub const AUDIT_LOG: &str = "audit_log.jsonl";
pub const CHAIN_HEAD: &str = "audit_chain_head.json";
pub const SUMMARY: &str = "summary.pdf";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the zip: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Key(#[from] crate::infra::evidence_key::EvidenceKeyError),
    #[error("the generation time {0} cannot be stored in a zip (years 1980 to 2107)")]
    Time(DateTime<Utc>),
}

/// How one HIPAA implementation specification is evidenced by the package.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    pub specification: &'static str,
    pub title: &'static str,
    /// "Covered", "Partly covered", "Out of scope".
    pub coverage: &'static str,
    /// The files and summary sections that show it.
    pub evidence: &'static str,
    pub note: &'static str,
}

/// 45 CFR 164.308(a)(7)(ii)(A)–(E) and the retention rule of 164.316(b)(2)(i), with what this
/// package can honestly show for each: StayOpen keeps a practice connected; it does not hold or
/// back up its data.
pub const HIPAA_MAPPING: &[Mapping] = &[
    Mapping {
        specification: "164.308(a)(7)(ii)(A)",
        title: "Data backup plan",
        coverage: "Partly covered",
        evidence: "summary.pdf: Availability, Incidents; availability_months.csv, availability_days.csv, incidents.csv",
        note: "StayOpen is a connectivity appliance: it does not copy or back up ePHI. The package shows that the network path to the practice's cloud EHR and off-site backups stayed available (and when it did not). Evidence of the backups themselves must come from the practice's backup system.",
    },
    Mapping {
        specification: "164.308(a)(7)(ii)(B)",
        title: "Disaster recovery plan",
        coverage: "Partly covered",
        evidence: "summary.pdf: Incidents; incidents.csv, incident_apps.csv, incident_alerts.csv, incident_comments.csv",
        note: "Each real outage of the primary line is recorded with its start and end, the uplinks involved, the time on backup, the alerts raised, the root cause and the MSP's comments. Restoring systems and data after a disaster is outside the appliance.",
    },
    Mapping {
        specification: "164.308(a)(7)(ii)(C)",
        title: "Emergency mode operation plan",
        coverage: "Covered for connectivity",
        evidence: "summary.pdf: Incidents, Drills; incident_apps.csv, drills.csv, drill_apps.csv",
        note: "During an outage traffic moves to the backup uplink; the incidents record whether each critical application stayed reachable and how long the practice ran on backup, and the drills rehearse the switch.",
    },
    Mapping {
        specification: "164.308(a)(7)(ii)(D)",
        title: "Testing and revision procedures",
        coverage: "Covered",
        evidence: "summary.pdf: Drills (with sign-offs and those awaiting sign-off); drills.csv, drill_apps.csv; audit_log.jsonl (drill sign-offs, register and policy changes)",
        note: "Drills are dated, check every critical application through the backup, measure the switchover, and are signed off by the practice's compliance officer (management review). Revisions of the register and drill schedule are in the audit log.",
    },
    Mapping {
        specification: "164.308(a)(7)(ii)(E)",
        title: "Applications and data criticality analysis",
        coverage: "Covered for applications",
        evidence: "summary.pdf: Critical applications register; critical_apps.csv; audit_log.jsonl (register changes)",
        note: "The register lists each critical application with its tier, endpoints, owner and note, and who changed it last. The criticality of data sets is the practice's own analysis.",
    },
    Mapping {
        specification: "164.316(b)(2)(i)",
        title: "Documentation time limit (six years)",
        coverage: "Covered",
        evidence: "manifest.json, manifest.sig; audit_chain_head.json",
        note: "Packages are kept six years from their creation and signed with the cloud's evidence key; the audit entries are bound to the tenant's hash chain.",
    },
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub tenant: ManifestTenant,
    pub practice: ManifestPractice,
    pub period: ManifestPeriod,
    pub generated_at: DateTime<Utc>,
    pub key_fingerprint: String,
    /// How `manifest.sig` is made.
    pub signature: ManifestSignature,
    pub audit: ManifestAudit,
    /// Every file of the zip except `manifest.json` and `manifest.sig`, in zip order.
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestTenant {
    pub id: TenantId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPractice {
    pub id: PracticeId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPeriod {
    pub kind: PeriodKind,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    pub file: String,
    pub algorithm: String,
    pub encoding: String,
    pub covers: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAudit {
    pub entries: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub chain_head_seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// A built package.
#[derive(Debug, Clone)]
pub struct Package {
    pub zip: Vec<u8>,
    /// Hex SHA-256 of `zip`.
    pub sha256: String,
    pub key_fingerprint: String,
    pub manifest: Manifest,
}

/// The zip timestamp of every entry: `at` in DOS time.
pub fn zip_time(at: DateTime<Utc>) -> Option<zip::DateTime> {
    zip::DateTime::from_date_and_time(
        u16::try_from(at.year()).ok()?,
        at.month() as u8,
        at.day() as u8,
        at.hour() as u8,
        at.minute() as u8,
        at.second() as u8,
    )
    .ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The files of the package before the manifest, in zip order.
pub fn contents(
    input: &EvidenceInput,
    key_fingerprint: &str,
    public_key_pem: &str,
) -> Result<Vec<(String, Vec<u8>)>, PackageError> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    files.push((
        SUMMARY.to_owned(),
        super::pdf::summary(input, key_fingerprint),
    ));
    for (name, bytes) in super::csv::tables(input) {
        files.push((name.to_owned(), bytes));
    }
    let mut jsonl = Vec::new();
    for entry in &input.audit {
        serde_json::to_writer(&mut jsonl, entry)?;
        jsonl.push(b'\n');
    }
    files.push((AUDIT_LOG.to_owned(), jsonl));
    let mut head = serde_json::to_vec_pretty(&input.chain_head)?;
    head.push(b'\n');
    files.push((CHAIN_HEAD.to_owned(), head));
    files.push((PUBLIC_KEY.to_owned(), public_key_pem.as_bytes().to_vec()));
    Ok(files)
}

/// A zip of `entries` in this order, each deflated and stamped `at`, without extra fields.
pub fn write_zip(entries: &[(&str, &[u8])], at: DateTime<Utc>) -> Result<Vec<u8>, PackageError> {
    let time = zip_time(at).ok_or(PackageError::Time(at))?;
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(time)
        .unix_permissions(0o644)
        .large_file(false);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer.start_file(*name, options)?;
        writer.write_all(bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// Builds and signs the package of `input`.
pub fn build(input: &EvidenceInput, key: &EvidenceKey) -> Result<Package, PackageError> {
    let public = key.public();
    let key_fingerprint = public.fingerprint();
    let files = contents(input, &key_fingerprint, &public.pem()?)?;
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        tenant: ManifestTenant {
            id: input.tenant_id,
            name: input.tenant_name.clone(),
        },
        practice: ManifestPractice {
            id: input.practice_id,
            name: input.practice_name.clone(),
        },
        period: ManifestPeriod {
            kind: input.period,
            from: input.from,
            to: input.to,
            label: period_label(input.period, input.from, input.to),
        },
        generated_at: input.generated_at,
        key_fingerprint: key_fingerprint.clone(),
        signature: ManifestSignature {
            file: SIGNATURE.to_owned(),
            algorithm: "ed25519".to_owned(),
            encoding: "base64".to_owned(),
            covers: "the exact bytes of manifest.json".to_owned(),
        },
        audit: ManifestAudit {
            entries: input.audit.len() as u64,
            first_seq: input.audit.first().map(|e| e.seq),
            last_seq: input.audit.last().map(|e| e.seq),
            chain_head_seq: input.chain_head.seq,
        },
        files: files
            .iter()
            .map(|(name, bytes)| ManifestFile {
                name: name.clone(),
                sha256: sha256_hex(bytes),
                size: bytes.len() as u64,
            })
            .collect(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    manifest_bytes.push(b'\n');
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&manifest_bytes));

    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .chain([
            (MANIFEST, manifest_bytes.as_slice()),
            (SIGNATURE, signature.as_bytes()),
        ])
        .collect();
    let zip = write_zip(&entries, input.generated_at)?;
    Ok(Package {
        sha256: sha256_hex(&zip),
        zip,
        key_fingerprint,
        manifest,
    })
}
