//! Batches and schemas as Arrow IPC stream bytes: how they cross the module boundary.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
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

/// The bytes of a schema alone.
pub fn schema_bytes(schema: &Schema) -> Vec<u8> {
    encode(schema, &[]).unwrap_or_default()
}

pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    Ok(decode(bytes)?.0)
}
