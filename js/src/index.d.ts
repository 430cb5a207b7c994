// Types of the edgeship loader (src/index.js). Checked with `tsc --noEmit` (npm test).

/** Which check refused a bundle. */
export type BundleErrorCode =
  | 'source' | 'manifest' | 'schema' | 'path' | 'missing' | 'extra' | 'digest' | 'link' | 'zip'
  | 'variant' | 'model' | 'input' | 'closed';

export declare const CODES: Readonly<{
  SOURCE: 'source'; MANIFEST: 'manifest'; SCHEMA: 'schema'; PATH: 'path'; MISSING: 'missing';
  EXTRA: 'extra'; DIGEST: 'digest'; LINK: 'link'; ZIP: 'zip'; VARIANT: 'variant'; MODEL: 'model';
  INPUT: 'input'; CLOSED: 'closed';
}>;

export declare const SCHEMA_VERSION: 1;

/** Every error this package raises; `code` says which check failed. */
export declare class EdgeshipError extends Error {
  constructor(message: string, code: BundleErrorCode);
  readonly code: BundleErrorCode;
}

/** A bundle refused (or a file in it): changed, missing, extra, escaping, unknown or unreadable. */
export declare class BundleError extends EdgeshipError {}

/** A feed that does not match the bundle's inputs (code 'input'). */
export declare class SpecError extends EdgeshipError {
  constructor(message: string);
}

export type DType =
  | 'float32' | 'float16' | 'float64' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

/** One input or output as the manifest's `io` gives it: symbolic axes are strings. */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: Array<number | string>;
}

/** A manifest variant (the fields the loader reads; others pass through). */
export interface VariantEntry {
  file: string;
  precision?: string;
  size?: number;
  parity?: { passed?: Record<string, boolean>; max_abs?: number | null; min_cosine?: number | null };
  tolerance?: Record<string, Record<string, number | null>>;
  [key: string]: unknown;
}

/** manifest.json, schema_version 1: the fields the loader checks; readers ignore keys they do not know. */
export interface Manifest {
  schema_version: 1;
  name?: string;
  io: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  variants: Record<string, VariantEntry>;
  defaults?: Record<string, string>;
  candidates?: Record<string, Array<{ id: string; runtime: string; variant: string; precision?: string; [key: string]: unknown }>>;
  golden: { inputs: string; outputs: string; samples?: Array<{ label?: string; sizes?: Record<string, number> }> };
  files: Record<string, { sha256: string; size: number }>;
  [key: string]: unknown;
}

/** A bundle whose every file matched its sha256 and size; `files` holds the verified bytes. */
export interface VerifiedBundle {
  where: string;
  manifest: Manifest;
  files: Map<string, Uint8Array>;
}

/** A bundle: a URL (folder or .zip), in node a path (folder or .zip), or a zipped bundle's bytes. */
export type BundleSource = string | URL | Uint8Array | ArrayBuffer;

export interface OpenOptions {
  /** fetch to read URLs with (default: globalThis.fetch). */
  fetch?: typeof fetch;
}

/** The onnxruntime module (onnxruntime-web or onnxruntime-node): the parts the loader uses. */
export interface OrtModule {
  Tensor: new (type: any, data: any, dims?: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options?: any): Promise<any> };
}

export interface OrtTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: any;
}

export interface LoadOptions extends OpenOptions {
  /** The target whose default variant runs with variant 'auto' (default 'cpu'). */
  target?: string;
  /** A variant name, or 'auto' (default): the target's first onnxruntime candidate or default. */
  variant?: string;
  /** The onnxruntime module; imported (onnxruntime-node in node, onnxruntime-web elsewhere) when absent. */
  ort?: OrtModule | any;
  /** Passed to InferenceSession.create (executionProviders, graphOptimizationLevel...). */
  sessionOptions?: any;
}

export type TypedArray =
  | Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** A feed: an ort.Tensor, {data, dims}, or a typed array shaped by the spec (one symbolic axis at most). */
export type Feed = OrtTensor | TypedArray | { data: TypedArray; dims: readonly number[] };

/** An array from a golden .npz. */
export interface NpyArray {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export interface GoldenSample {
  label: string;
  sizes: Record<string, number>;
  inputs: Record<string, NpyArray>;
  outputs: Record<string, NpyArray>;
}

export declare class Model {
  private constructor();
  readonly manifest: Manifest;
  /** The bundle, as messages name it (the path or URL). */
  readonly where: string;
  /** The variant that runs, its file and precision. */
  readonly variant: string;
  readonly file: string;
  readonly precision: string;
  /** Candidates and variants passed over before this one, with why. */
  readonly skipped: string[];
  readonly inputs: TensorSpec[];
  readonly outputs: TensorSpec[];
  readonly ort: OrtModule | any;
  /** The onnxruntime InferenceSession (refused after release()). */
  readonly session: any;
  run(feeds: Record<string, Feed>): Promise<Record<string, OrtTensor>>;
  /** The golden samples: inputs and the eager PyTorch outputs stored in the bundle. */
  golden(): Promise<GoldenSample[]>;
  release(): Promise<void>;
}

/** Read a bundle and verify every file against its manifest; nothing is run. */
export declare function openBundle(source: BundleSource, options?: OpenOptions): Promise<VerifiedBundle>;

/** Read, verify, choose the variant for the target and open it with onnxruntime. */
export declare function loadBundle(source: BundleSource, options?: LoadOptions): Promise<Model>;

/** The variant `loadBundle` runs for `target`, and what it passed over. */
export declare function chooseVariant(manifest: Manifest, target?: string, variant?: string):
  { name: string; file: string; precision: string; skipped: string[] };

/** Parse and check manifest.json's bytes (`where` names the bundle in messages). */
export declare function parseManifest(data: Uint8Array, where: string): Manifest;

/** Refuse a bundle path that escapes the bundle or is not a plain relative path. */
export declare function checkRelpath(rel: unknown): string;

/** sha256 as lowercase hex, with WebCrypto. */
export declare function sha256Hex(data: Uint8Array): Promise<string>;

/** The arrays of an .npz file's bytes, by key. */
export declare function readNpz(bytes: Uint8Array, what: string): Promise<Record<string, NpyArray>>;
