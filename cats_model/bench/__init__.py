"""Benchmark, side by side in one run: `python -m cats_model.bench [--root DIR] [--json FILE]`.

1. input pipeline (input.py): the project's training loader (decoded cache + batch augmentation) against a
   plain torchvision loader (PIL decode, RandomResizedCrop, ToTensor, Normalize) over the same JPEGs, with the
   same batch size and worker count;
2. framework (framework.py): the project's Trainer against a hand-written PyTorch loop, same model, same
   batches, one step of each in turn;
3. accelerator (accelerator.py, run on a GPU): the default model with the project's GPU defaults against plain
   fp32, the fraction of the GPU's peak arithmetic reached, and a whole epoch of real data against synthetic
   input already on the GPU.
Sections with arguments of their own: `python -m cats_model.bench inference CKPT` (inference.py: PyTorch
against ONNX fp32 and int8 on the CPU) and `python -m cats_model.bench serve MODEL` (serving.py: the server
with batching against one request at a time).
Every figure is a ratio of two measurements taken in the same run.
"""
