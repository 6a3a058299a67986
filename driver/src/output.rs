//! How the `quarry` CLI prints a query result: one [`OutputFormat`] per `--format` value and
//! [`write_result`], which renders a result's schema and batches into any writer.
//!
//! ```text
//!   schema + [RecordBatch] ──write_result(format)──▶ table | csv | json | ndjson | parquet ──▶ out
//! ```
//!
//! The schema travels separately from the batches so that a query that matched nothing still
//! produces well-formed output: a table or CSV header, `[]` for JSON, and a valid (empty)
//! Parquet file that carries the column names and types.

use std::io::Write;

use anyhow::Context;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::writer::{JsonArray, LineDelimited};
use parquet::arrow::ArrowWriter;

/// The format of a query result on standard output or in a file (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table followed by the row count, like psql (the default).
    #[default]
    Table,
    /// Comma-separated values with a header row; timestamps in RFC 3339, NULL as an empty field.
    Csv,
    /// One JSON array of objects, one object per row; NULL as `null`.
    Json,
    /// Newline-delimited JSON: one object per row and line; NULL as `null`.
    Ndjson,
    /// An Apache Parquet file (Snappy-compressed); binary, so meant for a file or a pipe.
    Parquet,
}

impl OutputFormat {
    /// Whether the format is binary, so a caller can refuse to write it to a terminal.
    pub fn is_binary(self) -> bool {
        matches!(self, OutputFormat::Parquet)
    }
}

/// Writes a query result to `out` in `format`, then flushes `out`.
///
/// `schema` is the result's schema; it is given separately so that a result with no batches
/// still prints a header (table, CSV), an empty array (JSON), nothing (NDJSON) or a valid empty
/// Parquet file. Every batch must have this schema's columns.
pub fn write_result(
    format: OutputFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut writer = ResultWriter::new(format, schema, out)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// Prints a result batch by batch. CSV, JSON and NDJSON rows reach `out` (flushed) as their
/// batch arrives, so a pipe sees a long result while it is still running; a table (whose
/// column widths depend on every row) and Parquet are written when the result ends.
pub struct ResultWriter<'a> {
    format: OutputFormat,
    schema: SchemaRef,
    sink: Sink<'a>,
}

impl std::fmt::Debug for ResultWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultWriter")
            .field("format", &self.format)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

