// The loader against real bundles exported by the Python side (js/test/fixtures.py): it loads and
// runs SimpleNet with onnxruntime-node as the golden outputs say, and refuses every damaged or
// crafted bundle of tests/hostile/test_bundles_hostile.py before onnxruntime opens anything.
import assert from 'node:assert/strict';
import { link, mkdir, readFile, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ortNode from 'onnxruntime-node';
import { BundleError, SpecError, loadBundle, openBundle } from '../src/index.js';
import { cleanup, copyBundle, editManifest, fixtures, flipByte, ortSpy, pythonRefusals, resign, sha256 } from './helpers.js';

const fx = fixtures();
const skip = fx.skip ?? false;
const index = fx.index;

after(cleanup);

/** Whether every output of `model` on every golden sample is within the variant's tolerance. */
async function checkGolden(model) {
  const tol = model.manifest.variants[model.variant].tolerance;
  const samples = await model.golden();
  assert.equal(samples.length, model.manifest.golden.samples.length);
  let worst = 0;
  for (const s of samples) {
    const feeds = Object.fromEntries(Object.entries(s.inputs).map(([k, a]) => [k, { data: a.data, dims: a.shape }]));
    const got = await model.run(feeds);
    for (const [name, want] of Object.entries(s.outputs)) {
      assert.deepEqual([...got[name].dims], want.shape, `${s.label}/${name} shape`);
      const { atol, rtol } = tol[name];
      got[name].data.forEach((v, i) => {
        const err = Math.abs(v - want.data[i]);
        worst = Math.max(worst, err);
        assert.ok(err <= atol + rtol * Math.abs(want.data[i]), `${s.label}/${name}[${i}]: ${v} vs golden ${want.data[i]}`);
      });
    }
  }
  return worst;
}

/** Refused with a BundleError of `code` whose message matches `match`, and onnxruntime never opened a model. */
async function refused(source, code, match, options = {}) {
  const { ort, calls } = ortSpy(ortNode);
  await assert.rejects(loadBundle(source, { ort, ...options }), (e) => {
    assert.ok(e instanceof BundleError, `${e}`);
    assert.match(e.message, match);
    if (code) assert.equal(e.code, code, e.message);
    return true;
  });
  assert.deepEqual(calls, [], 'onnxruntime opened a model of a refused bundle');
}

describe('a good bundle', { skip }, () => {
  it('loads SimpleNet from a folder and matches the golden outputs', async () => {
    const model = await loadBundle(index.bundle, { ort: ortNode });
    assert.equal(model.variant, model.manifest.defaults.cpu);
    assert.deepEqual(model.inputs.map((t) => t.name), ['x']);
    const worst = await checkGolden(model);
    assert.ok(worst < 1e-5, `max abs error ${worst}`);
    await model.release();
    await assert.rejects(model.run({ x: new Float32Array(10) }), { code: 'closed' });
  });

  it('imports onnxruntime-node itself when no ort is given', async () => {
    const model = await loadBundle(index.bundle);
    const out = await model.run({ x: new Float32Array(20) });
    assert.deepEqual([...out.output.dims], [2, 1]);
  });

  it('runs with onnxruntime-web (WebAssembly) too, as the golden outputs', async () => {
    const ortWeb = await import('onnxruntime-web');
    ortWeb.env.wasm.numThreads = 1;
    const model = await loadBundle(index.bundle, { ort: ortWeb, target: 'web' });
    assert.equal(model.ort.env.versions.web, '1.30.0');
    const worst = await checkGolden(model);
    assert.ok(worst < 1e-5, `max abs error ${worst}`);
    await model.release();
  });

  it('loads the zipped bundle, from a path and from its bytes, with the same outputs', async () => {
    for (const source of [index.zip, new Uint8Array(await readFile(index.zip))]) {
      const model = await loadBundle(source, { ort: ortNode });
      await checkGolden(model);
    }
  });

  it('runs a named variant and falls back to the cpu default for another target', async () => {
    const int8 = await loadBundle(index.bundle, { ort: ortNode, variant: 'int8_dynamic' });
    assert.equal(int8.precision, 'int8');
    const golden = (await int8.golden())[0];
    const out = await int8.run({ x: golden.inputs.x.data });
    assert.ok(Math.abs(out.output.data[0] - golden.outputs.output.data[0]) < 0.01);
    const web = await loadBundle(index.bundle, { ort: ortNode, target: 'web' });
    assert.equal(web.variant, web.manifest.defaults.cpu);
    await refused(index.bundle, 'variant', /variant 'int4' is not in bundle 'simplenet'; it has fp32, int8_dynamic/, { variant: 'int4' });
  });

  it('passes over a variant the manifest records as failing on the target', async () => {
    const b = await copyBundle(index.bundle);
    await editManifest(b, (m) => { m.variants.fp32.parity.passed.web = false; });
    const model = await loadBundle(b, { ort: ortNode, target: 'web' });
    assert.equal(model.variant, 'int8_dynamic');
    assert.deepEqual(model.skipped, ['fp32: failed parity on web']);
  });

  it('refuses feeds that do not match the inputs', async () => {
    const model = await loadBundle(index.bundle, { ort: ortNode });
    await assert.rejects(model.run({ y: new Float32Array(10) }), (e) => e instanceof SpecError && /missing x, unknown y/.test(e.message));
    await assert.rejects(model.run({ x: new Float64Array(10) }), /input 'x' is float32 \(Float32Array\); got Float64Array/);
    await assert.rejects(model.run({ x: { data: new Float32Array(10), dims: [2, 5] } }), /has shape \[batch, 10\]; got dims \[2, 5\]/);
    await assert.rejects(model.run({ x: new Float32Array(7) }), /pass \{data, dims\}/);
  });
});

async function copyExternal(b) {
  const { cp } = await import('node:fs/promises');
  await cp(index.external, b, { recursive: true });
}

// name -> [damage(bundle folder), code, message]: every one refused before onnxruntime opens anything
const cases = {
  'one changed byte in a model file': [(b) => flipByte(join(b, 'models', 'fp32.onnx')), 'digest', /models\/fp32.onnx does not match its sha256\/size/],
  'one changed byte in the golden outputs': [(b) => flipByte(join(b, 'golden', 'outputs.npz')), 'digest', /golden\/outputs.npz does not match/],
  'one changed byte in the manifest (a sha256)': [async (b) => {
    const path = join(b, 'manifest.json');
    const text = await readFile(path, 'utf8');
    const sha = JSON.parse(text).files['models/fp32.onnx'].sha256;
    await writeFile(path, text.replace(sha, sha.slice(0, 10) + (sha[10] === '0' ? '1' : '0') + sha.slice(11)));
  }, 'digest', /models\/fp32.onnx does not match its sha256/],
  'one changed byte in the manifest (its JSON)': [(b) => flipByte(join(b, 'manifest.json'), 0), 'manifest', /manifest.json is not valid JSON/],
  'a missing file': [(b) => unlink(join(b, 'golden', 'inputs.npz')), 'missing', /listed files are missing: golden\/inputs.npz\./],
  'a missing model file': [(b) => rm(join(b, 'models'), { recursive: true }), 'missing', /listed files are missing: models\/fp32.onnx, models\/int8_dynamic.onnx/],
  'an extra file': [(b) => writeFile(join(b, 'notes.txt'), 'x'), 'extra', /files not listed in manifest.json: notes.txt; refusing/],
  'an extra file in a folder': [(b) => writeFile(join(b, 'models', 'evil.onnx'), 'x'), 'extra', /not listed in manifest.json: models\/evil.onnx/],
  'a hard link': [(b) => link(join(b, 'report.json'), join(dirname(b), 'report-elsewhere.json')), 'link', /report.json is hard-linked elsewhere/],
  'a symlinked folder': [async (b) => {
    await rename(join(b, 'golden'), join(dirname(b), 'golden-elsewhere'));
    await symlink(join(dirname(b), 'golden-elsewhere'), join(b, 'golden'));
  }, 'link', /golden is a symbolic link; bundles hold plain files only/],
  'a symlinked file': [async (b) => {
    await rename(join(b, 'report.json'), join(dirname(b), 'report-elsewhere.json'));
    await symlink(join(dirname(b), 'report-elsewhere.json'), join(b, 'report.json'));
  }, 'link', /report.json is a symbolic link/],
  'a fifo': [(b) => execFileSync('mkfifo', [join(b, 'pipe')]), 'link', /pipe is not a regular file/],
  'a sha256 edited': [(b) => editManifest(b, (m) => { m.files['report.json'].sha256 = '0'.repeat(64); }), 'digest', /report.json does not match its sha256/],
  'a size edited': [(b) => editManifest(b, (m) => { m.files['report.json'].size = 1; }), 'digest', /report.json does not match its sha256\/size in manifest.json \(\d+ bytes, not 1\)/],
  'the manifest lists itself': [(b) => editManifest(b, (m) => { m.files['manifest.json'] = { sha256: '0', size: 1 }; }), 'manifest', /manifest entry 'manifest.json' is malformed/],
  'a size that is not an integer': [(b) => editManifest(b, (m) => { m.files['report.json'].size = '13306'; }), 'manifest', /manifest entry 'report.json' is malformed/],
  'no io': [(b) => editManifest(b, (m) => { delete m.io; }), 'manifest', /has no valid 'io'/],
  'no variants': [(b) => editManifest(b, (m) => { delete m.variants; }), 'manifest', /lists no variants/],
  'no golden': [(b) => editManifest(b, (m) => { delete m.golden; }), 'manifest', /has no 'golden' section/],
  'io not a list': [(b) => editManifest(b, (m) => { m.io.inputs = 'x'; }), 'manifest', /has no valid 'io'/],
  'a bad dtype in io': [(b) => editManifest(b, (m) => { m.io.inputs[0].dtype = 'complex7'; }), 'manifest', /unsupported dtype 'complex7'/],
  'a variant naming an unlisted file': [(b) => editManifest(b, (m) => { m.variants.fp32.file = 'models/evil.onnx'; }), 'manifest', /'models\/evil.onnx', which is not among its listed files/],
  'a variant file escaping': [(b) => editManifest(b, (m) => { m.variants.fp32.file = '../../etc/passwd'; }), 'manifest', /'..\/..\/etc\/passwd', which is not among its listed files/],
  'a default naming a missing variant': [(b) => editManifest(b, (m) => { m.defaults.cpu = 'int8'; }), 'manifest', /'defaults' names a variant/],
  'a tolerance that is text': [(b) => editManifest(b, (m) => { m.variants.fp32.tolerance = { atol: 'big' }; }), 'manifest', /malformed tolerance/],
  'a tolerance that is NaN': [async (b) => {
    const path = join(b, 'manifest.json');
    await writeFile(path, (await readFile(path, 'utf8')).replace('"atol": 0.0001', '"atol": NaN').replace('"atol":0.0001', '"atol":NaN'));
  }, 'manifest', /not valid JSON/],
  'malformed samples': [(b) => editManifest(b, (m) => { m.golden.samples = [1, 2]; }), 'manifest', /malformed golden samples/],
  'a candidate naming a missing variant': [(b) => editManifest(b, (m) => { m.candidates.cpu[0].variant = 'int4'; }), 'manifest', /names variant 'int4', which it does not have/],
  'a candidate naming a cache folder': [(b) => editManifest(b, (m) => { Object.assign(m.candidates.cpu[0], { runtime: 'openvino', options: { cache_dir: '/tmp/x' } }); }), 'manifest', /names a cache folder/],
  'a candidate with an unknown option': [(b) => editManifest(b, (m) => { Object.assign(m.candidates.cpu[0], { id: 'crafted', options: { cache_dir: '/tmp/x' } }); }), 'manifest', /candidate 'crafted': unknown onnxruntime option\(s\) cache_dir; use threads, spinning, opt_level/],
  'a candidate on an unknown runtime': [(b) => editManifest(b, (m) => { m.candidates.cpu[0].runtime = 'tensorrt'; }), 'manifest', /unknown runtime 'tensorrt'; use onnxruntime, openvino/],
  'a candidate with too many threads': [(b) => editManifest(b, (m) => { m.candidates.cpu[0].options = { threads: 1000000 }; }), 'manifest', /onnxruntime threads=1000000: use a whole number from 1 to 1024, or cores\/N/],
  'deeply nested JSON': [(b) => writeFile(join(b, 'manifest.json'), '['.repeat(100000) + ']'.repeat(100000)), 'manifest', /not valid JSON|not a JSON object/],
  'a manifest that is a list': [(b) => writeFile(join(b, 'manifest.json'), '[]'), 'manifest', /not a JSON object/],
  'a repeated key': [async (b) => {
    const path = join(b, 'manifest.json');
    await writeFile(path, (await readFile(path, 'utf8')).replace('{', '{"schema_version": 99, '));
  }, 'manifest', /the key 'schema_version' appears twice in one object/],
  'schema_version as a string': [(b) => editManifest(b, (m) => { m.schema_version = '1'; }), 'schema', /schema_version '1' is not supported/],
  'a newer schema_version': [(b) => editManifest(b, (m) => { m.schema_version = 2; }), 'schema', /schema_version 2 is not supported \(this edgeship reads 1\); upgrade edgeship or re-export the bundle/],
  'no schema_version': [(b) => editManifest(b, (m) => { delete m.schema_version; }), 'schema', /schema_version None is not supported/],
  'no manifest': [(b) => unlink(join(b, 'manifest.json')), 'manifest', /has no manifest.json/],
  'a symlinked manifest': [async (b) => {
    await rename(join(b, 'manifest.json'), join(dirname(b), 'manifest-elsewhere.json'));
    await symlink(join(dirname(b), 'manifest-elsewhere.json'), join(b, 'manifest.json'));
  }, 'manifest', /has no manifest.json/],
  'external data, re-signed': [async (b) => { await rm(b, { recursive: true }); await copyExternal(b); }, 'model', /keeps tensor 'fc1.weight' in external data '..\/..\/secret.bin'/],
};

describe('a damaged or crafted folder is refused before onnxruntime opens it', { skip }, () => {
  for (const [name, [damage, code, match]] of Object.entries(cases)) {
    it(name, async () => {
      const b = await copyBundle(index.bundle);
      await damage(b);
      await refused(b, code, match);
    });
  }

});

/** A name that escapes the bundle, listed with the sha256 of the file put where it points, and made the fp32 variant's file. */
async function escape(b, rel) {
  const data = await readFile(join(b, 'models', 'fp32.onnx'));
  await mkdir(join(dirname(b), 'tmp'), { recursive: true });
  await writeFile(join(dirname(b), 'evil.onnx'), data);
  await editManifest(b, (m) => {
    m.files[rel] = { sha256: sha256(data), size: data.length };
    m.variants.fp32.file = rel;
  });
}

const escaping = {
  'a .. path': '../evil.onnx',
  'a deeper .. path': 'models/../../evil.onnx',
  'an absolute path': '/tmp/evil.onnx',
  'a backslash': 'models\\..\\..\\evil.onnx',
  'a dot part': 'models/./fp32.onnx',
  'an empty part': 'models//fp32.onnx',
  'a trailing slash': 'models/',
  'a home path': '~/evil.onnx',
  'a drive letter': 'C:/evil.onnx',
  'a NUL byte': 'models/fp32.onnx\u0000.txt',
  'a newline': 'models/evil\n.onnx',
  'a bidi override': 'models/\u202excod.onnx',
  'a line separator': 'models/evil\u2028.onnx',
  'an unassigned code point': 'models/\u{e0080}.onnx',
  'a private-use code point': 'models/\ue000.onnx',
  'a lone surrogate': 'models/\ud800.onnx',
};

describe('a name that escapes the bundle is refused before onnxruntime opens it', { skip }, () => {
  for (const [name, rel] of Object.entries(escaping)) {
    it(`an escaping name in a re-signed manifest: ${name}`, async () => {
      const b = await copyBundle(index.bundle);
      await escape(b, rel);
      await refused(b, 'path', /escapes the bundle or is not a plain relative path.*the bundle was tampered with/);
    });
  }

  it('a consistent edit that survives the checksums is caught against the model', async () => {
    const edits = [
      [(m) => { m.io.inputs[0].dtype = 'float64'; }, /does not match manifest.json's io spec .*input 'x' is float32 in the model, float64 in the spec/],
      [(m) => { m.io.inputs[0].shape = ['batch', 10, 1]; }, /input 'x' has shape/],
      [(m) => { m.io.inputs[0].name = 'y'; }, /inputs are \["x"\] in the model, \["y"\] in the spec/],
      [(m) => { m.variants.fp32.file = 'golden/inputs.npz'; }, /onnxruntime cannot open golden\/inputs.npz/],
    ];
    for (const [edit, match] of edits) {
      const b = await copyBundle(index.bundle);
      await editManifest(b, edit);
      await assert.rejects(loadBundle(b, { ort: ortNode }), (e) => e instanceof BundleError && e.code === 'model' && match.test(e.message));
    }
    const b = await copyBundle(index.bundle);
    const model = join(b, 'models', 'fp32.onnx');
    await writeFile(model, (await readFile(model)).subarray(0, 3000));
    await resign(b, 'models/fp32.onnx');
    await assert.rejects(loadBundle(b, { ort: ortNode }), /onnxruntime cannot open models\/fp32.onnx/);
  });

  it('the bundle path itself: missing, a symbolic link, a fifo, not a bundle', async () => {
    const b = await copyBundle(index.bundle);
    await refused(join(dirname(b), 'nothing.edgeship'), 'source', /does not exist; pass the NAME.edgeship folder/);
    await symlink(b, join(dirname(b), 'link.edgeship'));
    await refused(join(dirname(b), 'link.edgeship'), 'link', /is a symbolic link; pass the bundle itself/);
    execFileSync('mkfifo', [join(dirname(b), 'b.edgeship.zip')]);
    await refused(join(dirname(b), 'b.edgeship.zip'), 'source', /not a folder or a regular file/);
    await refused(join(b, 'report.json'), 'source', /neither a bundle folder nor a zipped bundle/);
    await assert.rejects(openBundle(42), /a bundle is a URL, a path .* not number/);
  });
});

describe('a damaged or crafted zip is refused before onnxruntime opens it', { skip }, () => {
  const cases = {
    'flipped byte': ['', /corrupt|does not match/],
    truncated: ['zip', /not a readable zip|corrupt/],
    'missing file': ['missing', /listed files are missing: report.json/],
    'extra file': ['extra', /not listed in manifest.json: notes.txt/],
    'zip slip': ['path', /escapes the bundle/],
    'absolute entry': ['path', /escapes the bundle/],
    'symlink entry': ['zip', /link is a symbolic link/],
    'duplicate entry': ['zip', /report.json appears twice in the zip/],
    'manifest not json': ['manifest', /not valid JSON/],
    'unknown schema': ['schema', /schema_version 2 is not supported/],
    'no manifest': ['manifest', /no manifest.json/],
    'encrypted entries': ['zip', /is encrypted/],
    'unknown compression': ['zip', /compression method 99/],
    'many small members': ['zip', /its \d+ zip members declare \d+ bytes in all from a \d+-byte zip \(over 200x\): refused as a decompression bomb/],
    'one member bomb': ['zip', /zip member 'pad\/zeros.bin' declares 4194304 bytes from \d+ compressed \(over 200x\): refused as a decompression bomb/],
    'overlapping members': ['zip', /zip member 'ov\/a.bin' overlaps the next member or the central directory/],
  };
  for (const [name, [code, match]] of Object.entries(cases)) {
    it(name, async () => {
      await refused(index.zips[name], code || undefined, match);
      await refused(new Uint8Array(await readFile(index.zips[name])), code || undefined, match);
    });
  }
});

describe('over fetch', { skip }, () => {
  let server;
  let base;
  let root;
  before(async () => {
    root = dirname(await copyBundle(index.bundle));
    await writeFile(join(root, 'simplenet.edgeship.zip'), await readFile(index.zip));
    server = createServer(async (req, res) => {
      try {
        const data = await readFile(join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
        res.writeHead(200).end(data);
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${server.address().port}/`;
  });
  after(() => new Promise((ok) => server.close(ok)));

  it('loads a folder and a zip by URL and matches the golden outputs', async () => {
    for (const url of [`${base}b.edgeship`, `${base}b.edgeship/`, new URL('simplenet.edgeship.zip', base)]) {
      const model = await loadBundle(url, { ort: ortNode });
      await checkGolden(model);
    }
  });

  it('refuses one changed byte, a missing file and an escaping name', async () => {
    const b = join(root, 'b.edgeship');
    const model = join(b, 'models', 'fp32.onnx');
    const good = await readFile(model);
    await flipByte(model);
    await refused(`${base}b.edgeship`, 'digest', /models\/fp32.onnx does not match its sha256/);
    await writeFile(model, good);
    await rename(join(b, 'report.json'), join(root, 'report.json'));
    await refused(`${base}b.edgeship`, 'missing', /listed files are missing: report.json/);
    await rename(join(root, 'report.json'), join(b, 'report.json'));
    const manifest = await readFile(join(b, 'manifest.json'));
    await editManifest(b, (m) => { m.files['../report.json'] = m.files['report.json']; });
    await refused(`${base}b.edgeship`, 'path', /bundle path '..\/report.json' escapes the bundle/);
    await writeFile(join(b, 'manifest.json'), manifest);
    await refused(`${base}nothing.edgeship`, 'manifest', /has no manifest.json/);
    await loadBundle(`${base}b.edgeship`, { ort: ortNode });
  });
});

describe('the same refusal as the Python loader', { skip: skip || (!fx.python && 'no Python with edgeship to compare with') }, () => {
  it('gives the message edgeship.load gives, for every damaged folder and escaping name', async () => {
    const made = [];
    for (const [name, [damage]] of Object.entries(cases)) {
      const b = await copyBundle(index.bundle);
      await damage(b);
      made.push([name, b]);
    }
    for (const [name, rel] of Object.entries(escaping)) {
      const b = await copyBundle(index.bundle);
      await escape(b, rel);
      made.push([name, b]);
    }
    const js = {};
    for (const [name, b] of made) {
      js[name] = await loadBundle(b, { ort: ortNode }).then(() => null, (e) => e.message);
    }
    const py = pythonRefusals(fx.python, made);
    // what the JSON parser says of broken JSON is its own (V8's or Python's): compared up to it
    const same = (m) => m?.replace(/is not valid JSON \(.*\); the bundle is corrupt\.$/s, 'is not valid JSON (...); the bundle is corrupt.');
    // both refuse these, each its own way: JSON has no NaN (Python's json reads one, then refuses the
    // tolerance), and V8 parses an array nested 100,000 deep that Python's recursion limit refuses
    const own = new Set(['a tolerance that is NaN', 'deeply nested JSON']);
    for (const name of own) assert.ok(js[name] && py[name], `${name}: ${js[name]} / ${py[name]}`);
    const differ = Object.keys(js).filter((name) => !own.has(name) && same(js[name]) !== same(py[name]));
    assert.deepEqual(differ.map((name) => [name, js[name], py[name]]), []);
  });
});
