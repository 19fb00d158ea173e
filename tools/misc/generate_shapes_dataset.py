"""Write a small synthetic object-detection data set (COCO format) and its classification crops.

No data can be downloaded where pddr_mm is developed and tested, so the demo, the tests and anyone
trying the tools train on this set instead. Each image holds a few filled shapes (the classes) of
random size, colour (colour says nothing about the class), rotation and partial overlap, on a noisy
gradient background with distracting strokes. Everything follows from ``--seed``: the same arguments
give byte-identical files.

The defaults are what the demo configs were tuned on, and the demo classifier gets above 90% top-1 on
them, too close to the ceiling to tell variants apart. The options after ``--seed`` (more and more
similar classes, faint, occluded, cluttered, noisy, blurred objects, off-centre crops) make a harder set;
``--hard`` selects the bundle configs/demo/pd-b-resnet18_shapes-cls-hard.py was written for::

    python tools/misc/generate_shapes_dataset.py --hard --out data/shapes_hard

Each of them draws random numbers only when it is switched on, so the default set stays byte-identical.

Layout under ``--out``::

    images/{train,val}/000000.png
    annotations/instances_train.json, instances_val.json   (COCO; bbox is x, y, w, h)
    cls/{train,val}/<class>/000000_0.png                    (one object per crop: mmpretrain's folder format)
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pddr_mm.utils.args import (int_at_least, int_range, non_negative_float, non_negative_int, positive_int,
                                unit_float)

CLASSES = ('circle', 'square', 'triangle', 'cross')  # the default (and the detection demo's) classes
# --num-classes takes the first N of these; some look alike on a small, blurred crop on purpose
# (pentagon / hexagon / circle, rhombus / square, ellipse / circle, ring / circle)
ALL_CLASSES = CLASSES + ('pentagon', 'hexagon', 'star', 'rhombus', 'ellipse', 'ring')

# what --hard sets (any option given explicitly still wins). Measured with the demo classifier (6 epochs,
# tools/analysis_tools/ablation.py, seed 0): plain ResNet-18 43% top-1 on these 8 classes, still rising;
# a harder bundle (10 classes, opacity from 0.3, noise 24, blur 1.2) stayed at chance for 2 epochs
HARD = dict(num_classes=8, num_train=1600, num_val=300, min_size=12, max_size=40, max_objects=5, max_overlap=0.5,
            alpha_min=0.6, noise_std=12.0, clutter=4, occlusion=0.2, blur=0.6, crop_jitter=0.1)


OUTPUT_DIRS = ('images', 'annotations', 'cls')  # everything the generator writes under --out
MIN_SIDE = 2  # objects with a box side under 2 pixels are dropped, so smaller ones could never appear


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check every option: a bad value must fail here, before an existing set is touched."""
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes data set (COCO detection + classification crops). '
        'The defaults are what configs/demo/ expects.')
    parser.add_argument('--out', default='data/shapes', help='output directory (default: data/shapes)')
    parser.add_argument('--num-train', type=positive_int, default=800, help='training images (default: 800)')
    parser.add_argument('--num-val', type=positive_int, default=100, help='validation images (default: 100)')
    parser.add_argument('--img-size', type=positive_int, default=128,
                        help='square image side in pixels (default: 128)')
    parser.add_argument('--min-objects', type=non_negative_int, default=1,
                        help='fewest objects per image (default: 1)')
    parser.add_argument('--max-objects', type=positive_int, default=4, help='most objects per image (default: 4)')
    parser.add_argument('--min-size', type=int_at_least(MIN_SIDE), default=14,
                        help=f'smallest object side in pixels, at least {MIN_SIDE} (default: 14)')
    parser.add_argument('--max-size', type=int_at_least(MIN_SIDE), default=56,
                        help='largest object side in pixels (default: 56)')
    parser.add_argument('--max-overlap', type=unit_float, default=0.3,
                        help='largest IoU allowed between two objects of an image (default: 0.3)')
    parser.add_argument('--crop-size', type=positive_int, default=32,
                        help='side of the classification crops (default: 32)')
    parser.add_argument('--no-crops', action='store_true', help='do not write the classification crops')
    parser.add_argument('--seed', type=non_negative_int, default=0,
                        help='random seed; same seed, same files (default: 0)')
    parser.add_argument('--force', action='store_true',
                        help='replace a set already in --out (its images/, annotations/ and cls/ are replaced once '
                        'the new set is complete)')
    hard = parser.add_argument_group('harder data (all off by default)')
    hard_opts = ' '.join(f'--{k.replace("_", "-")} {v}' for k, v in HARD.items())
    hard.add_argument('--hard', action='store_true',
                      help=f'the hard classification set: {hard_opts} (options given explicitly win)')
    hard.add_argument('--num-classes', type=int_range(1, len(ALL_CLASSES)), default=len(CLASSES),
                      help=f'number of shape classes, the first N of {ALL_CLASSES} (default: {len(CLASSES)})')
    hard.add_argument('--alpha-min', type=unit_float, default=1.0,
                      help='objects are blended into the background with an opacity drawn from [alpha-min, 1]: '
                      'faint, low-contrast objects (default: 1, opaque)')
    hard.add_argument('--noise-std', type=non_negative_float, default=0.0,
                      help='Gaussian pixel noise over the finished image, std drawn from [0.5, 1] x this '
                      '(default: 0)')
    hard.add_argument('--clutter', type=non_negative_int, default=0,
                      help='up to this many distracting strokes and arcs drawn over the objects (default: 0)')
    hard.add_argument('--occlusion', type=unit_float, default=0.0,
                      help='probability that an object gets a random block covering part of it (default: 0)')
    hard.add_argument('--blur', type=non_negative_float, default=0.0,
                      help='Gaussian blur of the finished image, radius drawn from [0, blur] (default: 0)')
    hard.add_argument('--crop-jitter', type=unit_float, default=0.0,
                      help='classification crops are shifted and rescaled by up to this fraction (at most 1) of '
                      'the object size, so the object is off-centre or cut (default: 0)')
    args, _ = parser.parse_known_args(argv)
    if args.hard:
        parser.set_defaults(**HARD)
    args = parser.parse_args(argv)
    # relations between options, each reported under the option a user would change
    if args.max_objects < args.min_objects:
        parser.error(f'argument --max-objects: {args.max_objects} is below --min-objects {args.min_objects}')
    if args.max_size < args.min_size:
        parser.error(f'argument --max-size: {args.max_size} is below --min-size {args.min_size}')
    if args.max_size > args.img_size:
        parser.error(f'argument --max-size: {args.max_size} does not fit in --img-size {args.img_size}')
    if osp.exists(args.out) and not osp.isdir(args.out):
        parser.error(f'argument --out: {args.out} is a file, not a directory')
    return args


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A random two-colour gradient with pixel noise and a few thin strokes (clutter, not objects)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img += rng.normal(0, rng.uniform(4, 16), img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(0, 5))):
        pts = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=int(rng.integers(1, 3)))
    return pil


