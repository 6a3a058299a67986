//! One running operator of a job: a guest instance fed Arrow batches.

use std::fmt;
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchOptions, make_array};
use arrow_buffer::Buffer;
use arrow_data::transform::MutableArrayData;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;

use crate::error::{Error, Result};
use crate::guest_instance::GuestInstance;

/// An operator of the job module, prepared by [`JobModule::start`](crate::JobModule::start) in an
/// instance of its own: one per task.
///
/// Calls are synchronous and CPU-bound, each bounded by the deadline: run them on a CPU pool, never
/// on the network runtime. Batches cross the boundary as Arrow IPC streams, copied in and out
/// (the guest's 32-bit memory cannot share the host's buffers). After any error other than
/// [`Error::JobError`] the instance refuses further calls: drop it.
pub struct OpInstance {
    guest: GuestInstance,
    op: String,
    /// The buffer each input batch is encoded into, kept across pushes, so that a task's batches
    /// do not each grow a fresh buffer by doubling (copying the batch at each step).
    encoded: Vec<u8>,
}

impl OpInstance {
    pub(crate) fn new(guest: GuestInstance, op: String) -> OpInstance {
        OpInstance {
            guest,
            op,
            encoded: Vec::new(),
        }
    }

    /// The operator's name, as errors give it.
    pub fn op_name(&self) -> &str {
        &self.op
    }

    /// Hands one batch to the operator and returns what it emits for it (often nothing, for the
    /// keyed operators that emit at [`finish`](OpInstance::finish)).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        encode(batch, &mut self.encoded)?;
        let output = self.guest.push(&self.op, &self.encoded)?;
        self.decode(output)
    }

    /// Tells the operator its input has ended and returns what it emits then.
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let output = self.guest.finish(&self.op)?;
        self.decode(output)
    }

    /// Decodes the guest's output; output that does not decode breaks the ABI, so the instance
    /// refuses further calls as after a trap.
    fn decode(&mut self, output: Buffer) -> Result<Vec<RecordBatch>> {
        let decoded = decode(&self.op, output);
        if decoded.is_err() {
            self.guest.mark_failed();
        }
        decoded
    }

    /// CPU time the operator's calls have used so far (the thread's CPU time across each call,
    /// so time the thread waited for a core is not counted): the CPU cost of the job's code.
    pub fn cpu_time(&self) -> Duration {
        self.guest.cpu_time()
    }
}

impl fmt::Debug for OpInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpInstance")
            .field("op", &self.op)
            .field("cpu_time", &self.cpu_time())
            .finish_non_exhaustive()
    }
}

/// The batch as an IPC stream (its schema and the one batch), in place of what `out` held.
fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let failed = |e: arrow_schema::ArrowError| {
        Error::internal(format!("encoding a batch as Arrow IPC: {e}"))
    };
    let mut writer = StreamWriter::try_new(out, &batch.schema()).map_err(failed)?;
    writer.write(batch).map_err(failed)?;
    writer.finish().map_err(failed)
}

/// The guest's output: nothing, or an IPC stream of zero or more batches, fully validated (the
/// bytes come from untrusted code). A push decoder rather than `StreamReader`: a reader trusts a
/// message's length prefix enough to allocate it (up to 2 GiB for a garbage prefix) before
/// finding the bytes are not there; the decoder only ever holds bytes it was given.
fn decode(op: &str, mut output: Buffer) -> Result<Vec<RecordBatch>> {
    let bad = |e: arrow_schema::ArrowError| {
        Error::bad_result(
            op,
            format!("its output is not a valid Arrow IPC stream ({e})"),
        )
    };
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    // `decode` returns `None` only once it has consumed all of `output`.
    while !output.is_empty() {
        if let Some(batch) = decoder.decode(&mut output).map_err(bad)? {
            batches.push(batch);
        }
    }
    decoder.finish().map_err(bad)?;
    if batches.len() > 1 {
        return batches
            .iter()
            .map(owned)
            .collect::<Result<_, _>>()
            .map_err(bad);
    }
    Ok(batches)
}

/// `batch` with its own copy of its values. The batches of one output all point into the one
/// buffer they were decoded from; left so, each would keep all of it alive, and every size
/// taken from an array's buffers (Arrow Flight's, to cut messages) would count all of it: a
/// merge's output of 200 batches went to its exchange in pieces of 17 rows.
fn owned(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<_, arrow_schema::ArrowError>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int32Array};

    use super::*;

    fn batch(values: Vec<i32>) -> RecordBatch {
        RecordBatch::try_from_iter([("v", Arc::new(Int32Array::from(values)) as ArrayRef)]).unwrap()
    }

    #[test]
    fn a_stream_of_several_batches_decodes_in_order() {
        let (a, b) = (batch(vec![1, 2]), batch(vec![3]));
        let mut writer = StreamWriter::try_new(Vec::new(), &a.schema()).unwrap();
        writer.write(&a).unwrap();
        writer.write(&b).unwrap();
        writer.finish().unwrap();
        let bytes = writer.into_inner().unwrap();
        assert_eq!(
            decode("op", Buffer::from_vec(bytes.clone())).unwrap(),
            vec![a.clone(), b]
        );
        // A schema alone is a stream of no batches.
        let schema_only = {
            let mut writer = StreamWriter::try_new(Vec::new(), &a.schema()).unwrap();
            writer.finish().unwrap();
            writer.into_inner().unwrap()
        };
        assert!(
            decode("op", Buffer::from_vec(schema_only))
                .unwrap()
                .is_empty()
        );
        // A stream cut short is refused.
        let cut = Buffer::from_slice_ref(&bytes[..bytes.len() - 20]);
        assert!(matches!(decode("op", cut), Err(Error::BadResult { .. })));
    }

    #[test]
    fn each_batch_of_an_output_holds_only_its_own_values() {
        let batches: Vec<RecordBatch> = (0..50)
            .map(|i| batch((i * 1000..(i + 1) * 1000).collect()))
            .collect();
        let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
        let bytes = writer.into_inner().unwrap();
        let total = bytes.len();
        let decoded = decode("op", Buffer::from_vec(bytes)).unwrap();
        assert_eq!(decoded, batches);
        for b in &decoded {
            let held: usize = b.columns().iter().map(|c| c.get_buffer_memory_size()).sum();
            // 1,000 i32 values: about 4 KB, against 200 KB for the whole stream.
            assert!(held < total / 10, "a batch holds {held} of {total} bytes");
        }
    }

    #[test]
    fn garbage_with_a_huge_length_prefix_is_refused_without_allocating_it() {
        // 0xffffffff continuation, then a 2 GiB message length, then almost nothing.
        let garbage = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        let started = std::time::Instant::now();
        let err = decode("op", Buffer::from_slice_ref(garbage)).unwrap_err();
        assert!(matches!(err, Error::BadResult { .. }), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
