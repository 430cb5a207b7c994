/** The bundle's layout: names, the schema version, checksums and the path rule (edgeship/bundle/layout.py). */
import { BundleError, CODES } from './errors.js';

export const MANIFEST = 'manifest.json';
export const SCHEMA_VERSION = 1;
export const MAX_MANIFEST_BYTES = 16 << 20;

// NUL and other control characters, bidi overrides and other format characters, surrogates,
// private-use and unassigned code points, line and paragraph separators (Python's unicodedata
// categories Cc, Cf, Cs, Co, Cn, Zl, Zp)
const CONTROL = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;

// what Python's str.isprintable() calls not printable (repr escapes it): Other and Separator, but ' '
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

/** Python's repr() of a JSON value, as the Python loader's messages write it (None, True, 'text'). */
export function pyrepr(value) {
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value !== 'string') return JSON.stringify(value) ?? String(value);
  const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of value) { // by code point; a lone surrogate comes alone
    const cp = ch.codePointAt(0);
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch !== ' ' && NOT_PRINTABLE.test(ch)) {
      out += cp < 0x100 ? `\\x${cp.toString(16).padStart(2, '0')}`
        : cp < 0x10000 ? `\\u${cp.toString(16).padStart(4, '0')}` : `\\U${cp.toString(16).padStart(8, '0')}`;
    } else out += ch;
  }
  return out + quote;
}

/**
 * Refuse absolute, empty, backslashed, `.`/`..` or control-character paths inside a bundle: an
 * accepted path names exactly one file below the bundle root, written one way only.
 * @param {unknown} rel
 * @returns {string}
 */
export function checkRelpath(rel) {
  if (typeof rel !== 'string' || !rel || rel.startsWith('/') || rel.includes('\\')
      || rel.split('/').some((part) => part === '..' || part === '.' || part === '')
      || rel.startsWith('~') || (rel.length > 1 && rel[1] === ':') || CONTROL.test(rel)) {
    throw new BundleError(
      `bundle path ${pyrepr(rel)} escapes the bundle or is not a plain relative path (absolute, '..', `
      + "'.', empty part, control, format (bidi) or separator character); the bundle was tampered with.",
      CODES.PATH,
    );
  }
  return rel;
}

/**
 * The sha256 of bytes as lowercase hex, with WebCrypto (the browser's, or node's globalThis.crypto).
 * @param {Uint8Array} data
 * @returns {Promise<string>}
 */
export async function sha256Hex(data) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new BundleError('WebCrypto (crypto.subtle) is not available here: a browser exposes it only to '
      + 'secure contexts (https:, or http://localhost / 127.0.0.1); node has it from version 20.', CODES.SOURCE);
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
