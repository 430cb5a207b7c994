"""Tiny Hugging Face ``save_pretrained`` folders for the tests: random weights (fixed seed) built from
configs, and a WordPiece tokenizer built with the ``tokenizers`` library, wrapped in transformers'
PreTrainedTokenizerFast to be saved beside the model. No network."""

from __future__ import annotations

from pathlib import Path

WORDS = ("the a an edge model models ship ships shipped to of and is was hello world short text longer sentence "
         "that pads first one tokenizer some more words here token classification image bundle device").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TEXTS = ["hello world", "the edge model ships to the device and the tokenizer pads the short text",
         "some more words, unknownword here!"]


def wordpiece_tokenizer(max_length: int = 64):
    """A BERT-style fast tokenizer (lower-casing, [CLS] ... [SEP], pad [PAD] = 0) as transformers saves it."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + list("abcdefghijklmnopqrstuvwxyz,.!?")
                                        + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"]), len(vocab)


def bert_config(vocab_size: int, **kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, **kw)


def save_bert(path: Path, kind: str = "encoder", seed: int = 0, dtype: str | None = None) -> Path:
    """A tiny BERT folder: ``encoder`` (BertModel), ``sequence`` (2 labels), ``token`` (3 labels),
    ``qa`` (BertForQuestionAnswering) or ``mlm`` (BertForMaskedLM, tied to the word embeddings);
    ``dtype`` ("bfloat16", "float16") saves the weights in that precision, as most hub folders are."""
    import torch
    from transformers import (
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    tokenizer, n = wordpiece_tokenizer()
    torch.manual_seed(seed)
    if kind == "encoder":
        model = BertModel(bert_config(n))
    elif kind == "sequence":
        model = BertForSequenceClassification(bert_config(n, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                                                          label2id={"NEGATIVE": 0, "POSITIVE": 1}))
    elif kind == "qa":
        model = BertForQuestionAnswering(bert_config(n))
    elif kind == "mlm":
        model = BertForMaskedLM(bert_config(n))
    else:
        model = BertForTokenClassification(bert_config(n, num_labels=3, id2label={0: "O", 1: "B-THING", 2: "I-THING"},
                                                       label2id={"O": 0, "B-THING": 1, "I-THING": 2}))
    model.eval()
    if dtype is not None:
        model.to(getattr(torch, dtype))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_vit(path: Path, seed: int = 0, cls: str = "ViTForImageClassification") -> Path:
    """A tiny ViT image classifier (32x32, patch 8, 3 labels; ``cls`` another ViT-like class, e.g. DeiT's
    DeiTForImageClassificationWithTeacher) with its image processor's
    preprocessor_config.json, as ViTImageProcessor.save_pretrained writes it (the processor itself
    needs torchvision or PIL, which the test environment does not have)."""
    import json

    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.DeiTConfig if cls.startswith("DeiT") else transformers.ViTConfig
    cfg = config(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=3,
                    id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    model = getattr(transformers, cls)(cfg).eval()
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": MEAN, "image_std": STD,
        "image_processor_type": "ViTImageProcessor", "resample": 2, "rescale_factor": 1 / 255,
        "size": {"height": 32, "width": 32}}, indent=2))
    return path


def make_sentence_transformer(path: Path, mode: str = "mean", normalize: bool = True) -> Path:
    """Turn a BertModel folder into a sentence-transformers folder (modules.json, 1_Pooling[, 2_Normalize])."""
    import json

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": mode == "max",
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    return path
