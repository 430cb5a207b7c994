"""Hugging Face ``save_pretrained`` folders: reading them and their torch-free pre-processing.

:mod:`edgeship.hf.folder` reads a folder (config.json, weights, tokenizer, image processor) without
importing torch or transformers; :mod:`edgeship.hf.preprocess` is the runtime side
(``Model.encode``/``Model.decode``). The export side lives in the rooms above:
:mod:`edgeship.exporters.hf_model` builds the module with transformers' Auto classes from the local files
only and derives the inputs, dynamic axes and example inputs; :mod:`edgeship.exporters.hf_decoder` exports
a causal LM's KV-cache graph; :mod:`edgeship.pipeline.decoder` is the decoder export's stages.
"""
