"Memory that stays flat: a process that goes through many batches of 224-pixel images does not grow with each one."
import json, platform, subprocess, sys, textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys, psutil
    from pathlib import Path
    from dogft.loaders import fix_mmap_threshold, get_test_dl
    from dogft.data import prepare_data
    from dogft.testing import make_fake_stanford
    if sys.argv[2] != 'default': fix_mmap_threshold(int(sys.argv[2]))  # the control: batches served from the heap
    root = Path(sys.argv[1])
    src = make_fake_stanford(root/'src', breeds=('beagle', 'boxer'), n=40, size=(120, 90))
    d = prepare_data(src, 'beagle,boxer', root/'processed', quiet=True)
    dl = get_test_dl(d, device='cpu', split='train', bs=32, verbose=False)
    rss = lambda: psutil.Process().memory_info().rss/2**20
    samples = []
    for _ in range(40):  # 80 batches; resident memory swings by a batch or so from pass to pass: compare the first passes with the last
        for x,y in dl: (x*2).sum()
        samples.append(rss())
    print(json.dumps(dict(growth_mib=sum(samples[-8:])/8 - sum(samples[:8])/8)))
''')

def _growth(tmp_path, threshold:str)->float:
    r = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path/threshold), threshold], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])['growth_mib']

@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='the allocator setting is glibc\'s')
def test_batches_do_not_grow_the_process(tmp_path):
    "With dogft.loaders' fixed mmap threshold the process's memory stays flat over 80 batches of 32 images at 224 px; the control (batches on the heap) grows."
    flat,control = _growth(tmp_path, 'default'),_growth(tmp_path, str(64 << 20))  # the control has grown by 140 to 350 MiB here, flat by 1
    assert flat < 40, f"the process grew by {flat:.0f} MiB over 80 batches"
    assert control > flat + 50, \
        f"the control grew by only {control:.0f} MiB (default: {flat:.0f}): the test cannot tell the difference"
