//! Identifier newtypes. Each wraps a UUID so that an `ApplianceId` can never be passed where a
//! `TenantId` is expected — the compiler enforces the tenant boundary at every call site.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(pub Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_newtype!(
    /// An MSP: the unit of isolation. No user or device ever crosses from one tenant to another.
    TenantId
);
uuid_newtype!(
    /// A medical practice managed by one MSP.
    PracticeId
);
uuid_newtype!(
    /// One physical location of a practice.
    SiteId
);
uuid_newtype!(
    /// One appliance; also its MQTT client id and the key of its topic prefix.
    ApplianceId
);
uuid_newtype!(
    /// A dashboard user.
    UserId
);
uuid_newtype!(
    /// The id an appliance gives each message so the cloud can drop the duplicates that QoS 1
    /// redelivery and the appliance's offline buffer replay produce.
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_id_survives_display_and_parse(bytes in any::<[u8; 16]>()) {
            let id = ApplianceId(Uuid::from_bytes(bytes));
            prop_assert_eq!(id.to_string().parse::<ApplianceId>().ok(), Some(id));
        }
    }

    #[test]
    fn an_id_serializes_as_a_bare_uuid_string() {
        let id = TenantId(Uuid::nil());
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some("\"00000000-0000-0000-0000-000000000000\"")
        );
    }
}