def _shape_polygon(cls: str, cx: float, cy: float, r: float, rot: float) -> List[Tuple[float, float]]:
    """Outline of a shape of 'radius' r centred at (cx, cy), rotated by rot (radians)."""
    if cls == 'square':
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]
    elif cls == 'triangle':
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif cls == 'cross':
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
               (-w, -w)]
    elif cls in ('pentagon', 'hexagon'):
        n = 5 if cls == 'pentagon' else 6
        pts = [(math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n)]
    elif cls == 'star':
        pts = [((1 if i % 2 == 0 else 0.45) * math.cos(math.pi * i / 5 - math.pi / 2),
                (1 if i % 2 == 0 else 0.45) * math.sin(math.pi * i / 5 - math.pi / 2)) for i in range(10)]
    elif cls == 'rhombus':
        pts = [(0, -1), (0.55, 0), (0, 1), (-0.55, 0)]
    elif cls == 'ellipse':
        pts = [(math.cos(2 * math.pi * i / 32), 0.55 * math.sin(2 * math.pi * i / 32)) for i in range(32)]
    else:
        raise ValueError(cls)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _draw_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cls: str, cx: float, cy: float,
                 r: float) -> Tuple[float, float, float, float]:
    """Draw one object; returns its tight box (x1, y1, x2, y2)."""
    colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
    if cls in ('circle', 'ring'):
        box = (cx - r, cy - r, cx + r, cy + r)
        if cls == 'circle':
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, int(round(0.4 * r))))
        return box
    pts = _shape_polygon(cls, cx, cy, r, rng.uniform(0, 2 * math.pi))
    draw.polygon(pts, fill=colour)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def make_image(rng: np.random.Generator, args: argparse.Namespace) -> Tuple[Image.Image, List[Dict]]:
    """One image and its objects (dicts with 'category_id' and 'box' = x1, y1, x2, y2 clipped to the image)."""
    size = args.img_size
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    objects: List[Dict] = []
    n = int(rng.integers(args.min_objects, args.max_objects + 1))
    # larger objects first, so a smaller one drawn later may cover part of a larger one but never hides it
    sides = sorted(rng.uniform(args.min_size, args.max_size, n), reverse=True)
    classes = ALL_CLASSES[:args.num_classes]
    for side in sides:
        r = side / 2
        for _attempt in range(20):  # objects keep out of each other beyond max_overlap; give up otherwise
            cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)  # may be cut by the border a little
            box = (cx - r, cy - r, cx + r, cy + r)
            if all(_iou(box, o['box']) <= args.max_overlap for o in objects):
                break
        else:
            continue
        label = int(rng.integers(len(classes)))
        if args.alpha_min < 1:  # draw on a copy and blend it in: only the object's pixels differ
            alpha = rng.uniform(args.alpha_min, 1.0)
            layer = img.copy()
            x1, y1, x2, y2 = _draw_object(ImageDraw.Draw(layer), rng, classes[label], cx, cy, r)
            img = Image.blend(img, layer, alpha)
            draw = ImageDraw.Draw(img)
        else:
            x1, y1, x2, y2 = _draw_object(draw, rng, classes[label], cx, cy, r)
        box = (max(x1, 0.0), max(y1, 0.0), min(x2, size - 1.0), min(y2, size - 1.0))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        objects.append(dict(category_id=label, box=box))
    return _degrade(img, rng, args, objects), objects


