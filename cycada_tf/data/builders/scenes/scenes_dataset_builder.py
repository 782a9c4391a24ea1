"""Procedural street scenes: an offline, deterministic segmentation pair (method.md §4 in small).

Two TFDS datasets share one scene generator: `scenes_synthetic` (the source style: flat colours,
sharp edges, no noise, like a game engine's render) and `scenes_real` (the target style: the same
kind of scenes with textures, per-image lighting and white balance, cast shadows, blur, sensor
noise and vignetting). They stand in for GTA5 → Cityscapes so that the segmentation half of CyCADA
can be tested and demonstrated without any download.

A scene is a street seen from a car: sky on top, buildings (with perspective, taller towards the
image sides) or a tree line along both sides, a road in the lower middle running to a vanishing
point, lane markings, sidewalks with curbs, and objects standing on the ground plane at a depth
that fixes their size: cars and vans on the road, persons on the sidewalks (some crossing), poles
(some carrying street lamps or signs), trees and bushes. Horizon, vanishing point, road width and
curve, sidewalk widths, building heights, counts, positions, sizes and colours of every object vary
per image.

Labels follow `CLASS_NAMES` (8 classes, a subset of Cityscapes' 19 with the same meaning; tree
trunks count as vegetation, lane markings and crosswalks as road, curbs as sidewalk). Traffic-sign
plates and street clutter (bins, boxes) are void (`IGNORE_LABEL` = 255), well under 1 % of pixels.

Everything is drawn from `np.random.default_rng([domain seed, split, index])`, so each example is
a pure function of its key and the bytes do not depend on the machine, the time or global state.
`render_scene(rng, style)` first draws the layout and only then the style's colours, so the same
seed gives the same label map in both styles (paired data for tests and figures), while the two
builders use different domain seeds and so contain different scenes.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
import tensorflow_datasets as tfds

from cycada_tf.data.builders import base

CLASS_NAMES = ('road', 'sidewalk', 'building', 'sky', 'vegetation', 'car', 'person', 'pole')
NUM_CLASSES = len(CLASS_NAMES)
ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON, POLE = range(NUM_CLASSES)
IGNORE_LABEL = 255

IMAGE_SHAPE = (64, 128, 3)
LABEL_SHAPE = IMAGE_SHAPE[:2] + (1,)
NUM_TRAIN = 1000
NUM_TEST = 200

SYNTHETIC, REAL = 'synthetic', 'real'
STYLES = (SYNTHETIC, REAL)

# Display colours of the classes (Cityscapes' colours for the same classes); void is black.
PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (70, 130, 180), (107, 142, 35),
                    (0, 0, 142), (220, 20, 60), (153, 153, 153)], np.uint8)

_H, _W = IMAGE_SHAPE[:2]
_SPLIT_IDS = {'train': 0, 'test': 1}

# Materials: what a part is made of, which picks its colour and (in the real style) its texture.
(_ASPHALT, _MARKING, _PAVEMENT, _CURB, _FACADE, _SKY, _FOLIAGE, _TRUNK, _PAINT, _GLASS, _TIRE,
 _LIGHT, _SKIN, _CLOTH, _METAL, _SIGN, _CLUTTER) = range(17)

# Per style and material: base colours (one is picked per part) and the per-part jitter (std).
_COLOURS = {
    SYNTHETIC: {
        _ASPHALT: ([(104, 104, 110)], 5),
        _MARKING: ([(236, 236, 226)], 3),
        _PAVEMENT: ([(182, 166, 150), (170, 170, 160)], 7),
        _CURB: ([(205, 205, 198)], 4),
        _FACADE: ([(172, 126, 94), (204, 182, 142), (150, 146, 156), (188, 152, 120)], 9),
        _SKY: ([(112, 172, 236)], 6),
        _FOLIAGE: ([(62, 152, 56), (86, 164, 52)], 9),
        _TRUNK: ([(112, 80, 50)], 6),
        _PAINT: ([(200, 32, 32), (32, 62, 182), (232, 232, 232), (40, 40, 44), (162, 162, 172),
                  (222, 192, 40), (42, 122, 62)], 10),
        _GLASS: ([(44, 54, 74)], 4),
        _TIRE: ([(26, 26, 26)], 3),
        _LIGHT: ([(226, 42, 30)], 5),
        _SKIN: ([(232, 192, 160), (192, 142, 102), (122, 82, 56)], 6),
        _METAL: ([(118, 118, 126), (86, 92, 98)], 6),
        _SIGN: ([(212, 40, 40), (40, 80, 200), (232, 200, 40)], 8),
        _CLUTTER: ([(90, 120, 90), (140, 100, 60), (70, 70, 90)], 15),
    },
    REAL: {
        _ASPHALT: ([(84, 84, 90), (96, 94, 92)], 5),
        _MARKING: ([(196, 196, 186)], 6),
        _PAVEMENT: ([(156, 150, 142), (140, 134, 126)], 8),
        _CURB: ([(160, 158, 152)], 6),
        _FACADE: ([(150, 140, 128), (118, 114, 110), (172, 160, 144), (112, 90, 78),
                   (190, 186, 176)], 10),
        _SKY: ([(186, 198, 214), (140, 176, 220), (120, 164, 222)], 8),
        _FOLIAGE: ([(58, 96, 42), (74, 112, 48), (64, 124, 54)], 8),
        _TRUNK: ([(72, 58, 44)], 5),
        _PAINT: ([(150, 36, 36), (36, 56, 120), (206, 208, 206), (30, 30, 34), (126, 128, 134),
                  (180, 158, 60), (46, 86, 56)], 10),
        _GLASS: ([(30, 36, 46)], 4),
        _TIRE: ([(22, 22, 24)], 3),
        _LIGHT: ([(170, 40, 36)], 8),
        _SKIN: ([(206, 170, 146), (170, 126, 96), (104, 74, 58)], 6),
        _METAL: ([(90, 92, 98), (70, 74, 70)], 6),
        _SIGN: ([(170, 40, 40), (40, 70, 150), (190, 170, 50)], 8),
        _CLUTTER: ([(70, 90, 70), (110, 84, 56), (60, 60, 70)], 12),
    },
}


def colorize(label):
  """Label map [H, W] (or [H, W, 1]) → RGB uint8 [H, W, 3] in `PALETTE`'s colours; void black."""
  label = np.asarray(label)
  if label.ndim == 3:
    label = label[..., 0]
  table = np.zeros((256, 3), np.uint8)
  table[:NUM_CLASSES] = PALETTE
  return table[label]


