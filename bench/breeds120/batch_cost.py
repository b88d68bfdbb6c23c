"""Seconds per training batch where nothing can be cached, on this CPU: the full strategy (dogft recipe) and the seed recipe's freeze, PyTorch, batch 32, 224 px, 120 classes.

    python bench/breeds120/batch_cost.py

The mean of three timed steps after one untimed; an epoch of the 120 breeds is 319 batches. breeds120.py cites it for the runs it could not make here.
"""
import time, torch, json
from dogft.train import resolve_config, _head_model, Autocast
from dogft.strategies import apply_strategy
from dogft.features import autocast_dtype
from dogft.config import TrainConfig
torch.set_num_threads(2)
vocab = [f'c{i}' for i in range(120)]
out = {}
for strategy, recipe in (('full', 'dogft'), ('freeze', 'seed')):
    c = resolve_config(TrainConfig(strategy=strategy, recipe=recipe, head_init='random'))
    m = _head_model(c, vocab); apply_strategy(m, c.strategy, bn=c.bn); m.train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 1e-5)
    dt = autocast_dtype('cpu', c.precision)
    x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 120, (32,))
    ts = []
    for i in range(4):
        t0 = time.perf_counter()
        with torch.autocast('cpu', dtype=dt or torch.float32, enabled=dt is not None): loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t0)
    out[f'{strategy} ({recipe} recipe, precision {c.precision})'] = dict(seconds_per_batch=sum(ts[1:])/3, batches_per_epoch=-(-10200//32), epochs=c.epochs)
for k,v in out.items(): print(k, f"{v['seconds_per_batch']:.2f} s/batch -> {v['seconds_per_batch']*v['batches_per_epoch']/60:.0f} min per epoch of 10,200 images, {v['seconds_per_batch']*v['batches_per_epoch']*v['epochs']/3600:.1f} h for {v['epochs']} epochs")
