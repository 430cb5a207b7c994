"""Hugging Face ``save_pretrained`` folders as model files (export side) and their pre-processing.

:mod:`edgeship.hf.folder` reads a folder (config.json, weights, tokenizer, image processor) without
importing torch or transformers; :mod:`edgeship.hf.build` builds the module with transformers' Auto
classes from the local files only, and derives the inputs, dynamic axes and example inputs;
:mod:`edgeship.hf.preprocess` is the torch-free runtime side (``Model.encode``/``Model.decode``).
"""
