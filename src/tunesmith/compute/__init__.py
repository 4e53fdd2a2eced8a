"""What runs the numbers fast: `hardware` (CPU flags, the bf16 probe, the precision to train and
predict in, int8 quantization), `batching` (length-bucketed token-budget batches), `kernels` (the
CPU speed paths) and `inference` (model inputs and the one length-sorted batched-logits loop that
training's evaluation, the tasks and prediction share). Nothing is imported here: import the
module you need, e.g. `from tunesmith.compute import hardware`.
"""
