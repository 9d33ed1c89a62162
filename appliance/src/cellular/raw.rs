//! D-Bus values as plain data, so the report logic needs no D-Bus library and its tests can hand
//! it any value a broken or hostile ModemManager could send.

use std::collections::BTreeMap;

/// One D-Bus value.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    Bool(bool),
    /// `y`, `n`, `q`, `i`, `u`, `x`: every integer type but `t`, widened.
    Int(i64),
    /// `t`.
    U64(u64),
    /// `d`.
    F64(f64),
    /// `s`, `o`, `g`.
    Str(String),
    /// `a…` other than a dict.
    List(Vec<Prop>),
    /// `a{s…}`.
    Dict(BTreeMap<String, Prop>),
    /// `(…)`.
    Struct(Vec<Prop>),
    /// Anything else (file descriptors, dicts keyed by other than strings), by its D-Bus
    /// signature.
    Other(String),
}

impl Prop {
    /// The D-Bus type name, for saying what arrived instead of what was expected.
    pub fn kind(&self) -> &'static str {
        match self {
            Prop::Bool(_) => "boolean",
            Prop::Int(_) => "integer",
            Prop::U64(_) => "uint64",
            Prop::F64(_) => "double",
            Prop::Str(_) => "string",
            Prop::List(_) => "array",
            Prop::Dict(_) => "dict",
            Prop::Struct(_) => "struct",
            Prop::Other(_) => "other",
        }
    }
}

/// One interface's properties, by name.
pub type Props = BTreeMap<String, Prop>;

/// What ModemManager exports for one modem, read in one go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawModem {
    /// The D-Bus object path, e.g. `/org/freedesktop/ModemManager1/Modem/0`.
    pub path: String,
    /// `org.freedesktop.ModemManager1.Modem`.
    pub modem: Props,
    /// `org.freedesktop.ModemManager1.Modem.Modem3gpp` (absent on CDMA-only modems).
    pub modem3gpp: Props,
    /// `org.freedesktop.ModemManager1.Modem.Signal` (absent on modems without it).
    pub signal: Props,
    /// `org.freedesktop.ModemManager1.Bearer` of each bearer the modem lists that could be read.
    pub bearers: Vec<Props>,
}
