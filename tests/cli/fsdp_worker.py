"""One CUT training step (SGD) of a model sharded with FSDP2 ``fully_shard``; used by test_distributed.py.

Why a script of its own: accelerate only enables its FSDP plugin for GPU-type process groups
(``DistributedType.MULTI_CPU`` is excluded), so the Trainer's ``--fsdp`` cannot run on CPU. This
worker shards the model the way accelerate's FSDP2 path does (each decoder layer, optionally the
LM head on its own, then the root) and runs `CUTTrainer.compute_loss` -- the chunked log-probs
with the head sharded -- under torchrun with gloo. Without torchrun it is the 1-process reference.

    python fsdp_worker.py MODEL_DIR DATA OUT_FILE MISALIGN_MODE HEAD(root|own) EXAMPLES
"""

from __future__ import annotations

import os
import sys


def main(model_dir: str, data: str, out_file: str, misalign_mode: str, head: str, examples: int) -> None:
    import torch
    from safetensors.torch import save_file
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from cutalign.data.converters import convert
    from cutalign.data.schema import PolarityRule
    from cutalign.trainer.config import CUTConfig
    from cutalign.trainer.cut_trainer import CUTTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    canonical, _ = convert("cut-alpaca", [data], PolarityRule())
    config = CUTConfig(output_dir=os.path.dirname(out_file), report_to=[], max_length=192, use_cpu=True,
                       disable_dropout=True, positive_ratio=-1, misalign_mode=misalign_mode)
    trainer = CUTTrainer(model_dir, config, train_dataset=canonical)
    rank = config.process_index
    features = [trainer.train_dataset[i] for i in range(examples)]
    share = examples // world
    batch = trainer.data_collator(features[rank * share:(rank + 1) * share])
    model = trainer.model
    if world > 1:
        for layer in model.model.layers:
            fully_shard(layer)
        if head == "own":
            fully_shard(model.lm_head)
        fully_shard(model)
        assert isinstance(model.lm_head.weight, DTensor)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    optimizer.step()
    state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    if rank == 0:
        save_file(state, out_file)
        print(f"processes: {world}, loss {float(loss):.6f}, padding_free {trainer.data_collator.padding_free}")


if __name__ == "__main__":
    main(*sys.argv[1:6], int(sys.argv[6]))
