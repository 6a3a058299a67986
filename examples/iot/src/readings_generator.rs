//! [`ReadingsGenerator`]: turns row numbers into `iot.readings` rows, one Arrow batch at a time.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::datatypes::SchemaRef;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sensor_model::{self, Moment};
use crate::{IotConfig, SENSORS, TIME_ZONE, readings_schema};

/// The largest jitter added to a reading's nominal time, in milliseconds.
const MAX_JITTER_MILLIS: u64 = 2_000;

/// An iterator over the rows of an [`IotConfig`], as [`RecordBatch`]es of
/// [`IotConfig::batch_rows`] rows (the last one shorter) with [`readings_schema`].
///
/// Rows come in rounds, like devices reporting in turn: row `r` is reading number
/// `k = r / devices` of device `r % devices + 1`, so the table's order is roughly by time and
/// every batch touches many partitions. Device `d` with `n` readings reports every
/// `interval = days / n` (at least 1 ms): reading `k` is at
/// `start + k * interval + phase(d) + jitter(r)`, where the per-device phase and per-row jitter
/// add up to less than `interval`, so a device's timestamps strictly increase and
/// `(device_id, ts, sensor)` is unique. (Only a device with more readings than milliseconds in
/// the window would run past its end.) Reading `k` of device `d` comes from sensor
/// `(k + d - 1) % sensors`, so each device cycles through its sensors and devices are staggered.
///
/// Each row's random numbers come from a generator seeded by the config's seed and the row
/// number, so a row does not depend on the batch size, and the same config always yields the
/// same batches (with the `rand` version in `Cargo.lock`).
#[derive(Debug)]
pub struct ReadingsGenerator {
    config: IotConfig,
    schema: SchemaRef,
    start_millis: i64,
    window_millis: u64,
    /// Every device gets `base_readings`, the first `extra_readings` devices one more.
    base_readings: u64,
    extra_readings: u64,
    /// Seeds of the per-device parameters and of the per-row random numbers.
    device_salt: u64,
    row_salt: u64,
    next_row: u64,
}

impl ReadingsGenerator {
    pub(crate) fn new(config: IotConfig) -> Self {
        ReadingsGenerator {
            schema: readings_schema(),
            start_millis: config.start_millis(),
            window_millis: config.window_millis() as u64,
            base_readings: config.rows / config.devices,
            extra_readings: config.rows % config.devices,
            device_salt: mix64(config.seed ^ 0x5EED_DE71_CE00_0001),
            row_salt: mix64(config.seed ^ 0x5EED_0000_0000_0002),
            next_row: 0,
            config,
        }
    }

    /// The config this generator was made from.
    pub fn config(&self) -> &IotConfig {
        &self.config
    }

    /// The schema of every batch: [`readings_schema`].
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// How many rows are still to come.
    pub fn remaining_rows(&self) -> u64 {
        self.config.rows - self.next_row
    }

