// The example page's script: load, verify and run a bundle with the edgeship loader and
// onnxruntime-web; show the outputs against the bundle's golden outputs, or the refusal.
import * as ort from 'onnxruntime-web';
import { loadBundle } from '../../js/src/index.js';

const params = new URLSearchParams(location.search);
const source = new URL(params.get('bundle') ?? '../simplenet/simplenet.edgeship/', location.href);
const status = document.getElementById('status');
const out = document.getElementById('out');

// absolute: a relative wasmPaths is resolved against the module's folder, not the page
ort.env.wasm.wasmPaths = new URL('../../js/node_modules/onnxruntime-web/dist/', location.href).href;
ort.env.wasm.numThreads = 1; // a page that is not cross-origin isolated has no SharedArrayBuffer

async function main() {
  const model = await loadBundle(source, { ort, target: params.get('target') ?? 'web', variant: params.get('variant') ?? 'auto' });
  const samples = await model.golden();
  const rows = [];
  let worst = 0;
  for (const sample of samples) {
    const feeds = Object.fromEntries(Object.entries(sample.inputs).map(([name, a]) => [name, { data: a.data, dims: a.shape }]));
    const got = await model.run(feeds);
    for (const [name, want] of Object.entries(sample.outputs)) {
      const values = Array.from(got[name].data, Number);
      const maxAbs = Math.max(...values.map((v, i) => Math.abs(v - Number(want.data[i]))));
      worst = Math.max(worst, maxAbs);
      rows.push({ sample: sample.label, output: name, dims: [...got[name].dims], values, golden: Array.from(want.data, Number), max_abs: maxAbs });
    }
  }
  return { bundle: source.href, name: model.manifest.name, variant: model.variant, precision: model.precision,
    runtime: `onnxruntime-web ${ort.env.versions?.web ?? ''}`.trim(), max_abs: worst, rows };
}

main().then((result) => {
  window.edgeshipResult = result;
  status.textContent = `${result.name}: variant ${result.variant} on ${result.runtime}, max |web - PyTorch| = ${result.max_abs.toExponential(2)} over ${result.rows.length} golden outputs`;
  out.textContent = JSON.stringify(result, null, 1);
  document.body.dataset.state = 'done';
}, (error) => {
  window.edgeshipResult = { error: error.message, code: error.code ?? null, name: error.name };
  status.textContent = `refused: ${error.name}${error.code ? ` (${error.code})` : ''}`;
  out.textContent = error.message;
  document.body.dataset.state = 'error';
});
