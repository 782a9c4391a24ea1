r"""TensorFlow's training step beside a PyTorch eager one of the same networks, as one JSON line.

    python -m train.bench_torch --stage=pixel --dataset=svhn_mnist [--steps=20] [--threads=2]
    python -m train.bench_torch --stage=source            # uci_mnist, LeNet

An optional benchmark for the docs: how fast this implementation trains next to the authors'
framework (their release is PyTorch) on the same machine, in the same process. PyTorch is not a
dependency of the package. Without it the script prints one line (`error: torch is not
installed ...`, with the pip command) to stderr and exits with code 2, the code every command
here uses for a problem the user must fix first: a caller collecting the JSON line must not take
an empty stdout for a successful run. Install it with `pip install torch==2.13.0` (the CPU build).

TensorFlow side: exactly `train.bench`'s step (its `prepare_step`: the real stage builders,
optimizers and the trainer's compiled multi-step function, fed one synthetic batch repeated).
PyTorch side: eager `nn.Module`s with the same architectures and parameter counts (checked: both
counts go to stderr and to `param_counts`, and a mismatch fails the run), the same losses, Adam
with the config's learning rates and betas (and Keras' epsilon 1e-7), on the same batch (the
same numpy arrays, NCHW), running the same updates:

  source   one supervised step of the classifier (softmax cross-entropy).
  pixel    one update of both generators (LSGAN + cycle [+ identity] [+ semantic through the
           frozen classifier in inference mode]), then one of D_T and one of D_S, each on real
           images and fakes from its own 50-image pool (CycleGAN's ImagePool).
  feature  the D_feat step on frozen-encoder / f_T outputs, then the f_T step with the gate
           open (as `train.bench --feature_gate=open`, its default), with the config's
           source-side task loss (`feature.task_weight`) when it sets one.

Timing: `--steps` steps in calls of `config.train.steps_per_call` after `--warmup` calls, as
`train.bench` counts them. TF's and PyTorch's calls alternate (`train.bench.time_calls`: call k
runs TF then PyTorch, call k+1 the reverse), so the machine's slow speed drift hits both alike;
`tf_over_torch` is the median over those pairs of TF's examples/s over PyTorch's (> 1: TF is
faster). PyTorch runs with `torch.set_num_threads(--threads)`; the default is the number of CPUs
this process may use, which is what TF's intra-op pool uses. Passing `--threads` also sets TF's
intra-op thread count to it (inter-op stays TF's default).

Measure on an idle machine. When other processes keep the cores busy, PyTorch's OpenMP threads
(which spin at every barrier) lose far more than TF's thread pool does, so the ratio would
measure the load, not the frameworks (docs/performance.md has the figures).

fp32 only (`--precision` other than fp32 is refused), one device (no `--cpu_replicas` / mirrored
strategies), step mode only. Flags are `train.bench`'s (hence `train.main`'s: `--dataset`,
`--config.x.y=...`, ...) plus `--threads`; `--peak_sizes` and `--peak_repeats` are ignored.
Everything but the JSON line goes to stderr.

What the PyTorch nets cannot match exactly (none changes the work per step): PyTorch convs pad
symmetrically where TF's 'same' pads (0, 1) at stride 2 (same output sizes; for PatchGAN's
optional `same` padding the TF pads are reproduced); activations are NCHW (the release's layout)
and flattened in that order; dropout masks are drawn with torch's generator; the learning rate
is constant (the pixel stage's linear decay is 1.0 over the steps a bench runs).
"""

import contextlib
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags

from train import bench
from train import cli
from train import main as train_main

FLAGS = flags.FLAGS
TORCH_STAGES = ('source', 'pixel', 'feature')
TORCH_VERSION_HINT = '2.13.0'
MISSING_TORCH = (f'error: torch is not installed; this optional benchmark needs it: '
                 f'pip install torch=={TORCH_VERSION_HINT} (a CPU build)')
# /proc/cpuinfo flags that decide the speed of fp32/bf16 kernels.
SPEED_FLAGS = tuple(sorted({'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16',
                            'amx_tile', 'amx_int8'} | set(getattr(bench, 'SPEED_FLAGS', ()))))

flags.DEFINE_integer('threads', None, 'PyTorch intra-op threads (torch.set_num_threads); also '
                     'TF\'s intra-op threads when given. Default: the CPUs this process may '
                     'use, TF\'s own default.')

