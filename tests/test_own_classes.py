"Issue 27 part 1: any folder of class folders. Synthetic classes that are neither dog breeds nor ImageNet classes go through every console script: data, train (freeze), analyze, export, predict."
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd, pytest

from dogft.testing import OWN_CLASSES, make_own_classes, make_shape_image

BIN = Path(sys.executable).parent


def run(prog, *args, home, timeout=600):
    "Run console script `prog` in `home` (also `DOGFT_HOME`), offline, with no data source from the environment."
    env = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL', 'DOGFT_HOME')}
    env.update(DOGFT_HOME=str(home), HF_HUB_OFFLINE='1')
    return subprocess.run([str(BIN/prog), *map(str, args)], cwd=home, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(r, prog, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f'{prog}: error: ') and 'Traceback' not in r.stderr, r.stderr
    for n in needles: assert n in lines[-1], lines[-1]


def test_own_classes_end_to_end(tmp_path):
    src = make_own_classes(tmp_path/'shapes', n=14)
    home = tmp_path/'home'; home.mkdir()
    r = run('dogft-data', '--source', src, home=home)
    assert r.returncode == 0, r.stderr
    assert '3 classes (blue_circle, green_stripes, red_square), all kept (choose some with --classes)' in r.stdout
    assert 'wrote 42 images of 3 classes' in r.stdout
    split = pd.read_csv(home/'data'/'processed'/'split.csv')
    assert sorted(split.breed.unique()) == sorted(OWN_CLASSES) and split.groupby('split').size().to_dict() == dict(test=6, train=30, val=6)

    r = run('dogft-train', '--strategy', 'freeze', '--img-size', '64', '--epochs', '1', '--batch-size', '8', '--device', 'cpu', home=home)
    assert r.returncode == 0, r.stderr
    m = json.loads((home/'results'/'metrics'/'efficientnet_lite0_freeze_s42_results.json').read_text())
    assert m['class_names'] == sorted(OWN_CLASSES) and m['weights']['pretrained'] and m['weights']['source'] == 'package'
    assert m['training']['head'] == dict(init='imagenet', imagenet_rows=[], random_rows=sorted(OWN_CLASSES))  # no ImageNet row to start from
    assert len(m['test_predictions']) == 6

    r = run('dogft-analyze', home=home)
    assert r.returncode == 0, r.stderr
    md = (home/'results'/'comparison.md').read_text()
    assert 'no zero-shot baseline' in md and 'not ImageNet classes' in md, md

    r = run('dogft-export', '--repeats', '1', home=home)
    assert r.returncode == 0, r.stderr
    onnx = home/'models'/'best_model_efficientnet_lite0.onnx'
    assert onnx.is_file()

    test = [p for p in m['test_predictions']]
    paths = [home/'data'/'processed'/t['path'] for t in test]
    r = run('dogft-predict', '--json', *paths, home=home)
    assert r.returncode == 0, r.stderr
    out = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    assert len(out) == len(paths)
    for o,t in zip(out, test):
        assert {x['breed'] for x in o['top']} <= set(OWN_CLASSES), o
        assert o['top'][0]['breed'] == t['predicted'], (o, t)  # the exported model answers as the trained one did
    new = tmp_path/'new.jpg'; new.write_bytes(make_shape_image('red_square', seed=999))  # a picture it has never seen
    r = run('dogft-predict', new, home=home)
    assert r.returncode == 0 and any(c in r.stdout for c in OWN_CLASSES), r.stdout + r.stderr


def test_own_classes_clear_errors(tmp_path):
    home = tmp_path/'home'; home.mkdir()
    src = make_own_classes(tmp_path/'shapes', n=8)
    (src/'empty').mkdir()
    one_line_error(run('dogft-data', '--source', src, home=home), 'dogft-data', 'no usable images for class(es) empty', '--classes')
    r = run('dogft-data', '--source', src, '--classes', 'Red Square,blue circle', home=home)  # choosing leaves the empty class out
    assert r.returncode == 0 and 'wrote 16 images of 2 classes' in r.stdout, r.stdout + r.stderr
    (src/'empty').rmdir(); make_own_classes(src, ['few'], n=3)
    one_line_error(run('dogft-data', '--source', src, home=home), 'dogft-data', 'needs 4 per class', 'few has 3')
    (src/'Red  Square').mkdir()
    one_line_error(run('dogft-data', '--source', src, '--classes', 'blue_circle', home=home), 'dogft-data', "'Red  Square' and 'red_square'", 'rename one')
    (src/'Red  Square').rmdir()
    one_line_error(run('dogft-data', '--source', src, '--classes', 'blue_circel', home=home), 'dogft-data', "unknown class 'blue_circel'", 'did you mean blue_circle')
    one_line_error(run('dogft-data', '--source', src, '--breeds', 'few', '--classes', 'few', home=home), 'dogft-data', '--breeds or --classes, not both')
    assert sorted(pd.read_csv(home/'data'/'processed'/'split.csv').breed.unique()) == ['blue_circle', 'red_square']  # the failures changed nothing


def test_labels_csv(tmp_path):
    "`--labels CSV`: the same classes from `path,label` rows, paths relative to the CSV's folder when there is no --source."
    home = tmp_path/'home'; home.mkdir()
    d = tmp_path/'photos'; d.mkdir()
    rows = ['path,label']
    for i,c in enumerate(OWN_CLASSES):
        for j in range(6):
            (d/f'img_{i}_{j}.jpg').write_bytes(make_shape_image(c, seed=i*100 + j))
            rows.append(f'img_{i}_{j}.jpg,{c.replace("_", " ").title()}')
    (d/'labels.csv').write_text('\n'.join(rows) + '\n')
    r = run('dogft-data', '--labels', d/'labels.csv', home=home)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(home/'data'/'processed'/'split.csv')
    assert sorted(df.breed.unique()) == sorted(OWN_CLASSES) and len(df) == 18
    (d/'labels.csv').write_text('path,label\n../outside.jpg,cat\n')
    one_line_error(run('dogft-data', '--labels', d/'labels.csv', home=home), 'dogft-data', "'../outside.jpg' is not a path inside the source folder")
