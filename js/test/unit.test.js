// Checks that need no bundle and no Python: the path rule, the manifest's schema, variant choice.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { BundleError, chooseVariant, checkRelpath, parseManifest, sha256Hex } from '../src/index.js';

const good = () => ({
  schema_version: 1,
  name: 'tiny',
  io: { inputs: [{ name: 'x', dtype: 'float32', shape: ['batch', 4] }], outputs: [{ name: 'y', dtype: 'float32', shape: ['batch', 1] }] },
  variants: { fp32: { file: 'models/fp32.onnx', precision: 'fp32' }, int8_dynamic: { file: 'models/int8.onnx', precision: 'int8' } },
  defaults: { cpu: 'fp32' },
  golden: { inputs: 'golden/inputs.npz', outputs: 'golden/outputs.npz', samples: [{ label: 'seed0-0', sizes: { batch: 1 } }] },
  files: Object.fromEntries(['models/fp32.onnx', 'models/int8.onnx', 'golden/inputs.npz', 'golden/outputs.npz']
    .map((f) => [f, { sha256: '0'.repeat(64), size: 1 }])),
});
const bytes = (value) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));

describe('the path rule', () => {
  it('accepts plain relative paths', () => {
    for (const rel of ['manifest.json', 'models/fp32.onnx', 'a/b/c.d', 'modèle/é.onnx', 'x..y', '.hidden']) assert.equal(checkRelpath(rel), rel);
  });
  it('refuses everything else', () => {
    for (const rel of ['', '/abs', '../x', 'a/../b', 'a/./b', './a', 'a//b', 'a/', 'a\\b', '~x', 'C:x', 'a\u0000b', 'a\tb',
      'a\u200fb', 'a\u2029b', 'a\ud800b', 'a\uf8ffb', 'a\u{10ffff}b', 42, null, ['a']]) {
      assert.throws(() => checkRelpath(rel), (e) => e instanceof BundleError && e.code === 'path', JSON.stringify(rel));
    }
  });
});

describe('the manifest', () => {
  it('parses a good one', () => assert.equal(parseManifest(bytes(good()), 'b').name, 'tiny'));
  const cases = [
    [(m) => 'not json', 'manifest', /not valid JSON/],
    [(m) => '\xff', 'manifest', /not valid JSON/],
    [(m) => '{"a": 1, "b": {"c": 1, "c": 2}}', 'manifest', /the key 'c' appears twice/],
    [(m) => '[1]', 'manifest', /not a JSON object/],
    [(m) => ({ ...m, schema_version: 2 }), 'schema', /schema_version 2 is not supported/],
    [(m) => ({ ...m, schema_version: true }), 'schema', /schema_version True is not supported/], // Python takes True == 1: stricter here
    [(m) => ({ ...m, files: {} }), 'manifest', /lists no files/],
    [(m) => ({ ...m, files: { ...m.files, 'models/fp32.onnx': { sha256: 'x', size: -1 } } }), 'manifest', /malformed/],
    [(m) => ({ ...m, files: { ...m.files, 'models/fp32.onnx': { sha256: 'x', size: 2 ** 60 } } }), 'manifest', /malformed/],
    [(m) => ({ ...m, files: { ...m.files, 'models/fp32.onnx': { sha256: 5, size: 1 } } }), 'manifest', /malformed/],
    [(m) => ({ ...m, files: { ...m.files, '../x': { sha256: 'x', size: 1 } } }), 'path', /escapes the bundle/],
    [(m) => ({ ...m, io: { ...m.io, inputs: [{ name: 'x', dtype: 'float32', shape: [true] }] } }), 'manifest', /shape entries/],
    [(m) => ({ ...m, variants: { fp32: 'x' } }), 'manifest', /variant 'fp32' is not an object/],
    [(m) => ({ ...m, variants: { fp32: { file: 'models/fp32.onnx', precision: 8 } } }), 'manifest', /malformed precision/],
    [(m) => ({ ...m, candidates: { cpu: 'x' } }), 'manifest', /candidates for 'cpu' are not a list/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32' }, { id: 'a', runtime: 'onnxruntime', variant: 'fp32' }] } }),
      'manifest', /lists candidate 'a' twice/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32', p50_ms: -1 }] } }), 'manifest', /malformed p50_ms/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32', requires: { cpu_any: [1] } }] } }), 'manifest', /malformed 'requires'/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32', options: null }] } }), 'manifest', /candidate 'a': runtime options must be an object/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32', options: { spinning: 'yes' } }] } }), 'manifest', /onnxruntime spinning='yes': use true or false/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'onnxruntime', variant: 'fp32', options: { opt_level: 9 } }] } }), 'manifest', /onnxruntime opt_level=9: use one of disable, basic, extended, all/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'openvino', variant: 'fp32', options: { threads: 'cores/0' } }] } }), 'manifest', /OpenVINO threads='cores\/0'/],
    [(m) => ({ ...m, candidates: { cpu: [{ id: 'a', runtime: 'openvino', variant: 'fp32', options: { cache_dir: '' } }] } }), 'manifest', /OpenVINO cache_dir='': use a folder path/],
    [(m) => ({ ...m, tuned: 3 }), 'manifest', /malformed 'tuned'/],
    [(m) => ({ ...m, selection: { cpu: 3 } }), 'manifest', /malformed 'selection'/],
    [(m) => ({ ...m, golden: { ...m.golden, outputs: 'golden/other.npz' } }), 'manifest', /golden outputs names 'golden\/other.npz'/],
    [(m) => ({ ...m, name: 3 }), 'manifest', /name that is not a string/],
  ];
  for (const [edit, code, match] of cases) {
    it(`refuses ${match}`, () => {
      const m = edit(good());
      assert.throws(() => parseManifest(bytes(m), 'b'), (e) => e instanceof BundleError && e.code === code && match.test(e.message)
        && (code === 'path' || e.message.startsWith('bundle b: ')));
    });
  }
});

