"""Hugging Face ``save_pretrained`` folders as model files. Modules here import torch and
transformers inside their functions; ``import edgeship.hf`` alone imports neither."""
