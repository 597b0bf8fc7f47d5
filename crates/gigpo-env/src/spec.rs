//! Choosing an environment by name and configuration.
//!
//! In a TOML configuration the environment is one table whose `kind` names it and whose other
//! fields are that environment's configuration (each with a default):
//!
//! ```toml
//! [env]
//! kind = "sokoban"
//! dim_room = [7, 7]
//! num_boxes = 2
//! max_steps = 30
//! ```
//!
//! ```
//! use gigpo_env::spec::EnvSpec;
//!
//! let spec: EnvSpec = "sokoban".parse().unwrap();
//! let mut env = spec.build().unwrap();
//! let obs = env.reset(7).unwrap();
//! assert_eq!(env.name(), "sokoban");
//! assert_eq!(obs.text.lines().count(), 6);
//! ```

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::env::{EnvError, Environment};
use crate::frozenlake::{FrozenLake, FrozenLakeConfig};
#[cfg(feature = "remote")]
use crate::remote::RemoteSpec;
use crate::sokoban::{Sokoban, SokobanConfig};

/// An environment kind with its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
// Built once per run and cloned rarely: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum EnvSpec {
    /// Sokoban (`kind = "sokoban"`).
    #[serde(rename = "sokoban")]
    Sokoban(SokobanConfig),
    /// FrozenLake (`kind = "frozenlake"`).
    #[serde(rename = "frozenlake", alias = "frozen_lake")]
    FrozenLake(FrozenLakeConfig),
    /// An environment in another process (`kind = "remote"`, docs/remote-environments.md; with
    /// the `remote` feature).
    #[cfg(feature = "remote")]
    #[serde(rename = "remote")]
    Remote(RemoteSpec),
}

impl Default for EnvSpec {
    fn default() -> Self {
        Self::Sokoban(SokobanConfig::default())
    }
}

impl EnvSpec {
    /// The names [`FromStr`] accepts for the built-in environments.
    pub const NAMES: [&'static str; 2] = ["sokoban", "frozenlake"];

    /// The environment's name as written in `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sokoban(_) => "sokoban",
            Self::FrozenLake(_) => "frozenlake",
            #[cfg(feature = "remote")]
            Self::Remote(_) => "remote",
        }
    }

    /// Whether the environment lives in another process.
    pub fn is_remote(&self) -> bool {
        self.name() == "remote"
    }

    /// A new environment instance.
    pub fn build(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(match self {
            Self::Sokoban(c) => Box::new(Sokoban::new(c.clone())?),
            Self::FrozenLake(c) => Box::new(FrozenLake::new(c.clone())?),
            #[cfg(feature = "remote")]
            Self::Remote(c) => c.build()?,
        })
    }
}

impl FromStr for EnvSpec {
    type Err = EnvError;

    /// A built-in environment with its default configuration, by name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "sokoban" => Ok(Self::Sokoban(SokobanConfig::default())),
            "frozenlake" => Ok(Self::FrozenLake(FrozenLakeConfig::default())),
            _ => Err(EnvError::Config(format!(
                "unknown environment `{s}` (built in: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frozenlake::LakeMap;

    #[derive(Debug, Deserialize)]
    struct Doc {
        env: EnvSpec,
    }

    #[test]
    fn reads_from_a_toml_table() {
        let doc: Doc =
            toml::from_str("[env]\nkind = \"sokoban\"\ndim_room = [7, 7]\nnum_boxes = 2").unwrap();
        let EnvSpec::Sokoban(c) = &doc.env else {
            panic!("{:?}", doc.env)
        };
        assert_eq!((c.dim_room, c.num_boxes, c.max_steps), ([7, 7], 2, 15));
        let doc: Doc = toml::from_str("[env]\nkind = \"frozenlake\"\nmap = \"8x8\"").unwrap();
        assert!(matches!(&doc.env, EnvSpec::FrozenLake(c) if c.map == LakeMap::Standard8x8));
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        let e = toml::from_str::<Doc>("[env]\nkind = \"sokoban\"\nnum_box = 2").unwrap_err();
        assert!(e.to_string().contains("num_box"), "{e}");
        let e = toml::from_str::<Doc>("[env]\nkind = \"chess\"").unwrap_err();
        assert!(e.to_string().contains("chess"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let spec = EnvSpec::FrozenLake(FrozenLakeConfig {
            slippery: true,
            ..Default::default()
        });
        #[derive(Serialize)]
        struct Out<'a> {
            env: &'a EnvSpec,
        }
        let text = toml::to_string(&Out { env: &spec }).unwrap();
        let back: Doc = toml::from_str(&text).unwrap();
        assert_eq!(back.env, spec);
    }

    #[test]
    fn names_parse_and_build() {
        for name in [
            "sokoban",
            "Sokoban",
            "frozenlake",
            "frozen_lake",
            "frozen-lake",
        ] {
            let spec: EnvSpec = name.parse().unwrap();
            let mut env = spec.build().unwrap();
            assert_eq!(env.name(), spec.name());
            assert!(env.reset(1).is_ok());
        }
        let err = "chess".parse::<EnvSpec>().unwrap_err().to_string();
        assert!(err.contains("chess") && err.contains("sokoban"), "{err}");
    }

    #[test]
    fn build_reports_bad_configs() {
        let spec = EnvSpec::Sokoban(SokobanConfig {
            num_boxes: 0,
            ..Default::default()
        });
        assert!(spec.build().err().unwrap().to_string().contains("box"));
    }
}
