"""Open-set study: can dogft-predict answer "none of these" for photos of classes the model was not trained on?

Three signals per image, from one forward pass of a run's model: the trained head's top probability (`conf`), and,
through the ImageNet-1k head of the run's starting weights applied to the same pooled features, the probability
mass on ImageNet's dog classes (`dog`) and the share of that mass on the trained breeds' own ImageNet classes
(`own`). Each signal gets a threshold from the trained breeds' VALIDATION split only (see README.md for the rule);
the rates are then measured on the trained breeds' test split, the other Stanford Dogs breeds' official test
images, and real non-dog photos shipped offline by scikit-image, scikit-learn and matplotlib.

    python bench/open_set/open_set.py                                 # runs in $DOGFT_HOME, printed only
    python bench/open_set/open_set.py --name 'five breeds'            # and written to results.json/results.md

`--engine torch` (default) runs the checkpoint in PyTorch; `--engine onnx` exports each run (`dogft.export`) and asks
`dogft.predict.Classifier`, i.e. exactly what `dogft-predict` answers.
"""
from __future__ import annotations
import argparse, csv, hashlib, json, math, sys, time
from pathlib import Path

import numpy as np
from PIL import Image

from dogft.core import DogftError, dogft_home
from dogft.data import load_breeds, read_split
from dogft.predict import load_image, preprocess, softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

DOG_CLASSES = list(range(151, 269)) + [273, 274, 275]  # ImageNet-1k's dogs (151-268) and the wild dogs Stanford Dogs has (dingo, dhole, African hunting dog)
ALPHA = 0.005  # each rule may flag at most floor(ALPHA * n_val) validation images (0 for n_val < 200: the validation minimum)
GOAL = dict(non_dogs=0.95, other_breeds=0.80, trained_test_max=0.02)
SHARED = Path(__file__).resolve().parents[3]/'shared'/'data'


# ---------------------------------------------------------------------------------------------------------------
# the evaluation sets
def non_dog_photos()->list[tuple[str, Image.Image, str]]:
    "Real non-dog photos that ship inside installed wheels (no network): `(name, RGB image, where from)`."
    import skimage.data as sd
    out = []
    colour = ['astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina']
    grey = ['camera', 'coins', 'clock', 'moon', 'brick', 'grass', 'gravel', 'text', 'page', 'cell', 'microaneurysms']
    for n in colour + grey:
        try: a = getattr(sd, n)()
        except Exception as e: print(f"skipping skimage.data.{n}: {type(e).__name__}", file=sys.stderr); continue
        out.append((n, Image.fromarray(np.asarray(a)).convert('RGB'), 'scikit-image'))
    try: out.append(('stereo_motorcycle', Image.fromarray(sd.stereo_motorcycle()[0]).convert('RGB'), 'scikit-image'))
    except Exception: pass
    import sklearn.datasets, matplotlib
    for f in ('china.jpg', 'flower.jpg'):
        p = Path(sklearn.datasets.__file__).parent/'images'/f
        if p.exists(): out.append((p.stem, load_image(p), 'scikit-learn'))
    p = Path(matplotlib.get_data_path())/'sample_data'/'grace_hopper.jpg'
    if p.exists(): out.append(('grace_hopper', load_image(p), 'matplotlib'))
    return out


def other_breed_images(dogs120:Path, # the 120-breed folder (with MANIFEST.tsv)
                       skip:set, # synsets of the trained breeds
                       per_breed:int, # test images per breed, a seeded subsample; 0: all
                       seed:int=0
                      )->list[tuple[str, Path]]: # (breed folder, image path)
    "The official TEST images of every Stanford Dogs breed not trained, `per_breed` of each (seeded), in manifest order."
    rows = list(csv.DictReader(open(dogs120/'MANIFEST.tsv'), delimiter='\t'))
    by = {}
    for r in rows:
        if r['split'] == 'test' and r['folder'].split('-')[0] not in skip: by.setdefault(r['folder'], []).append(r['file_name'])
    rng,out = np.random.default_rng(seed),[]
    for folder in sorted(by):
        fs = by[folder]
        if per_breed and per_breed < len(fs): fs = [fs[i] for i in sorted(rng.choice(len(fs), per_breed, replace=False))]
        out += [(folder, dogs120/folder/f) for f in fs]
    return out


