//! The jobs `quarry-bench jobs` times against SQL, chosen with `--arg job=...`:
//!
//! - `temp-stats`: the SQL benchmark's query (b), per-device count, mean and maximum of `temp`
//!   readings (`count(*)` counts readings without a value too, as SQL's does);
//! - `identity`: every reading through `map(|r| r)`, counted: the cost of crossing into the
//!   module and back, batch by batch.

use quarry_sdk::prelude::*;

#[derive(Record, Debug, Clone)]
pub struct TempReading {
    pub device_id: i64,
    pub value: Option<f64>,
}

#[derive(Record, Debug, Clone)]
pub struct Reading {
    pub device_id: i64,
    pub ts: Timestamp,
    pub sensor: String,
    pub value: Option<f64>,
    pub status: Option<i32>,
}

/// Readings, readings with a value, their sum and maximum.
type Stats = (i64, i64, f64, f64);

pub fn bench(ctx: &JobContext) -> Result<()> {
    let job: String = ctx.arg("job")?;
    match job.as_str() {
        "temp-stats" => ctx
            .source::<TempReading>("iot.readings")
            .where_sql("sensor = 'temp'")
            .key_by(|r| r.device_id)
            .aggregate_by_key(
                || (0, 0, 0.0, f64::NEG_INFINITY),
                |s: Stats, r: TempReading| match r.value {
                    Some(v) => (s.0 + 1, s.1 + 1, s.2 + v, s.3.max(v)),
                    None => (s.0 + 1, s.1, s.2, s.3),
                },
                |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3.max(b.3)),
            )
            .map(|(device, (n, valued, sum, max))| {
                let some = |v| (valued > 0).then_some(v);
                (device, n, some(sum / valued as f64), some(max))
            })
            .collect(),
        "identity" => ctx.source::<Reading>("iot.readings").map(|r| r).count(),
        other => {
            return Err(JobError::msg(format!(
                "unknown job '{other}'; pass --arg job=temp-stats or --arg job=identity"
            )));
        }
    }
    Ok(())
}

quarry_sdk::job!(bench);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_stats_count_every_reading_and_average_the_valued_ones() {
        let readings = vec![
            TempReading {
                device_id: 1,
                value: Some(10.0),
            },
            TempReading {
                device_id: 1,
                value: None,
            },
            TempReading {
                device_id: 1,
                value: Some(20.0),
            },
            TempReading {
                device_id: 2,
                value: None,
            },
        ];
        let output = LocalJob::new(bench)
            .arg("job", "temp-stats")
            .table("iot.readings", readings)
            .prefiltered("iot.readings")
            .run()
            .unwrap();
        let mut rows = output
            .collected::<(i64, i64, Option<f64>, Option<f64>)>(0)
            .unwrap();
        rows.sort_by_key(|r| r.0);
        assert_eq!(
            rows,
            vec![(1, 3, Some(15.0), Some(20.0)), (2, 1, None, None)]
        );
    }
}
