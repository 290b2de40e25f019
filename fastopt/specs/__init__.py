"""Every optimizer's definition (`fastopt.spec.Spec`), one file per family.

`SPECS` lists them in the order the front ends export them; adding an
optimizer is a rule in `kernels/rules.py`, its spec file here, and its line
below.
"""
from .adadelta import ADADELTA
from .adafactor import ADAFACTOR
from .adagrad import ADAGRAD
from .adam import ADAM, ADAMW
from .adamax import ADAMAX
from .asgd import ASGD
from .ftrl import FTRL
from .lamb import LAMB
from .lion import LION
from .muon import MUON
from .nadam import NADAM
from .radam import RADAM
from .rmsprop import RMSPROP
from .rprop import RPROP
from .schedule_free import SCHEDULE_FREE_ADAMW
from .sgd import SGD

SPECS = (SGD, ADAGRAD, RMSPROP, ADAM, ADAMW, ADAMAX, LION, NADAM, ASGD, FTRL,
         SCHEDULE_FREE_ADAMW, ADADELTA, RADAM, RPROP)

# Optimizers whose step is a program of passes (`fastopt.spec.Program`): the
# front ends that run them (functional, fastopt.keras, fastopt.torch) derive
# their functions and classes from these as from `SPECS`.
PROGRAMS = (LAMB, ADAFACTOR, MUON)
