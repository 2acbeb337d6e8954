"""GGUF (llama.cpp) checkpoints, one concern per module.

- ``parse``: bounds-checked header parser, tensor table, ``GGUFFile`` (memory-mapped tensors)
- ``dequant``: GGML types to torch tensors (fast torch kernels, ``gguf.quants`` for the rest)
- ``names``: llama.cpp block-tensor names <-> Hugging Face names, q/k row permutation
- ``hf``: config.json from the ``{arch}.*`` keys and the HF name plan, through the family spec
- ``tokenizer``: byte-level BPE tokenizer rebuilt from / embedded in the GGUF vocabulary
- ``write``: export from HF-named tensors; copy with new metadata and the same tensor bytes
"""