# --- Layout ------------------------------------------------------------------------------------


class _Parts:
  """The drawn parts: each has a class label, a material, a palette pick, a tone and a row span."""

  def __init__(self, rng):
    self._rng = rng
    self.labels, self.materials, self.picks, self.tones, self.rows = [], [], [], [], []

  def add(self, label, material, rows=(0.0, float(_H))):
    self.labels.append(label)
    self.materials.append(material)
    self.picks.append(self._rng.random())
    self.tones.append(self._rng.normal(size=3))
    self.rows.append(rows)
    return len(self.labels) - 1


class _Ground:
  """The ground plane: horizon, a road to a vanishing point, sidewalks; `t` = 0 at the horizon,
  1 at the bottom row, proportional to the inverse depth (so to the image size of objects)."""

  def __init__(self, rng):
    self.horizon = rng.uniform(0.3, 0.5) * _H
    self.vanish = rng.uniform(0.3, 0.7) * _W
    self.bottom_centre = self.vanish + rng.uniform(-0.25, 0.25) * _W
    self.top_half = rng.uniform(0.3, 1.5)
    self.bottom_half = rng.uniform(0.28, 0.6) * _W
    self.walks = rng.uniform(0.12, 0.45, size=2) * _W  # Left and right, at the bottom row.
    self.road_metres = rng.uniform(3.0, 4.5)  # The road's half width: sets the object scale.

  def row(self, t):
    return self.horizon + t * (_H - self.horizon)

  def t(self, y):
    return (y - self.horizon) / (_H - self.horizon)

  def centre(self, t):
    return self.vanish + t * (self.bottom_centre - self.vanish)

  def half(self, t):
    return self.top_half + t * (self.bottom_half - self.top_half)

  def scale(self, t):
    """Pixels per metre at depth `t`."""
    return t * self.bottom_half / self.road_metres

  def edge(self, t, side):
    """The road edge on `side` (-1 left, +1 right)."""
    return self.centre(t) + side * self.half(t)

  def walk(self, t, side):
    return self.walks[0 if side < 0 else 1] * t


def _rect(draw, x0, y0, x1, y1, fill):
  """Fills the half-open float box [x0, x1) × [y0, y1), at least one pixel wide and high."""
  ix0, iy0 = int(round(x0)), int(round(y0))
  ix1, iy1 = max(ix0, int(round(x1)) - 1), max(iy0, int(round(y1)) - 1)
  draw.rectangle([ix0, iy0, ix1, iy1], fill=fill)