# ---------------------------------------------------------------------------------------------------------------
# the signals and the rule
def signals(z:np.ndarray, # trained head's logits [N, C]
            g:np.ndarray|None, # ImageNet-1k logits [N, 1000], or None
            trained_idx:list[int] # the trained breeds' ImageNet indices
           )->dict:
    "Per image: `conf` (trained head's top probability), `dog` (ImageNet mass on dogs), `own` (share of it on the trained breeds), ImageNet top class."
    s = dict(conf=softmax(z).max(1), pred=softmax(z).argmax(1))
    if g is not None:
        p = softmax(g)
        dog = p[:, DOG_CLASSES].sum(1)
        s.update(dog=dog, own=p[:, trained_idx].sum(1)/np.maximum(dog, 1e-12), inet_top=p.argmax(1))
    return s


def fit_thresholds(val:dict, # `signals` of the validation split
                   alpha:float=ALPHA # most share of validation images each rule may flag
                  )->dict:
    "Per signal, the threshold `t`: flag an image when its value is below `t`; `t` is the (floor(alpha*n)+1)-th smallest validation value."
    out = {}
    for k in ('dog', 'own', 'conf'):
        if k not in val: continue
        v = np.sort(np.asarray(val[k], np.float64))
        out[k] = float(v[min(int(math.floor(alpha*len(v))), len(v) - 1)])
    return out


REASONS = dict(dog='not a dog', own='a dog breed outside this model', conf='low confidence')

def apply_rule(s:dict, t:dict)->dict:
    "Per image: which rules fire (`dog`, `own`, `conf`), `none_of_these` (any fires), and the first reason in that order."
    fired = {k: np.asarray(s[k]) < t[k] for k in REASONS if k in t and k in s}
    n = len(s['conf'])
    anyf = np.zeros(n, bool)
    for v in fired.values(): anyf |= v
    reason = [next((REASONS[k] for k in REASONS if k in fired and fired[k][i]), None) for i in range(n)]
    return dict(fired, any=anyf, reason=reason)


def wilson(k:int, n:int, z:float=1.96)->tuple[float, float]:
    "Wilson 95% interval of a proportion k/n."
    if n == 0: return (float('nan'), float('nan'))
    p = k/n; d = 1 + z*z/n
    c,h = (p + z*z/(2*n))/d, z*math.sqrt(p*(1 - p)/n + z*z/(4*n*n))/d
    return (max(0., c - h), min(1., c + h))


# ---------------------------------------------------------------------------------------------------------------
# engines: logits of the trained head and of the ImageNet head for images
class TorchEngine:
    "A run's checkpoint in PyTorch, plus the ImageNet-1k head of its starting weights on the same pooled features."
    def __init__(self, run:dict):
        import torch
        from dogft import export as ex
        from dogft.models import create_model, resolve_weights
        self.torch = torch
        self.model,ck = ex.load_run_model(run['checkpoint'])
        self.meta = ex.export_data_config(ck['data_config'])
        self.class_names = list(ck['class_names'])
        w = json.loads(Path(run['metrics']).read_text()).get('weights') or {}
        src = resolve_weights(ck['model'], 'auto')
        if not w.get('pretrained') or src['path'] is None: raise DogftError(f"{run['run']}: no ImageNet head to compare with (weights {w.get('source')})")
        from dogft.core import sha256_file
        if w.get('sha256') and sha256_file(src['path']) != w['sha256']:
            raise DogftError(f"{run['run']} started from weights {w['sha256'][:12]}, the local file is {src['path']}: not the same head")
        self.inet_head = create_model(ck['model'], 1000, 'auto').eval().get_classifier()
        self.weights = dict(source=w.get('source'), sha256=w.get('sha256'))

    def logits(self, x:np.ndarray)->tuple[np.ndarray, np.ndarray]:
        torch,m = self.torch,self.model
        with torch.inference_mode():
            f = m.forward_head(m.forward_features(torch.from_numpy(x)), pre_logits=True)
            return m.get_classifier()(f).numpy(),self.inet_head(f).numpy()


