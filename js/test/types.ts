// Compiled by `tsc --noEmit` (npm test): the declarations in src/index.d.ts are used as a caller would.
import * as ort from 'onnxruntime-node';
import { BundleError, type BundleErrorCode, loadBundle, type Model } from '../src/index.js';

export async function typed(path: string): Promise<number> {
  const model: Model = await loadBundle(path, { target: 'cpu', variant: 'auto', ort });
  const out = await model.run({ x: { data: new Float32Array(10), dims: [1, 10] } });
  const golden = await model.golden();
  const code: BundleErrorCode = new BundleError('x', 'digest').code;
  await model.release();
  return out[model.outputs[0].name].dims.length + golden.length + code.length;
}
