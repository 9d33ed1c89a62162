//! The thin D-Bus edge: reads `org.freedesktop.ModemManager1` into [`RawModem`]s and asks a
//! modem for extended signal information. Every value is taken as it comes
//! ([`zbus::zvariant::OwnedValue`]) and turned into a [`Prop`], so a property of the wrong type
//! reaches the report logic to be named there instead of failing the whole reading.

use std::collections::BTreeMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, fdo};

use super::raw::{Prop, Props, RawModem};

/// ModemManager's well-known bus name.
pub const SERVICE: &str = "org.freedesktop.ModemManager1";
/// The object manager that lists the modems.
pub const ROOT: &str = "/org/freedesktop/ModemManager1";
pub const MODEM: &str = "org.freedesktop.ModemManager1.Modem";
pub const MODEM_3GPP: &str = "org.freedesktop.ModemManager1.Modem.Modem3gpp";
pub const SIGNAL: &str = "org.freedesktop.ModemManager1.Modem.Signal";
pub const BEARER: &str = "org.freedesktop.ModemManager1.Bearer";

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot connect to the D-Bus bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error("ModemManager does not answer: {0}")]
    Call(#[from] zbus::Error),
    #[error("ModemManager does not answer: {0}")]
    Fdo(#[from] fdo::Error),
    #[error("not connected")]
    NotConnected,
}

impl ReadError {
    /// Whether the bus connection itself is unusable (connect again next time), as against
    /// ModemManager not answering on a working bus.
    pub fn connection_lost(&self) -> bool {
        match self {
            ReadError::Connect(_) | ReadError::NotConnected => true,
            ReadError::Call(e) => matches!(e, zbus::Error::InputOutput(_)),
            ReadError::Fdo(_) => false,
        }
    }
}

/// A connection to the bus ModemManager is on.
#[derive(Debug, Clone)]
pub struct Reader {
    connection: Connection,
}

impl Reader {
    /// Connects to `address` (a D-Bus address), or the system bus.
    pub async fn connect(address: Option<&str>) -> Result<Reader, ReadError> {
        let connection = match address {
            Some(address) => {
                zbus::connection::Builder::address(address)
                    .map_err(ReadError::Connect)?
                    .build()
                    .await
            }
            None => Connection::system().await,
        }
        .map_err(ReadError::Connect)?;
        Ok(Reader { connection })
    }

    /// Every modem ModemManager exports, with its bearers.
    pub async fn read(&self) -> Result<Vec<RawModem>, ReadError> {
        let manager = fdo::ObjectManagerProxy::builder(&self.connection)
            .destination(SERVICE)?
            .path(ROOT)?
            .build()
            .await?;
        let objects = manager.get_managed_objects().await?;
        let mut modems = Vec::new();
        for (path, interfaces) in objects {
            let mut by_name: BTreeMap<String, Props> = interfaces
                .into_iter()
                .map(|(name, props)| (name.to_string(), props_of(props)))
                .collect();
            let Some(modem) = by_name.remove(MODEM) else {
                continue;
            };
            let mut raw = RawModem {
                path: path.to_string(),
                modem3gpp: by_name.remove(MODEM_3GPP).unwrap_or_default(),
                signal: by_name.remove(SIGNAL).unwrap_or_default(),
                modem,
                bearers: Vec::new(),
            };
            if let Some(Prop::List(bearers)) = raw.modem.get("Bearers") {
                for bearer in bearers {
                    let Prop::Str(bearer) = bearer else { continue };
                    // A bearer that vanished between the two calls is left out, not an error.
                    if let Ok(props) = self.bearer(bearer).await {
                        raw.bearers.push(props);
                    }
                }
            }
            modems.push(raw);
        }
        modems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(modems)
    }

    async fn bearer(&self, path: &str) -> Result<Props, ReadError> {
        let path = OwnedObjectPath::try_from(path).map_err(zbus::Error::from)?;
        let properties = fdo::PropertiesProxy::builder(&self.connection)
            .destination(SERVICE)?
            .path(path)?
            .build()
            .await?;
        let name =
            zbus::names::InterfaceName::from_static_str(BEARER).map_err(zbus::Error::from)?;
        Ok(props_of(properties.get_all(name).await?))
    }

    /// Asks the modem at `path` to refresh its extended signal figures every `rate_secs`
    /// (`Signal.Setup`): ModemManager reports none until asked.
    pub async fn setup_signal(&self, path: &str, rate_secs: u32) -> Result<(), ReadError> {
        self.connection
            .call_method(Some(SERVICE), path, Some(SIGNAL), "Setup", &(rate_secs,))
            .await?;
        Ok(())
    }
}

fn props_of<K: ToString>(props: std::collections::HashMap<K, OwnedValue>) -> Props {
    props
        .into_iter()
        .map(|(k, v)| (k.to_string(), prop(&v)))
        .collect()
}

/// A D-Bus value as a [`Prop`], however deep.
pub fn prop(value: &Value<'_>) -> Prop {
    match value {
        Value::Bool(b) => Prop::Bool(*b),
        Value::U8(v) => Prop::Int(i64::from(*v)),
        Value::I16(v) => Prop::Int(i64::from(*v)),
        Value::U16(v) => Prop::Int(i64::from(*v)),
        Value::I32(v) => Prop::Int(i64::from(*v)),
        Value::U32(v) => Prop::Int(i64::from(*v)),
        Value::I64(v) => Prop::Int(*v),
        Value::U64(v) => Prop::U64(*v),
        Value::F64(v) => Prop::F64(*v),
        Value::Str(s) => Prop::Str(s.to_string()),
        Value::Signature(s) => Prop::Str(s.to_string()),
        Value::ObjectPath(p) => Prop::Str(p.to_string()),
        Value::Value(inner) => prop(inner),
        Value::Array(items) => Prop::List(items.iter().map(prop).collect()),
        Value::Dict(dict) => {
            let mut out = BTreeMap::new();
            for (k, v) in dict.iter() {
                let Value::Str(key) = k else {
                    return Prop::Other(value.value_signature().to_string());
                };
                out.insert(key.to_string(), prop(v));
            }
            Prop::Dict(out)
        }
        Value::Structure(s) => Prop::Struct(s.fields().iter().map(prop).collect()),
        #[allow(unreachable_patterns)]
        other => Prop::Other(other.value_signature().to_string()),
    }
}
