/**
 * Reading a bundle and verifying every file before anything uses it (edgeship/bundle/read.py):
 * a folder in node (every file listed, no links, no extra files), a folder or zip over fetch, or
 * the bytes of a zipped bundle. Each file's sha256 is computed with WebCrypto over the very bytes
 * the loader then hands to the runtime: nothing is read twice.
 */
import { BundleError, CODES } from './errors.js';
import { MANIFEST, MAX_MANIFEST_BYTES, checkRelpath, pyrepr, sha256Hex } from './layout.js';
import { parseManifest } from './manifest.js';
import { readMember, zipMembers } from './zip.js';

/** @typedef {{where: string, manifest: any, files: Map<string, Uint8Array>}} VerifiedBundle */

const mismatch = (where, rel, detail = '') => new BundleError(
  `bundle ${where}: ${rel} does not match its sha256/size in manifest.json${detail}; the bundle `
  + 'is corrupt or was modified. Re-export it or fetch a clean copy.', CODES.DIGEST,
);

/** Refuse a listing that lacks a listed file or holds one the manifest does not list. */
export function compareListing(where, manifest, found) {
  const listed = Object.keys(manifest.files);
  const missing = listed.filter((rel) => !found.has(rel)).sort();
  if (missing.length) throw new BundleError(`bundle ${where}: listed files are missing: ${missing.join(', ')}.`, CODES.MISSING);
  const extra = [...found].filter((rel) => !Object.hasOwn(manifest.files, rel)).sort();
  if (extra.length) {
    throw new BundleError(`bundle ${where}: files not listed in manifest.json: ${extra.join(', ')}; `
      + 'refusing a bundle with unlisted content.', CODES.EXTRA);
  }
}

async function checkDigests(where, manifest, files) {
  for (const [rel, meta] of Object.entries(manifest.files)) {
    const data = files.get(rel);
    if (data.length !== meta.size || (await sha256Hex(data)) !== meta.sha256) throw mismatch(where, rel);
  }
}

/**
 * A zipped bundle's bytes, verified.
 * @param {Uint8Array} data
 * @param {string} where
 * @returns {Promise<VerifiedBundle>}
 */
export async function fromZipBytes(data, where) {
  const members = zipMembers(data, `bundle ${where}`);
  const byName = new Map();
  for (const m of members) {
    checkRelpath(m.isDir ? m.name.slice(0, -1) : m.name);
    if (!m.isDir) byName.set(m.name, m);
  }
  if (!byName.has(MANIFEST)) {
    throw new BundleError(`${where} has no manifest.json; it is not a complete edgeship bundle.`, CODES.MANIFEST);
  }
  const manifest = parseManifest(await readMember(data, byName.get(MANIFEST), MAX_MANIFEST_BYTES, `bundle ${where}`), where);
  compareListing(where, manifest, new Set([...byName.keys()].filter((n) => n !== MANIFEST)));
  const files = new Map();
  for (const [rel, meta] of Object.entries(manifest.files)) {
    const m = byName.get(rel);
    if (m.size !== meta.size) throw mismatch(where, rel);
    files.set(rel, await readMember(data, m, meta.size, `bundle ${where}`));
  }
  await checkDigests(where, manifest, files);
  return { where, manifest, files };
}

/** Up to `limit` + 1 bytes of a response body (one more than allowed shows a body that is too long). */
async function readBody(response, limit) {
  if (!response.body) return new Uint8Array(await response.arrayBuffer()).subarray(0, limit + 1);
  const reader = response.body.getReader();
  const chunks = [];
  let n = 0;
  while (n <= limit) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    n += value.length;
  }
  if (n > limit) await reader.cancel().catch(() => {});
  const out = new Uint8Array(Math.min(n, limit + 1));
  let at = 0;
  for (const c of chunks) {
    const take = Math.min(c.length, out.length - at);
    out.set(c.subarray(0, take), at);
    at += take;
  }
  return out;
}

/**
 * A bundle over fetch: a zipped bundle (a URL ending in .zip) or a folder (its manifest.json,
 * then every listed file). A folder served over HTTP has no listing, so only the listed files are
 * fetched: a file the manifest does not list is never read (a zip is checked for them as well).
 * @param {URL} url
 * @param {typeof fetch} fetchImpl
 * @returns {Promise<VerifiedBundle>}
 */
