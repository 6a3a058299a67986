//! A job over `iot.devices (id bigint, tags map<text, text>, readings list<double>, owners
//! set<text>)` that writes one summary per device to `synth.device_summary (id bigint, site text,
//! total double, top list<double>, labels map<text, text>, owners set<text>)`: collections in,
//! collections out. The collection tests run it.

use std::collections::BTreeMap;

use quarry_sdk::prelude::*;

/// A row of `iot.devices`.
#[derive(Record, Debug, Clone)]
pub struct Device {
    pub id: i64,
    pub tags: BTreeMap<String, String>,
    pub readings: Vec<f64>,
    pub owners: Vec<String>,
}

/// A row of `synth.device_summary`.
#[derive(Record, Debug, Clone)]
pub struct Summary {
    pub id: i64,
    pub site: Option<String>,
    pub total: f64,
    /// The two largest readings, largest first.
    pub top: Vec<f64>,
    /// The tags, keys upper-cased.
    pub labels: BTreeMap<String, String>,
    /// The owners and a constant one, which the store keeps once each, sorted.
    pub owners: Vec<String>,
}

pub fn summarize(ctx: &JobContext) -> Result<()> {
    ctx.source::<Device>("iot.devices")
        .map(|d| {
            let mut top = d.readings.clone();
            top.sort_by(|a, b| b.total_cmp(a));
            top.truncate(2);
            let mut owners = d.owners;
            owners.push("ops".to_string());
            Summary {
                id: d.id,
                site: d.tags.get("site").cloned(),
                // `sum()` of no f64s is -0.0; a device without readings totals 0.
                total: d.readings.iter().fold(0.0, |a, b| a + b),
                top,
                labels: d
                    .tags
                    .into_iter()
                    .map(|(k, v)| (k.to_uppercase(), v))
                    .collect(),
                owners,
            }
        })
        .write_to("synth.device_summary");
    Ok(())
}

quarry_sdk::job!(summarize);