class OnnxEngine:
    "The exported file through `dogft.predict.Classifier`: what `dogft-predict` answers, its thresholds read from the file's metadata."
    def __init__(self, path:Path, photos_dir:Path):
        from dogft.predict import Classifier
        self.clf = Classifier(path)
        self.meta,self.class_names,self.rule = self.clf.meta,self.clf.class_names,self.clf.meta['open_set']
        self.weights = self.rule.get('imagenet_head')
        self.photos_dir = photos_dir

    def answer(self, items:list)->tuple[dict, np.ndarray]:
        "Signals (from the predictions) and the shipped `none_of_these` for `items` (PIL images are saved as PNG first)."
        paths = []
        for i,it in enumerate(items):
            if isinstance(it, Image.Image):
                p = self.photos_dir/f'photo_{i:03d}.png'
                if not p.exists(): self.photos_dir.mkdir(parents=True, exist_ok=True); it.save(p)
                it = p
            paths.append(it)
        res = self.clf.predict(paths, top_k=len(self.class_names))
        bad = [r for r in res if 'error' in r]
        if bad: raise DogftError(f"{bad[0]['path']}: {bad[0]['error']}")
        s = dict(conf=np.array([r['top'][0]['prob'] for r in res]), pred=np.array([self.class_names.index(r['top'][0]['breed']) for r in res]))
        if 'imagenet' in res[0]:
            s.update(dog=np.array([r['imagenet']['dog'] for r in res]), own=np.array([r['imagenet']['own'] for r in res]),
                     inet_top=np.array([r['imagenet']['top'] for r in res]))
        return s,np.array([r['none_of_these'] for r in res])


def run_images(engine, items:list, bs:int=32, cache:Path|None=None)->tuple[np.ndarray, np.ndarray]:
    "Logits of both heads for `items` (paths or PIL images), cached in `cache` (an .npz) when given."
    if cache is not None and cache.exists():
        d = np.load(cache); return d['z'],d['g']
    Z,G = [],[]
    for i in range(0, len(items), bs):
        x = np.stack([preprocess(it if isinstance(it, Image.Image) else load_image(it), engine.meta) for it in items[i:i + bs]])
        z,g = engine.logits(x); Z.append(z); G.append(g)
    z,g = np.concatenate(Z),np.concatenate(G)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix('.tmp.npz'); np.savez(tmp, z=z, g=g); tmp.replace(cache)
    return z,g


# ---------------------------------------------------------------------------------------------------------------
def _key(*parts)->str: return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]

