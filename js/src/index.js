/**
 * edgeship for JavaScript: load an edgeship bundle in the browser or in node, verify every file
 * against its manifest (sha256 with WebCrypto) before any runtime sees a byte, pick the variant
 * for the target and run it with onnxruntime-web or onnxruntime-node.
 *
 *   const model = await loadBundle('simplenet.edgeship', { ort });
 *   const { output } = await model.run({ x: new Float32Array(10) });
 */
import { BundleError, CODES, EdgeshipError, SpecError } from './errors.js';
import { pyrepr } from './layout.js';
import { readNpz } from './npy.js';
import { refuseExternalData } from './onnxwire.js';
import { openBundle } from './sources.js';

export { BundleError, CODES, EdgeshipError, SpecError, openBundle, readNpz };
export { checkRelpath, sha256Hex, SCHEMA_VERSION } from './layout.js';
export { parseManifest } from './manifest.js';

const TYPED = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array, int64: BigInt64Array,
  int32: Int32Array, int16: Int16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
};
// onnxruntime-web and -node name tensor types as the manifest does, but for bool
const ORT_TYPE = { bool: 'bool' };
const RUNNABLE = ['onnxruntime', 'onnxruntime-web', 'onnxruntime-node'];

const isNode = () => typeof globalThis.process?.versions?.node === 'string' && typeof globalThis.window === 'undefined';

/**
 * Which variant runs for `target`: the named one, or for `auto` the manifest's first candidate for
 * the target on onnxruntime, else its default for the target, else for cpu, else the first
 * variant; a variant whose parity the manifest records as failed on the target is passed over.
 * @param {any} manifest
 * @param {string} target
 * @param {string} variant
 * @returns {{name: string, file: string, precision: string, skipped: string[]}}
 */
export function chooseVariant(manifest, target = 'cpu', variant = 'auto') {
  const variants = manifest.variants;
  const names = Object.keys(variants);
  const pick = (name, skipped = []) => ({ name, file: variants[name].file, precision: variants[name].precision ?? 'fp32', skipped });
  // an ORT-format twin (export --target mobile) is onnxruntime-mobile's flatbuffers file, for an app;
  // this loader hands onnxruntime-web/-node the .onnx variants only
  const isOrt = (name) => variants[name]?.format === 'ort';
  const ORT_FILE = 'an ORT-format file (for onnxruntime-mobile in an app); this loader runs the .onnx variants';
  if (variant !== 'auto') {
    if (!Object.hasOwn(variants, variant)) {
      throw new BundleError(`variant ${pyrepr(variant)} is not in bundle ${pyrepr(manifest.name ?? null)}; it has `
        + `${names.join(', ') || 'none'}.`, CODES.VARIANT);
    }
    if (isOrt(variant)) {
      const source = variants[variant].source;
      const onnx = names.filter((n) => !isOrt(n));
      throw new BundleError(`variant ${pyrepr(variant)} of bundle ${pyrepr(manifest.name ?? null)} is ${ORT_FILE}: pass `
        + (typeof source === 'string' && Object.hasOwn(variants, source) && !isOrt(source)
          ? `variant: ${pyrepr(source)} (the ONNX model it was converted from)` : `one of ${onnx.join(', ') || 'none'}`)
        + '.', CODES.VARIANT);
    }
    return pick(variant);
  }
  const skipped = [];
  const failed = (name) => variants[name]?.parity?.passed?.[target] === false;
  const defaults = manifest.defaults ?? {};
  // [variant, why it cannot run here, what the skip names]: the candidates first, in their order
  const own = (table, key) => (table && Object.hasOwn(table, key) ? table[key] : undefined);
  const order = (own(manifest.candidates, target) ?? []).map((c) => [c.variant,
    !RUNNABLE.includes(c.runtime) ? `runs on ${c.runtime}` : c.parity?.passed === false ? `failed parity on ${target}` : null, c.id]);
  for (const name of [own(defaults, target), own(defaults, 'cpu'), 'fp32', ...names]) order.push([name, null, name]);
  const tried = new Set();
  // an ORT-format twin is passed over, its ONNX source tried in its place
  const expanded = order.flatMap((entry) => {
    const source = typeof entry[0] === 'string' && isOrt(entry[0]) ? variants[entry[0]].source : undefined;
    return typeof source === 'string' ? [entry, [source, null, source]] : [entry];
  });
  for (const [name, why, id] of expanded) {
    if (typeof name !== 'string' || !Object.hasOwn(variants, name)) continue;
    const reason = why ?? (isOrt(name) ? ORT_FILE : failed(name) ? `failed parity on ${target}` : null);
    if (reason === null) return pick(name, skipped);
    if (!tried.has(id)) skipped.push(`${id}: ${reason}`);
    tried.add(id);
  }
  throw new BundleError(`bundle ${pyrepr(manifest.name ?? null)}: no variant runs on ${target}: ${[...new Set(skipped)].join('; ')}. `
    + 'Pass variant: NAME to pick one.', CODES.VARIANT);
}

