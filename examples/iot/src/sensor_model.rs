//! What a reading's value and status look like: a small model per sensor of an industrial
//! monitoring node (a machine on a factory floor with mains power and a window nearby).
//!
//! A value is a per-device baseline (two numbers in `[0, 1)` derived from the device id, so a
//! device keeps its character over the whole window) plus a daily or weather cycle, noise, and
//! rare anomalies. Ranges, before rounding to two decimals:
//!
//! | sensor      | unit    | normal range      | anomaly                                  |
//! |-------------|---------|-------------------|------------------------------------------|
//! | `temp`      | °C      | 8 – 32, ~20 ± 8   | 0.5% spikes to 90.5 – 120.5 (status 2)    |
//! | `humidity`  | %       | 31 – 69           |                                          |
//! | `pressure`  | hPa     | 998 – 1028        |                                          |
//! | `co2`       | ppm     | 400 – 1975        |                                          |
//! | `voltage`   | V       | 225.5 – 234.5     | 0.2% sags of 20 – 40 V (status 1)         |
//! | `current`   | A       | 0.5 – 17.6        |                                          |
//! | `vibration` | mm/s    | 0.3 – 8           | 0.1% shocks to 15 – 30 mm/s (status 1)    |
//! | `light`     | lux     | 5 – 1025          |                                          |
//!
//! The daily cycles run on UTC: temperature peaks at 15:00 and bottoms at 03:00 (humidity does
//! the opposite), load (CO2, current, vibration) follows a 08:00–18:00 shift, light follows the
//! 06:00–18:00 daylight.
//!
//! Status: a failed read (0.1%) has a NULL value and status 2; an anomaly has the status above;
//! otherwise 2% of readings are warnings (1) and 0.15% errors (2) at random, and the rest are 0.
//! Independently, 0.1% of the other readings have a NULL status (firmware that does not send one).

use std::f64::consts::{PI, TAU};

use rand::Rng;
use rand::rngs::SmallRng;

use crate::DAY_MILLIS;

/// Status codes.
pub(crate) const STATUS_OK: i32 = 0;
pub(crate) const STATUS_WARN: i32 = 1;
pub(crate) const STATUS_ERROR: i32 = 2;

const READ_FAILURE_RATE: f64 = 0.001;
const MISSING_STATUS_RATE: f64 = 0.001;
const WARN_RATE: f64 = 0.02;
const ERROR_RATE: f64 = 0.0015;
const TEMP_SPIKE_RATE: f64 = 0.005;
const VOLTAGE_SAG_RATE: f64 = 0.002;
const VIBRATION_SHOCK_RATE: f64 = 0.001;

/// Where and when a reading is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    /// The reading's timestamp in milliseconds since the Unix epoch.
    pub ts_millis: i64,
    /// How far through the window the timestamp is, in `[0, 1)`.
    pub window_fraction: f64,
    /// Two numbers in `[0, 1)` fixed per device and sensor.
    pub device_a: f64,
    pub device_b: f64,
}

/// A generated reading: `value` is `None` for a failed read, `status` `None` when not reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub value: Option<f64>,
    pub status: Option<i32>,
}

/// The reading of sensor number `sensor` (an index into [`crate::SENSORS`]) at `moment`.
pub(crate) fn reading(sensor: usize, moment: &Moment, rng: &mut SmallRng) -> Reading {
    if rng.random::<f64>() < READ_FAILURE_RATE {
        return Reading {
            value: None,
            status: Some(STATUS_ERROR),
        };
    }
    let (raw, anomaly) = value(sensor, moment, rng);
    let roll = rng.random::<f64>();
    let status = if roll < MISSING_STATUS_RATE {
        None
    } else if let Some(status) = anomaly {
        Some(status)
    } else if roll < MISSING_STATUS_RATE + ERROR_RATE {
        Some(STATUS_ERROR)
    } else if roll < MISSING_STATUS_RATE + ERROR_RATE + WARN_RATE {
        Some(STATUS_WARN)
    } else {
        Some(STATUS_OK)
    };
    Reading {
        value: Some((raw * 100.0).round() / 100.0),
        status,
    }
}

