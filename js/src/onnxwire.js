/**
 * External data in ONNX model bytes, found from protobuf's wire format (a port of
 * edgeship/runtimes/external_data.py and onnx_wire.py). Given bytes, onnxruntime-node resolves an
 * external-data location against the process's current directory: a crafted model could read a
 * file of the app's. A bundle never needs external data (export inlines it), so any is refused
 * before the runtime sees the bytes.
 */
import { BundleError, CODES } from './errors.js';
import { pyrepr } from './layout.js';

const MAX_DEPTH = 100;
// every message type of onnx.proto that can hold a TensorProto, and the fields that lead to one
const TENSOR_PATHS = {
  ModelProto: { 7: 'GraphProto', 20: 'TrainingInfoProto', 25: 'FunctionProto' },
  GraphProto: { 1: 'NodeProto', 5: 'TensorProto', 15: 'SparseTensorProto' },
  NodeProto: { 5: 'AttributeProto' },
  AttributeProto: { 5: 'TensorProto', 6: 'GraphProto', 10: 'TensorProto', 11: 'GraphProto', 22: 'SparseTensorProto', 23: 'SparseTensorProto' },
  SparseTensorProto: { 1: 'TensorProto', 2: 'TensorProto' },
  FunctionProto: { 7: 'NodeProto', 11: 'AttributeProto' },
  TrainingInfoProto: { 1: 'GraphProto', 2: 'GraphProto' },
};

class NotOnnxError extends Error {}

function varint(buf, i) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (i >= buf.length || shift > 63n) throw new NotOnnxError('truncated or overlong varint');
    const b = buf[i++];
    value |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if (b < 0x80) return [value, i];
  }
}

function skipGroup(buf, i, field) {
  const depth = [field];
  while (depth.length) {
    let key;
    [key, i] = varint(buf, i);
    if (key >> 32n) throw new NotOnnxError(`a field tag over 32 bits at byte ${i}`);
    const wire = Number(key & 7n);
    if (wire === 0) [, i] = varint(buf, i);
    else if (wire === 2) { let n; [n, i] = varint(buf, i); i += Number(n); }
    else if (wire === 1 || wire === 5) i += wire === 1 ? 8 : 4;
    else if (wire === 3) depth.push(key >> 3n);
    else if (wire === 4 && depth[depth.length - 1] === key >> 3n) depth.pop();
    else throw new NotOnnxError('a group is not closed');
    if (i > buf.length || depth.length > MAX_DEPTH) throw new NotOnnxError('a group runs past the end of its message');
  }
  return i;
}

/** [field number, value] of one message: a bigint for varints, the bytes for length-delimited fields. */
function* fields(buf) {
  let i = 0;
  while (i < buf.length) {
    let key;
    [key, i] = varint(buf, i);
    if (key >> 32n || key >> 3n === 0n) throw new NotOnnxError(`a field tag ${key >> 32n ? 'over 32 bits' : 'of field number 0'} at byte ${i}`);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      let value;
      [value, i] = varint(buf, i);
      yield [field, value];
    } else if (wire === 2) {
      let n;
      [n, i] = varint(buf, i);
      if (BigInt(i) + n > BigInt(buf.length)) throw new NotOnnxError('a field runs past the end of its message');
      yield [field, buf.subarray(i, i + Number(n))];
      i += Number(n);
    } else if (wire === 1 || wire === 5) {
      i += wire === 1 ? 8 : 4;
    } else if (wire === 3) {
      i = skipGroup(buf, i, key >> 3n);
    } else {
      throw new NotOnnxError(`unexpected wire type ${wire}`);
    }
  }
  if (i !== buf.length) throw new NotOnnxError('a fixed-size field runs past the end of its message');
}

const text = (bytes) => new TextDecoder().decode(bytes);

function tensorRef(buf) {
  let name = '';
  let location = '';
  let external = false;
  let entries = 0;
  for (const [field, value] of fields(buf)) {
    if (field === 8 && value instanceof Uint8Array) name = text(value);
    else if (field === 13 && value instanceof Uint8Array) {
      entries++;
      const entry = new Map(fields(value));
      if (entry.get(1) instanceof Uint8Array && text(entry.get(1)) === 'location' && entry.get(2) instanceof Uint8Array) location = text(entry.get(2));
    } else if (field === 14 && typeof value === 'bigint' && (value & 0xffffffffn) === 1n) external = true;
  }
  return external || entries ? { name, location } : null;
}

function* walk(buf, kind, depth) {
  if (depth > MAX_DEPTH) throw new NotOnnxError(`messages nested deeper than ${MAX_DEPTH}`);
  if (kind === 'TensorProto') {
    const ref = tensorRef(buf);
    if (ref) yield ref;
    return;
  }
  const nested = TENSOR_PATHS[kind];
  for (const [field, value] of fields(buf)) {
    if (nested[field] && value instanceof Uint8Array) yield* walk(value, nested[field], depth + 1);
  }
}

/**
 * Refuse model bytes that name external data (or are not a readable protobuf message, or are an
 * ORT-format model this scan cannot read) before the runtime sees them.
 * @param {Uint8Array} data @param {string} what the file @param {string} where `bundle X: `
 */
export function refuseExternalData(data, what, where) {
  if (text(data.subarray(4, 8)) === 'ORTM') {
    throw new BundleError(`${where}${what} is marked as an ORT-format model (file identifier ORTM at byte 4), which `
      + 'onnxruntime reads as flatbuffers, not ONNX, so this check cannot scan it; the loader hands '
      + 'onnxruntime ONNX models only. Re-export it, or pass the ONNX model.', CODES.MODEL);
  }
  let refs;
  try {
    refs = [...walk(data, 'ModelProto', 0)];
  } catch (e) {
    if (!(e instanceof NotOnnxError)) throw e;
    throw new BundleError(`${where}onnxruntime cannot open ${what}: it is not a readable ONNX model (${e.message}).`, CODES.MODEL);
  }
  if (refs.length) {
    throw new BundleError(`${where}${what} keeps tensor ${pyrepr(refs[0].name)} in external data ${pyrepr(refs[0].location.slice(0, 80))} `
      + `(${refs.length} tensor${refs.length > 1 ? 's' : ''} in all); given as bytes, onnxruntime would `
      + 'read that file from the current directory, so it was refused before onnxruntime saw it. '
      + 'A bundle never needs external data (export inlines it): this one was edited; re-export it.', CODES.MODEL);
  }
}
