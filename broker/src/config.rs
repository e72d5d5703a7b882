//! Broker configuration: a TOML file whose every field has a default.
//!
//! Parsing is pure (text in, [`Config`] out): the binary reads the file
//! through the I/O seam and lays its command-line flags over the result.
//! Unknown fields are errors, so that a typo fails at start-up instead of
//! silently leaving a default in place.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The seed used when the configuration names none. Fixed, so that two
/// brokers started alike behave alike.
pub const DEFAULT_SEED: u64 = 0;

/// The smallest max-frame-size AMQP 1.0 allows (`MIN-MAX-FRAME-SIZE`, 2.7.1).
const MAX_FRAME_SIZE_MIN: u32 = 512;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML, names an unknown field, or has a value of
    /// the wrong type. The message gives the line and column.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value is well-formed but unusable.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The offending field, as a dotted TOML path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the broker reads at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where AMQP clients connect. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the broker keeps its state.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// Seeds the broker's one random number generator
    /// ([`crate::io::seeded_rng`]).
    pub seed: u64,
    /// AMQP connection limits and identity.
    pub amqp: AmqpConfig,
    /// Accounts allowed to log in. Must be empty for now: only SASL
    /// ANONYMOUS is served, and accepting accounts that are then ignored
    /// would be a silent security hole.
    pub users: Vec<User>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5672)),
            data_dir: PathBuf::from("./sluice-data"),
            log: LogConfig::default(),
            seed: DEFAULT_SEED,
            amqp: AmqpConfig::default(),
            users: Vec::new(),
        }
    }
}

/// Where log lines go and how much is written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format on stderr.
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or per-module directives
    /// (`info,sluice::server=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// The shape of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What the broker offers in its AMQP `open`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// The largest frame the broker accepts, in bytes (at least 512).
    pub max_frame_size: u32,
    /// The highest channel number a client may use.
    pub channel_max: u16,
    /// Closes a connection silent for this long; 0 disables the timeout.
    pub idle_timeout_ms: u32,
    /// The broker's container id, sent to every client.
    pub container_id: String,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 262_144,
            channel_max: 255,
            idle_timeout_ms: 60_000,
            container_id: "sluice".to_owned(),
        }
    }
}

/// An account allowed to log in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The login name.
    pub name: String,
}

impl Config {
    /// Parses and validates a TOML document; missing fields take their
    /// defaults.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for bad TOML, an unknown field or a value of the
    /// wrong type; [`ConfigError::Invalid`] as [`Config::validate`] says.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but cannot work.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first unusable field: a
    /// max-frame-size below AMQP's minimum, an empty container id, or any
    /// user (accounts are not supported yet).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.amqp.max_frame_size < MAX_FRAME_SIZE_MIN {
            return Err(ConfigError::Invalid {
                field: "amqp.max_frame_size",
                reason: format!(
                    "{} is below AMQP's minimum of {MAX_FRAME_SIZE_MIN} bytes",
                    self.amqp.max_frame_size
                ),
            });
        }
        if self.amqp.container_id.is_empty() {
            return Err(ConfigError::Invalid {
                field: "amqp.container_id",
                reason: "must not be empty".to_owned(),
            });
        }
        if !self.users.is_empty() {
            return Err(ConfigError::Invalid {
                field: "users",
                reason: "accounts are not supported yet: this build only serves SASL ANONYMOUS"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:5672".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.seed, DEFAULT_SEED);
        assert_eq!(config.amqp.max_frame_size, 262_144);
        assert_eq!(config.amqp.channel_max, 255);
        assert_eq!(config.amqp.idle_timeout_ms, 60_000);
        assert_eq!(config.amqp.container_id, "sluice");
        assert!(config.users.is_empty());
    }

    #[test]
    fn sample_file_sets_every_field() {
        let config = Config::from_toml(
            r#"
            listen = "0.0.0.0:5673"
            data_dir = "/var/lib/sluice"
            seed = 42

            [log]
            format = "json"
            level = "debug,sluice::server=trace"

            [amqp]
            max_frame_size = 65536
            channel_max = 16
            idle_timeout_ms = 0
            container_id = "sluice-1"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:5673".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/sluice"));
        assert_eq!(config.seed, 42);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "debug,sluice::server=trace");
        assert_eq!(
            config.amqp,
            AmqpConfig {
                max_frame_size: 65_536,
                channel_max: 16,
                idle_timeout_ms: 0,
                container_id: "sluice-1".to_owned(),
            }
        );
    }

    #[test]
    fn partial_section_keeps_the_other_defaults() {
        let config = Config::from_toml("[amqp]\nchannel_max = 7\n").unwrap();
        assert_eq!(config.amqp.channel_max, 7);
        assert_eq!(config.amqp.max_frame_size, 262_144);
        assert_eq!(config.amqp.container_id, "sluice");
    }

    #[test]
    fn unknown_field_is_named_in_the_error() {
        let error = Config::from_toml("[amqp]\nmax_frame_sise = 1024\n").unwrap_err();
        assert!(matches!(error, ConfigError::Parse(_)));
        let message = error.to_string();
        assert!(
            message.contains("unknown field `max_frame_sise`"),
            "{message}"
        );
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        let error = Config::from_toml("lisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `lisen`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_and_bad_enum_are_rejected() {
        assert!(matches!(
            Config::from_toml("seed = \"many\"\n"),
            Err(ConfigError::Parse(_))
        ));
        let error = Config::from_toml("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(error.to_string().contains("xml"), "{error}");
    }

    #[test]
    fn frame_size_below_the_amqp_minimum_is_rejected() {
        let error = Config::from_toml("[amqp]\nmax_frame_size = 511\n").unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                field: "amqp.max_frame_size",
                ..
            }
        ));
        assert!(Config::from_toml("[amqp]\nmax_frame_size = 512\n").is_ok());
    }

    #[test]
    fn empty_container_id_is_rejected() {
        let error = Config::from_toml("[amqp]\ncontainer_id = \"\"\n").unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                field: "amqp.container_id",
                ..
            }
        ));
    }

    #[test]
    fn users_are_refused_until_authentication_exists() {
        let error = Config::from_toml("[[users]]\nname = \"alice\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: "users", .. }));
    }
}