enum Sink<'a> {
    Table(&'a mut dyn Write, Vec<RecordBatch>),
    /// The CSV header goes out with the first batch.
    Csv(&'a mut dyn Write, bool),
    Json(arrow::json::Writer<&'a mut dyn Write, JsonArray>),
    Ndjson(arrow::json::Writer<&'a mut dyn Write, LineDelimited>),
    /// Assembled in memory: the Parquet writer needs a `Send` sink and stdout's lock is not one.
    Parquet(&'a mut dyn Write, Box<ArrowWriter<Vec<u8>>>),
}

impl<'a> ResultWriter<'a> {
    pub fn new(
        format: OutputFormat,
        schema: &SchemaRef,
        out: &'a mut dyn Write,
    ) -> anyhow::Result<Self> {
        // Explicit nulls keep every object's keys the same, which is what a reader of a table
        // expects.
        let json = arrow::json::WriterBuilder::new().with_explicit_nulls(true);
        let sink = match format {
            OutputFormat::Table => Sink::Table(out, Vec::new()),
            OutputFormat::Csv => Sink::Csv(out, false),
            OutputFormat::Json => Sink::Json(json.build::<_, JsonArray>(out)),
            OutputFormat::Ndjson => Sink::Ndjson(json.build::<_, LineDelimited>(out)),
            // The default writer properties compress with Snappy (the `snap` feature).
            OutputFormat::Parquet => Sink::Parquet(
                out,
                Box::new(
                    ArrowWriter::try_new(Vec::new(), schema.clone(), None)
                        .context("could not start a Parquet result")?,
                ),
            ),
        };
        Ok(ResultWriter {
            format,
            schema: schema.clone(),
            sink,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.write_batch(batch)
            .with_context(|| format!("could not write the query result as {:?}", self.format))
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Table(_, batches) => batches.push(batch.clone()),
            Sink::Csv(out, header_written) => {
                // Timestamps with a time zone default to RFC 3339 (`2026-11-01T00:00:00Z`),
                // those without one to ISO 8601 without an offset.
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut **out);
                writer.write(&nested_as_json(batch)?)?;
                drop(writer);
                *header_written = true;
                out.flush()?;
            }
            Sink::Json(writer) => {
                writer.write(batch)?;
                writer.get_mut().flush()?;
            }
            Sink::Ndjson(writer) => {
                writer.write(batch)?;
                writer.get_mut().flush()?;
            }
            Sink::Parquet(_, writer) => writer.write(batch)?,
        }
        Ok(())
    }

    /// Ends the result (an empty one still gets its header or brackets) and flushes `out`.
    pub fn finish(self) -> anyhow::Result<()> {
        let format = self.format;
        let schema = self.schema;
        let finish = || -> anyhow::Result<()> {
            match self.sink {
                Sink::Table(out, batches) => {
                    let table =
                        arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)?;
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    let noun = if rows == 1 { "row" } else { "rows" };
                    writeln!(out, "{table}")?;
                    writeln!(out, "({rows} {noun})")?;
                    out.flush()?;
                }
                Sink::Csv(out, header_written) => {
                    if !header_written {
                        // The CSV writer prints its header with the first batch it sees.
                        arrow::csv::WriterBuilder::new()
                            .with_header(true)
                            .build(&mut *out)
                            .write(&nested_as_json(&RecordBatch::new_empty(schema))?)?;
                    }
                    out.flush()?;
                }
                Sink::Json(mut writer) => {
                    writer.finish()?;
                    writeln!(writer.get_mut())?;
                    writer.get_mut().flush()?;
                }
                Sink::Ndjson(mut writer) => {
                    writer.finish()?;
                    writer.get_mut().flush()?;
                }
                Sink::Parquet(out, writer) => {
                    out.write_all(&writer.into_inner()?)?;
                    out.flush()?;
                }
            }
            Ok(())
        };
        finish().with_context(|| format!("could not write the query result as {format:?}"))
    }
}

/// `batch` with its list, map and struct columns as JSON text (`[1, 2]`, `{"k": 1}`): CSV has no
/// form of its own for them, and JSON text in a CSV cell is what `quarry load` reads back into a
/// collection column.
fn nested_as_json(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let nested = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::LargeList(_) | DataType::Map(..) | DataType::Struct(_)
        )
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let options = arrow::json::writer::EncoderOptions::default();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !nested(field.data_type()) {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let mut encoder = arrow::json::writer::make_encoder(field, column.as_ref(), &options)?;
        let mut text = arrow::array::StringBuilder::new();
        let mut buffer = Vec::new();
        for row in 0..column.len() {
            if column.is_null(row) {
                text.append_null();
                continue;
            }
            buffer.clear();
            encoder.encode(row, &mut buffer);
            text.append_value(String::from_utf8_lossy(&buffer));
        }
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(text.finish()) as ArrayRef);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Array, Int64Array, RecordBatchReader, StringArray,
        TimestampMillisecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// 2026-11-01T00:00:00Z in milliseconds since the epoch.
    const NOV_1: i64 = 1_793_491_200_000;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("sensor", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
        ]))
    }

    /// Three rows with a NULL string and a NULL double, and a string that needs CSV quoting.
    fn batch() -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(
                TimestampMillisecondArray::from(vec![NOV_1, NOV_1 + 1_500, NOV_1 + 60_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![Some("temp"), None, Some("a,b")])),
            Arc::new(Float64Array::from(vec![Some(21.5), Some(-3.0), None])),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    fn render(format: OutputFormat, batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        write_result(format, &schema(), batches, &mut out).unwrap();
        out
    }

    fn render_text(format: OutputFormat, batches: &[RecordBatch]) -> String {
        String::from_utf8(render(format, batches)).unwrap()
    }

    #[test]
    fn table_prints_rows_and_count() {
        let text = render_text(OutputFormat::Table, &[batch()]);
        let expected = "\
+-----------+--------------------------+--------+-------+
| device_id | ts                       | sensor | value |
+-----------+--------------------------+--------+-------+
| 1         | 2026-11-01T00:00:00Z     | temp   | 21.5  |
| 2         | 2026-11-01T00:00:01.500Z |        | -3.0  |
| 3         | 2026-11-01T00:01:00Z     | a,b    |       |
+-----------+--------------------------+--------+-------+
(3 rows)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn table_counts_rows_across_batches_and_says_row_for_one() {
        let one = batch().slice(0, 1);
        assert!(
            render_text(OutputFormat::Table, std::slice::from_ref(&one)).ends_with("\n(1 row)\n")
        );
        assert!(render_text(OutputFormat::Table, &[batch(), one]).ends_with("\n(4 rows)\n"));
    }

    #[test]
    fn empty_table_prints_header_and_zero_rows() {
        let text = render_text(OutputFormat::Table, &[]);
        let expected = "\
+-----------+----+--------+-------+
| device_id | ts | sensor | value |
+-----------+----+--------+-------+
+-----------+----+--------+-------+
(0 rows)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn csv_has_header_rfc3339_timestamps_and_empty_nulls() {
        let text = render_text(OutputFormat::Csv, &[batch()]);
        let expected = "\
device_id,ts,sensor,value
1,2026-11-01T00:00:00Z,temp,21.5
2,2026-11-01T00:00:01.500Z,,-3.0
3,2026-11-01T00:01:00Z,\"a,b\",
";
        assert_eq!(text, expected);
    }

    #[test]
    fn csv_writes_collections_as_json_text_the_loader_reads_back() {
        use arrow::array::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
        let mut lists = ListBuilder::new(Int32Builder::new());
        lists.append_value([Some(1), Some(2)]);
        lists.append_null();
        let mut maps = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        maps.keys().append_value("a,b");
        maps.values().append_value(1);
        maps.append(true).unwrap();
        maps.append(false).unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            ("l", Arc::new(lists.finish()) as ArrayRef),
            ("m", Arc::new(maps.finish()) as ArrayRef),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_result(OutputFormat::Csv, &batch.schema(), &[batch], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "l,m\n\"[1,2]\",\"{\"\"a,b\"\":1}\"\n,\n"
        );
    }

    #[test]
    fn csv_writes_one_header_for_several_batches() {
        let text = render_text(OutputFormat::Csv, &[batch(), batch().slice(0, 1)]);
        assert_eq!(text.lines().count(), 1 + 3 + 1);
        assert_eq!(text.matches("device_id").count(), 1);
    }

    #[test]
    fn empty_csv_is_just_the_header() {
        assert_eq!(
            render_text(OutputFormat::Csv, &[]),
            "device_id,ts,sensor,value\n"
        );
        let empty = RecordBatch::new_empty(schema());
        assert_eq!(
            render_text(OutputFormat::Csv, &[empty]),
            "device_id,ts,sensor,value\n"
        );
    }

    #[test]
    fn json_is_one_array_of_objects_with_explicit_nulls() {
        let text = render_text(OutputFormat::Json, &[batch(), batch().slice(0, 1)]);
        let expected = concat!(
            r#"[{"device_id":1,"ts":"2026-11-01T00:00:00Z","sensor":"temp","value":21.5},"#,
            r#"{"device_id":2,"ts":"2026-11-01T00:00:01.500Z","sensor":null,"value":-3.0},"#,
            r#"{"device_id":3,"ts":"2026-11-01T00:01:00Z","sensor":"a,b","value":null},"#,
            r#"{"device_id":1,"ts":"2026-11-01T00:00:00Z","sensor":"temp","value":21.5}]"#,
            "\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_json_is_an_empty_array() {
        assert_eq!(render_text(OutputFormat::Json, &[]), "[]\n");
        let empty = RecordBatch::new_empty(schema());
        assert_eq!(render_text(OutputFormat::Json, &[empty]), "[]\n");
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let text = render_text(OutputFormat::Ndjson, &[batch()]);
        let expected = concat!(
            r#"{"device_id":1,"ts":"2026-11-01T00:00:00Z","sensor":"temp","value":21.5}"#,
            "\n",
            r#"{"device_id":2,"ts":"2026-11-01T00:00:01.500Z","sensor":null,"value":-3.0}"#,
            "\n",
            r#"{"device_id":3,"ts":"2026-11-01T00:01:00Z","sensor":"a,b","value":null}"#,
            "\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_ndjson_is_empty() {
        assert_eq!(render_text(OutputFormat::Ndjson, &[]), "");
    }

    fn read_parquet(bytes: Vec<u8>) -> (SchemaRef, Vec<RecordBatch>) {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
        (schema, batches)
    }

    #[test]
    fn parquet_reads_back_equal() {
        let written = [batch(), batch().slice(1, 2)];
        let (read_schema, read) = read_parquet(render(OutputFormat::Parquet, &written));
        assert_eq!(read_schema.fields(), schema().fields());
        let read = arrow::compute::concat_batches(&read_schema, &read).unwrap();
        let written = arrow::compute::concat_batches(&schema(), &written).unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn empty_parquet_is_a_valid_file_with_the_schema() {
        let bytes = render(OutputFormat::Parquet, &[]);
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        let (read_schema, read) = read_parquet(bytes);
        assert_eq!(read_schema.fields(), schema().fields());
        assert_eq!(read.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    }

    #[test]
    fn only_parquet_is_binary() {
        use clap::ValueEnum;
        for format in OutputFormat::value_variants() {
            assert_eq!(format.is_binary(), *format == OutputFormat::Parquet);
        }
        assert_eq!(OutputFormat::default(), OutputFormat::Table);
    }

    #[test]
    fn format_names_are_lowercase_for_the_cli() {
        use clap::ValueEnum;
        let names: Vec<String> = OutputFormat::value_variants()
            .iter()
            .map(|f| f.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(names, ["table", "csv", "json", "ndjson", "parquet"]);
    }

    #[test]
    fn a_batch_that_does_not_match_the_schema_is_an_error() {
        let other =
            RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)])
                .unwrap();
        let mut out = Vec::new();
        let err = write_result(OutputFormat::Parquet, &schema(), &[other], &mut out).unwrap_err();
        assert!(format!("{err:#}").contains("Parquet"), "{err:#}");
    }
}
