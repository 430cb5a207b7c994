"""Small models the tests (and benchmarks) use. Import-safe factories: ``--arch tests/models.py:NAME``.

Families: an MLP, a multi-input/multi-output model with int64 inputs and dict outputs, a
ResNet-style CNN (residual blocks, batchnorm), a MobileNet-style CNN (depthwise separable
convs, hardswish, squeeze-excite), an SE-ResNet-style CNN, an EfficientNet-style block stack (MBConv, SiLU), a
BERT-style encoder with three int64 inputs, and deliberately broken models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, d_in: int = 10, d_hidden: int = 16, d_out: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))

    def forward(self, x):
        return self.net(x)


class MultiIO(nn.Module):
    """Two inputs (float features, int64 token ids) -> dict of two outputs."""

    def __init__(self, vocab: int = 50, dim: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(6, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, feats, ids):
        h = self.proj(feats) + self.emb(ids).mean(dim=1)
        return {"logits": self.head(h), "hidden": h}


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


class ResNetish(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class DepthwiseSeparable(nn.Module):
    def __init__(self, c_in, c_out, stride, act=nn.Hardswish, se=True):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in), act())
        self.se = SqueezeExcite(c_in) if se else nn.Identity()
        self.pw = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.pw(self.se(self.dw(x)))


class MobileNetish(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.Hardswish())
        self.blocks = nn.Sequential(
            DepthwiseSeparable(width, width, 1), DepthwiseSeparable(width, 2 * width, 2),
            DepthwiseSeparable(2 * width, 4 * width, 2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, 64), nn.Hardswish(), nn.Dropout(0.2),
                                  nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1))


class MBConv(nn.Module):
    def __init__(self, c_in, c_out, stride, expand=4):
        super().__init__()
        mid = c_in * expand
        self.expand = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = DepthwiseSeparable(mid, c_out, stride, act=nn.SiLU)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.dw(self.expand(x))
        return x + y if self.residual else y


class EfficientNetish(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(width, width, 1), MBConv(width, 2 * width, 2), MBConv(2 * width, 2 * width, 1))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class SEBlock(Block):
    """A residual block with squeeze-excitation on its second conv's output (SE-ResNet style)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__(c_in, c_out, stride)
        self.se = SqueezeExcite(c_out)

    def forward(self, x):
        return F.relu(self.se(self.b2(self.c2(F.relu(self.b1(self.c1(x)))))) + self.skip(x))


class SEResNetish(ResNetish):
    """ResNetish with squeeze-excitation in every block: full convs, unlike MobileNetish's depthwise."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__(num_classes, width)
        self.layers = nn.Sequential(SEBlock(width, width, 1), SEBlock(width, 2 * width, 2), SEBlock(2 * width, 4 * width, 2))


class BertStyle(nn.Module):
    """A BERT-style encoder: input_ids, attention_mask, token_type_ids (all int64) -> hidden, pooled."""

    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, layers: int = 2, max_len: int = 64):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.typ = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask, token_type_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        h = self.norm(self.tok(input_ids) + self.pos(pos) + self.typ(token_type_ids))
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        return h, torch.tanh(self.pool(h[:, 0]))


class SpecialisedTrace(nn.Module):
    """Eager works at any batch, but ``int(x.size(0))`` becomes a constant in a trace.

    Must fail parity under --dynamic-batch when exported from a trace.
    """

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(x).reshape(int(x.size(0)), 2, 2)


class Noisy(nn.Module):
    """Nondeterministic: adds fresh noise on every call."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + torch.rand(1)


def trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic non-default weights (and batchnorm statistics) so tests are not trivial."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class OutlierChannel(nn.Module):
    """Hidden channel 0 is ~1000x larger than the rest (in the weights, so it survives export):
    per-tensor int8 activations crush the small channels, which carry all the signal (fc2
    ignores channel 0). Static int8 misses its tolerance until the fallback keeps the
    nodes around that tensor in fp32. Build it as is: its weights are set here, not trained."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 8)
        self.fc4 = nn.Linear(8, 8)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2, self.fc3, self.fc4):
                fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) / fc.in_features ** 0.5)
                fc.bias.zero_()
            self.fc1.weight[0] *= 1000.0
            self.fc1.bias[0] = 1000.0  # channel 0 always on, always huge
            self.fc2.weight[:, 0] = 0.0  # ... and ignored downstream

    def forward(self, x):
        return self.fc4(torch.relu(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))))


class Fp16Overflow(nn.Module):
    """fc1's outputs reach ~1e5, beyond float16's 65504; fc2 scales them back down. Fine in fp32,
    inf in an fp16 variant: parity must catch it and name fc1's node as the first divergence."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc0 = nn.Linear(8, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        with torch.no_grad():
            for fc in (self.fc0, self.fc1, self.fc2):
                fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) / fc.in_features ** 0.5)
                fc.bias.zero_()
            self.fc1.bias.fill_(1e5)
            self.fc2.weight.mul_(1e-5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.fc0(x)))))


class PastKV(nn.Module):
    """A GPT-2-like signature: ``forward(input_ids, past=None, attention_mask=None)``; passing the
    mask by position would land it in ``past``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.out = nn.Linear(8, 5)

    def forward(self, input_ids, past=None, attention_mask=None):
        if past is not None:
            raise TypeError("'Tensor' object has no attribute 'get_seq_length'")
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
        return self.out(h.mean(1))


class ConcatBatch(nn.Module):
    """Two inputs concatenated on the batch axis: their batch sizes are independent."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, a, b):
        return self.fc(torch.cat([a, b], 0))


class TinyHead(nn.Module):
    """A head initialised near zero: every output value is far below fp32's atol (1e-4)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        with torch.no_grad():
            self.fc.weight.mul_(1e-5)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x)


class NoDetections(nn.Module):
    """A detector that found nothing: its boxes output is empty on every input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        boxes = self.fc(x)
        return boxes[boxes.sum(1) > 1e6], self.fc(x).sum(1)


class ShortcutMask(nn.Module):
    """A text encoder that, like transformers' attention, skips an all-ones mask in eager mode but
    not when traced or exported: eager accepts a mask whose sizes differ from the ids', the exported
    graph broadcasts the two and fails unless their axes are one symbol."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and bool(attention_mask.all()):
            return self.out(h.mean(1))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.out((h * m).sum(1) / m.sum(1).clamp(min=1.0))


class ListOutputs(nn.Module):
    """Returns a dict whose ``hidden`` entry is a list of tensors (as Hugging Face's
    ``hidden_states``): its outputs are logits, hidden.0, hidden.1."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return {"logits": self.fc2(h), "hidden": [x, h]}


class CollidingNames(nn.Module):
    """Deterministic, but its flattened names collide ("a.0" twice): --output-names names them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return {"a.0": self.fc(x), "a": [x * 2]}


class Attention(nn.Module):
    """nn.MultiheadAttention over embeddings: traced into a TorchScript archive, the TorchScript-based
    exporter cannot export it (a value of unknown rank inside the attention); as an nn.Module
    (a state_dict with --arch) the dynamo exporter does."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.out = nn.Linear(16, 3)

    def forward(self, ids):
        h = self.emb(ids)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.out(a.mean(1))


class KeepLast(nn.Module):
    """A causal-LM-like head with a defaulted parameter (Hugging Face's ``logits_to_keep``): the
    TorchScript-based exporter fills defaults in as graph inputs unless they are bound."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 32)

    def forward(self, input_ids, logits_to_keep: int = 0):
        return self.fc(self.emb(input_ids))[:, -logits_to_keep:, :]
