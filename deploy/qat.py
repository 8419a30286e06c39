"""QKeras re-implementation of the deployed L1 network and its quantisation-aware training (QAT).

:func:`build` turns the estimator's ``dense_layers()`` (VAE: encoder up to μ; AE: the whole
autoencoder) into a QKeras model — ``QDense`` with ``quantized_bits(weight_bits, integer_bits,
alpha=1)`` weights and biases, ``QActivation(quantized_relu(activation_bits, activation_integer_bits))``
after hidden layers — initialised with the float weights. :func:`train` fine-tunes it with QAT while
tfmot prunes it to the target sparsity. The training target is the float network's own output
(knowledge distillation: μ of the float VAE; for the AE, its input, i.e. the AE objective), so the
quantised, pruned network approximates the validated float model.
"""

from __future__ import annotations

import numpy as np


def build(layers, weight_bits: int, integer_bits, activation_bits: int, activation_integer_bits,
          n_inputs: int = 57, output_bits: int | None = None, output_integer_bits: int | None = None):
    """QKeras ``tf_keras.Model`` mirroring ``layers`` (list of DenseLayer), float weights loaded.

    ``integer_bits`` / ``activation_integer_bits`` are one int for all layers or a dict by layer name
    (see :func:`lhcad.deploy.ranges.formats`). With ``output_bits`` the network output passes through
    ``quantized_bits(output_bits, output_integer_bits)`` (round to nearest, saturate; hls4ml maps it
    to ``ap_fixed<output_bits, output_integer_bits + 1, AP_RND_CONV, AP_SAT>``).
    """
    from lhcad.deploy.hls import legacy_keras

    keras = legacy_keras()
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    per = lambda v, name: v[name] if isinstance(v, dict) else v  # noqa: E731
    inp = keras.Input((n_inputs,), name="inputs")
    x = inp
    for layer in layers:
        q = quantized_bits(weight_bits, per(integer_bits, layer.name), alpha=1)
        dense = QDense(layer.weight.shape[1], kernel_quantizer=q, bias_quantizer=q, name=layer.name)
        x = dense(x)
        dense.set_weights([layer.weight.astype(np.float32), layer.bias.astype(np.float32)])
        if layer.activation == "relu":
            qa = quantized_relu(activation_bits, per(activation_integer_bits, layer.name))
            x = QActivation(qa, name=f"{layer.name}_relu")(x)
    if output_bits:
        x = QActivation(quantized_bits(output_bits, output_integer_bits, alpha=1), name="output_q")(x)
    return keras.Model(inp, x, name="l1ad_encoder")


def train(model, x: np.ndarray, y: np.ndarray, *, sparsity, epochs: int, batch_size: int = 1024,
          lr: float = 1e-3, seed: int = 0, ramp: float = 0.6, loss_scale: float = 1.0):
    """QAT + pruning (``lhcad.deploy.prune``) to ``sparsity`` (one value, or per layer name);
    returns the stripped model and the loss history."""
    from lhcad.deploy import prune
    from lhcad.deploy.hls import legacy_keras

    keras = legacy_keras()
    import tensorflow as tf

    tf.random.set_seed(seed)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    callbacks = []
    prunes = any(v > 0 for v in sparsity.values()) if isinstance(sparsity, dict) else sparsity > 0
    if prunes:
        model, callbacks = prune.wrap(model, sparsity, steps, ramp=ramp)
    def loss(y_true, y_pred):  # MSE in units of the target scale (a collapsed μ has RMS ~ 4e-3)
        return tf.reduce_mean(tf.square(loss_scale * (y_true - y_pred)), axis=-1)

    # cosine decay to 0: pruning steps early, then a settling phase at a small learning rate
    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps))
    model.compile(optimizer=keras.optimizers.Adam(sched), loss=loss)
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks, verbose=0, shuffle=True)
    if prunes:
        model = prune.strip(model)
    return model, [float(v) for v in hist.history["loss"]]


def kernels(model, quantized: bool = True) -> dict[str, np.ndarray]:
    """Kernel of every QDense layer, as the quantiser maps it (``quantized``) or the float values."""
    out = {}
    for layer in model.layers:
        if hasattr(layer, "kernel_quantizer_internal"):
            k = layer.kernel
            out[layer.name] = np.asarray(layer.kernel_quantizer_internal(k)) if quantized else k.numpy()
    return out


def biases(model) -> dict[str, np.ndarray]:
    return {layer.name: np.asarray(layer.bias_quantizer_internal(layer.bias))
            for layer in model.layers if hasattr(layer, "bias_quantizer_internal")}