export async function fromUrl(url, fetchImpl) {
  const where = url.href;
  const get = async (target, limit, what) => {
    let response;
    try {
      response = await fetchImpl(target);
    } catch (e) {
      throw new BundleError(`bundle ${where}: ${what} cannot be fetched (${e?.message ?? e}).`, CODES.SOURCE);
    }
    if (response.status === 404 || response.status === 410) return null;
    if (!response.ok) throw new BundleError(`bundle ${where}: ${what} cannot be fetched (HTTP ${response.status}).`, CODES.SOURCE);
    return readBody(response, limit);
  };
  if (url.pathname.endsWith('.zip')) {
    const data = await get(url, 2 ** 32 - 1, 'the zip');
    if (data === null) throw new BundleError(`bundle ${where} does not exist (HTTP 404); pass the URL of the NAME.edgeship folder or NAME.edgeship.zip file.`, CODES.SOURCE);
    return fromZipBytes(data, where);
  }
  const base = new URL(url.href.endsWith('/') ? url.href : `${url.href}/`);
  const manifestBytes = await get(new URL(MANIFEST, base), MAX_MANIFEST_BYTES, MANIFEST);
  if (manifestBytes === null) throw new BundleError(`${where} has no manifest.json; it is not a complete edgeship bundle.`, CODES.MANIFEST);
  if (manifestBytes.length > MAX_MANIFEST_BYTES) {
    throw new BundleError(`bundle ${where}: manifest.json is over ${MAX_MANIFEST_BYTES >> 20} MiB; refused unread.`, CODES.MANIFEST);
  }
  const manifest = parseManifest(manifestBytes, where);
  const entries = Object.entries(manifest.files);
  // every part percent-encoded: a name holding %2e%2e or ? # cannot reach another URL than its own
  const bodies = await Promise.all(entries.map(([rel, meta]) => get(
    new URL(rel.split('/').map(encodeURIComponent).join('/'), base), meta.size, rel,
  )));
  compareListing(where, manifest, new Set(entries.filter((_, i) => bodies[i] !== null).map(([rel]) => rel)));
  const files = new Map(entries.map(([rel], i) => [rel, bodies[i]]));
  await checkDigests(where, manifest, files);
  return { where, manifest, files };
}

/**
 * A bundle in node's file system: a NAME.edgeship folder or a zipped bundle.
 * @param {string} path
 * @returns {Promise<VerifiedBundle>}
 */
