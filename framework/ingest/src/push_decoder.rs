//! Running Arrow's push decoders (CSV and JSON) over one chunk of whole records.

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// The shape Arrow's CSV and JSON decoders share: push bytes, then flush a batch.
pub(crate) trait PushDecoder {
    /// Decodes from `buf`, returning the bytes consumed; stops early when a batch is full.
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError>;
    /// The rows decoded since the last flush.
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl PushDecoder for arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        arrow::csv::reader::Decoder::decode(self, buf)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
}

impl PushDecoder for arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        arrow::json::reader::Decoder::decode(self, buf)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
}

/// Decodes all of `data` (which ends at a record boundary) into batches.
pub(crate) fn decode_all(
    decoder: &mut dyn PushDecoder,
    data: &[u8],
) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut batches = Vec::new();
    let mut at = 0;
    loop {
        let consumed = decoder.decode(&data[at..])?;
        at += consumed;
        if consumed == 0 || at == data.len() {
            let flushed = decoder.flush()?;
            let progressed = flushed.is_some();
            batches.extend(flushed);
            if at == data.len() {
                // An empty push tells the decoder the input ended (a last record without a
                // terminator is complete).
                decoder.decode(&[])?;
                batches.extend(decoder.flush()?);
                return Ok(batches);
            }
            if !progressed {
                return Err(ArrowError::ParseError(format!(
                    "decoder stopped at byte {at} of {}",
                    data.len()
                )));
            }
        }
    }
}