def _skyline(rng, ground, parts, blocks):
  """Per column: layers of (top row, part) above the horizon, and the part below it (the façade
  base or hedge beyond the sidewalk), for the left side, the distant middle and the right side."""
  vx, hz = ground.vanish, ground.horizon
  gap = rng.uniform(0.02, 0.15) * _W
  layers = []  # (top [W], part [W]) painted in order over the sky, above the horizon.
  below = np.zeros(_W, np.int32)
  columns = np.arange(_W) + 0.5

  # The distant middle: low buildings or trees at the vanishing point.
  far = parts.add(BUILDING, _FACADE) if rng.random() < 0.7 else parts.add(VEGETATION, _FOLIAGE)
  middle = (columns >= vx - gap) & (columns < vx + gap)
  top = np.full(_W, np.inf)
  x = vx - gap
  while x < vx + gap:
    width = rng.uniform(3, 9)
    span = (columns >= x) & (columns < x + width) & middle
    top[span] = hz - rng.uniform(1, 6)
    x += width
  layers.append((top, np.full(_W, far, np.int32)))
  below[middle] = far

  for side in (-1, 1):
    span = columns < vx - gap if side < 0 else columns >= vx + gap
    if not span.any():
      continue
    inner = vx - gap if side < 0 else vx + gap
    outer = 0.0 if side < 0 else float(_W)
    vegetation_side = rng.random() < 0.2
    with_buildings = not vegetation_side or rng.random() < 0.5
    tops = np.full(_W, np.inf)
    owners = np.zeros(_W, np.int32)
    if with_buildings:
      base = rng.uniform(2, 10)
      slope = rng.uniform(0.15, 0.8) * (0.5 if vegetation_side else 1.0)
      x = inner
      while (x > outer) if side < 0 else (x < outer):
        width = rng.uniform(6, 30)
        x0, x1 = (x - width, x) if side < 0 else (x, x + width)
        cols = (columns >= x0) & (columns < x1) & span
        distance = abs((x0 + x1) / 2 - vx)
        block_top = hz - (base + slope * distance) * rng.uniform(0.6, 1.4)
        part = parts.add(BUILDING, _FACADE, rows=(block_top, float(_H)))
        tops[cols], owners[cols] = block_top, part
        blocks.append((part, x0, x1, block_top))
        x = x0 if side < 0 else x1
      layers.append((tops, owners))
      below[span] = owners[span]
    if vegetation_side:
      hedge = parts.add(VEGETATION, _FOLIAGE)
      distance = np.abs(columns - vx)
      height = rng.uniform(1, 4) + rng.uniform(0.15, 0.5) * distance
      wobble = np.interp(columns, np.linspace(0, _W, 17), rng.normal(0, 1.5, 17))
      veg_top = np.where(span, hz - height - wobble, np.inf)
      layers.append((veg_top, np.full(_W, hedge, np.int32)))
      below[span] = hedge
  # Columns past the ground's side edges fall back on the nearest column of their own side.
  left_last = int(np.clip(np.floor(vx - gap) - 1, 0, _W - 1))
  right_first = int(np.clip(np.ceil(vx + gap), 0, _W - 1))
  return layers, below, left_last, right_first