export async function fromPath(path) {
  const fs = await import('node:fs/promises');
  const { constants } = await import('node:fs');
  const nodePath = await import('node:path');
  const where = path;
  let st;
  try {
    st = await fs.lstat(path);
  } catch {
    throw new BundleError(`bundle ${where} does not exist; pass the NAME.edgeship folder or NAME.edgeship.zip file.`, CODES.SOURCE);
  }
  if (st.isSymbolicLink()) throw new BundleError(`bundle ${where} is a symbolic link; pass the bundle itself.`, CODES.LINK);
  // opened without following a link, without blocking on a FIFO; regular files only
  const openRegular = async (file, what) => {
    let handle;
    try {
      handle = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      if (e.code === 'ELOOP') throw new BundleError(`${what}: ${file} is a symbolic link; a plain file was expected here.`, CODES.LINK);
      if (e.code === 'ENOENT') return null;
      throw new BundleError(`${what}: cannot read it (${file}: ${e.message}).`, CODES.SOURCE);
    }
    const fst = await handle.stat();
    if (!fst.isFile()) {
      await handle.close();
      throw new BundleError(`${what}: ${file} is not a regular file (a folder, device, pipe or socket); pass a file.`, CODES.LINK);
    }
    return { handle, st: fst };
  };
  const readAtMost = async (handle, limit) => {
    const buf = new Uint8Array(limit + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await handle.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.subarray(0, n);
  };
  if (!st.isDirectory()) {
    if (!st.isFile()) throw new BundleError(`bundle ${where} is not a folder or a regular file (a device, pipe or socket).`, CODES.SOURCE);
    const opened = await openRegular(path, `bundle ${where}`);
    try {
      const data = await readAtMost(opened.handle, opened.st.size);
      if (data[0] !== 0x50 || data[1] !== 0x4b) throw new BundleError(`${where} is neither a bundle folder nor a zipped bundle.`, CODES.SOURCE);
      return await fromZipBytes(data.subarray(0, opened.st.size), where);
    } finally {
      await opened.handle.close();
    }
  }
  const manifestPath = nodePath.join(path, MANIFEST);
  const opened = await openRegular(manifestPath, `bundle ${where}: manifest.json`).catch((e) => {
    if (e.code === CODES.LINK) return null;
    throw e;
  });
  if (opened === null) throw new BundleError(`${where} has no manifest.json; it is not a complete edgeship bundle.`, CODES.MANIFEST);
  let manifestBytes;
  try {
    manifestBytes = await readAtMost(opened.handle, MAX_MANIFEST_BYTES);
  } finally {
    await opened.handle.close();
  }
  if (manifestBytes.length > MAX_MANIFEST_BYTES) {
    throw new BundleError(`bundle ${where}: manifest.json is over ${MAX_MANIFEST_BYTES >> 20} MiB; refused unread.`, CODES.MANIFEST);
  }
  const manifest = parseManifest(manifestBytes, where);
  const found = new Set();
  const walk = async (dir, prefix) => {
    let names;
    try {
      names = await fs.readdir(dir);
    } catch (e) {
      throw new BundleError(`bundle ${where}: cannot list ${dir} (${e.message}).`, CODES.SOURCE);
    }
    for (const name of names.sort()) {
      const full = nodePath.join(dir, name);
      const rel = prefix + name;
      const lst = await fs.lstat(full);
      if (lst.isSymbolicLink()) throw new BundleError(`bundle ${where}: ${rel} is a symbolic link; bundles hold plain files only.`, CODES.LINK);
      if (lst.isFile()) {
        if (lst.nlink > 1) throw new BundleError(`bundle ${where}: ${rel} is hard-linked elsewhere; bundles hold plain files only.`, CODES.LINK);
        found.add(rel);
      } else if (lst.isDirectory()) {
        await walk(full, `${rel}/`);
      } else {
        throw new BundleError(`bundle ${where}: ${rel} is not a regular file.`, CODES.LINK);
      }
    }
  };
  await walk(path, '');
  found.delete(MANIFEST);
  compareListing(where, manifest, found);
  const files = new Map();
  for (const [rel, meta] of Object.entries(manifest.files)) {
    const file = await openRegular(nodePath.join(path, ...rel.split('/')), `bundle ${where}: ${rel}`);
    if (file === null) throw new BundleError(`bundle ${where}: listed files are missing: ${rel}.`, CODES.MISSING);
    try {
      if (file.st.nlink > 1) throw new BundleError(`bundle ${where}: ${rel} is hard-linked elsewhere; bundles hold plain files only.`, CODES.LINK);
      if (file.st.size !== meta.size) throw mismatch(where, rel, ` (${file.st.size} bytes, not ${meta.size})`);
      files.set(rel, await readAtMost(file.handle, meta.size));
    } finally {
      await file.handle.close();
    }
  }
  await checkDigests(where, manifest, files);
  return { where, manifest, files };
}

/**
 * Open and fully verify a bundle: manifest, schema, paths, links, sizes and every sha256.
 * @param {string | URL | Uint8Array | ArrayBuffer} source
 * @param {{fetch?: typeof fetch}} [options]
 * @returns {Promise<VerifiedBundle>}
 */
export async function openBundle(source, options = {}) {
  if (source instanceof ArrayBuffer) source = new Uint8Array(source);
  if (source instanceof Uint8Array) return fromZipBytes(source.slice(), '<bundle bytes>');
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  const isNode = typeof globalThis.process?.versions?.node === 'string' && typeof globalThis.window === 'undefined';
  if (source instanceof URL || (typeof source === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(source) && !/^file:/i.test(source))) {
    const url = new URL(String(source));
    if (url.protocol === 'file:') return fromPath(decodeURIComponent(url.pathname));
    if (!fetchImpl) throw new BundleError(`bundle ${url.href}: no fetch here to read it with; pass options.fetch.`, CODES.SOURCE);
    return fromUrl(url, fetchImpl);
  }
  if (typeof source === 'string' && isNode) return fromPath(/^file:/i.test(source) ? decodeURIComponent(new URL(source).pathname) : source);
  if (typeof source === 'string' && globalThis.location?.href && fetchImpl) return fromUrl(new URL(source, globalThis.location.href), fetchImpl);
  throw new BundleError(`a bundle is a URL, a path (NAME.edgeship folder or .zip file, in node) or the bytes of a zipped bundle, not ${
    source === null ? 'null' : typeof source === 'object' ? source.constructor?.name ?? 'object' : typeof source}.`, CODES.SOURCE);
}
