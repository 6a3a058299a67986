//! Batches and schemas as Arrow IPC stream bytes: how they cross the module boundary.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{StreamDecoder, StreamReader};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema, SchemaRef};

/// One IPC stream holding `schema` and `batches` (none: just the schema).
pub fn encode(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.into_inner()
}

/// The schema and batches of one IPC stream, validated.
pub fn decode(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// The batches of one IPC stream that arrived as an owned buffer: the arrays point into it
/// rather than into copies (buffers that are not aligned for their type are copied).
pub fn decode_owned(bytes: Vec<u8>) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut buffer = Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            batches.push(batch);
        }
    }
    decoder.finish()?;
    Ok(batches)
}

/// The bytes of a schema alone.
pub fn schema_bytes(schema: &Schema) -> Vec<u8> {
    encode(schema, &[]).unwrap_or_default()
}

pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    Ok(decode(bytes)?.0)
}
