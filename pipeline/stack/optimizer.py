"""Adam over stacked weights as TensorFlow's fused kernel.

Adam is elementwise, so one update of the K-stacked variables is exactly
K independent Keras Adam updates. TensorFlow's ``ResourceApplyAdam``
computes the update keras.optimizers.Adam writes out op by op in one
kernel per variable instead of ~15 ops: for 64 digit MLPs on 2 CPU cores
the update takes 0.5 ms instead of 1.5 ms, of a ~2-3 ms step. A test
checks the weights against keras `fit` step for step.
"""

from __future__ import annotations

from pipeline.core.tf_runtime import tf

__all__ = ["FusedAdam"]


class FusedAdam:
    """keras.optimizers.Adam (Keras defaults) over a list of variables, one fused kernel each.

    The update: alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1);
    v += (g^2 - v)(1 - b2); w -= alpha m / (sqrt(v) + eps).
    """

    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults

    def __init__(self, variables: list[tf.Variable], learning_rate: float) -> None:
        self.vars = variables
        self.learning_rate = learning_rate
        self.m = [tf.Variable(tf.zeros_like(w)) for w in variables]
        self.v = [tf.Variable(tf.zeros_like(w)) for w in variables]
        self.iterations = tf.Variable(0.0)

    def apply(self, grads: list[tf.Tensor]) -> None:
        """One Adam step of every variable with its gradient (same order)."""
        t = self.iterations.assign_add(1.0)
        b1p, b2p = tf.pow(self.beta_1, t), tf.pow(self.beta_2, t)
        for var, m, v, g in zip(self.vars, self.m, self.v, grads):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle,
                beta1_power=b1p, beta2_power=b2p, lr=self.learning_rate,
                beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon, grad=g,
            )  # fmt: skip