_log = bench._log  # pylint: disable=protected-access


def default_threads():
  """The CPUs this process may run on (TF's default intra-op pool size), else os.cpu_count()."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_speed_flags():
  """The SPEED_FLAGS this CPU has (empty where /proc/cpuinfo cannot be read)."""
  from cycada_tf import kernels  # pylint: disable=g-import-not-at-top
  return sorted(kernels.cpu_flags() & set(SPEED_FLAGS))


# ---------------------------------------------------------------------------------------------
# The PyTorch networks. Built inside a function so that this module imports without torch.
# ---------------------------------------------------------------------------------------------


def torch_networks():
  """The PyTorch module classes (a namespace), defined once torch is importable."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

  class LeNet(nn.Module):
    """conv 20@5, pool, ReLU, conv 50@5, Dropout2d .5, pool, ReLU, fc 500, ReLU, .5, fc."""

    def __init__(self, in_channels, num_classes):
      super().__init__()
      self.conv1 = nn.Conv2d(in_channels, 20, 5)
      self.conv2 = nn.Conv2d(20, 50, 5)
      self.conv2_dropout = nn.Dropout2d(0.5)
      self.fc = nn.Linear(800, 500)
      self.fc_dropout = nn.Dropout(0.5)
      self.logits = nn.Linear(500, num_classes)

    def forward(self, x):
      x = F.relu(F.max_pool2d(self.conv1(x), 2))
      x = F.relu(F.max_pool2d(self.conv2_dropout(self.conv2(x)), 2))
      features = self.fc(torch.flatten(x, 1))
      return self.logits(self.fc_dropout(F.relu(features))), features

  class DTN(nn.Module):
    """3 × [conv5 s2 (no bias) → BN → Dropout2d → ReLU] → fc 512 (no bias) → BN → ReLU → .5 → fc."""

    BLOCKS = ((64, 0.1), (128, 0.3), (256, 0.5))

    def __init__(self, in_channels, num_classes):
      super().__init__()
      layers, channels = [], in_channels
      for filters, rate in self.BLOCKS:
        layers += [nn.Conv2d(channels, filters, 5, stride=2, padding=2, bias=False),
                   nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1), nn.Dropout2d(rate),
                   nn.ReLU()]
        channels = filters
      self.conv_params = nn.Sequential(*layers)
      self.fc = nn.Linear(4 * 4 * 256, 512, bias=False)
      self.fc_norm = nn.BatchNorm1d(512, eps=1e-5, momentum=0.1)
      self.fc_dropout = nn.Dropout(0.5)
      self.logits = nn.Linear(512, num_classes)

    def forward(self, x):
      features = self.fc_norm(self.fc(torch.flatten(self.conv_params(x), 1)))
      return self.logits(self.fc_dropout(F.relu(features))), features

  def instance_norm(channels, affine):
    return nn.InstanceNorm2d(channels, eps=1e-5, affine=affine)

  def conv_norm_relu(cin, cout, kernel, stride, affine, transpose=False):
    if transpose:  # TF 'same' at stride 2: output exactly twice the input.
      conv = nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                output_padding=stride - 1, bias=False)
    else:
      conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, instance_norm(cout, affine), nn.ReLU()]

  class ResidualBlock(nn.Module):
    """x + [reflect 1 → conv3 → IN → ReLU → (dropout) → reflect 1 → conv3 → IN](x)."""

    def __init__(self, channels, dropout, affine):
      super().__init__()
      layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
                instance_norm(channels, affine), nn.ReLU()]
      if dropout > 0:
        layers.append(nn.Dropout(dropout))
      layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
                 instance_norm(channels, affine)]
      self.body = nn.Sequential(*layers)

    def forward(self, x):
      return x + self.body(x)

  class DigitGenerator(nn.Module):
    """conv3 f → conv3 s2 2f → conv3 s2 4f → 2 blocks → deconv 2f → deconv f → conv3 → tanh."""

    def __init__(self, channels, filters, dropout, affine):
      super().__init__()
      f = filters
      self.net = nn.Sequential(
          *conv_norm_relu(channels, f, 3, 1, affine),
          *conv_norm_relu(f, 2 * f, 3, 2, affine),
          *conv_norm_relu(2 * f, 4 * f, 3, 2, affine),
          *[ResidualBlock(4 * f, dropout, affine) for _ in range(2)],
          *conv_norm_relu(4 * f, 2 * f, 3, 2, affine, transpose=True),
          *conv_norm_relu(2 * f, f, 3, 2, affine, transpose=True),
          nn.Conv2d(f, channels, 3, padding=1))

    def forward(self, x):
      return torch.tanh(self.net(x))

  class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: reflect 3 → conv7 → 2 downs → blocks → 2 ups → conv7 → tanh."""

    def __init__(self, channels, filters, dropout, affine, num_blocks=9):
      super().__init__()
      f = filters
      self.net = nn.Sequential(
          nn.ReflectionPad2d(3), nn.Conv2d(channels, f, 7, bias=False), instance_norm(f, affine),
          nn.ReLU(),
          *conv_norm_relu(f, 2 * f, 3, 2, affine),
          *conv_norm_relu(2 * f, 4 * f, 3, 2, affine),
          *[ResidualBlock(4 * f, dropout, affine) for _ in range(num_blocks)],
          *conv_norm_relu(4 * f, 2 * f, 3, 2, affine, transpose=True),
          *conv_norm_relu(2 * f, f, 3, 2, affine, transpose=True),
          nn.ReflectionPad2d(3), nn.Conv2d(f, channels, 7))

    def forward(self, x):
      return torch.tanh(self.net(x))

  class TFSamePad(nn.Module):
    """Zero padding as TF's 'same' (extra pixel at the end), for an even kernel or stride > 1."""

    def __init__(self, kernel, stride):
      super().__init__()
      self.kernel, self.stride = kernel, stride

    def forward(self, x):
      pads = []
      for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dim first
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
        pads += [total // 2, total - total // 2]
      return F.pad(x, pads)

  def disc_conv(cin, cout, kernel, stride, padding, bias):
    if padding == 'pad1':
      return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=1, bias=bias)]
    if kernel % 2:  # 'same' with an odd kernel: symmetric padding gives TF's output size
      return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)]
    return [TFSamePad(kernel, stride), nn.Conv2d(cin, cout, kernel, stride=stride, bias=bias)]

  class ScoreMapDiscriminator(nn.Module):
    """Conv, [IN], LeakyReLU 0.2 stages from (filters, stride, normalise); a 1-channel conv."""

    def __init__(self, channels, specs, kernel, padding, affine):
      super().__init__()
      layers, cin = [], channels
      for filters, stride, normalise in specs:
        layers += disc_conv(cin, filters, kernel, stride, padding, bias=not normalise)
        if normalise:
          layers.append(instance_norm(filters, affine))
        layers.append(nn.LeakyReLU(0.2))
        cin = filters
      layers += disc_conv(cin, 1, kernel, 1, padding, bias=True)
      self.net = nn.Sequential(*layers)

    def forward(self, x):
      return self.net(x)

  def patchgan(channels, filters, padding, affine):
    specs = ((filters, 2, False), (2 * filters, 2, True), (4 * filters, 2, True),
             (8 * filters, 1, True))
    return ScoreMapDiscriminator(channels, specs, 4, padding, affine)

  def conv6(channels, filters, padding, affine):
    del padding  # the paper's 6-conv net always pads 'same' (as in cycada_tf)
    specs = ((filters, 1, False), (filters, 2, True), (2 * filters, 1, True),
             (2 * filters, 2, True), (4 * filters, 1, True))
    return ScoreMapDiscriminator(channels, specs, 3, 'same', affine)

  class FeatureDiscriminator(nn.Module):
    """Linear 500 → ReLU → Linear 500 → ReLU → Linear 2 (optional dropout after each ReLU)."""

    def __init__(self, width, hidden=500, num_outputs=2, dropout=0.0):
      super().__init__()
      layers = []
      for _ in range(2):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
          layers.append(nn.Dropout(dropout))
        width = hidden
      layers.append(nn.Linear(width, num_outputs))
      self.net = nn.Sequential(*layers)

    def forward(self, x):
      return self.net(x)

  def init_gan_weights(module, init):
    """CycleGAN's `init_weights(net, 'normal', 0.02)` (or Glorot), biases 0."""
    for m in module.modules():
      if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        if init == 'normal':
          nn.init.normal_(m.weight, 0.0, 0.02)
        else:
          nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
          nn.init.zeros_(m.bias)
    return module

  return dict(LeNet=LeNet, DTN=DTN, DigitGenerator=DigitGenerator,
              ResnetGenerator=ResnetGenerator, patchgan=patchgan, conv6=conv6,
              FeatureDiscriminator=FeatureDiscriminator, init_gan_weights=init_gan_weights)


