"""FLOPs of a traced TensorFlow graph, counted from its convolution and matmul ops.

`train.bench` reports achieved GFLOP/s, so it needs the work in one training step. TF's own
`tf.compat.v1.profiler` counts only ops with registered statistics (Conv2D and MatMul, but not the
backprop convolutions that are two thirds of a training step) and does not look inside nested
functions (`tf.cond` branches, XLA-compiled steps). This module walks the graph and every
function it calls and counts 2 FLOPs per multiply-accumulate of Conv2D, Conv2DBackpropInput
(also transposed convolutions), Conv2DBackpropFilter, MatMul and BatchMatMul from their static
shapes, skipping results nothing consumes (TF prunes those before running). Element-wise ops
(norms, activations, optimizer updates) are not counted: they are a few percent of a convnet
step, and leaving them out makes the figure a lower bound on work done.
"""

import numpy as np

SOURCE = ('graph: 2 x multiply-accumulates of Conv2D, Conv2DBackpropInput/Filter, MatMul and '
          'BatchMatMul in the traced step (nested functions included, element-wise ops not)')

_BRANCHING = ('If', 'StatelessIf')
_LOOPS = ('While', 'StatelessWhile')
_CALLS = ('PartitionedCall', 'StatefulPartitionedCall')


class UnknownShapeError(ValueError):
  """A counted op had a dimension unknown at trace time, so its FLOPs cannot be known."""


def _size(shape):
  dims = shape.as_list() if shape.rank is not None else None
  if dims is None or any(d is None for d in dims):
    raise UnknownShapeError(f'unknown shape {shape}')
  return int(np.prod(dims, dtype=np.int64))


def op_flops(op):
  """FLOPs of one op (0 for op types that are not counted)."""
  kind = op.type
  if kind == 'Conv2D':
    # inputs (input, filter [kh, kw, cin, cout]); each output element is kh·kw·cin MACs.
    return 2 * _size(op.outputs[0].shape) * _size(op.inputs[1].shape[:3])
  if kind == 'Conv2DBackpropInput':
    # inputs (input_sizes, filter, out_backprop): the forward conv's MACs again.
    return 2 * _size(op.inputs[2].shape) * _size(op.inputs[1].shape[:3])
  if kind == 'Conv2DBackpropFilter':
    # inputs (input, filter_sizes, out_backprop); the output is the filter gradient.
    return 2 * _size(op.inputs[2].shape) * _size(op.outputs[0].shape[:3])
  if kind == 'MatMul':
    a = op.inputs[0].shape
    inner = a[0] if op.get_attr('transpose_a') else a[1]
    if inner is None:
      raise UnknownShapeError(f'unknown shape {a}')
    return 2 * _size(op.outputs[0].shape) * int(inner)
  if kind in ('BatchMatMul', 'BatchMatMulV2', 'BatchMatMulV3'):
    a = op.inputs[0].shape
    inner = a[-2] if op.get_attr('adj_x') else a[-1]
    if inner is None:
      raise UnknownShapeError(f'unknown shape {a}')
    return 2 * _size(op.outputs[0].shape) * int(inner)
  return 0


def _function_graph(graph, op, attr):
  name = op.node_def.attr[attr].func.name
  return graph._get_function(name).graph  # pylint: disable=protected-access


def graph_flops(graph, count_loops=False, _inside_loop=False):
  """FLOPs of one execution of `graph` (a FuncGraph, e.g. `concrete_function.graph`).

  A conditional counts its costlier branch (the feature stage's gated update counted as taken).
  Loop bodies are skipped unless `count_loops`, and then counted once: the trainer's multi-step
  function runs its step only inside its `tf.range` loop, so counting that body once gives
  exactly one training step (`train.bench`). A loop inside that body runs an unknown number of
  times per step, so it may hold no counted op (the image pool's loop holds none).

  Raises:
    UnknownShapeError: if a counted op's shape is not fully known, or a loop inside a counted
      loop holds counted ops.
  """
  total = 0
  for op in graph.get_operations():
    if op.type in _BRANCHING:
      total += max(graph_flops(_function_graph(graph, op, name), count_loops, _inside_loop)
                   for name in ('then_branch', 'else_branch'))
    elif op.type in _LOOPS:
      if count_loops:
        body = graph_flops(_function_graph(graph, op, 'body'), count_loops, True)
        if _inside_loop and body:
          raise UnknownShapeError(
              f'loop {op.name} inside the counted loop holds {body} FLOPs per iteration and its '
              'trip count is unknown at trace time')
        total += body
    elif op.type in _CALLS:
      total += graph_flops(_function_graph(graph, op, 'f'), count_loops, _inside_loop)
    elif any(output.consumers() for output in op.outputs):
      # An unconsumed result (e.g. the gradient of the input images) is pruned before it runs.
      total += op_flops(op)
  return total
