//! Vendor payloads into readings: each row of `source` (default `iot.payloads`) holds a gateway's
//! batch of readings as text, `device:sensor:value` entries separated by `;`
//! (`42:temp:21.5;42:humidity:40;7:temp:err`). A `flat_map` parses every entry into a reading
//! stamped with the payload's time and upserts them into `target` (default `iot.readings`).
//! An entry whose value does not parse becomes a reading without a value and with status 2 (the
//! demo data's error status); an entry that is not `device:sensor:value` at all is dropped and
//! counted in the job's second result.
//!
//! ```sh
//! quarry sql -e "CREATE TABLE iot.payloads (gateway_id bigint, received timestamp, payload text,
//!                PRIMARY KEY ((gateway_id), received))"
//! quarry submit examples/payload-parse
//! ```

use quarry_sdk::prelude::*;

#[derive(Record, Debug, Clone, PartialEq)]
pub struct Payload {
    pub gateway_id: i64,
    pub received: Timestamp,
    pub payload: String,
}

/// A row of `iot.readings`.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: i64,
    pub ts: Timestamp,
    pub sensor: String,
    pub value: Option<f64>,
    pub status: Option<i32>,
}

/// One entry of a payload: a reading, or `None` when it is malformed.
pub fn parse_entry(entry: &str, ts: Timestamp) -> Option<Reading> {
    let mut parts = entry.trim().splitn(3, ':');
    let device_id = parts.next()?.trim().parse().ok()?;
    let sensor = parts.next()?.trim();
    let value = parts.next()?.trim();
    if sensor.is_empty() {
        return None;
    }
    let value: Option<f64> = value.parse().ok();
    Some(Reading {
        device_id,
        ts,
        sensor: sensor.to_string(),
        value,
        status: Some(if value.is_some() { 0 } else { 2 }),
    })
}

fn entries(payload: &str) -> impl Iterator<Item = &str> {
    payload.split(';').filter(|e| !e.trim().is_empty())
}

pub fn payload_parse(ctx: &JobContext) -> Result<()> {
    let source: String = ctx.arg_or("source", "iot.payloads".to_string())?;
    let target: String = ctx.arg_or("target", "iot.readings".to_string())?;
    ctx.source::<Payload>(&source)
        .flat_map(|p| {
            entries(&p.payload)
                .filter_map(|e| parse_entry(e, p.received))
                .collect::<Vec<_>>()
        })
        .write_to(&target);
    ctx.source::<Payload>(&source)
        .flat_map(|p| {
            entries(&p.payload)
                .filter(|e| parse_entry(e, p.received).is_none())
                .map(|e| (p.gateway_id, e.to_string()))
                .collect::<Vec<_>>()
        })
        .count();
    Ok(())
}

quarry_sdk::job!(payload_parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_becomes_a_reading_and_garbage_is_counted() {
        let payloads = vec![
            Payload {
                gateway_id: 1,
                received: Timestamp(1000),
                payload: "42:temp:21.5;42:humidity:40; 7:temp:err ;".into(),
            },
            Payload {
                gateway_id: 2,
                received: Timestamp(2000),
                payload: "8:co2:415;garbage;9::1".into(),
            },
        ];
        let output = LocalJob::new(payload_parse)
            .table("iot.payloads", payloads)
            .run()
            .unwrap();
        let mut readings = output.written::<Reading>("iot.readings").unwrap();
        readings.sort_by_key(|r| (r.device_id, r.sensor.clone()));
        let reading = |device_id, ts, sensor: &str, value, status| Reading {
            device_id,
            ts: Timestamp(ts),
            sensor: sensor.into(),
            value,
            status: Some(status),
        };
        assert_eq!(
            readings,
            vec![
                reading(7, 1000, "temp", None, 2),
                reading(8, 2000, "co2", Some(415.0), 0),
                reading(42, 1000, "humidity", Some(40.0), 0),
                reading(42, 1000, "temp", Some(21.5), 0),
            ]
        );
        assert_eq!(output.count(1).unwrap(), 2);
    }
}
