//! Quarry's query tunables, in DataFusion's config under the `quarry.` prefix so that SQL `SET`
//! changes them for a session (`SET quarry.pushdown = false`).

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Session options of Quarry's SQL layer.
    pub struct QuarryOptions {
        /// Push filters, projections and limits into store scans. Turning it off reads every
        /// shard and column; results must not change, only speed.
        pub pushdown: bool, default = true
    }
}

impl ConfigExtension for QuarryOptions {
    const PREFIX: &'static str = "quarry";
}
