/** manifest.json: parsing and the schema of every field the loader uses (edgeship/bundle/manifest.py). */
import { BundleError, CODES } from './errors.js';
import { MANIFEST, SCHEMA_VERSION, checkRelpath, pyrepr } from './layout.js';

export const SUPPORTED_DTYPES = Object.freeze([
  'float32', 'float16', 'float64', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool',
]);
export const MAX_CANDIDATES = 256;

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/**
 * The first key that appears twice in one object of valid JSON text, or undefined (JSON.parse
 * keeps the last silently; Python's loader refuses: which one did you mean?).
 * @param {string} text
 */
function repeatedKey(text) {
  const stack = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === '{') {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (c === '[') {
      stack.push({ keys: null, expectKey: false });
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',' && stack.length && stack[stack.length - 1].keys) {
      stack[stack.length - 1].expectKey = true;
    }
  }
  return undefined;
}

/**
 * Parse manifest.json and check the schema of every field the loader uses.
 * @param {Uint8Array} data
 * @param {string} where the bundle, as messages name it
 * @returns {any}
 */
export function parseManifest(data, where) {
  let manifest;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(data);
    manifest = JSON.parse(text);
    const repeated = repeatedKey(text);
    if (repeated !== undefined) throw new Error(`the key ${pyrepr(repeated.slice(0, 60))} appears twice in one object`);
  } catch (e) {
    throw new BundleError(`bundle ${where}: manifest.json is not valid JSON (${String(e?.message ?? e).slice(0, 200)}); `
      + 'the bundle is corrupt.', CODES.MANIFEST);
  }
  if (!isObject(manifest)) throw new BundleError(`bundle ${where}: manifest.json is not a JSON object.`, CODES.MANIFEST);
  const version = manifest.schema_version;
  if (version !== SCHEMA_VERSION) {
    throw new BundleError(`bundle ${where}: schema_version ${pyrepr(version)} is not supported `
      + `(this edgeship reads ${SCHEMA_VERSION}); upgrade edgeship or re-export the bundle.`, CODES.SCHEMA);
  }
  const files = manifest.files;
  if (!isObject(files) || Object.keys(files).length === 0) {
    throw new BundleError(`bundle ${where}: manifest.json lists no files.`, CODES.MANIFEST);
  }
  for (const [rel, meta] of Object.entries(files)) {
    checkRelpath(rel);
    if (rel === MANIFEST || !isObject(meta) || typeof meta.sha256 !== 'string' || !Number.isSafeInteger(meta.size)
        || meta.size < 0) {
      throw new BundleError(`bundle ${where}: manifest entry ${pyrepr(rel)} is malformed.`, CODES.MANIFEST);
    }
  }
  checkFields(manifest, where);
  return manifest;
}

/** The io, variants, defaults, candidates and golden fields, as the loader reads them. */
function checkFields(m, where) {
  const bad = (what) => {
    throw new BundleError(`bundle ${where}: manifest.json ${what}; the bundle is corrupt or was edited.`, CODES.MANIFEST);
  };
  const listed = (rel, what) => {
    if (typeof rel !== 'string' || !Object.hasOwn(m.files, rel)) bad(`${what} names ${pyrepr(rel)}, which is not among its listed files`);
  };
  const io = m.io;
  if (!isObject(io) || !['inputs', 'outputs'].every((k) => Array.isArray(io[k]) && io[k].every(isObject))) {
    bad("has no valid 'io' (inputs and outputs lists)");
  }
  for (const t of [...io.inputs, ...io.outputs]) {
    const problem = typeof t.name !== 'string' ? 'name is not a string'
      : !Array.isArray(t.shape) || !t.shape.every((d) => typeof d === 'string' || Number.isSafeInteger(d))
        ? 'shape entries must be ints or strings' : null;
    if (problem) bad(`'io' is malformed: malformed tensor spec ${JSON.stringify(t).slice(0, 200)}: ${problem}`);
    if (!SUPPORTED_DTYPES.includes(t.dtype)) {
      bad(`'io' is malformed: unsupported dtype ${pyrepr(t.dtype)}; use one of ${SUPPORTED_DTYPES.join(', ')}.`);
    }
  }
  const variants = m.variants;
  if (!isObject(variants) || Object.keys(variants).length === 0) bad('lists no variants');
  for (const [name, v] of Object.entries(variants)) {
    if (!isObject(v)) bad(`variant ${pyrepr(name)} is not an object`);
    listed(v.file, `variant ${pyrepr(name)}`);
    if (typeof (v.precision ?? 'fp32') !== 'string') bad(`variant ${pyrepr(name)} has a malformed precision`);
    const tol = v.tolerance || {};
    if (!isObject(tol) || !Object.values(tol).every((per) => isObject(per)
        && Object.values(per).every((x) => x === null || isNumber(x)))) {
      bad(`variant ${pyrepr(name)} has a malformed tolerance`);
    }
  }
  const defaults = m.defaults || {};
  if (!isObject(defaults) || !Object.values(defaults).every((v) => typeof v === 'string' && Object.hasOwn(variants, v))) {
    bad("'defaults' names a variant it does not have");
  }
  checkCandidates(m.candidates, variants, bad);
  if (m.tuned !== undefined && m.tuned !== null && !isObject(m.tuned)) bad("has a malformed 'tuned' record");
  const selection = m.selection;
  if (selection !== undefined && selection !== null && !(isObject(selection) && Object.values(selection).every(isObject))) {
    bad("has a malformed 'selection' record");
  }
  const golden = m.golden;
  if (!isObject(golden)) bad("has no 'golden' section");
  listed(golden.inputs, 'golden inputs');
  listed(golden.outputs, 'golden outputs');
  const samples = golden.samples ?? [];
  if (!Array.isArray(samples) || !samples.every((x) => isObject(x) && typeof (x.label ?? '') === 'string'
      && isObject(x.sizes ?? {}))) {
    bad('has malformed golden samples');
  }
  if (typeof (m.name ?? '') !== 'string') bad('has a name that is not a string');
}