def _background(rng, ground, parts, blocks):
  """The partmap of sky, skyline, road, markings, curbs, sidewalks and façade bases."""
  hz = ground.horizon
  ys = np.arange(_H, dtype=np.float64)[:, None] + 0.5
  xs = np.arange(_W, dtype=np.float64)[None, :] + 0.5
  sky = parts.add(SKY, _SKY)
  partmap = np.full((_H, _W), sky, np.int32)

  layers, below, left_last, right_first = _skyline(rng, ground, parts, blocks)
  above = ys < hz
  for top, owner in layers:
    partmap = np.where(above & (ys >= top[None, :]), owner[None, :], partmap)

  t = np.maximum(ground.t(ys), 0.0)
  on_ground = ys >= hz
  dx = xs - ground.centre(t)
  half = ground.half(t)
  columns = np.arange(_W)
  left_owner = below[np.minimum(columns, left_last)][None, :]
  right_owner = below[np.maximum(columns, right_first)][None, :]
  partmap = np.where(on_ground, np.where(dx < 0, left_owner, right_owner), partmap)

  for side in (-1, 1):
    walk = parts.add(SIDEWALK, _PAVEMENT)
    outside = side * dx >= half
    partmap = np.where(on_ground & outside & (side * dx < half + ground.walk(t, side)),
                       walk, partmap)
    if rng.random() < 0.8:
      curb = parts.add(SIDEWALK, _CURB)
      width = np.maximum(0.6, 0.18 * ground.scale(t))
      partmap = np.where(on_ground & outside & (side * dx < half + width), curb, partmap)
  asphalt = parts.add(ROAD, _ASPHALT)
  road = on_ground & (np.abs(dx) < half)
  partmap = np.where(road, asphalt, partmap)

  # Lane markings: dashed lane boundaries, optional solid edge lines and crosswalk.
  marking = parts.add(ROAD, _MARKING)
  lanes = int(rng.choice([1, 2, 2, 3, 4]))
  width = np.maximum(0.6, 0.13 * ground.scale(t))
  depth = 1.0 / np.maximum(t, 1e-3)
  frequency, phase, duty = rng.uniform(0.3, 0.8), rng.random(), rng.uniform(0.35, 0.6)
  dashes = ((depth * frequency + phase) % 1.0) < duty
  lines = np.zeros_like(road)
  for k in range(1, lanes):
    u = -1.0 + 2.0 * k / lanes
    lines |= (np.abs(dx - u * half) < width / 2) & dashes
  if rng.random() < 0.5:
    for u in (-0.94, 0.94):
      lines |= np.abs(dx - u * half) < width / 2
  if rng.random() < 0.15:
    near = rng.uniform(0.3, 0.8)
    stripes = ((dx / half * rng.uniform(3, 6)) % 1.0) < 0.5
    lines |= stripes & (t > near) & (t < near + rng.uniform(0.08, 0.15))
  partmap = np.where(road & lines & (t > 0.08), marking, partmap)
  return partmap


def _car(draw, parts, rng, x, bottom, width):
  van = rng.random() < 0.2
  height = width * (rng.uniform(1.0, 1.25) if van else rng.uniform(0.72, 0.95))
  top = bottom - height
  rows = (top, bottom)
  paint = parts.add(CAR, _PAINT, rows)
  tire = parts.add(CAR, _TIRE, rows)
  left, right = x - width / 2, x + width / 2
  wheel = 0.18 * width
  _rect(draw, left + 0.04 * width, bottom - 0.2 * height, left + 0.04 * width + wheel, bottom, tire)
  _rect(draw, right - 0.04 * width - wheel, bottom - 0.2 * height, right - 0.04 * width, bottom,
        tire)
  body_top = bottom - (0.75 if van else 0.55) * height
  _rect(draw, left, body_top, right, bottom - 0.12 * height, paint)
  slant = (0.03 if van else rng.uniform(0.1, 0.18)) * width
  base_inset = 0.05 * width
  draw.polygon([(left + base_inset, body_top), (left + base_inset + slant, top),
                (right - base_inset - slant, top), (right - base_inset, body_top)], fill=paint)
  if width < 7:
    return
  glass = parts.add(CAR, _GLASS, rows)
  light = parts.add(CAR, _LIGHT, rows)
  margin = 0.1 * (body_top - top) + 0.5
  inset = base_inset + 0.08 * width
  window_bottom = body_top - margin * (0.5 if van else 1.0)
  if van:
    window_bottom = top + 0.45 * (body_top - top) + margin
  draw.polygon([(left + inset, window_bottom), (left + inset + slant, top + margin),
                (right - inset - slant, top + margin), (right - inset, window_bottom)], fill=glass)
  lamp_w, lamp_h = 0.14 * width, max(1.0, 0.1 * height)
  lamp_y = body_top + 0.08 * height
  _rect(draw, left + 0.03 * width, lamp_y, left + 0.03 * width + lamp_w, lamp_y + lamp_h, light)
  _rect(draw, right - 0.03 * width - lamp_w, lamp_y, right - 0.03 * width, lamp_y + lamp_h, light)


