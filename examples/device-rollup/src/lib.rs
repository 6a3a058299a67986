//! Per-device rollups: the count, minimum, maximum and mean `value` of every device, sensor and
//! time bucket of `iot.readings`, upserted into a table of the synthetic keyspace.
//!
//! ```sh
//! quarry sql -e "CREATE TABLE synth.device_rollup (device_id bigint, sensor text, bucket timestamp,
//!                readings bigint, min_value double, max_value double, avg_value double,
//!                PRIMARY KEY ((device_id), sensor, bucket))"
//! quarry submit examples/device-rollup --arg bucket_hours=24
//! ```
//!
//! Arguments: `bucket_hours` (default 24), `target` (default `synth.device_rollup`).

use quarry_sdk::prelude::*;

/// A row of `iot.readings`, as far as the rollup reads it.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: i64,
    pub ts: Timestamp,
    pub sensor: String,
    /// Null when the sensor reported an error.
    pub value: Option<f64>,
}

/// A row of the rollup table.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Rollup {
    pub device_id: i64,
    pub sensor: String,
    pub bucket: Timestamp,
    /// Every reading, as SQL's `count(*)`.
    pub readings: i64,
    /// Over the readings with a value, as SQL's `min`, `max` and `avg`: null when none has one.
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub avg_value: Option<f64>,
}

/// Readings, readings with a value, and the minimum, maximum and sum of the values.
type Stats = (i64, i64, f64, f64, f64);

const EMPTY: Stats = (0, 0, f64::INFINITY, f64::NEG_INFINITY, 0.0);

fn add(s: Stats, value: Option<f64>) -> Stats {
    match value {
        Some(v) => (s.0 + 1, s.1 + 1, s.2.min(v), s.3.max(v), s.4 + v),
        None => (s.0 + 1, s.1, s.2, s.3, s.4),
    }
}

fn merge(a: Stats, b: Stats) -> Stats {
    (a.0 + b.0, a.1 + b.1, a.2.min(b.2), a.3.max(b.3), a.4 + b.4)
}

pub fn device_rollup(ctx: &JobContext) -> Result<()> {
    let hours: i64 = ctx.arg_or("bucket_hours", 24)?;
    if hours <= 0 {
        return Err(JobError::msg(format!(
            "bucket_hours must be positive, not {hours}"
        )));
    }
    let target: String = ctx.arg_or("target", "synth.device_rollup".to_string())?;
    let bucket = hours * Timestamp::MILLIS_PER_HOUR;
    ctx.source::<Reading>("iot.readings")
        .map(move |r| ((r.device_id, r.sensor, r.ts.truncate(bucket)), r.value))
        .aggregate_by_key(|| EMPTY, add, merge)
        .map(
            |((device_id, sensor, bucket), (n, valued, min, max, sum))| {
                let some = |v| (valued > 0).then_some(v);
                Rollup {
                    device_id,
                    sensor,
                    bucket,
                    readings: n,
                    min_value: some(min),
                    max_value: some(max),
                    avg_value: some(sum / valued as f64),
                }
            },
        )
        .write_to(&target);
    Ok(())
}

quarry_sdk::job!(device_rollup);

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device_id: i64, hour: i64, sensor: &str, value: Option<f64>) -> Reading {
        Reading {
            device_id,
            ts: Timestamp(hour * Timestamp::MILLIS_PER_HOUR + 1),
            sensor: sensor.to_string(),
            value,
        }
    }

    #[test]
    fn rolls_up_per_device_sensor_and_bucket() {
        let readings = vec![
            reading(1, 0, "temp", Some(20.0)),
            reading(1, 5, "temp", Some(30.0)),
            reading(1, 6, "temp", None),
            reading(1, 25, "temp", Some(10.0)),
            reading(1, 1, "humidity", Some(50.0)),
            reading(2, 2, "temp", None),
        ];
        let output = LocalJob::new(device_rollup)
            .table("iot.readings", readings)
            .run()
            .unwrap();
        let mut rows = output.written::<Rollup>("synth.device_rollup").unwrap();
        rows.sort_by(|a, b| {
            (a.device_id, &a.sensor, a.bucket).cmp(&(b.device_id, &b.sensor, b.bucket))
        });
        let day = Timestamp(24 * Timestamp::MILLIS_PER_HOUR);
        let rollup =
            |device_id, sensor: &str, bucket, readings, stats: Option<(f64, f64, f64)>| Rollup {
                device_id,
                sensor: sensor.to_string(),
                bucket,
                readings,
                min_value: stats.map(|s| s.0),
                max_value: stats.map(|s| s.1),
                avg_value: stats.map(|s| s.2),
            };
        assert_eq!(
            rows,
            vec![
                rollup(1, "humidity", Timestamp(0), 1, Some((50.0, 50.0, 50.0))),
                rollup(1, "temp", Timestamp(0), 3, Some((20.0, 30.0, 25.0))),
                rollup(1, "temp", day, 1, Some((10.0, 10.0, 10.0))),
                rollup(2, "temp", Timestamp(0), 1, None),
            ]
        );
    }

    #[test]
    fn a_bad_bucket_is_refused() {
        let err = LocalJob::new(device_rollup)
            .arg("bucket_hours", 0)
            .run()
            .unwrap_err();
        assert_eq!(err.to_string(), "bucket_hours must be positive, not 0");
    }
}