async function importOrt() {
  const name = isNode() ? 'onnxruntime-node' : 'onnxruntime-web';
  try {
    return await import(name);
  } catch (e) {
    throw new BundleError(`${name} cannot be imported (${e?.message ?? e}): install it (npm install ${name}) `
      + 'or pass the module as options.ort.', CODES.MODEL);
  }
}

const sameType = (modelType, specType) => modelType === (ORT_TYPE[specType] ?? specType);

/** Where the session's inputs and outputs disagree with the manifest's io spec. */
function ioProblems(session, io) {
  const problems = [];
  for (const [label, specs, names, meta] of [
    ['input', io.inputs, session.inputNames, session.inputMetadata],
    ['output', io.outputs, session.outputNames, session.outputMetadata],
  ]) {
    const want = specs.map((t) => t.name);
    if (JSON.stringify(want) !== JSON.stringify([...names])) {
      problems.push(`${label}s are ${JSON.stringify([...names])} in the model, ${JSON.stringify(want)} in the spec`);
      continue;
    }
    if (!Array.isArray(meta)) continue; // onnxruntime before 1.22 gives no metadata
    specs.forEach((t, i) => {
      const m = meta[i];
      if (!m?.isTensor) return;
      if (!sameType(m.type, t.dtype)) problems.push(`${label} '${t.name}' is ${m.type} in the model, ${t.dtype} in the spec`);
      else if (label === 'input' && Array.isArray(m.shape) && (m.shape.length !== t.shape.length
          || m.shape.some((d, k) => typeof d === 'number' && typeof t.shape[k] === 'number' && d !== t.shape[k]))) {
        problems.push(`input '${t.name}' has shape ${JSON.stringify(m.shape)} in the model, ${JSON.stringify(t.shape)} in the spec`);
      }
    });
  }
  return problems;
}

/** A loaded bundle: its verified manifest, the variant it runs, and an onnxruntime session. */
export class Model {
  /** @internal */
  constructor(bundle, chosen, session, ort) {
    this.manifest = bundle.manifest;
    this.where = bundle.where;
    this.variant = chosen.name;
    this.file = chosen.file;
    this.precision = chosen.precision;
    this.skipped = chosen.skipped;
    this.inputs = bundle.manifest.io.inputs;
    this.outputs = bundle.manifest.io.outputs;
    this.ort = ort;
    this._bundle = bundle;
    this._session = session;
  }

  get session() {
    if (!this._session) throw new BundleError(`bundle ${this.where}: the model was released; load it again to run it.`, CODES.CLOSED);
    return this._session;
  }

  /** A feed as an ort.Tensor: a Tensor as it is, {data, dims}, or a typed array shaped by the spec. */
  _tensor(spec, value) {
    const { Tensor } = this.ort;
    if (value instanceof Tensor) return value;
    let data = value;
    let dims = null;
    if (value && typeof value === 'object' && 'data' in value && !ArrayBuffer.isView(value)) {
      ({ data } = value);
      dims = value.dims ?? value.shape ?? null;
    }
    const Typed = TYPED[spec.dtype];
    if (!(data instanceof Typed)) {
      throw new SpecError(`input '${spec.name}' is ${spec.dtype} (${Typed.name}); got ${data?.constructor?.name ?? typeof data}. `
        + `Pass a ${Typed.name}, {data, dims} or an ort.Tensor.`);
    }
    if (dims === null) {
      const symbolic = spec.shape.filter((d) => typeof d !== 'number').length;
      const fixed = spec.shape.reduce((n, d) => (typeof d === 'number' ? n * d : n), 1);
      if (symbolic > 1 || fixed === 0 || data.length % fixed !== 0) {
        throw new SpecError(`input '${spec.name}' has shape [${spec.shape.join(', ')}]: pass {data, dims} to say its sizes.`);
      }
      dims = spec.shape.map((d) => (typeof d === 'number' ? d : data.length / fixed));
    }
    const count = dims.reduce((a, b) => a * b, 1);
    if (dims.length !== spec.shape.length || dims.some((d, k) => typeof spec.shape[k] === 'number' && d !== spec.shape[k]) || count !== data.length) {
      throw new SpecError(`input '${spec.name}' has shape [${spec.shape.join(', ')}]; got dims [${dims.join(', ')}] for ${data.length} values.`);
    }
    return new Tensor(ORT_TYPE[spec.dtype] ?? spec.dtype, data, dims);
  }

