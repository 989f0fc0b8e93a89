//! Domain names in the zone. The validator of configured names lives below the config, in
//! [`crate::names`], so that the config does not import the zone; it is re-exported here for
//! the code that reaches it through the zone.

pub use crate::names::parse_domain;