class TorchImagePool:
  """CycleGAN's ImagePool (as `cycada_tf.image_pool`): store while filling, then swap with p 1/2."""

  def __init__(self, pool_size, image_shape_chw, generator):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.capacity = int(pool_size or 0)
    self.images = torch.zeros((max(self.capacity, 1),) + tuple(image_shape_chw))
    self.num_stored = 0
    self.generator = generator

  def query(self, images):
    torch = self.torch
    if self.capacity == 0:
      return images
    batch = images.shape[0]
    coins = torch.rand(batch, generator=self.generator).tolist()
    slots = torch.randint(0, self.capacity, (batch,), generator=self.generator).tolist()
    returned = []
    for i in range(batch):
      image = images[i]
      if self.num_stored < self.capacity:
        self.images[self.num_stored] = image
        self.num_stored += 1
        returned.append(image)
      elif coins[i] > 0.5:
        returned.append(self.images[slots[i]].clone())
        self.images[slots[i]] = image
      else:
        returned.append(image)
    return torch.stack(returned)


def _adam(params, section, learning_rate=None):
  import torch  # pylint: disable=g-import-not-at-top
  # Keras' Adam epsilon (1e-7), so both frameworks take the same update.
  return torch.optim.Adam(params, lr=float(section.learning_rate if learning_rate is None
                                           else learning_rate),
                          betas=(float(section.get('beta_1', 0.9)),
                                 float(section.get('beta_2', 0.999))), eps=1e-7)


