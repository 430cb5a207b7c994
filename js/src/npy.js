/** The arrays of an .npz (a bundle's golden files), their sizes checked before allocating. */
import { BundleError, CODES } from './errors.js';
import { pyrepr } from './layout.js';
import { readMember, zipMembers } from './zip.js';

// numpy descr -> [dtype, typed array], little-endian and byte-sized types only
const DESCR = {
  '<f4': ['float32', Float32Array], '<f8': ['float64', Float64Array], '<f2': ['float16', Uint16Array],
  '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array], '<i2': ['int16', Int16Array],
  '|i1': ['int8', Int8Array], '|u1': ['uint8', Uint8Array], '|b1': ['bool', Uint8Array],
};

/**
 * One .npy array.
 * @param {Uint8Array} bytes
 * @param {string} what
 * @returns {{dtype: string, shape: number[], data: any}}
 */
export function readNpy(bytes, what) {
  const fail = (why) => { throw new BundleError(`${what} is not a readable .npy array (${why}).`, CODES.MANIFEST); };
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b)) fail('no numpy magic');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [headerLen, start] = major === 1 ? [view.getUint16(8, true), 10] : major <= 3 && bytes.length >= 12 ? [view.getUint32(8, true), 12] : fail(`version ${major}`);
  if (start + headerLen > bytes.length) fail('truncated header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) fail(`header ${pyrepr(header.slice(0, 80))}`);
  const kind = DESCR[descr];
  if (!kind) fail(`dtype ${pyrepr(descr)}, which this loader does not read`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (/^\d+$/.test(s) ? Number(s) : fail(`shape (${shapeText})`)));
  if (fortran === 'True' && shape.filter((d) => d > 1).length > 1) fail('Fortran order');
  const [dtype, Typed] = kind;
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(start + headerLen);
  if (count * Typed.BYTES_PER_ELEMENT !== body.length) {
    fail(`its header declares ${count * Typed.BYTES_PER_ELEMENT} bytes (${descr}[${shape}]) but it holds ${body.length}`);
  }
  const copy = body.slice(); // aligned, and apart from the bytes that were verified
  return { dtype, shape, data: new Typed(copy.buffer, 0, count) };
}

/**
 * The arrays of an .npz file's bytes, by key (`0/x` for sample 0's input x).
 * @param {Uint8Array} bytes
 * @param {string} what
 */
export async function readNpz(bytes, what) {
  const out = Object.create(null); // a member named __proto__.npy is a key like any other
  for (const m of zipMembers(bytes, what)) {
    if (m.isDir || !m.name.endsWith('.npy')) {
      throw new BundleError(`${what} is not a readable .npz of arrays (member ${pyrepr(m.name)} is not a numpy array).`, CODES.MANIFEST);
    }
    out[m.name.slice(0, -4)] = readNpy(await readMember(bytes, m, 256 << 20, what), `${what}: member ${pyrepr(m.name)}`);
  }
  return out;
}
