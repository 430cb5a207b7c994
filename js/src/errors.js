/**
 * The errors this package raises. Every refusal is a BundleError with a `code` that says which
 * check failed; its message says what was asked, what was found and what to do, as the Python
 * loader's BundleError does.
 */

/** Codes of BundleError, one per kind of refusal. */
export const CODES = Object.freeze({
  SOURCE: 'source', // the source is not a bundle folder, a zip, a URL or bytes, or cannot be read
  MANIFEST: 'manifest', // manifest.json is missing, not JSON, too large or of the wrong shape
  SCHEMA: 'schema', // an unknown (newer) schema_version
  PATH: 'path', // a name that escapes the bundle or is not a plain relative path
  MISSING: 'missing', // a listed file is missing
  EXTRA: 'extra', // a file the manifest does not list
  DIGEST: 'digest', // a file's bytes do not match its sha256/size in the manifest
  LINK: 'link', // a symbolic or hard link, or a file that is not a regular file
  ZIP: 'zip', // a zip that is corrupt, a decompression bomb or uses what the loader does not read
  VARIANT: 'variant', // no such variant, or none the runtime can run
  MODEL: 'model', // the runtime cannot open the model, it names external data, or disagrees with the io spec
  INPUT: 'input', // a feed that does not match the bundle's inputs
  CLOSED: 'closed', // the model was released
});

export class EdgeshipError extends Error {
  /** @param {string} message @param {string} code */
  constructor(message, code) {
    super(message);
    this.name = 'EdgeshipError';
    this.code = code;
  }
}

/** A bundle (or a file in it) refused: see `code` for which check, the message for what to do. */
export class BundleError extends EdgeshipError {
  /** @param {string} message @param {string} code */
  constructor(message, code) {
    super(message, code);
    this.name = 'BundleError';
  }
}

/** A feed that does not match the bundle's inputs. */
export class SpecError extends EdgeshipError {
  /** @param {string} message */
  constructor(message) {
    super(message, CODES.INPUT);
    this.name = 'SpecError';
  }
}
