"""A stack: K same-shaped Keras-style models trained as one batched TensorFlow computation.

Modules, one job each: `spec` (architecture, recipe, trained result,
weight layout and init), `conv` (K models' convolutions as one layer, on
any CPU kernels), `forward` (the batched forward pass and loss),
`optimizer` (fused Adam), `callbacks` (host-side hooks between epochs),
`clones` (a user's own architecture, trained one by one), `progress`,
`trainer` (the Trainer, input checks, the epoch loop `fit`,
`train_stack`), `inference` (logits and evaluation), `export` (Keras
models). Defenses that train differently (DP-SGD, adversarial
regularization) subclass `Trainer` and run through `fit`. Everything
another module uses is imported here.
"""

from pipeline.stack.callbacks import PerModelEarlyStopping, StackCallback
from pipeline.stack.clones import keras_spec, output_activation, released_logits
from pipeline.stack.conv import (
    grouped_conv,
    grouped_filter_gradient,
    grouped_gradients_supported,
)
from pipeline.stack.export import keras_logits, keras_model, to_keras
from pipeline.stack.forward import (
    Layer,
    forward,
    forward_layers,
    l2_term,
    per_example_loss,
)
from pipeline.stack.inference import evaluate, stack_logits
from pipeline.stack.optimizer import FusedAdam
from pipeline.stack.spec import (
    Architecture,
    Recipe,
    TrainedStack,
    glorot_limit,
    init_weights,
    is_kernel,
    require_batched,
    validate,
    weight_shapes,
)
from pipeline.stack.trainer import (
    Batch,
    LossFn,
    Trainer,
    checked_eval_data,
    checked_training_data,
    fit,
    train_stack,
)