  /**
   * Run the model on feeds by input name.
   * @param {Record<string, any>} feeds
   * @returns {Promise<Record<string, any>>} ort tensors by output name
   */
  async run(feeds) {
    const session = this.session;
    const names = this.inputs.map((t) => t.name);
    const given = Object.keys(feeds ?? {});
    const missing = names.filter((n) => !given.includes(n));
    const unknown = given.filter((n) => !names.includes(n));
    if (missing.length || unknown.length) {
      throw new SpecError(`bundle ${pyrepr(this.manifest.name ?? null)} takes inputs ${names.join(', ')}; `
        + `${missing.length ? `missing ${missing.join(', ')}` : ''}${missing.length && unknown.length ? ', ' : ''}${unknown.length ? `unknown ${unknown.join(', ')}` : ''}.`);
    }
    const tensors = Object.fromEntries(this.inputs.map((t) => [t.name, this._tensor(t, feeds[t.name])]));
    return session.run(tensors);
  }

  /**
   * The bundle's golden samples: per sample its label, sizes, inputs and the eager PyTorch outputs
   * (arrays {dtype, shape, data}), from golden/inputs.npz and golden/outputs.npz.
   */
  async golden() {
    const g = this.manifest.golden;
    const inputs = await readNpz(this._bundle.files.get(g.inputs), `bundle ${this.where}: ${g.inputs}`);
    const outputs = await readNpz(this._bundle.files.get(g.outputs), `bundle ${this.where}: ${g.outputs}`);
    const samples = g.samples ?? [];
    return samples.map((s, i) => ({
      label: s.label ?? String(i),
      sizes: s.sizes ?? {},
      inputs: Object.fromEntries(this.inputs.filter((t) => `${i}/${t.name}` in inputs).map((t) => [t.name, inputs[`${i}/${t.name}`]])),
      outputs: Object.fromEntries(this.outputs.filter((t) => `${i}/${t.name}` in outputs).map((t) => [t.name, outputs[`${i}/${t.name}`]])),
    }));
  }

  /** Let go of the session; run() then refuses. Idempotent. */
  async release() {
    const session = this._session;
    this._session = null;
    if (session) await session.release();
  }
}

/**
 * Load a bundle: read it, verify every file against the manifest, choose the variant, open it.
 * @param {string | URL | Uint8Array | ArrayBuffer} source
 * @param {{target?: string, variant?: string, ort?: any, sessionOptions?: any, fetch?: typeof fetch}} [options]
 * @returns {Promise<Model>}
 */
export async function loadBundle(source, options = {}) {
  const { target = 'cpu', variant = 'auto', sessionOptions } = options;
  const bundle = await openBundle(source, options);
  const chosen = chooseVariant(bundle.manifest, target, variant);
  const bytes = bundle.files.get(chosen.file);
  const where = `bundle ${bundle.where}: `;
  refuseExternalData(bytes, chosen.file, where);
  const ort = options.ort ?? await importOrt();
  let session;
  try {
    session = await ort.InferenceSession.create(bytes.slice(), sessionOptions);
  } catch (e) {
    throw new BundleError(`${where}onnxruntime cannot open ${chosen.file}: ${String(e?.message ?? e).slice(0, 300)}`, CODES.MODEL);
  }
  const problems = ioProblems(session, bundle.manifest.io);
  if (problems.length) {
    await session.release();
    throw new BundleError(`${where}${chosen.file} does not match manifest.json's io spec (${problems.join('; ')}); `
      + 'the manifest was edited or belongs to another model. Re-export the bundle.', CODES.MODEL);
  }
  return new Model(bundle, chosen, session, ort);
}