def _requires_grad(modules, flag):
  for module in modules:
    for p in module.parameters():
      p.requires_grad_(flag)


def build_torch_step(config, stage_name, image_shape, example, seed):
  """The PyTorch eager step: (`call(n)` running n steps and returning metric sums, networks)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  nets = torch_networks()
  model = config.model
  channels = int(image_shape[-1])
  to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))

  def classifier():
    cls = {'lenet': nets['LeNet'], 'dtn': nets['DTN']}[model.classifier]
    return cls(channels, int(model.num_classes))

  def per_example_mean(t):
    return t.flatten(1).mean(1)

  if stage_name == 'source':
    images, labels = example
    x, y = to_nchw(images), torch.from_numpy(labels)
    net = classifier()
    optimizer = _adam(net.parameters(), config.source)
    net.train()

    def step():
      logits, _ = net(x)
      loss = F.cross_entropy(logits, y)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      accuracy = (logits.argmax(-1) == y).float().mean()
      return {'loss': loss.detach(), 'accuracy': accuracy}

    return step, {'classifier': net}

  if stage_name == 'pixel':
    section = config.pixel
    (xs, ys), (xt, _) = example
    xs, ys, xt = to_nchw(xs), torch.from_numpy(ys), to_nchw(xt)
    gen_cls = {'digit': nets['DigitGenerator'], 'resnet9': nets['ResnetGenerator']}[
        model.generator]
    new_g = lambda: nets['init_gan_weights'](
        gen_cls(channels, int(model.generator_filters), float(model.generator_dropout),
                bool(model.instance_norm_affine)), model.gan_init)
    new_d = lambda: nets['init_gan_weights'](
        nets[model.image_discriminator](channels, int(model.discriminator_filters),
                                        model.discriminator_padding,
                                        bool(model.instance_norm_affine)), model.gan_init)
    g_st, g_ts, d_t, d_s = new_g(), new_g(), new_d(), new_d()
    f_s = classifier()
    f_s.eval()
    _requires_grad([f_s], False)
    optimizers = {name: _adam(net.parameters(), section)
                  for name, net in (('g_st', g_st), ('g_ts', g_ts), ('d_t', d_t), ('d_s', d_s))}
    chw = tuple(xs.shape[1:])
    pools = {name: TorchImagePool(section.pool_size, chw,
                                  torch.Generator().manual_seed(seed + i))
             for i, name in enumerate(('d_t', 'd_s'))}
    weights = {'gan_st': section.gan_weight_st, 'gan_ts': section.gan_weight_ts,
               'cycle': section.cycle_weight, 'identity': section.identity_weight,
               'semantic': section.semantic_weight}
    for net in (g_st, g_ts, d_t, d_s):
      net.train()

    def step():
      # Generators: D's weights need no gradient (TF's tape asks only for G's variables).
      _requires_grad([d_t, d_s], False)
      fake_t, fake_s = g_st(xs), g_ts(xt)
      terms = {
          'gan_st': per_example_mean((d_t(fake_t) - 1.0) ** 2),
          'gan_ts': per_example_mean((d_s(fake_s) - 1.0) ** 2),
          'cycle': (per_example_mean((xs - g_ts(fake_t)).abs()) +
                    per_example_mean((xt - g_st(fake_s)).abs())),
      }
      if section.identity_weight:
        terms['identity'] = (per_example_mean((xt - g_st(xt)).abs()) +
                             per_example_mean((xs - g_ts(xs)).abs()))
      if section.semantic_weight:
        with torch.no_grad():
          source_labels = ys if section.semantic_labels == 'true' else f_s(xs)[0].argmax(-1)
          target_labels = f_s(xt)[0].argmax(-1)
        terms['semantic'] = (
            F.cross_entropy(f_s(fake_t)[0], source_labels, reduction='none') +
            F.cross_entropy(f_s(fake_s)[0], target_labels, reduction='none'))
      generator_loss = sum(weights[k] * v for k, v in terms.items()).mean()
      optimizers['g_st'].zero_grad(set_to_none=True)
      optimizers['g_ts'].zero_grad(set_to_none=True)
      generator_loss.backward()
      optimizers['g_st'].step()
      optimizers['g_ts'].step()
      _requires_grad([d_t, d_s], True)
      outputs = {f'loss/{k}': v.detach().mean() for k, v in terms.items()}
      outputs['loss/generator_total'] = generator_loss.detach()
      for name, net, real, fake in (('d_t', d_t, xt, fake_t), ('d_s', d_s, xs, fake_s)):
        fake = pools[name].query(fake.detach())
        d_loss = (0.5 * (per_example_mean((net(real) - 1.0) ** 2) +
                         per_example_mean(net(fake) ** 2))).mean()
        optimizers[name].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers[name].step()
        outputs[f'loss/{name}'] = d_loss.detach()
      return outputs

    return step, {'g_st': g_st, 'g_ts': g_ts, 'd_t': d_t, 'd_s': d_s, 'classifier': f_s}

  # feature
  section = config.feature
  (xs, ys), (xt, _) = example
  xs, xt, ys = to_nchw(xs), to_nchw(xt), torch.from_numpy(ys).long()
  from cycada_tf.stages import feature as feature_stage  # pylint: disable=g-import-not-at-top
  task_weight = feature_stage.task_weight_of(section)  # Eq. 6's source task loss, validated as TF's
  batch = xs.shape[0]
  use_logits = model.feature_discriminator_input == 'logits'
  f_t, source_encoder = classifier(), classifier()
  width = int(model.num_classes) if use_logits else f_t.fc.out_features
  discriminator = nets['FeatureDiscriminator'](width)
  _requires_grad([source_encoder], False)  # behind stop_gradient in TF: never optimised
  d_optimizer = _adam(discriminator.parameters(), section, section.discriminator_learning_rate)
  f_optimizer = _adam(f_t.parameters(), section)
  training = section.encoder_mode == 'train'
  for net in (f_t, source_encoder):
    net.train(training)
  discriminator.train()
  source_label = torch.ones(batch, dtype=torch.int64)
  target_label = torch.zeros(batch, dtype=torch.int64)

  def represent(net, images):
    logits, features = net(images)
    return logits if use_logits else features

  def step():
    with torch.no_grad():
      source_repr, target_repr = represent(source_encoder, xs), represent(f_t, xt)
    d_source, d_target = discriminator(source_repr), discriminator(target_repr)
    d_loss = 0.5 * (F.cross_entropy(d_source, source_label) +
                    F.cross_entropy(d_target, target_label))
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()
    accuracy = ((d_source.argmax(-1) == 1).sum() + (d_target.argmax(-1) == 0).sum()) / (2 * batch)
    # The gate is open (train.bench's --feature_gate=open): every step also updates f_T.
    _requires_grad([discriminator], False)
    target_loss = F.cross_entropy(discriminator(represent(f_t, xt)), source_label)
    f_loss = target_loss
    if task_weight:
      f_loss = f_loss + task_weight * F.cross_entropy(f_t(xs)[0], ys)
    f_optimizer.zero_grad(set_to_none=True)
    f_loss.backward()
    f_optimizer.step()
    _requires_grad([discriminator], True)
    return {'loss/discriminator': d_loss.detach(), 'discriminator_accuracy': accuracy.float(),
            'loss/target_adversarial': target_loss.detach()}

  return step, {'classifier': f_t, 'discriminator': discriminator,
                'source_encoder': source_encoder}


class TorchPreparedStep:
  """What `train.bench.time_calls` needs of a step: `call(n)` runs n steps, returns metric sums."""

  def __init__(self, step):
    self.step = step

  def call(self, num_steps):
    sums = {}
    for _ in range(num_steps):
      for k, v in self.step().items():
        sums[k] = sums.get(k, 0.0) + v
    return {k: float(v) for k, v in sums.items()}  # waits for the steps, as TF's fetch does


# ---------------------------------------------------------------------------------------------
# Parameter counts.
# ---------------------------------------------------------------------------------------------


def tf_param_counts(ctx, stage_name, batch_size):
  """Trainable parameters per network of a fresh build of a stage (as `prepare_step` builds)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import common  # pylint: disable=g-import-not-at-top
  stage = bench.build_stage(ctx, stage_name, 100 * batch_size)
  networks = dict(stage.models)
  if stage_name == 'pixel':  # the frozen f_S is the step's but not the stage's to save
    with ctx.strategy.scope():
      networks['classifier'] = common.new_classifier(ctx)
  return {name: int(sum(np.prod(v.shape) for v in net.trainable_weights))
          for name, net in networks.items()}


