//! The IoT data set behind `quarry demo` and the benchmarks: the table `iot.readings`, made up
//! on the fly, deterministically, from an [`IotConfig`].
//!
//! ```text
//!   IotConfig ──generator()──▶ ReadingsGenerator ──Iterator──▶ RecordBatch, RecordBatch, …
//!                                  │ row r → (device, round, sensor) → ts, value, status
//!                                  └ sensor_model: per-sensor physics + noise + anomalies
//! ```
//!
//! The table, with partition key `device_id` and clustering columns `ts, sensor`:
//!
//! | column      | CQL       | Arrow                              | notes                      |
//! |-------------|-----------|------------------------------------|----------------------------|
//! | `device_id` | bigint    | `Int64`, not null                  | `1..=devices`              |
//! | `ts`        | timestamp | `Timestamp(Millisecond, "UTC")`    | inside the `days` window   |
//! | `sensor`    | text      | `Utf8`, not null                   | one of [`SENSORS`]         |
//! | `value`     | double    | `Float64`, nullable                | NULL for ~0.1% (dropouts)  |
//! | `status`    | int       | `Int32`, nullable                  | 0 ok, 1 warn, 2 error      |
//!
//! Every `(device_id, ts, sensor)` is unique, so a store that upserts on the primary key keeps
//! every generated row. See [`ReadingsGenerator`] for how rows are laid out and
//! `sensor_model.rs` for what the values look like.

mod readings_generator;
mod sensor_model;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use readings_generator::ReadingsGenerator;

/// The sensor names, in the order in which [`IotConfig::sensors`] picks them: a config with
/// `sensors = 3` uses `temp`, `humidity` and `pressure`.
///
/// Units: `temp` °C, `humidity` % relative humidity, `pressure` hPa, `co2` ppm, `voltage` V
/// (mains), `current` A, `vibration` mm/s RMS, `light` lux.
pub const SENSORS: [&str; 8] = [
    "temp",
    "humidity",
    "pressure",
    "co2",
    "voltage",
    "current",
    "vibration",
    "light",
];

/// The time zone of the `ts` column.
pub const TIME_ZONE: &str = "UTC";

/// 2026-11-01T00:00:00Z in milliseconds since the Unix epoch: the default end of the window, fixed
/// so that two runs with the same seed produce the same table.
pub const DEFAULT_END_MILLIS: i64 = 1_793_491_200_000;

/// One day in milliseconds.
pub(crate) const DAY_MILLIS: i64 = 86_400_000;

/// The Arrow schema of `iot.readings`; see the crate docs for the columns.
pub fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some(TIME_ZONE.into())),
            false,
        ),
        Field::new("sensor", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("status", DataType::Int32, true),
    ]))
}

/// What to generate. The defaults (2,000,000 rows from 10,000 devices with all 8 sensors over
/// the 30 days before 2026-11-01T00:00:00Z, seed 42, batches of 65,536 rows) are the demo data set.
///
/// Device `d` (ids `1..=devices`) gets `rows / devices` readings, plus one more for the first
/// `rows % devices` devices; with fewer rows than devices, only the first `rows` devices report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IotConfig {
    /// Exactly how many rows to generate.
    pub rows: u64,
    /// How many devices report; their ids are `1..=devices`. At least 1.
    pub devices: u64,
    /// How many of [`SENSORS`] are in use (the first `sensors` names), 1 to 8.
    pub sensors: usize,
    /// The length of the time window in days, at least 1; readings fall in
    /// `[end_millis - days, end_millis)`.
    pub days: u32,
    /// The seed: the same config, seed included, always gives the same rows.
    pub seed: u64,
    /// The end of the window in milliseconds since the Unix epoch (exclusive);
    /// [`DEFAULT_END_MILLIS`] by default, so runs are reproducible.
    pub end_millis: i64,
    /// Rows per [`RecordBatch`](arrow::array::RecordBatch); the last batch may be shorter. At
    /// least 1. The rows themselves do not depend on it.
    pub batch_rows: usize,
}

impl Default for IotConfig {
    fn default() -> Self {
        IotConfig {
            rows: 2_000_000,
            devices: 10_000,
            sensors: SENSORS.len(),
            days: 30,
            seed: 42,
            end_millis: DEFAULT_END_MILLIS,
            batch_rows: 65_536,
        }
    }
}

