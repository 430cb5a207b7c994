/**
 * Reading a zip held in memory (a zipped bundle, a golden .npz) with the checks of
 * edgeship/bundle/limits.py: names (no NUL byte), no links, no member twice, members that do not
 * overlap, at most MAX_RATIO times the zip's size declared in all and per member, and never more
 * bytes inflated than a member declares. Deflate is the platform's DecompressionStream.
 */
import { BundleError, CODES } from './errors.js';
import { pyrepr } from './layout.js';

export const MAX_RATIO = 200; // deflate of real weights and data: ~1.1x; of zeros: ~1000x
export const RATIO_FLOOR = 1 << 20; // members below 1 MiB may compress as they like

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;

/**
 * @typedef {{name: string, isDir: boolean, method: number, compressedSize: number, size: number,
 *   offset: number, mode: number}} ZipMember
 */

/**
 * The members of a zip, every structural check made (names are not checked as bundle paths here).
 * @param {Uint8Array} data
 * @param {string} where what messages call it (`bundle X`, `golden/inputs.npz`)
 * @returns {ZipMember[]}
 */
export function zipMembers(data, where) {
  const fail = (why) => { throw new BundleError(`${where}: ${why}`, CODES.ZIP); };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let eocd = -1;
  for (let i = data.length - 22; i >= Math.max(0, data.length - 22 - 0xffff); i--) {
    if (view.getUint32(i, true) === EOCD) { eocd = i; break; }
  }
  if (eocd < 0) fail('it is not a readable zip (no end of central directory record).');
  const count = view.getUint16(eocd + 10, true);
  const cdSize = view.getUint32(eocd + 12, true);
  const cdOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || cdOffset === 0xffffffff || cdSize === 0xffffffff) {
    fail('it is a zip64 archive, which this loader does not read; bundles over 4 GiB are loaded as folders.');
  }
  if (cdOffset + cdSize > eocd) fail('its central directory runs past its end; the zip is corrupt.');
  const members = [];
  const seen = new Set();
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > eocd || view.getUint32(p, true) !== CENTRAL) fail('its central directory is truncated; the zip is corrupt.');
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    const compressedSize = view.getUint32(p + 20, true);
    const size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const mode = view.getUint32(p + 38, true) >>> 16;
    const offset = view.getUint32(p + 42, true);
    const raw = data.subarray(p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    if (p > eocd) fail('its central directory is truncated; the zip is corrupt.');
    if (raw.includes(0)) fail(`a zip member name holds a NUL byte; refused.`);
    const ascii = raw.every((b) => b < 0x80);
    if ((flags & 0x800) === 0 && !ascii) {
      fail('a zip member has a non-ASCII name not marked as UTF-8; re-zip it (edgeship export -o NAME.edgeship.zip).');
    }
    let name = '';
    try {
      name = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      fail('a zip member name is not valid UTF-8; the zip is corrupt.');
    }
    if (flags & 1) fail(`zip member ${pyrepr(name)} is encrypted; bundles are never encrypted.`);
    if (compressedSize === 0xffffffff || size === 0xffffffff || offset === 0xffffffff) {
      fail('it is a zip64 archive, which this loader does not read; bundles over 4 GiB are loaded as folders.');
    }
    if ((mode & S_IFMT) === S_IFLNK) fail(`${name} is a symbolic link; bundles hold plain files only.`);
    if (seen.has(name)) fail(`${name} appears twice in the zip.`);
    seen.add(name);
    members.push({ name, isDir: name.endsWith('/'), method, compressedSize, size, offset, mode });
  }
  const declared = members.reduce((sum, m) => sum + m.size, 0);
  if (declared > MAX_RATIO * data.length + RATIO_FLOOR) {
    fail(`its ${members.length} zip members declare ${declared} bytes in all from a ${data.length}-byte zip `
      + `(over ${MAX_RATIO}x): refused as a decompression bomb.`);
  }
  let end = cdOffset;
  for (const m of [...members].sort((a, b) => b.offset - a.offset)) {
    if (m.offset + 30 > data.length || view.getUint32(m.offset, true) !== LOCAL) {
      fail(`zip member ${pyrepr(m.name)} has no local header at offset ${m.offset}; the zip is corrupt.`);
    }
    const dataEnd = m.offset + 30 + view.getUint16(m.offset + 26, true) + view.getUint16(m.offset + 28, true) + m.compressedSize;
    if (dataEnd > end) {
      fail(`zip member ${pyrepr(m.name)} overlaps the next member or the central directory `
        + `(its data ends at byte ${dataEnd}, past ${end}): refused as a decompression bomb.`);
    }
    end = m.offset;
  }
  return members;
}

/**
 * A member's bytes: refused when it declares more than `limit`, inflates over MAX_RATIO, or
 * inflates to another size than it declares (never more than that size plus one byte is kept).
 * @param {Uint8Array} data
 * @param {ZipMember} m
 * @param {number} limit
 * @param {string} where
 * @returns {Promise<Uint8Array>}
 */
export async function readMember(data, m, limit, where) {
  const fail = (why) => { throw new BundleError(`${where}: ${why}`, CODES.ZIP); };
  if (m.size > limit) fail(`zip member ${pyrepr(m.name)} declares ${m.size} bytes; at most ${limit} are read.`);
  if (m.size > RATIO_FLOOR && m.size > MAX_RATIO * Math.max(m.compressedSize, 1)) {
    fail(`zip member ${pyrepr(m.name)} declares ${m.size} bytes from ${m.compressedSize} compressed `
      + `(over ${MAX_RATIO}x): refused as a decompression bomb.`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const start = m.offset + 30 + view.getUint16(m.offset + 26, true) + view.getUint16(m.offset + 28, true);
  const packed = data.subarray(start, start + m.compressedSize);
  let out;
  if (m.method === 0) {
    out = packed;
  } else if (m.method === 8) {
    out = await inflate(packed, m.size + 1).catch((e) => fail(`${m.name} cannot be read (${e?.message ?? e}); the zip is corrupt.`));
  } else {
    fail(`zip member ${pyrepr(m.name)} uses compression method ${m.method}; this loader reads stored and deflated members.`);
  }
  if (out.length !== m.size) fail(`${m.name} holds ${out.length === m.size + 1 ? 'more' : out.length} bytes, not the ${m.size} its header declares; the zip is corrupt.`);
  return out;
}

/** Raw deflate with the platform's DecompressionStream, stopped after `limit` bytes. */
async function inflate(packed, limit) {
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  const reader = stream.getReader();
  const out = new Uint8Array(limit);
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const take = Math.min(value.length, limit - n);
    out.set(value.subarray(0, take), n);
    n += take;
    if (n >= limit) { await reader.cancel(); break; }
  }
  return out.subarray(0, n);
}