def torch_param_counts(networks):
  return {name: int(sum(p.numel() for p in net.parameters())) for name, net in networks.items()}


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def _optional_kernels(config, strategy):
  """(TF kernel path or None, context manager) from `cycada_tf.kernels` where it exists."""
  try:
    from cycada_tf import kernels  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, contextlib.nullcontext()
  choice = FLAGS['kernels'].value if 'kernels' in FLAGS and FLAGS['kernels'].value else None
  if choice:
    config.train.kernels = choice
  path = kernels.resolve(config.train.get('kernels', 'auto'), strategy)
  return path, kernels.scope(path, strategy, config.train.get('filter_gradient', 'auto'))


def _check_flags():
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import check_choice  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import check_positive  # pylint: disable=g-import-not-at-top
  check_choice('--stage', FLAGS.stage, TORCH_STAGES, problem=' has no PyTorch version here')
  check_positive('--steps', FLAGS.steps)
  if FLAGS.threads is not None:
    check_positive('--threads', FLAGS.threads)
  if FLAGS.mode != 'step':
    raise UserError('train.bench_torch times the training step only (--mode=step).')
  if FLAGS.precision not in (None, 'fp32'):
    raise UserError(f'--precision={FLAGS.precision}: train.bench_torch compares fp32 only.')
  if 'kernels' in FLAGS and FLAGS['kernels'].value == 'both':
    raise UserError('--kernels=both is train.bench\'s; pick one TF kernel path here.')
  if FLAGS.profile_dir:
    raise UserError('--profile_dir is train.bench\'s; profile the TF step there.')
  if FLAGS.feature_gate != 'open':
    raise UserError('train.bench_torch times the feature step with the gate open '
                    '(--feature_gate=open): with different random networks the two '
                    'frameworks\' gates would not open on the same steps.')