    /// Rows `first_row..first_row + len`.
    fn batch(&self, first_row: u64, len: usize) -> RecordBatch {
        let devices = self.config.devices;
        let sensors = self.config.sensors as u64;

        let mut device_ids = Vec::with_capacity(len);
        let mut timestamps = Vec::with_capacity(len);
        let mut sensor_names = StringBuilder::with_capacity(len, len * 8);
        let mut values = Vec::with_capacity(len);
        let mut value_nulls = NullBufferBuilder::new(len);
        let mut statuses = Vec::with_capacity(len);
        let mut status_nulls = NullBufferBuilder::new(len);

        let mut round = first_row / devices;
        let mut device_index = first_row % devices;
        for row in first_row..first_row + len as u64 {
            let device_id = device_index + 1;
            let readings = self.base_readings + u64::from(device_index < self.extra_readings);
            let interval = (self.window_millis / readings).max(1);
            let device_hash = mix64(self.device_salt ^ device_id.wrapping_mul(GOLDEN_GAMMA));
            let mut rng = SmallRng::seed_from_u64(self.row_salt ^ row);

            // phase < interval / 2 and jitter < interval - interval / 2 (at most 2 s), so the
            // offset from the nominal time stays below one interval.
            let half = interval / 2;
            let phase = if half > 0 { device_hash % half } else { 0 };
            let jitter = rng.random_range(0..(interval - half).min(MAX_JITTER_MILLIS));
            let offset = round * interval + phase + jitter;
            let ts_millis = self.start_millis + offset as i64;

            let sensor = ((round + device_index) % sensors) as usize;
            let sensor_hash = mix64(device_hash ^ (sensor as u64 + 1).wrapping_mul(GOLDEN_GAMMA));
            let moment = Moment {
                ts_millis,
                window_fraction: offset as f64 / self.window_millis as f64,
                device_a: unit_interval(sensor_hash >> 40),
                device_b: unit_interval((sensor_hash >> 16) & 0xFF_FFFF),
            };
            let reading = sensor_model::reading(sensor, &moment, &mut rng);

            device_ids.push(device_id as i64);
            timestamps.push(ts_millis);
            sensor_names.append_value(SENSORS[sensor]);
            values.push(reading.value.unwrap_or_default());
            value_nulls.append(reading.value.is_some());
            statuses.push(reading.status.unwrap_or_default());
            status_nulls.append(reading.status.is_some());

            device_index += 1;
            if device_index == devices {
                device_index = 0;
                round += 1;
            }
        }

        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(device_ids)),
            Arc::new(TimestampMillisecondArray::from(timestamps).with_timezone(TIME_ZONE)),
            Arc::new(sensor_names.finish()),
            Arc::new(Float64Array::new(values.into(), value_nulls.finish())),
            Arc::new(Int32Array::new(statuses.into(), status_nulls.finish())),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
            .expect("generated columns match readings_schema")
    }

    fn remaining_batches(&self) -> usize {
        self.remaining_rows()
            .div_ceil(self.config.batch_rows as u64) as usize
    }
}

impl Iterator for ReadingsGenerator {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let remaining = self.remaining_rows();
        if remaining == 0 {
            return None;
        }
        let len = remaining.min(self.config.batch_rows as u64) as usize;
        let batch = self.batch(self.next_row, len);
        self.next_row += len as u64;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let batches = self.remaining_batches();
        (batches, Some(batches))
    }
}

impl ExactSizeIterator for ReadingsGenerator {}

