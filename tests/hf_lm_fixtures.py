"""Tiny causal LMs saved with ``save_pretrained``, as users hold them: Llama-style and Qwen2-style
(attention biases), random weights with a fixed seed, a BPE tokenizer trained with the ``tokenizers``
library on a few sentences and saved through transformers' ``PreTrainedTokenizerFast``.

Everything here imports torch/transformers; tests that need a torch-free process run the runtime
side in a subprocess.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "edgeship ships trained models to the edge",
    "small language models run on the device with a cache of keys and values",
    "hello world, this is some text for a tiny tokenizer",
    "prefill then decode one token at a time until the end of the sequence",
]

ARCHS = ("llama", "qwen2")


def build_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer (``tokenizers``), wrapped as transformers' fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="left")


def config_for(arch: str, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               vocab_size: int = 300, max_positions: int = 256):
    """A small config of ``arch`` (``llama`` or ``qwen2``) with grouped-query attention."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")


def save_causal_lm(folder: Path, arch: str = "llama", seed: int = 0, dtype: str | None = None,
                   **config_kwargs) -> Path:
    """Build a random causal LM of ``arch`` and save it, with its tokenizer, to ``folder`` (its weights
    in ``dtype``, "bfloat16" or "float16", where given: most real small LMs are saved so)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(config_kwargs.get("vocab_size", 300))
    model = AutoModelForCausalLM.from_config(config_for(arch, **config_kwargs))
    with torch.no_grad():  # random init is small: scale up so the logits are not flat and greedy is decisive
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
        for name, p in model.named_parameters():  # Qwen2's q/k/v biases start at zero: make them count
            if name.endswith(".bias"):
                p.normal_(0.0, 0.05)
    model.eval()
    model.generation_config.pad_token_id = 0
    if dtype is not None:
        model.to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_gpt2(folder: Path, seed: int = 0) -> Path:
    """A GPT-2-style LM (learned positions, LayerNorm, fused qkv) saved with its tokenizer: an
    architecture of another family than Llama's."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=128, bos_token_id=1,
                        eos_token_id=2, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


# Families whose graphs differ from Llama's in what the export must not assume, each in the smallest
# config that shows it: (transformers config class, its arguments).
FAMILIES = {
    # ALiBi: the model reads no position_ids, so onnxruntime's optimizer prunes that input from the graph
    "bloom": ("BloomConfig", dict(hidden_size=64, n_layer=2, n_head=4)),
    # multi-query attention: one key/value head, named by no num_key_value_heads in its config
    "falcon": ("FalconConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    new_decoder_architecture=False, multi_query=True)),
    # a sliding window shorter than the prompts: transformers' cache trims itself to the window
    "mistral-window": ("MistralConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                             sliding_window=4)),
    # sliding and full layers alternating, soft-capped logits; onnxruntime-genai's graph of it does not run
    "gemma2-window": ("Gemma2Config", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                           max_position_embeddings=256, sliding_window=4)),
    # partial rotary embeddings; onnxruntime-genai's graph of it does not run at this head size
    "phi": ("PhiConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=256)),
}


def save_family(folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny LM of one of :data:`FAMILIES` (random weights, fixed seed) saved with its tokenizer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    cls, kwargs = FAMILIES[family]
    config = getattr(transformers, cls)(vocab_size=300, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    model.eval()
    model.generation_config.pad_token_id = 0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def greedy_reference(folder: Path, prompts: list[list[int]], max_new_tokens: int,
                     eos_token_id: int | None = None) -> tuple[list[list[int]], list]:
    """transformers' greedy ``generate`` for each prompt (batch 1): new token ids and per-step logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens, logits = [], []
    for ids in prompts:
        x = torch.tensor([ids], dtype=torch.int64)
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos_token_id, pad_token_id=0,
                                 output_logits=True, return_dict_in_generate=True)
        tokens.append(out.sequences[0, len(ids):].tolist())
        logits.append(torch.stack(out.logits, 1)[0].numpy())
    return tokens, logits