def _person(draw, parts, rng, x, bottom, height):
  rows = (bottom - height, bottom)
  skin = parts.add(PERSON, _SKIN, rows)
  shirt = parts.add(PERSON, _CLOTH, rows)
  trousers = parts.add(PERSON, _CLOTH, rows)
  radius = max(0.6, 0.085 * height)
  top = bottom - height
  draw.ellipse([x - radius, top, x + radius, top + 2 * radius], fill=skin)
  shoulders, hips = top + 2 * radius, bottom - 0.47 * height
  half_shoulder = max(0.8, 0.15 * height)
  half_hip = max(0.7, 0.12 * height)
  draw.polygon([(x - half_shoulder, shoulders), (x + half_shoulder, shoulders),
                (x + half_hip, hips), (x - half_hip, hips)], fill=shirt)
  if height >= 10:
    arm = 0.06 * height
    swing = rng.uniform(-0.08, 0.08) * height
    for side in (-1, 1):
      x0 = x + side * half_shoulder
      draw.polygon([(x0, shoulders), (x0 + side * arm, shoulders),
                    (x0 + side * arm + side * swing, hips + 0.05 * height),
                    (x0 + side * swing, hips + 0.05 * height)], fill=shirt)
  stride = rng.uniform(0.0, 0.13) * height
  leg = max(0.7, 0.11 * height)
  for side in (-1, 1):
    draw.polygon([(x + side * half_hip, hips), (x + side * (half_hip - leg), hips),
                  (x + side * (stride + 0.01 * height), bottom - 1),
                  (x + side * (stride + leg), bottom - 1)], fill=trousers)


def _pole(draw, parts, rng, x, bottom, scale, side):
  height = scale * rng.uniform(4.5, 8.0)
  top = bottom - height
  metal = parts.add(POLE, _METAL, (top, bottom))
  width = max(1.4, 0.25 * scale * rng.uniform(0.8, 1.3))
  _rect(draw, x - width / 2, top, x + width / 2, bottom, metal)
  kind = rng.random()
  if kind < 0.3:  # A street lamp: an arm over the road.
    reach = scale * rng.uniform(1.0, 2.2)
    x1 = x - side * reach
    _rect(draw, min(x, x1), top, max(x, x1), top + max(1.0, 0.15 * scale), metal)
  elif kind < 0.7:  # A traffic sign: void.
    sign = parts.add(IGNORE_LABEL, _SIGN)
    size = scale * rng.uniform(0.5, 0.8)
    centre = bottom - scale * rng.uniform(2.3, 3.3)
    if rng.random() < 0.5:
      draw.ellipse([x - size / 2, centre - size / 2, x + size / 2, centre + size / 2], fill=sign)
    else:
      _rect(draw, x - size / 2, centre - size / 2, x + size / 2, centre + size / 2, sign)


def _tree(draw, parts, rng, x, bottom, scale):
  trunk_height = scale * rng.uniform(1.8, 3.5)
  radius = scale * rng.uniform(1.3, 2.6)
  top = bottom - trunk_height - 2 * radius
  trunk = parts.add(VEGETATION, _TRUNK, (bottom - trunk_height, bottom))
  crown = parts.add(VEGETATION, _FOLIAGE, (top, bottom - trunk_height))
  width = max(1.0, 0.3 * scale)
  _rect(draw, x - width / 2, bottom - trunk_height - 0.5 * radius, x + width / 2, bottom, trunk)
  for _ in range(int(rng.integers(2, 5))):
    r = radius * rng.uniform(0.6, 1.0)
    cx = x + rng.normal(0, 0.45) * radius
    cy = bottom - trunk_height - radius * rng.uniform(0.4, 1.2)
    rx = r * rng.uniform(0.8, 1.3)
    draw.ellipse([cx - rx, cy - r, cx + rx, cy + r], fill=crown)


def _bush(draw, parts, rng, x, bottom, scale):
  height = scale * rng.uniform(0.5, 1.4)
  width = height * rng.uniform(1.0, 2.5)
  bush = parts.add(VEGETATION, _FOLIAGE, (bottom - height, bottom))
  draw.ellipse([x - width / 2, bottom - height, x + width / 2, bottom + 0.3 * height], fill=bush)


def _clutter(draw, parts, rng, x, bottom, scale):
  """A bin or box on the sidewalk: void."""
  width, height = scale * rng.uniform(0.4, 0.9), scale * rng.uniform(0.5, 1.1)
  part = parts.add(IGNORE_LABEL, _CLUTTER)
  _rect(draw, x - width / 2, bottom - height, x + width / 2, bottom, part)


