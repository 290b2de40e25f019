import json, sys, numpy as np
from fastopt.bench.overhead import cold_start
import fastopt; print(fastopt.__file__, file=sys.stderr)
out = cold_start(["adam", "sgd"], np.float32, 2)
print(json.dumps(out))