impl IotConfig {
    /// Checks the config; [`IotConfig::generator`] panics on a config that fails this, so call it
    /// first on anything that came from a user.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError { field, reason });
        if self.devices == 0 {
            return invalid("devices", "is 0; at least one device must report".into());
        }
        if self.sensors == 0 || self.sensors > SENSORS.len() {
            return invalid(
                "sensors",
                format!(
                    "is {}; it must be 1 to {} (the sensors are {})",
                    self.sensors,
                    SENSORS.len(),
                    SENSORS.join(", ")
                ),
            );
        }
        if self.days == 0 {
            return invalid(
                "days",
                "is 0; the time window must be at least 1 day".into(),
            );
        }
        if self.batch_rows == 0 {
            return invalid(
                "batch_rows",
                "is 0; a batch must hold at least 1 row".into(),
            );
        }
        if self.end_millis.checked_sub(self.window_millis()).is_none() {
            return invalid(
                "end_millis",
                format!(
                    "is {}; the window of {} days would start before the earliest timestamp",
                    self.end_millis, self.days
                ),
            );
        }
        Ok(())
    }

    /// A generator of this config's rows, in batches of [`IotConfig::batch_rows`].
    ///
    /// # Panics
    ///
    /// If the config is invalid; see [`IotConfig::validate`].
    pub fn generator(&self) -> ReadingsGenerator {
        if let Err(err) = self.validate() {
            panic!("{err}");
        }
        ReadingsGenerator::new(*self)
    }

    /// The start of the window (inclusive) in milliseconds since the Unix epoch.
    pub fn start_millis(&self) -> i64 {
        self.end_millis - self.window_millis()
    }

    pub(crate) fn window_millis(&self) -> i64 {
        i64::from(self.days) * DAY_MILLIS
    }
}

/// An [`IotConfig`] field with a value the generator cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The name of the field, as in [`IotConfig`].
    pub field: &'static str,
    /// What is wrong with it and what would be right.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid IoT data set config: {} {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_demo_data_set() {
        let config = IotConfig::default();
        assert_eq!(config.rows, 2_000_000);
        assert_eq!(config.devices, 10_000);
        assert_eq!(config.sensors, 8);
        assert_eq!(config.days, 30);
        assert_eq!(config.seed, 42);
        assert_eq!(config.batch_rows, 65_536);
        assert_eq!(config.validate(), Ok(()));
        // 2026-11-01T00:00:00Z, 30 days after 2026-10-02T00:00:00Z.
        assert_eq!(config.end_millis, 1_793_491_200_000);
        assert_eq!(config.start_millis(), 1_790_899_200_000);
    }

    #[test]
    fn schema_has_the_table_columns() {
        let schema = readings_schema();
        let columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.is_nullable()))
            .collect();
        assert_eq!(
            columns,
            [
                ("device_id", false),
                ("ts", false),
                ("sensor", false),
                ("value", true),
                ("status", true)
            ]
        );
        assert_eq!(
            schema.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (
                IotConfig {
                    devices: 0,
                    ..Default::default()
                },
                "devices",
            ),
            (
                IotConfig {
                    sensors: 0,
                    ..Default::default()
                },
                "sensors",
            ),
            (
                IotConfig {
                    sensors: 9,
                    ..Default::default()
                },
                "sensors",
            ),
            (
                IotConfig {
                    days: 0,
                    ..Default::default()
                },
                "days",
            ),
            (
                IotConfig {
                    batch_rows: 0,
                    ..Default::default()
                },
                "batch_rows",
            ),
            (
                IotConfig {
                    end_millis: i64::MIN,
                    ..Default::default()
                },
                "end_millis",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.to_string().contains(field), "{err}");
        }
        let err = IotConfig {
            sensors: 9,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("1 to 8"), "{err}");
    }

    #[test]
    #[should_panic(expected = "invalid IoT data set config: devices")]
    fn generator_panics_on_an_invalid_config() {
        IotConfig {
            devices: 0,
            ..Default::default()
        }
        .generator();
    }
}