const RUNTIMES = ['onnxruntime', 'openvino'];
const ORT_OPTION_KEYS = ['threads', 'spinning', 'opt_level'];
const OPT_LEVELS = ['disable', 'basic', 'extended', 'all'];
const OPENVINO_OPTION_KEYS = ['threads', 'cache_dir'];
const MAX_THREADS = 1024;

/** What is wrong with a candidate's runtime and options (edgeship/runtimes/registry.py check_options), or null. */
function optionsProblem(runtime, options) {
  if (!RUNTIMES.includes(runtime)) return `unknown runtime ${pyrepr(runtime)}; use ${RUNTIMES.join(', ')}.`;
  if (!isObject(options)) return 'runtime options must be an object';
  const t = options.threads;
  if (t !== undefined && t !== null && !((Number.isSafeInteger(t) && t >= 1 && t <= MAX_THREADS)
      || (typeof t === 'string' && /^cores\/[1-9][0-9]{0,5}$/.test(t)))) {
    return `${runtime === 'openvino' ? 'OpenVINO' : runtime} threads=${pyrepr(t)}: use a whole number from 1 to ${MAX_THREADS}, `
      + 'or cores/N (the usable cores divided by N).';
  }
  const keys = runtime === 'openvino' ? OPENVINO_OPTION_KEYS : ORT_OPTION_KEYS;
  const unknown = Object.keys(options).filter((k) => !keys.includes(k)).sort();
  if (unknown.length) return `unknown ${runtime === 'openvino' ? 'OpenVINO' : runtime} option(s) ${unknown.join(', ')}; use ${keys.join(', ')}.`;
  if (runtime === 'openvino') {
    const c = options.cache_dir;
    if (c !== undefined && c !== null && (typeof c !== 'string' || !c || c.includes('\0'))) return `OpenVINO cache_dir=${pyrepr(c)}: use a folder path.`;
    return null;
  }
  if (options.spinning !== undefined && options.spinning !== null && typeof options.spinning !== 'boolean') {
    return `onnxruntime spinning=${pyrepr(options.spinning)}: use true or false.`;
  }
  if (options.opt_level !== undefined && options.opt_level !== null && !OPT_LEVELS.includes(options.opt_level)) {
    return `onnxruntime opt_level=${pyrepr(options.opt_level)}: use one of ${OPT_LEVELS.join(', ')}.`;
  }
  return null;
}

/** `candidates`: {target: [candidate, ...]}, each naming a shipped variant (absent in older bundles). */
function checkCandidates(table, variants, bad) {
  if (table === undefined || table === null) return;
  if (!isObject(table)) bad("has malformed 'candidates' (expected target -> list)");
  for (const [target, cands] of Object.entries(table)) {
    if (!Array.isArray(cands) || cands.length > MAX_CANDIDATES) {
      bad(`candidates for ${pyrepr(target)} are not a list of at most ${MAX_CANDIDATES}`);
    }
    const ids = new Set();
    for (const c of cands) {
      if (!isObject(c) || !['id', 'runtime', 'variant'].every((k) => typeof c[k] === 'string' && c[k])
          || typeof (c.precision ?? 'fp32') !== 'string' || c.id.length > 200) {
        bad(`has a malformed candidate for ${pyrepr(target)}`);
      }
      const id = pyrepr(c.id.slice(0, 60));
      if (ids.has(c.id)) bad(`lists candidate ${id} twice for ${pyrepr(target)}`);
      ids.add(c.id);
      if (!Object.hasOwn(variants, c.variant)) {
        bad(`candidate ${id} names variant ${pyrepr(c.variant.slice(0, 60))}, which it does not have`);
      }
      const problem = optionsProblem(c.runtime, Object.hasOwn(c, 'options') ? c.options : {});
      if (problem) bad(`candidate ${id}: ${problem}`);
      const req = c.requires ?? {};
      if (!isObject(req) || typeof (req.runtime ?? '') !== 'string' || !['cpu_any', 'providers'].every(
        (k) => Array.isArray(req[k] ?? []) && (req[k] ?? []).every((x) => typeof x === 'string'),
      )) {
        bad(`candidate ${id} has malformed 'requires'`);
      }
      if (Object.hasOwn(c.options ?? {}, 'cache_dir')) {
        bad(`candidate ${id} names a cache folder; a bundle may not choose where files are written`);
      }
      if (c.p50_ms !== undefined && c.p50_ms !== null && !(isNumber(c.p50_ms) && c.p50_ms >= 0)) {
        bad(`candidate ${id} has a malformed p50_ms`);
      }
    }
  }
}
