"""L1 firmware artefacts: QKeras quantisation-aware training, pruning, hls4ml C simulation."""
