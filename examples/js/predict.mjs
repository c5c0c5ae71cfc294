// Predict with a mome-edge ONNX export from JavaScript, and check the port against golden rows.
//
//   npm install                                   # onnxruntime-node, pinned in package.json
//   node predict.mjs MODEL.onnx [MODEL.golden.json] [--json]
//
// onnxruntime-node has the same API as onnxruntime-web and onnxruntime-react-native, so the
// lines between "the app" markers are what a browser or phone app runs. The rest is the
// self-check a port in any language should do: verify the file's SHA-256, feed the golden
// inputs, compare every probability with Python's within the golden tolerance.
// Exit 0: every probability within tolerance; 1: a difference above it; 2: bad input.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import ort from 'onnxruntime-node';

// The exporter stores the SHA-256 of the file in metadata_props["mome.sha256"], computed with
// the 64 hex digits replaced by ASCII zeros (mome_edge/runtime/onnx_integrity.py). The entry's
// protobuf bytes: field 1 (key) tag, length, key; field 2 (value) tag, length 64.
const CHECKSUM_KEY = 'mome.sha256';
const CHECKSUM_ENTRY = Buffer.concat([
  Buffer.from([0x0a, CHECKSUM_KEY.length]), Buffer.from(CHECKSUM_KEY, 'ascii'), Buffer.from([0x12, 0x40]),
]);
const DIGEST_CHARS = 64;
const GOLDEN_FORMAT = 'mome-edge-golden';
const GOLDEN_VERSION = 1;

/** null when `bytes` is an intact signed export or an ORT-format file; else the problem. */
function checksumProblem(bytes) {
  if (bytes.subarray(4, 8).toString('latin1') === 'ORTM') return null; // .ort files carry no checksum
  const at = bytes.lastIndexOf(CHECKSUM_ENTRY);
  if (at < 0) return `no ${CHECKSUM_KEY} entry: not a mome-edge export, or a damaged copy`;
  const start = at + CHECKSUM_ENTRY.length;
  const stored = bytes.subarray(start, start + DIGEST_CHARS).toString('latin1');
  const digest = createHash('sha256')
    .update(bytes.subarray(0, start))
    .update('0'.repeat(DIGEST_CHARS))
    .update(bytes.subarray(start + DIGEST_CHARS))
    .digest('hex');
  return digest === stored ? null : 'its SHA-256 does not match the one stored at export (damaged or edited)';
}

/** Golden rows -> the two input tensors: categorical int64 [B, F], numerical float32 [B, D]. */
function inputTensors(categorical, numerical) {
  const rows = categorical.length;
  const fields = rows ? categorical[0].length : 0;
  const width = rows ? numerical[0].length : 0;
  const ids = BigInt64Array.from(categorical.flat(), (v) => BigInt(v));
  const values = Float32Array.from(numerical.flat()); // doubles -> float32: the exact stored bits
  return {
    categorical: new ort.Tensor('int64', ids, [rows, fields]),
    numerical: new ort.Tensor('float32', values, [rows, width]),
  };
}

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

async function main(argv) {
  const json = argv.includes('--json');
  const [modelPath, goldenArg] = argv.filter((a) => a !== '--json');
  if (!modelPath) fail('no model given; usage: node predict.mjs MODEL.onnx [MODEL.golden.json] [--json]');
  const goldenPath = goldenArg ?? modelPath.replace(/\.(onnx|ort)$/i, '') + '.golden.json';

  const bytes = await readFile(modelPath).catch((e) => fail(`cannot read ${modelPath} (${e.code}); check the path`));
  const problem = checksumProblem(bytes);
  if (problem) fail(`${modelPath}: ${problem}; export it again with \`mome-edge export\``);
  const golden = JSON.parse(await readFile(goldenPath, 'utf8').catch((e) => fail(`cannot read ${goldenPath} (${e.code}); \`mome-edge export\` writes it beside the model`)));
  // the golden rows format of mome_edge/runtime/golden.py (docs/deployment.md, "Golden rows")
  if (golden.format !== GOLDEN_FORMAT || golden.version !== GOLDEN_VERSION) fail(`${goldenPath}: not a ${GOLDEN_FORMAT} v${GOLDEN_VERSION} file; export the model again`);
  const { inputs, expected } = golden;
  if (!inputs?.categorical || !inputs?.numerical || !expected) fail(`${goldenPath}: no inputs.categorical / inputs.numerical / expected; export the model again`);
  const { tolerance } = golden;

  // --- the app: one session with default options, as Python's plain InferenceSession(path) ---
  const session = await ort.InferenceSession.create(bytes);
  const batched = await session.run(inputTensors(inputs.categorical, inputs.numerical)); // {task: Tensor float32 [B]}
  // --- end of the app ---

  const { tasks } = golden;
  const missing = tasks.filter((t) => !session.outputNames.includes(t));
  if (missing.length) fail(`the model has no outputs ${missing}; its outputs are ${session.outputNames}`);
  const maxDiff = (values, task) => values.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[task][i])), 0);
  const report = { model: modelPath, golden: goldenPath, mode: golden.mode, rows: inputs.categorical.length, tolerance,
    onnxruntime_node: ort.env.versions?.node ?? 'unknown', batched: {}, one_row_at_a_time: {} };
  for (const task of tasks) report.batched[task] = maxDiff(batched[task].data, task);
  // batch 1, the usual call in an app: row by row
  const single = Object.fromEntries(tasks.map((t) => [t, []]));
  for (let i = 0; i < inputs.categorical.length; i += 1) {
    const out = await session.run(inputTensors([inputs.categorical[i]], [inputs.numerical[i]]));
    for (const task of tasks) single[task].push(out[task].data[0]);
  }
  for (const task of tasks) report.one_row_at_a_time[task] = maxDiff(single[task], task);
  const worst = Math.max(...Object.values(report.batched), ...Object.values(report.one_row_at_a_time));
  report.max_abs_diff = worst;
  report.ok = worst <= tolerance;
  if (json) {
    console.log(JSON.stringify(report));
  } else {
    for (const task of tasks) {
      console.log(`${task}: max |p_js - p_python| = ${report.batched[task].toExponential(2)} batched, `
        + `${report.one_row_at_a_time[task].toExponential(2)} one row at a time (${report.rows} rows)`);
    }
    console.log(`${report.ok ? 'OK' : 'FAILED'}: tolerance ${tolerance}`);
  }
  process.exit(report.ok ? 0 : 1);
}

main(process.argv.slice(2)).catch((e) => fail(String(e?.message ?? e).split('\n')[0]));