def evaluate_run(run:dict, root:Path, args)->dict:
    "Thresholds from the validation split, then the rates on every evaluation set, for one run."
    from dogft import export as ex
    from dogft.core import sha256_file
    t0 = time.time()
    breeds = {b.name: b for b in load_breeds()}
    dd = ex.run_data_dir(root, run)
    df = read_split(dd)
    sha = sha256_file(run['checkpoint'])[:16]
    wd = Path(args.work_dir) if args.work_dir else benchlib.work_dir('open_set')
    val_paths = [dd/p for p in df[df.split == 'val'].path]
    shipped = {}  # set name -> the shipped none_of_these (onnx engine)
    if args.engine == 'torch':
        eng = TorchEngine(run)
        trained_idx = [breeds[n].imagenet_index for n in eng.class_names]
        def sig(set_name, items):
            z,g = run_images(eng, items, cache=wd/f"{run['run']}-{sha}-{set_name}-{_key([str(i) if not isinstance(i, Image.Image) else i.size for i in items])}.npz")
            return signals(z, g, trained_idx)
        sval = sig('val', val_paths)
        t = fit_thresholds(sval, args.alpha)  # fixed here, before any evaluation set is computed
    else:
        rep = ex.export_model(run['run'], out_dir=root, quantize=args.quantize, repeats=1, quiet=True)
        if rep['status'] != 'passed': raise DogftError(f"export of {run['run']} failed its gate")
        eng = OnnxEngine(Path(rep['int8' if args.quantize else 'fp32']['file']), wd/'photos')
        def sig(set_name, items):
            s,flag = eng.answer(items); shipped[set_name] = flag
            return s
        sval = sig('validation', val_paths)
        t = eng.rule['thresholds']  # chosen by dogft-export on the validation split
    names = eng.class_names
    test = df[df.split == 'test'].reset_index(drop=True)
    stest = sig('test', [dd/p for p in test.path])
    trained_syn = {breeds[n].synset for n in names}
    others = other_breed_images(Path(args.dogs120), trained_syn, args.per_breed, args.seed)
    sother = sig('others', [p for _,p in others])
    photos = non_dog_photos()
    snd = sig('nondog', [im for _,im,_ in photos])
    sets = dict(validation=(sval, None), trained_test=(stest, None), other_breeds=(sother, [f for f,_ in others]), non_dogs=(snd, [n for n,_,_ in photos]))
    rows = []
    for set_name,(s,_) in sets.items():
        r = apply_rule(s, t)
        if shipped:  # what dogft-predict answered, which the rule on its reported signals must reproduce
            key = dict(validation='validation', trained_test='test', other_breeds='others', non_dogs='nondog')[set_name]
            near = np.any([np.abs(np.asarray(s[k]) - v) < 1e-5 for k,v in t.items() if k in s], axis=0)  # the reported signals are rounded to 6 decimals
            assert ((shipped[key] == r['any']) | near).all(), f"{set_name}: dogft-predict's none_of_these differs from the rule on its signals"
            r['any'] = shipped[key]
        n = len(s['conf'])
        row = dict(set=set_name, n=n)
        for k in ('dog', 'own', 'conf', 'any'):
            if k not in r: continue
            c = int(r[k].sum()); lo,hi = wilson(c, n)
            row[k] = dict(k=c, rate=c/n, ci95=[lo, hi])
        rows.append(row)
    # per breed of the other breeds, and the photos one by one
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    r_o = apply_rule(sother, t)
    per_breed = {}
    for i,(f,_) in enumerate(others):
        d = per_breed.setdefault(f, [0, 0]); d[0] += int(r_o['any'][i]); d[1] += 1
    breed_rows = sorted(({'breed': f, 'flagged': a, 'n': n, 'rate': a/n} for f,(a,n) in per_breed.items()), key=lambda r: (r['rate'], r['breed']))
    r_nd = apply_rule(snd, t)
    inet_name = lambda v: v if isinstance(v, str) else info.index_to_description(int(v)).split(',')[0]
    photo_rows = [dict(photo=nm, source=src, none_of_these=bool(r_nd['any'][i]), reason=r_nd['reason'][i], dog=float(snd['dog'][i]),
                       own=float(snd['own'][i]), conf=float(snd['conf'][i]), breed=names[int(snd['pred'][i])],
                       imagenet_top=inet_name(snd['inet_top'][i]))
                  for i,(nm,_,src) in enumerate(photos)]
    r_t = apply_rule(stest, t)
    test_flagged = [dict(path=test.path[i], reason=r_t['reason'][i], dog=float(stest['dog'][i]), own=float(stest['own'][i]), conf=float(stest['conf'][i]))
                    for i in np.flatnonzero(r_t['any'])]
    q = lambda s: {k: [float(np.quantile(s[k], x)) for x in (0, .01, .05, .5)] for k in ('dog', 'own', 'conf')}
    return dict(run=run['run'], strategy=run['strategy'], engine=args.engine + (f' {args.quantize}' if args.quantize and args.engine == 'onnx' else ''), weights=eng.weights, alpha=args.alpha, n_val=len(val_paths), thresholds=t,
                rows=rows, other_breeds_worst=breed_rows[:15], other_breeds_n_breeds=len(per_breed),
                non_dog_photos=photo_rows, trained_test_flagged=test_flagged,
                quantiles={k: q(s) for k,(s,_) in sets.items()}, seconds=round(time.time() - t0, 1))


