//! The fuzz targets. Each takes the raw fuzz input; the `fuzz_targets/*.rs`
//! binaries are one-line wrappers, and `tests/corpus.rs` runs the same
//! functions over the committed corpus on stable.

pub mod cmdq_decode;
pub mod ifc_decode;
pub mod resume_engine;
pub mod save_engine;
pub mod state_graph;
pub mod stream_reader;
pub mod tracker_report;

/// A target: a function of the raw fuzz input.
pub type Target = fn(&[u8]);

/// Every target by name, for tools and the corpus test.
pub const ALL: &[(&str, Target)] = &[
    ("ifc_decode", ifc_decode::run),
    ("stream_reader", stream_reader::run),
    ("resume_engine", resume_engine::run),
    ("save_engine", save_engine::run),
    ("state_graph", state_graph::run),
    ("tracker_report", tracker_report::run),
    ("cmdq_decode", cmdq_decode::run),
];

/// `ifc_decode`: see [`ifc_decode`](mod@ifc_decode).
pub fn ifc_decode(data: &[u8]) {
    ifc_decode::run(data);
}

/// `stream_reader`: see [`stream_reader`](mod@stream_reader).
pub fn stream_reader(data: &[u8]) {
    stream_reader::run(data);
}

/// `resume_engine`: see [`resume_engine`](mod@resume_engine).
pub fn resume_engine(data: &[u8]) {
    resume_engine::run(data);
}

/// `save_engine`: see [`save_engine`](mod@save_engine).
pub fn save_engine(data: &[u8]) {
    save_engine::run(data);
}

/// `state_graph`: see [`state_graph`](mod@state_graph).
pub fn state_graph(data: &[u8]) {
    state_graph::run(data);
}

/// `tracker_report`: see [`tracker_report`](mod@tracker_report).
pub fn tracker_report(data: &[u8]) {
    tracker_report::run(data);
}

/// `cmdq_decode`: see [`cmdq_decode`](mod@cmdq_decode).
pub fn cmdq_decode(data: &[u8]) {
    cmdq_decode::run(data);
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    ALL.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// An input of operations: a head, then operations until the input ends or
/// does not make one more, at most `max_ops` of them.
fn decode_ops<'a, H, O>(data: &'a [u8], max_ops: usize) -> Option<(H, Vec<O>)>
where
    H: arbitrary::Arbitrary<'a>,
    O: arbitrary::Arbitrary<'a>,
{
    let mut u = arbitrary::Unstructured::new(data);
    let head = H::arbitrary(&mut u).ok()?;
    let mut ops = vec![];
    while !u.is_empty() && ops.len() < max_ops {
        match O::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some((head, ops))
}