/// The raw value and, for an anomaly, the status it raises.
fn value(sensor: usize, m: &Moment, rng: &mut SmallRng) -> (f64, Option<i32>) {
    let hour = m.ts_millis.rem_euclid(DAY_MILLIS) as f64 / 3_600_000.0;
    let (a, b) = (m.device_a, m.device_b);
    match sensor {
        // temp: ~20 °C, ±4 per device, ±5 over the day, ±3 noise; rare overheating spikes.
        0 => {
            if rng.random::<f64>() < TEMP_SPIKE_RATE {
                return (90.5 + 30.0 * rng.random::<f64>(), Some(STATUS_ERROR));
            }
            let t = 20.0 + 8.0 * (a - 0.5) + 5.0 * daily(hour) + 3.0 * noise(rng);
            (t, None)
        }
        // humidity: ~50 %, falling as the temperature rises.
        1 => (
            50.0 + 10.0 * (a - 0.5) - 9.0 * daily(hour) + 5.0 * noise(rng),
            None,
        ),
        // pressure: ~1013 hPa, ±8 for altitude, ±6 from weather systems a few days long.
        2 => {
            let days = m.ts_millis as f64 / DAY_MILLIS as f64;
            let weather = (TAU * (days / 4.3 + b)).sin();
            (
                1013.0 + 16.0 * (a - 0.5) + 6.0 * weather + 0.8 * noise(rng),
                None,
            )
        }
        // co2: outdoor ~420 ppm, rising with the people on shift, more in crowded rooms.
        3 => {
            let occupancy = 200.0 + 1300.0 * a;
            let ppm =
                420.0 + 30.0 * rng.random::<f64>() + occupancy * shift(hour) + 25.0 * noise(rng);
            (ppm.max(400.0), None)
        }
        // voltage: 230 V mains, ±3 per site, ±1.5 noise; rare sags.
        4 => {
            let v = 230.0 + 6.0 * (a - 0.5) + 1.5 * noise(rng);
            if rng.random::<f64>() < VOLTAGE_SAG_RATE {
                (v - 20.0 - 20.0 * rng.random::<f64>(), Some(STATUS_WARN))
            } else {
                (v, None)
            }
        }
        // current: a machine rated 4–16 A, idling at 15% off shift.
        5 => {
            let rated = 4.0 + 12.0 * a;
            (rated * load(hour) * (1.0 + 0.1 * noise(rng)), None)
        }
        // vibration: grows with load and, for some machines, with bearing wear over the window.
        6 => {
            if rng.random::<f64>() < VIBRATION_SHOCK_RATE {
                return (15.0 + 15.0 * rng.random::<f64>(), Some(STATUS_WARN));
            }
            let mm_s = (0.5 + 2.5 * load(hour)) * (0.6 + 0.8 * a)
                + 2.0 * b * m.window_fraction
                + 0.3 * rng.random::<f64>();
            (mm_s, None)
        }
        // light: daylight through a window, brighter for some devices.
        _ => {
            let lux = 5.0 + (150.0 + 850.0 * a) * daylight(hour) + 20.0 * rng.random::<f64>();
            (lux, None)
        }
    }
}

/// The daily temperature cycle in `[-1, 1]`: 1 at 15:00, -1 at 03:00.
fn daily(hour: f64) -> f64 {
    (TAU * (hour - 9.0) / 24.0).sin()
}

/// People and machines at work, in `[0, 1]`: a hump over the 08:00–18:00 shift.
fn shift(hour: f64) -> f64 {
    if (8.0..18.0).contains(&hour) {
        (PI * (hour - 8.0) / 10.0).sin()
    } else {
        0.0
    }
}

/// A machine's load as a fraction of its rating: 0.15 idle, 1.0 at the height of the shift.
fn load(hour: f64) -> f64 {
    0.15 + 0.85 * shift(hour)
}

/// Daylight in `[0, 1]`: a hump from 06:00 to 18:00.
fn daylight(hour: f64) -> f64 {
    if (6.0..18.0).contains(&hour) {
        (PI * (hour - 6.0) / 12.0).sin()
    } else {
        0.0
    }
}

/// Noise in `[-1, 1]`, triangular (the sum of two uniforms), so most of it is small.
fn noise(rng: &mut SmallRng) -> f64 {
    rng.random::<f64>() + rng.random::<f64>() - 1.0
}