def run():
  """Parses the flags, times TF and PyTorch alternately and returns the JSON-ready result."""
  import torch  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import precision  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top

  _check_flags()
  threads = FLAGS.threads or default_threads()
  if FLAGS.threads is not None:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  torch.set_num_threads(threads)
  with contextlib.redirect_stdout(sys.stderr):  # train.main's start-up line
    ctx = train_main.build_context(training_run=False, check_data=False)
  if ctx.strategy.num_replicas_in_sync != 1:
    raise UserError(f'{ctx.strategy.num_replicas_in_sync} replicas: the PyTorch side runs on '
                    f'one device; drop --cpu_replicas / use --strategy=one_device.')
  config = ctx.config
  config.train.precision = 'fp32'
  stage_name = FLAGS.stage
  if stage_name == 'pixel' and config.pixel.get('semantic_classifier', 'source') == 'online':
    # The PyTorch peer has the frozen f_S only: both frameworks time that step.
    config.pixel.semantic_classifier = 'source'
    _log('[bench_torch] pixel: the semantic term through the frozen f_S in both frameworks '
         '(the PyTorch peer has no online classifier)')
  if stage_name == 'feature':
    config.feature.gate_threshold = -1.0  # gate open, as train.bench's default
  train_config = trainer.TrainConfig.from_config(config.train)
  # pylint: disable-next=protected-access
  counts = bench._windows(FLAGS.steps, train_config.steps_per_call)
  batch_size = int(config[stage_name].batch_size)
  kernel_path, kernel_scope = _optional_kernels(config, ctx.strategy)

  with contextlib.redirect_stdout(sys.stderr), precision.policy_scope('fp32'), kernel_scope:
    tf_counts = tf_param_counts(ctx, stage_name, batch_size)
    tf_step = bench.prepare_step(ctx, stage_name, train_config, counts, FLAGS.warmup,
                                 FLAGS.examples_per_epoch)
    example = bench.synthetic_batch(ctx.image_shape, batch_size, config.model.num_classes,
                                    paired=stage_name in ('pixel', 'feature'), seed=ctx.seed)
    step, networks = build_torch_step(config, stage_name, ctx.image_shape, example, ctx.seed)
    torch_counts = torch_param_counts(networks)
    param_counts = {name: {'tf': tf_counts.get(name), 'torch': torch_counts.get(name)}
                    for name in sorted(set(tf_counts) | set(torch_counts))}
    for name, pair in param_counts.items():
      _log(f'[bench_torch] parameters of {name}: TF {pair["tf"]:,}  PyTorch {pair["torch"]:,}'
           if None not in pair.values() else f'[bench_torch] parameters of {name}: {pair}')
    if tf_counts != torch_counts:
      raise AssertionError(f'the PyTorch networks do not match the TF ones: {param_counts}')
    torch_step = TorchPreparedStep(step)
    start = time.perf_counter()
    for _ in range(max(FLAGS.warmup, 1)):
      torch_step.call(counts[0])
    _log(f'[bench_torch] PyTorch warm-up ({max(FLAGS.warmup, 1)} calls) took '
         f'{time.perf_counter() - start:.1f} s')
    (tf_times, torch_times), (tf_metrics, torch_metrics) = bench.time_calls(
        [tf_step, torch_step], counts)
  tf_fields = bench.step_result(tf_step, counts, tf_times, tf_metrics)
  tf_rates = [n * batch_size / t for n, t in zip(counts, tf_times)]
  torch_rates = [n * batch_size / t for n, t in zip(counts, torch_times)]
  ratios = [a / b for a, b in zip(tf_rates, torch_rates)]
  return {
      'stage': stage_name,
      'pair': ctx.pair.name,
      'image_shape': list(ctx.image_shape),
      'precision': 'fp32',
      'global_batch_size': batch_size,
      'steps_per_call': counts[0],
      'timed_steps': sum(counts),
      'threads': threads,
      'tf_intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads() or 'default',
      'jit_compile': bool(train_config.jit_compile),
      'tf_examples_per_second': statistics.median(tf_rates),
      'tf_examples_per_second_windows': [round(r, 2) for r in tf_rates],
      'torch_examples_per_second': statistics.median(torch_rates),
      'torch_examples_per_second_windows': [round(r, 2) for r in torch_rates],
      'tf_over_torch': statistics.median(ratios),
      'tf_over_torch_windows': [round(r, 3) for r in ratios],
      'tf_flops_per_step': tf_fields.get('flops_per_step'),
      'tf_metrics_finite': tf_fields.get('metrics_finite'),
      'torch_metrics_finite': all(math.isfinite(v) for v in torch_metrics.values()),
      'param_counts': param_counts,
      'param_counts_match': tf_counts == torch_counts,
      'tf_kernels': tf_fields.get('kernels', kernel_path),
      'cpu_flags': cpu_speed_flags(),
      'tensorflow': tf.__version__,
      'torch': torch.__version__,
  }


def main(argv):
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print(MISSING_TORCH, file=sys.stderr, flush=True)
    sys.exit(2)
  result = cli.run_command(argv, run, example_flag='--stage=pixel')
  print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
  flags.FLAGS.set_default('stage', 'source')
  cli.run_main(main)