def _objects(rng, ground):
  """(bottom row, kind, x, scale, side) for every object, far ones first."""
  objects = []

  def on_sidewalk(t, side, low, high):
    return ground.edge(t, side) + side * ground.walk(t, side) * rng.uniform(low, high)

  for _ in range(min(6, rng.poisson(2.2))):
    t = rng.uniform(0.12, 0.95)
    if rng.random() < 0.25:  # Parked by the curb.
      side = rng.choice([-1, 1])
      u = side * rng.uniform(0.7, 0.9)
    else:
      u = rng.uniform(-0.7, 0.7)
    x = ground.centre(t) + u * ground.half(t)
    objects.append((ground.row(t), 'car', x, ground.half(t) * rng.uniform(0.42, 0.6), 0))
  for _ in range(min(6, rng.poisson(1.8))):
    t = rng.uniform(0.3, 1.0)
    side = rng.choice([-1, 1])
    if rng.random() < 0.15:  # Crossing the road.
      x = ground.centre(t) + rng.uniform(-0.9, 0.9) * ground.half(t)
    else:
      x = on_sidewalk(t, side, 0.15, 0.9)
    objects.append((ground.row(t), 'person', x, ground.scale(t) * rng.uniform(1.7, 2.2), side))
  for _ in range(min(6, rng.poisson(2.2))):
    t = rng.uniform(0.1, 1.0)
    side = rng.choice([-1, 1])
    objects.append((ground.row(t), 'pole', on_sidewalk(t, side, 0.1, 0.35), ground.scale(t), side))
  for _ in range(min(5, rng.poisson(1.5))):
    t = rng.uniform(0.06, 0.9)
    side = rng.choice([-1, 1])
    objects.append((ground.row(t), 'tree', on_sidewalk(t, side, 0.6, 0.95), ground.scale(t), side))
  for _ in range(min(4, rng.poisson(1.0))):
    t = rng.uniform(0.1, 1.0)
    side = rng.choice([-1, 1])
    objects.append((ground.row(t), 'bush', on_sidewalk(t, side, 0.95, 1.1), ground.scale(t), side))
  for _ in range(min(3, rng.poisson(0.6))):
    t = rng.uniform(0.2, 1.0)
    side = rng.choice([-1, 1])
    objects.append((ground.row(t), 'clutter', on_sidewalk(t, side, 0.3, 0.9), ground.scale(t),
                    side))
  objects.sort(key=lambda o: o[0])  # Far (near the horizon) first: near objects occlude them.
  return objects


def _layout(rng):
  """Draws a scene's geometry: (ground, parts, partmap [H, W] int32, façade blocks)."""
  ground = _Ground(rng)
  parts = _Parts(rng)
  blocks = []
  partmap = _background(rng, ground, parts, blocks)
  canvas = Image.fromarray(partmap)
  draw = ImageDraw.Draw(canvas)
  for bottom, kind, x, size, side in _objects(rng, ground):
    if kind == 'car':
      _car(draw, parts, rng, x, bottom, size)
    elif kind == 'person':
      _person(draw, parts, rng, x, bottom, size)
    elif kind == 'pole':
      _pole(draw, parts, rng, x, bottom, size, side)
    elif kind == 'tree':
      _tree(draw, parts, rng, x, bottom, size)
    elif kind == 'bush':
      _bush(draw, parts, rng, x, bottom, size)
    else:
      _clutter(draw, parts, rng, x, bottom, size)
  return ground, parts, np.asarray(canvas, np.int32), blocks


# --- Styles ------------------------------------------------------------------------------------


def _part_colours(parts, style):
  """Per part: RGB in [0, 1] from the style's palette, the part's pick and tone."""
  palette = _COLOURS[style]
  colours = np.empty((len(parts.labels), 3))
  for i, (material, pick, tone) in enumerate(zip(parts.materials, parts.picks, parts.tones)):
    if material == _CLOTH:
      colour = 128 + 58 * np.asarray(tone)
    else:
      options, jitter = palette[material]
      colour = np.asarray(options[int(pick * len(options))], np.float64) + jitter * tone
    colours[i] = colour
  return np.clip(colours, 0, 255) / 255.0


def _noise(rng, cells_y, cells_x):
  """Smooth value noise [H, W], about unit std, with a `cells_y × cells_x` grid of features."""
  grid = rng.normal(size=(cells_y + 1, cells_x + 1)).astype(np.float32)
  return np.asarray(Image.fromarray(grid).resize((_W, _H), Image.BICUBIC), np.float64)


def _render_synthetic(parts, partmap):
  colours = _part_colours(parts, SYNTHETIC)
  return np.round(colours[partmap] * 255).astype(np.uint8)