def show(res:list[dict], per_breed:int)->str:
    "The report as markdown."
    L = ["Rates of \"none of these\" per set and rule (a rule fires when its signal is below its validation threshold; "
         "`any` = the shipped rule). 95% Wilson intervals in brackets.", ""]
    pct = lambda d: f"{d['rate']:.1%} ({d['k']}) [{d['ci95'][0]:.1%}, {d['ci95'][1]:.1%}]"
    for r in res:
        th = ', '.join(f"{k} < {v:.4g}" for k,v in r['thresholds'].items())
        L += [f"### {r['run']} ({r.get('engine', 'torch')})", "", f"Thresholds from {r['n_val']} validation images (alpha {r['alpha']}): {th}.", "",
              "| set | n | not a dog (`dog`) | other breed (`own`) | low confidence (`conf`) | none of these (any) |", "|---|---|---|---|---|---|"]
        for row in r['rows']:
            L.append(f"| {row['set']} | {row['n']} | " + ' | '.join(pct(row[k]) if k in row else '—' for k in ('dog', 'own', 'conf', 'any')) + ' |')
        L += ["", f"Other breeds with the lowest rates (of {r['other_breeds_n_breeds']}, "
              f"{'all official test images' if not per_breed else f'{per_breed} official test images each'}): " +
              ', '.join(f"{b['breed'].split('-', 1)[1]} {b['flagged']}/{b['n']}" for b in r['other_breeds_worst'][:10]) + '.', "",
              "Non-dog photos answered as a trained breed: " +
              (', '.join(f"{p['photo']} ({p['breed']} {p['conf']:.0%}, ImageNet: {p['imagenet_top']}, dog mass {p['dog']:.2f})"
                         for p in r['non_dog_photos'] if not p['none_of_these']) or 'none') + '.', "",
              "Trained-breed test images flagged: " + (', '.join(f"{Path(p['path']).name} ({p['reason']})" for p in r['trained_test_flagged']) or 'none') + '.', ""]
    return '\n'.join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default=None, help='root of results/ and models/ (default: $DOGFT_HOME, else .)')
    p.add_argument('--runs', default=None, help='comma-separated runs (default: every efficientnet_lite0 run with a checkpoint)')
    p.add_argument('--dogs120', default=str(SHARED/'stanford-dogs-120'), help='the 120-breed folder (default: ../shared/data/stanford-dogs-120)')
    p.add_argument('--per-breed', type=int, default=30, help='official test images per other breed, a seeded subsample (0: all; default 30)')
    p.add_argument('--seed', type=int, default=0, help='seed of that subsample')
    p.add_argument('--alpha', type=float, default=ALPHA, help=f'share of validation images each rule may flag (default {ALPHA})')
    p.add_argument('--work-dir', default=None, help='cache of logits (default: {tempdir}/dogft-bench/open_set)')
    p.add_argument('--engine', default='torch', choices=('torch', 'onnx'), help='torch: the checkpoint, thresholds fitted here; onnx: dogft-export, then dogft.predict.Classifier (default torch)')
    p.add_argument('--quantize', default=None, help='with --engine onnx: int8 to measure the int8 file')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file")
    a = p.parse_args(argv)
    from dogft import export as ex
    root = Path(a.out_dir) if a.out_dir else dogft_home()
    runs = [r for r in ex.list_runs(root) if r['has_checkpoint']]
    runs = [r for r in runs if r['run'] in a.runs.split(',')] if a.runs else [r for r in runs if r['model'] == 'efficientnet_lite0']
    if not runs: raise SystemExit(f"error: no run to study under {root}: train one (dogft-train --model efficientnet_lite0)")
    machine = benchlib.machine_info()
    res = [evaluate_run(r, root, a) for r in runs]
    md = show(res, a.per_breed)
    print(md)
    if a.name:
        data = dict(command=benchlib.command_line(__file__, argv), engine=a.engine, quantize=a.quantize, goal=GOAL, dog_classes=DOG_CLASSES,
                    per_breed=a.per_breed, runs=res, machine=machine)
        benchlib.save_report(a.results, a.name, data, md + '\n' + benchlib.machine_line(machine))
        print(f"wrote report {a.name!r} to {benchlib.show_path(a.results)}")


if __name__ == '__main__':
    main()
