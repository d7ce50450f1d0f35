"""Fashion-MNIST on the host: the IDX reader and its checks (idx), where the files are and the
splits (dataset, splits), one official file checked and kept decompressed (official), and the
order and padding of batches (batching).

Imports: the top level and runtime/.
"""