def _degrade(img: Image.Image, rng: np.random.Generator, args: argparse.Namespace, objects: List[Dict]) -> Image.Image:
    """The hard-set options applied to a finished image (each draws random numbers only when it is on)."""
    size = img.size[0]
    draw = ImageDraw.Draw(img)
    if args.occlusion > 0:
        for obj in objects:
            if rng.uniform() >= args.occlusion:
                continue
            x1, y1, x2, y2 = obj['box']
            w, h = (x2 - x1) * rng.uniform(0.25, 0.5), (y2 - y1) * rng.uniform(0.25, 0.5)
            ox, oy = rng.uniform(x1 - w / 2, x2 - w / 2), rng.uniform(y1 - h / 2, y2 - h / 2)
            draw.rectangle((ox, oy, ox + w, oy + h), fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    if args.clutter > 0:
        for _ in range(int(rng.integers(0, args.clutter + 1))):
            colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
            x, y = rng.uniform(0, size, 2)
            if rng.uniform() < 0.5:
                pts = [(float(x), float(y)), tuple(float(v) for v in rng.uniform(0, size, 2))]
                draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
            else:
                r = rng.uniform(4, size / 6)
                start = rng.uniform(0, 360)
                draw.arc((x - r, y - r, x + r, y + r), start, start + rng.uniform(60, 270), fill=colour,
                         width=int(rng.integers(1, 4)))
    if args.noise_std > 0:
        arr = np.asarray(img, dtype=np.float64)
        arr = arr + rng.normal(0, args.noise_std * rng.uniform(0.5, 1.0), arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if args.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, args.blur)))
    return img


