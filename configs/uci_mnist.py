"""UCI optical digits → MNIST (offline default, docs/method.md §6): LeNet, 28×28×1.

How each setting that differs from `base` was chosen (never from target-test accuracy):
- Generators of the release's width (64 filters, `base`'s). Until the section on the release's
  generator width in `docs/results/uci_mnist.md` they had 32 for the compute budget, a saving
  that measured 2.05× in step time (2.8× in FLOPs), not the 4× once written.
- 10 pixel epochs: the compute budget of a 2-core CPU (the pixel stage is most of the run's
  time). 20 epochs (with the cycle weight 10 of then), measured over 4 seeds after being
  registered, took twice the steps (1,534–1,621 s of training against 853–1,341 s) and left
  pixel+feat where it was (`docs/results/uci_mnist.md`); so did the paper's 50 (last 10
  decayed), registered and measured the same way at about 4× the pixel stage's time.
- Feature stage: the release's 200 epochs; each epoch is the smaller domain (UCI, 11 steps of
  128). The stop rule waits for 6 idle epochs (66 steps) instead of 1: the release's shortest
  feature epoch (MNIST→USPS, 57 steps) gives D_feat that long to pass the gate. Learning rate
  1e-4: at the release's 1e-5 D_feat never passes the gate. Both were chosen from training
  signals only (f_T updates, stop reason), see `docs/deviations.md`.
- Feature stage's task loss (`task_weight=1`): each f_T update also minimises L_task on the
  labelled source side, as the paper's Eq. 6 has it (unit weights). The release's ADDA step has
  only the adversarial loss, at a learning rate 10× lower; at 1e-4 over 2,200 steps f_T lost
  about 11 points on the labelled source test split (89.4 → 78.6 %, seed 0 of the 20-epoch pixel
  run in `docs/results/uci_mnist.md`): a signal without target labels that the adaptation was
  drifting from the task. Fixed before its target accuracy
  was measured, and kept whatever that gave (`docs/deviations.md`).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.pixel.update(epochs=10, decay_epochs=5)
  config.feature.update(epochs=200, learning_rate=1e-4, discriminator_learning_rate=1e-4,
                        stop_patience_epochs=6, task_weight=1.0)
  return config
