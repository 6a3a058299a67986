//! Anomaly flags: every reading more than `sigmas` (default 3) population standard deviations
//! from the mean of its device and sensor, upserted into `target` (default `synth.anomalies`).
//!
//! Two stages and a join: the per-key mean and deviation (`aggregate_by_key`, combined on each
//! worker before the shuffle), then the readings joined with their key's statistics.
//!
//! ```sh
//! quarry sql -e "CREATE TABLE synth.anomalies (device_id bigint, sensor text, ts timestamp,
//!                value double, mean double, stddev double, PRIMARY KEY ((device_id), sensor, ts))"
//! quarry submit examples/anomalies --arg sigmas=3
//! ```

use quarry_sdk::prelude::*;

#[derive(Record, Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: i64,
    pub ts: Timestamp,
    pub sensor: String,
    pub value: Option<f64>,
}

#[derive(Record, Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub device_id: i64,
    pub sensor: String,
    pub ts: Timestamp,
    pub value: f64,
    pub mean: f64,
    pub stddev: f64,
}

/// Readings with a value, keyed by device and sensor.
fn valued(ctx: &JobContext) -> Dataset<((i64, String), (Timestamp, f64))> {
    ctx.source::<Reading>("iot.readings")
        .flat_map(|r| r.value.map(|v| ((r.device_id, r.sensor), (r.ts, v))))
}

pub fn anomalies(ctx: &JobContext) -> Result<()> {
    let sigmas: f64 = ctx.arg_or("sigmas", 3.0)?;
    let target: String = ctx.arg_or("target", "synth.anomalies".to_string())?;
    // Count, sum and sum of squares; then mean and population standard deviation.
    let stats = valued(ctx)
        .aggregate_by_key(
            || (0i64, 0.0f64, 0.0f64),
            |(n, sum, squares), (_, v)| (n + 1, sum + v, squares + v * v),
            |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2),
        )
        .map(|(key, (n, sum, squares))| {
            let mean = sum / n as f64;
            let variance = (squares / n as f64 - mean * mean).max(0.0);
            (key, (mean, variance.sqrt()))
        });
    valued(ctx)
        .join(stats)
        .filter(move |(_, ((_, v), (mean, sd)))| (v - mean).abs() > sigmas * sd)
        .map(
            |((device_id, sensor), ((ts, value), (mean, stddev)))| Anomaly {
                device_id,
                sensor,
                ts,
                value,
                mean,
                stddev,
            },
        )
        .write_to(&target);
    Ok(())
}

quarry_sdk::job!(anomalies);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_reading_far_from_its_keys_mean() {
        let mut readings: Vec<Reading> = (0..20)
            .map(|i| Reading {
                device_id: 1,
                ts: Timestamp(i),
                sensor: "temp".into(),
                value: Some(20.0 + (i % 2) as f64),
            })
            .collect();
        readings.push(Reading {
            device_id: 1,
            ts: Timestamp(99),
            sensor: "temp".into(),
            value: Some(80.0),
        });
        // Another key with the same values is judged by its own statistics.
        readings.push(Reading {
            device_id: 2,
            ts: Timestamp(5),
            sensor: "temp".into(),
            value: Some(80.0),
        });
        readings.push(Reading {
            device_id: 1,
            ts: Timestamp(100),
            sensor: "temp".into(),
            value: None,
        });
        let output = LocalJob::new(anomalies)
            .table("iot.readings", readings)
            .run()
            .unwrap();
        let flagged = output.written::<Anomaly>("synth.anomalies").unwrap();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert_eq!((flagged[0].device_id, flagged[0].ts), (1, Timestamp(99)));
        assert!(flagged[0].stddev > 0.0);
    }
}
