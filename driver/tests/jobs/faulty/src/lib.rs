//! A job over `ks.numbers (n bigint)` whose map misbehaves as `--arg fault=...` says: `panic`
//! (on n = 7), `loop` (forever), `grow` (allocates until memory runs out); `none` (the default)
//! doubles every number. The sandbox tests run it.

use quarry_sdk::prelude::*;

/// A row of `ks.numbers`.
#[derive(Record, Debug, Clone)]
pub struct Number {
    pub n: i64,
}

pub fn faulty(ctx: &JobContext) -> Result<()> {
    let fault: String = ctx.arg_or("fault", "none".to_string())?;
    ctx.source::<Number>("ks.numbers")
        .map(move |Number { n }| match fault.as_str() {
            "panic" if n == 7 => panic!("bad reading {n}"),
            "loop" => spin(n),
            "grow" => hoard(n),
            _ => n * 2,
        })
        .collect();
    Ok(())
}

/// Never returns, without looking like it to the optimizer.
fn spin(n: i64) -> i64 {
    let mut x = n;
    loop {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        if x == i64::MIN + 3 && std::hint::black_box(false) {
            return x;
        }
    }
}

/// Keeps every megabyte it allocates.
fn hoard(n: i64) -> i64 {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(std::hint::black_box(vec![n as u8; 1 << 20]));
        if std::hint::black_box(kept.len()) == usize::MAX {
            return n;
        }
    }
}

quarry_sdk::job!(faulty);