/// The odd constant of SplitMix64, 2^64 / φ.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a cheap, well-mixed hash of a `u64`.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 24-bit number as a fraction in `[0, 1)`.
fn unit_interval(bits24: u64) -> f64 {
    bits24 as f64 / (1u64 << 24) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use arrow::array::{Array, AsArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::DAY_MILLIS;

    /// One row as plain values: (device_id, ts, sensor, value, status).
    type Row = (i64, i64, String, Option<f64>, Option<i32>);

    fn collect_rows(config: &IotConfig) -> Vec<Row> {
        let mut rows = Vec::new();
        for batch in config.generator() {
            let device_ids = batch.column(0).as_primitive::<Int64Type>();
            let timestamps = batch.column(1).as_primitive::<TimestampMillisecondType>();
            let sensors = batch.column(2).as_string::<i32>();
            let values = batch.column(3).as_primitive::<Float64Type>();
            let statuses = batch.column(4).as_primitive::<Int32Type>();
            for i in 0..batch.num_rows() {
                rows.push((
                    device_ids.value(i),
                    timestamps.value(i),
                    sensors.value(i).to_owned(),
                    values.is_valid(i).then(|| values.value(i)),
                    statuses.is_valid(i).then(|| statuses.value(i)),
                ));
            }
        }
        rows
    }

    fn config(rows: u64, devices: u64, sensors: usize) -> IotConfig {
        IotConfig {
            rows,
            devices,
            sensors,
            days: 7,
            seed: 7,
            batch_rows: 1_000,
            ..IotConfig::default()
        }
    }

    #[test]
    fn row_counts_are_exact_and_batches_full_but_the_last() {
        for (rows, batch_rows) in [(0, 10), (1, 10), (7, 3), (999, 1_000), (12_345, 1_000)] {
            let config = IotConfig {
                batch_rows,
                ..config(rows, 13, 3)
            };
            let generator = config.generator();
            let expected_batches = rows.div_ceil(batch_rows as u64) as usize;
            assert_eq!(generator.len(), expected_batches);
            let lengths: Vec<usize> = generator.map(|b| b.num_rows()).collect();
            assert_eq!(lengths.len(), expected_batches, "rows {rows}");
            assert_eq!(lengths.iter().sum::<usize>() as u64, rows);
            if let Some((last, full)) = lengths.split_last() {
                assert!(full.iter().all(|&n| n == batch_rows));
                assert!(*last > 0 && *last <= batch_rows);
            }
        }
    }

    #[test]
    fn primary_keys_are_unique() {
        for (rows, devices, sensors, days) in
            [(50_001, 97, 5, 7), (20_000, 3, 8, 1), (500, 1, 1, 1)]
        {
            let config = IotConfig {
                days,
                ..config(rows, devices, sensors)
            };
            let generated = collect_rows(&config);
            let keys: HashSet<(i64, i64, &str)> = generated
                .iter()
                .map(|(d, ts, s, _, _)| (*d, *ts, s.as_str()))
                .collect();
            assert_eq!(keys.len() as u64, rows, "{config:?}");
        }
    }

    #[test]
    fn devices_share_the_rows_evenly_over_the_window() {
        let config = config(10_007, 10, 8);
        let mut per_device: HashMap<i64, Vec<i64>> = HashMap::new();
        for (device, ts, _, _, _) in collect_rows(&config) {
            per_device.entry(device).or_default().push(ts);
        }
        let mut ids: Vec<i64> = per_device.keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        let (start, end) = (config.start_millis(), config.end_millis);
        for (device, timestamps) in &per_device {
            let expected = if *device <= 7 { 1_001 } else { 1_000 };
            assert_eq!(timestamps.len(), expected, "device {device}");
            assert!(
                timestamps.windows(2).all(|w| w[0] < w[1]),
                "device {device}"
            );
            let (first, last) = (timestamps[0], *timestamps.last().unwrap());
            assert!(first >= start && last < end);
            // Evenly spaced: the first and last readings sit within one interval of the ends.
            let interval = (end - start) / expected as i64;
            assert!(first - start < interval && end - last <= interval + interval / 2);
        }
    }

    #[test]
    fn sensors_round_robin_over_the_first_names() {
        let config = config(3_000, 10, 3);
        let rows = collect_rows(&config);
        let used: HashSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(used, HashSet::from(["temp", "humidity", "pressure"]));
        let mut by_device: HashMap<i64, Vec<&str>> = HashMap::new();
        for row in &rows {
            by_device.entry(row.0).or_default().push(&row.2);
        }
        for sensors in by_device.values() {
            for pair in sensors.windows(2) {
                let i = SENSORS.iter().position(|s| *s == pair[0]).unwrap();
                assert_eq!(pair[1], SENSORS[(i + 1) % 3]);
            }
        }
    }

    #[test]
    fn same_seed_same_batches_whatever_the_batch_size() {
        let config = config(5_000, 17, 8);
        let first: Vec<RecordBatch> = config.generator().collect();
        let second: Vec<RecordBatch> = config.generator().collect();
        assert_eq!(first, second);

        let rebatched: Vec<RecordBatch> = IotConfig {
            batch_rows: 777,
            ..config
        }
        .generator()
        .collect();
        let schema = readings_schema();
        assert_eq!(
            concat_batches(&schema, &first).unwrap(),
            concat_batches(&schema, &rebatched).unwrap()
        );

        let other_seed: Vec<RecordBatch> = IotConfig { seed: 8, ..config }.generator().collect();
        assert_ne!(first, other_seed);
    }

    #[test]
    fn batches_have_the_readings_schema() {
        for batch in config(2_500, 7, 8).generator() {
            assert_eq!(batch.schema(), readings_schema());
        }
    }

    /// 100,000 rows of the default shape (all sensors, 30 days).
    fn hundred_thousand() -> Vec<Row> {
        collect_rows(&IotConfig {
            rows: 100_000,
            devices: 1_000,
            ..IotConfig::default()
        })
    }

    #[test]
    fn values_are_plausible_per_sensor() {
        let rows = hundred_thousand();
        let ranges: HashMap<&str, (f64, f64)> = HashMap::from([
            ("temp", (5.0, 35.0)),
            ("humidity", (30.0, 70.0)),
            ("pressure", (990.0, 1035.0)),
            ("co2", (400.0, 2000.0)),
            ("voltage", (185.0, 240.0)),
            ("current", (0.4, 20.0)),
            ("vibration", (0.2, 30.5)),
            ("light", (0.0, 1100.0)),
        ]);
        let mut per_sensor: HashMap<&str, Vec<f64>> = HashMap::new();
        for (_, _, sensor, value, _) in &rows {
            if let Some(v) = value {
                per_sensor.entry(sensor.as_str()).or_default().push(*v);
            }
        }
        for (sensor, values) in &per_sensor {
            let (lo, hi) = ranges[sensor];
            let odd: Vec<&f64> = values
                .iter()
                .filter(|v| {
                    let spike = *sensor == "temp" && **v > 90.0;
                    !((lo..=hi).contains(*v) || spike)
                })
                .collect();
            assert!(odd.is_empty(), "{sensor}: {:?}", &odd[..odd.len().min(5)]);
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let expected_mean = match *sensor {
                "temp" => 20.0 + 0.005 * 85.0,
                "humidity" => 50.0,
                "pressure" => 1013.0,
                _ => continue,
            };
            assert!((mean - expected_mean).abs() < 1.0, "{sensor} mean {mean}");
        }
        assert_eq!(per_sensor.len(), 8);
    }

    #[test]
    fn some_temperatures_exceed_90() {
        let rows = hundred_thousand();
        let temps: Vec<f64> = rows
            .iter()
            .filter(|r| r.2 == "temp")
            .filter_map(|r| r.3)
            .collect();
        let hot = temps.iter().filter(|t| **t > 90.0).count();
        let share = hot as f64 / temps.len() as f64;
        assert!((0.003..0.008).contains(&share), "{hot} of {}", temps.len());
        // The spikes are errors unless the status went missing.
        for row in rows
            .iter()
            .filter(|r| r.2 == "temp" && r.3.is_some_and(|t| t > 90.0))
        {
            assert!(matches!(row.4, Some(2) | None), "{row:?}");
        }
    }

    #[test]
    fn temperature_follows_the_day() {
        let rows = hundred_thousand();
        let mean_at = |hours: std::ops::Range<i64>| {
            let temps: Vec<f64> = rows
                .iter()
                .filter(|r| {
                    r.2 == "temp" && hours.contains(&(r.1.rem_euclid(DAY_MILLIS) / 3_600_000))
                })
                .filter_map(|r| r.3)
                .filter(|t| *t < 90.0)
                .collect();
            temps.iter().sum::<f64>() / temps.len() as f64
        };
        let (night, afternoon) = (mean_at(1..5), mean_at(13..17));
        assert!(
            afternoon - night > 6.0,
            "night {night}, afternoon {afternoon}"
        );
    }

    #[test]
    fn nulls_and_statuses_are_rare_but_present() {
        let rows = hundred_thousand();
        let n = rows.len() as f64;
        let null_values = rows.iter().filter(|r| r.3.is_none()).count() as f64 / n;
        let null_statuses = rows.iter().filter(|r| r.4.is_none()).count() as f64 / n;
        assert!((0.0005..0.002).contains(&null_values), "{null_values}");
        assert!((0.0005..0.002).contains(&null_statuses), "{null_statuses}");
        let share = |status| rows.iter().filter(|r| r.4 == Some(status)).count() as f64 / n;
        let (ok, warn, error) = (share(0), share(1), share(2));
        assert!(ok > 0.95, "ok {ok}");
        assert!((0.01..0.04).contains(&warn), "warn {warn}");
        assert!(
            (0.001..0.01).contains(&error) && error < warn,
            "error {error}"
        );
        // A failed read is an error.
        assert!(
            rows.iter()
                .filter(|r| r.3.is_none())
                .all(|r| r.4 == Some(2))
        );
    }
}
