__version__ = "0.0.1"

# fastai 2.8 on torch 2.14 / pandas 3 warns at import time about its own code (torch.jit.script in fastai.layers,
# pandas' retired `mode.chained_assignment` option in fastai.tabular). Nothing a dogft user can act on, printed by
# every command: silence exactly those two messages, nothing else.
import warnings as _warnings
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
_warnings.filterwarnings('ignore', message=r"The 'mode\.chained_assignment' option is deprecated")