def write_split(args: argparse.Namespace, root: str, split: str, num: int, stream: int) -> Dict:
    """Write one split's images (and crops) under ``root``; returns its COCO dict."""
    img_dir = osp.join(root, 'images', split)
    os.makedirs(img_dir, exist_ok=True)
    classes = ALL_CLASSES[:args.num_classes]
    coco = dict(images=[], annotations=[], categories=[dict(id=i, name=c) for i, c in enumerate(classes)])
    ann_id = 0
    for idx in range(num):
        rng = np.random.default_rng([args.seed, stream, idx])
        img, objects = make_image(rng, args)
        name = f'{idx:06d}.png'
        img.save(osp.join(img_dir, name))
        coco['images'].append(dict(id=idx, file_name=f'{split}/{name}', width=args.img_size, height=args.img_size))
        for k, obj in enumerate(objects):
            x1, y1, x2, y2 = obj['box']
            w, h = x2 - x1, y2 - y1
            coco['annotations'].append(
                dict(id=ann_id, image_id=idx, category_id=obj['category_id'],
                     bbox=[round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)], area=round(w * h, 2), iscrowd=0))
            ann_id += 1
            if not args.no_crops:
                crop_dir = osp.join(root, 'cls', split, classes[obj['category_id']])
                os.makedirs(crop_dir, exist_ok=True)
                pad = 0.15 * max(w, h)
                if args.crop_jitter > 0:  # shift and rescale the crop box: the object off-centre or cut
                    j = args.crop_jitter * max(w, h)
                    dx, dy = rng.uniform(-j, j, 2)
                    pad += rng.uniform(-j, j) / 2
                    x1, x2, y1, y2 = x1 + dx, x2 + dx, y1 + dy, y2 + dy
                left, top = int(x1 - pad), int(y1 - pad)  # a large jitter may turn a thin box inside out:
                right = max(int(math.ceil(x2 + pad)), left + 1)  # keep one pixel
                bottom = max(int(math.ceil(y2 + pad)), top + 1)
                crop = img.crop((left, top, right, bottom))
                crop.resize((args.crop_size, args.crop_size), Image.BILINEAR).save(
                    osp.join(crop_dir, f'{idx:06d}_{k}.png'))
    return coco


def _swap_in(new_root: str, out: str) -> None:
    """Move the complete set in ``new_root`` to ``out``, replacing the old set's folders only now."""
    os.makedirs(out, exist_ok=True)
    old_root = tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(out))}.old-', dir=osp.dirname(osp.abspath(out)))
    for d in OUTPUT_DIRS:
        if osp.exists(osp.join(out, d)):
            os.replace(osp.join(out, d), osp.join(old_root, d))
        if osp.exists(osp.join(new_root, d)):
            os.replace(osp.join(new_root, d), osp.join(out, d))
    shutil.rmtree(old_root)


def main(argv=None) -> None:
    args = parse_args(argv)
    # a new set written over an old one would leave the old crops and images the datasets still load
    old = [d for d in OUTPUT_DIRS if osp.exists(osp.join(args.out, d))]
    if old and not args.force:
        raise SystemExit(f'{args.out} already holds a generated set ({", ".join(d + "/" for d in old)}): pass '
                         '--force to replace it, or choose another --out')
    # written into a sibling folder and moved into place once complete: an error or Ctrl-C part way
    # leaves the old set (or nothing) in --out, never half a set
    parent = osp.dirname(osp.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(args.out))}.partial-', dir=parent)
    try:
        ann_dir = osp.join(root, 'annotations')
        os.makedirs(ann_dir)
        counts = []
        # the splits draw from disjoint streams, so changing --num-train leaves the val split unchanged
        for split, num, stream in (('train', args.num_train, 0), ('val', args.num_val, 1)):
            coco = write_split(args, root, split, num, stream)
            with open(osp.join(ann_dir, f'instances_{split}.json'), 'w') as f:
                json.dump(coco, f)
            counts.append(f'{split}: {len(coco["images"])} images, {len(coco["annotations"])} objects')
        _swap_in(root, args.out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print('\n'.join(counts))
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
