"""One rank of the 2-process HybridTrainer run of test_distributed.py (launched with torchrun)."""
import hashlib
import sys
import warnings

import torch
import torch.distributed as dist

warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[2])

from tests.bench.test_distributed import exit_worker  # noqa: E402
from tests.hf.test_distributed import run  # noqa: E402

torch.set_num_threads(1)
tr = run(sys.argv[1], per_device=2)
h = hashlib.sha256()
for p in tr.model.parameters():
    h.update(p.detach().contiguous().view(torch.uint8).numpy().tobytes())
hashes = [None] * dist.get_world_size()
dist.all_gather_object(hashes, h.hexdigest())
if dist.get_rank() == 0:
    torch.save({"losses": [x["loss"] for x in tr.state.log_history if "loss" in x], "hashes": hashes,
                "per_step": tr.hybrid.comm.stats.per_step, "world": dist.get_world_size(),
                "weights": [p.detach().clone() for p in tr.model.parameters()],
                "fo_numel": sum(p.numel() for p in tr.hybrid.fo_params)}, sys.argv[1] + "/dp.pt")
exit_worker()   # results written; see exit_worker for the gloo teardown race it avoids