def _render_real(rng, ground, parts, partmap, blocks):
  colours = _part_colours(parts, REAL)
  image = colours[partmap]
  materials = np.asarray(parts.materials)[partmap]
  ys = np.arange(_H, dtype=np.float64)[:, None] + 0.5
  xs = np.arange(_W, dtype=np.float64)[None, :] + 0.5
  fine = rng.normal(size=(_H, _W))
  mid = _noise(rng, 16, 32)
  low = _noise(rng, 4, 8)

  def modulate(mask, factor):
    image[mask] *= factor[mask][:, None] if np.ndim(factor) else factor

  # Ground: asphalt grain and stains; faded markings; paving seams in perspective.
  t = np.maximum(ground.t(ys), 1e-3)
  dx = xs - ground.centre(t)
  asphalt = materials == _ASPHALT
  modulate(asphalt, 1 + 0.08 * fine + 0.1 * mid + 0.08 * low)
  marking = materials == _MARKING
  fade = rng.uniform(0.2, 0.6)
  image[marking] = (1 - fade) * image[marking] + fade * colours[partmap[marking]] * 0.45
  modulate(marking, 1 + 0.08 * fine)
  paving = materials == _PAVEMENT
  metres = dx / np.maximum(ground.scale(t), 1e-3)
  depth = ground.road_metres * ground.bottom_half / ground.half(t)
  tile = rng.uniform(0.8, 1.6)
  seams = ((metres / tile) % 1.0 < 0.12) | ((depth / tile) % 1.0 < 0.12)
  modulate(paving, 1 + 0.06 * fine + 0.06 * mid - 0.16 * (seams & (t > 0.25)))
  modulate(materials == _CURB, 1 + 0.05 * fine)

  # Façades: windows in a grid per block, grain and grime.
  facade = materials == _FACADE
  modulate(facade, 1 + 0.05 * fine + 0.08 * mid)
  for part, x0, x1, top in blocks:
    pitch_x, pitch_y = rng.uniform(3.5, 7), rng.uniform(4, 7)
    fill_x, fill_y = rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.65)
    windows = (((xs - x0 - 1) % pitch_x) < pitch_x * fill_x) & (
        ((ys - top - 1.5) % pitch_y) < pitch_y * fill_y) & (partmap == part) & (
            ys < ground.horizon + 1) & (xs > x0 + 1) & (xs < x1 - 1)
    glass = np.array([0.16, 0.19, 0.24]) * rng.uniform(0.7, 1.6)
    lit = (_noise(rng, 8, 16) > 1.0)[windows]
    window_colours = np.where(lit[:, None], [0.75, 0.68, 0.45], glass)
    image[windows] = window_colours * (1 + 0.1 * fine[windows][:, None])

  # Sky: a gradient towards the horizon and clouds.
  sky = materials == _SKY
  towards_horizon = np.clip(ys / max(ground.horizon, 1.0), 0, 1)
  image[sky] = image[sky] * (0.85 + 0.25 * np.broadcast_to(towards_horizon, (_H, _W))[sky])[:, None]
  clouds = np.clip(_noise(rng, 3, 6) * rng.uniform(0.3, 0.8) - 0.1, 0, 1)[sky][:, None]
  image[sky] = (1 - clouds) * image[sky] + clouds * 0.92

  # Vegetation: strong foliage noise, darker trunks' bark.
  foliage = materials == _FOLIAGE
  leaves = 1 + 0.22 * fine + 0.25 * mid
  modulate(foliage, np.clip(leaves, 0.4, 1.8))
  modulate(materials == _TRUNK, 1 + 0.15 * fine)

  # Objects: shading from top to bottom of each part, glossy paint, reflections in glass.
  rows = np.asarray(parts.rows)[partmap]
  height = np.maximum(rows[..., 1] - rows[..., 0], 1.0)
  along = np.clip((ys - rows[..., 0]) / height, 0, 1)
  shaded = np.isin(materials, [_PAINT, _GLASS, _CLOTH, _SKIN, _METAL, _TRUNK])
  modulate(shaded, 1.2 - 0.4 * along + 0.04 * fine)
  glass = materials == _GLASS
  image[glass] += 0.12 * np.clip(mid[glass], 0, None)[:, None]

  # Cast shadows on the ground, and under the cars.
  ground_mask = np.isin(materials, [_ASPHALT, _MARKING, _PAVEMENT, _CURB])
  if rng.random() < 0.6:
    shadow = _noise(rng, 3, 5) > rng.uniform(-0.3, 0.6)
    modulate(ground_mask & shadow, rng.uniform(0.5, 0.75))
  labels = np.asarray(parts.labels)[partmap]
  car_above = np.zeros((_H, _W), bool)
  for dy in (1, 2):
    car_above[dy:] |= labels[:-dy] == CAR
  modulate(ground_mask & car_above, 0.45)

  # Lighting: exposure, contrast, gamma, white balance, saturation, vignetting.
  gains = rng.uniform(0.85, 1.15, size=3)
  image = image * gains * rng.uniform(0.75, 1.2)
  grey = image.mean(axis=-1, keepdims=True)
  image = grey + rng.uniform(0.6, 1.1) * (image - grey)
  image = (image - 0.45) * rng.uniform(0.8, 1.15) + 0.45
  image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
  radius = ((ys - _H / 2) / (_H / 2)) ** 2 + ((xs - _W / 2) / (_W / 2)) ** 2
  image *= (1 - rng.uniform(0.0, 0.35) * radius / 2)[..., None]

  # Optics and sensor: blur, then noise (with a little chroma noise), quantised.
  blurred = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
  blurred = blurred.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
  image = np.asarray(blurred, np.float64)
  sigma = rng.uniform(2, 6)
  image += sigma * (rng.normal(size=(_H, _W, 1)) + 0.3 * rng.normal(size=(_H, _W, 3)))
  return np.round(np.clip(image, 0, 255)).astype(np.uint8)


