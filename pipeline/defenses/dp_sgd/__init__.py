"""DP-SGD (Abadi et al. 2016) for K models at once, native to TensorFlow 2 / Keras 3.

Each of the job's K models trains on its own points ``x[keep[k]]`` (n each)
for ``epochs * round(n / batch_size)`` steps. A step of model k:

1. Poisson sampling: every one of its n points joins the batch on its own
   with probability q = batch_size / n, so the batch size varies.
2. Per-example gradients of the cross-entropy, each clipped to L2 norm
   <= C over all layers together, then summed.
3. Gaussian noise N(0, (sigma C)^2) on every coordinate of the sum, and
   division by the expected batch size q n.
4. An Adam step (the recipe's optimizer, the stack's fused kernel); any
   update computed from the noisy gradient is post-processing.

Epsilon is accounted for the Poisson-subsampled Gaussian mechanism by
`pipeline.measures.accounting` (RDP or PLD); sigma is calibrated from
`target_epsilon` when no `noise_multiplier` is given.

Modules: `defense` (the settings and the `Defense` the registry names),
`plan` (the privacy plan of a job and its epsilon), `mechanism` (Poisson sampling, clipping, Gaussian noise, the secure draws),
`per_example` (per-example gradient norms and the clipped sum without a
loop over examples), `trainer` (the stack's `Trainer` with DP-SGD epochs,
`train`, and a canary run's training).

The recipe's dropout, L2 and label smoothing are honoured: dropout masks
are per example, so per-example gradients stay exact; the L2 penalty's
gradient depends on the weights only and is added after the noise. The
training "loss"/"accuracy" curves are non-private diagnostics for the
logs; only the weights carry the (epsilon, delta) guarantee.
"""

from pipeline.defenses.dp_sgd.defense import DpSgdDefense
from pipeline.defenses.dp_sgd.mechanism import (
    SecureDraws,
    add_noise,
    add_normals,
    clip_factors,
    clip_per_example,
    poisson_batch,
    secure_normals,
    secure_uniforms,
    select_batch,
    stateless_normals,
)
from pipeline.defenses.dp_sgd.per_example import (
    clipped_sum,
    ghost_is_cheaper,
    per_example_gradients,
    per_example_sq_norms,
)
from pipeline.defenses.dp_sgd.plan import DpPlan, plan
from pipeline.defenses.dp_sgd.trainer import DpTrainer, train, train_with_canaries