describe('the variant', () => {
  it('is the named one, the candidate, or the default', () => {
    const m = good();
    assert.equal(chooseVariant(m, 'cpu', 'int8_dynamic').name, 'int8_dynamic');
    assert.equal(chooseVariant(m, 'cpu').name, 'fp32');
    assert.equal(chooseVariant(m, 'web').name, 'fp32');
    assert.equal(chooseVariant(m, '__proto__').name, 'fp32');
    assert.equal(chooseVariant(m, 'constructor').name, 'fp32');
    m.candidates = { web: [{ id: 'x@openvino', runtime: 'openvino', variant: 'fp32' }, { id: 'int8_dynamic', runtime: 'onnxruntime-web', variant: 'int8_dynamic' }] };
    const chosen = chooseVariant(m, 'web');
    assert.equal(chosen.name, 'int8_dynamic');
    assert.deepEqual(chosen.skipped, ['x@openvino: runs on openvino']);
    m.variants.fp32.parity = { passed: { cpu: false } };
    m.variants.int8_dynamic.parity = { passed: { cpu: false } };
    assert.throws(() => chooseVariant(m, 'cpu'), /no variant runs on cpu: fp32: failed parity on cpu; int8_dynamic: failed parity on cpu/);
  });

  it('passes over an ORT-format twin to the ONNX variant it came from, and refuses it by name', () => {
    const m = good();
    m.variants.int8_dynamic_ort = { file: 'models/int8_dynamic.ort', precision: 'int8', format: 'ort', source: 'int8_dynamic' };
    m.defaults.mobile = 'int8_dynamic_ort';
    const chosen = chooseVariant(m, 'mobile');
    assert.equal(chosen.name, 'int8_dynamic');
    assert.equal(chosen.skipped.length, 1);
    assert.match(chosen.skipped[0], /^int8_dynamic_ort: an ORT-format file \(for onnxruntime-mobile in an app\); this loader runs the .onnx variants$/);
    assert.throws(() => chooseVariant(m, 'cpu', 'int8_dynamic_ort'), (e) => e instanceof BundleError && e.code === 'variant'
      && /variant 'int8_dynamic_ort' of bundle 'tiny' is an ORT-format file .*pass variant: 'int8_dynamic' \(the ONNX model it was converted from\)\./.test(e.message));
    delete m.variants.int8_dynamic_ort.source; // no source named: the ONNX variants are
    assert.throws(() => chooseVariant(m, 'cpu', 'int8_dynamic_ort'), /pass one of fp32, int8_dynamic\./);
    assert.equal(chooseVariant(m, 'mobile').name, 'fp32'); // defaults.cpu
  });
});

it('sha256 with WebCrypto is the sha256', async () => {
  const data = bytes('edgeship');
  assert.equal(await sha256Hex(data), createHash('sha256').update(data).digest('hex'));
});