def render_scene(rng, style=SYNTHETIC):
  """One scene from `rng` (a `np.random.Generator`) in `style` ('synthetic' or 'real').

  Returns (image uint8 [H, W, 3], label uint8 [H, W]) with class ids from `CLASS_NAMES` and 255
  for void. The layout is drawn from `rng` before anything style-specific, so two generators with
  the same seed give the same label map in both styles.
  """
  if style not in STYLES:
    raise ValueError(f'Unknown style {style!r}; expected one of {STYLES}.')
  ground, parts, partmap, blocks = _layout(rng)
  label = np.asarray(parts.labels, np.uint8)[partmap]
  if style == SYNTHETIC:
    image = _render_synthetic(parts, partmap)
  else:
    image = _render_real(rng, ground, parts, partmap, blocks)
  return image, label


def example_rng(seed, split, index):
  """The generator of example `index` of `split` in the domain with `seed`."""
  return np.random.default_rng([seed, _SPLIT_IDS[split], index])


# --- TFDS builders -----------------------------------------------------------------------------


class _ScenesBuilder(base.LocalCodeBuilder, skip_registration=True):
  """A procedural street-scene domain; subclasses set STYLE, SEED and DESCRIPTION."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': f'{NUM_TRAIN} train / {NUM_TEST} test procedural scenes.'}
  CLASS_NAMES = CLASS_NAMES
  NUM_CLASSES = NUM_CLASSES
  IGNORE_LABEL = IGNORE_LABEL
  IMAGE_SHAPE = IMAGE_SHAPE
  LABEL_SHAPE = LABEL_SHAPE
  PALETTE = PALETTE
  SPLITS = {'train': NUM_TRAIN, 'test': NUM_TEST}
  STYLE = None
  SEED = None
  DESCRIPTION = ''

  def _info(self):
    return self.dataset_info_from_configs(
        description=(f'{self.DESCRIPTION} {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} street scenes seen '
                     f'from a car, per-pixel labels: {", ".join(CLASS_NAMES)} (ids 0..'
                     f'{NUM_CLASSES - 1}), 255 void (signs, clutter). Generated offline, '
                     'deterministically.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=IMAGE_SHAPE),
            'segmentation_label': tfds.features.Image(shape=LABEL_SHAPE, use_colormap=True),
        }),
        supervised_keys=('image', 'segmentation_label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the scenes are generated.
    return {split: self._generate_examples(split, count) for split, count in self.SPLITS.items()}

  def _generate_examples(self, split, count):
    for index in range(count):
      image, label = render_scene(example_rng(self.SEED, split, index), self.STYLE)
      yield index, {'image': image, 'segmentation_label': label[..., np.newaxis]}


class ScenesSynthetic(_ScenesBuilder):
  """Procedural street scenes in a flat, game-like style (the source domain)."""

  STYLE = SYNTHETIC
  SEED = 20_190_001
  DESCRIPTION = 'Synthetic style (source): flat colours, sharp edges, no noise.'


class ScenesReal(_ScenesBuilder):
  """The same kind of scenes, rendered with textures, lighting, blur and noise (the target)."""

  STYLE = REAL
  SEED = 20_190_002
  DESCRIPTION = ('Real style (target): textures, windows, cast shadows, per-image exposure, '
                 'white balance, blur, sensor noise and vignetting.')
