// Shared by the tests: the Python-built fixtures, bundle copies, edits and re-signing.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The Python that has edgeship's export side: $EDGESHIP_PYTHON, else the repository's .venv. */
function python() {
  const candidates = [process.env.EDGESHIP_PYTHON, join(REPO, '.venv', 'bin', 'python')].filter(Boolean);
  return candidates.find((p) => existsSync(p)) ?? null;
}

let built = null;

/**
 * The fixtures (index.json of js/test/fixtures.py): $EDGESHIP_JS_FIXTURES when it names a built
 * folder, else built once per process into a temporary folder (removed by cleanup()).
 * Returns null, with why, when there is no Python with edgeship's export side.
 */
export function fixtures() {
  if (built) return built;
  const given = process.env.EDGESHIP_JS_FIXTURES;
  if (given && existsSync(join(given, 'index.json'))) {
    built = { index: JSON.parse(readFileSync(join(given, 'index.json'), 'utf8')), dir: null, python: python() };
    return built;
  }
  const py = python();
  if (!py) {
    built = { skip: 'no Python with edgeship found: set EDGESHIP_PYTHON or run `make test` (it builds .venv)' };
    return built;
  }
  const dir = mkdtempSync(join(tmpdir(), 'edgeship-js-'));
  try {
    execFileSync(py, [join(REPO, 'js', 'test', 'fixtures.py'), dir], {
      env: { ...process.env, PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(':') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`js/test/fixtures.py failed with ${py}: ${e.stderr?.toString().slice(-2000)}`);
  }
  built = { index: JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')), dir, python: py };
  return built;
}

let copies = null; // a temporary folder for this process's bundle copies
let count = 0;

/** What the Python loader (edgeship.load) says of each bundle: {name: message, or null when it loads}. */
export function pythonRefusals(py, bundles) {
  const script = [
    'import json, sys',
    'import edgeship',
    'from edgeship.errors import EdgeshipError',
    'out = {}',
    'for name, path in json.loads(sys.argv[1]):',
    '    try:',
    '        edgeship.load(path).close()',
    '        out[name] = None',
    '    except EdgeshipError as e:',
    '        out[name] = str(e)',
    'print(json.dumps(out))',
  ].join('\n');
  const env = { ...process.env, PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(':') };
  return JSON.parse(execFileSync(py, ['-c', script, JSON.stringify(bundles)], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString());
}

export function cleanup() {
  if (built?.dir) rmSync(built.dir, { recursive: true, force: true });
  if (copies) rmSync(copies, { recursive: true, force: true });
  built = null;
  copies = null;
}

/** A fresh copy of a bundle folder, in a folder of its own (removed by cleanup()). */
export async function copyBundle(src) {
  copies ??= mkdtempSync(join(tmpdir(), 'edgeship-js-copies-'));
  const dir = join(copies, String(count++));
  await mkdir(dir);
  const dst = join(dir, 'b.edgeship');
  await cp(src, dst, { recursive: true });
  return dst;
}

export const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/** Edit manifest.json through `fn(manifest)`, written back as JSON. */
export async function editManifest(bundle, fn) {
  const path = join(bundle, 'manifest.json');
  const m = JSON.parse(await readFile(path, 'utf8'));
  fn(m);
  await writeFile(path, JSON.stringify(m));
  return m;
}

/** Update the manifest's sha256/size of `rel`, as someone who edits a bundle on purpose would. */
export async function resign(bundle, rel) {
  const data = await readFile(join(bundle, ...rel.split('/')));
  await editManifest(bundle, (m) => { m.files[rel] = { sha256: sha256(data), size: data.length }; });
}

/** Flip one bit of the byte at `offset` (negative: from the end). */
export async function flipByte(path, offset = -100) {
  const data = await readFile(path);
  data[offset < 0 ? data.length + offset : offset] ^= 0x01;
  await writeFile(path, data);
}

/** onnxruntime with InferenceSession.create recorded: `calls` stays empty when nothing was opened. */
export function ortSpy(ort) {
  const calls = [];
  const spy = {
    ...ort,
    Tensor: ort.Tensor,
    InferenceSession: {
      create: (model, options) => {
        calls.push(model.length);
        return ort.InferenceSession.create(model, options);
      },
    },
  };
  return { ort: spy, calls };
}
