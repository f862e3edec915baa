"""What the fork server of a CPU study imports before it forks the workers (runner.worker_context):
a worker's imports, made once. A worker forked from it starts in a fraction of a second.

TorchDynamo is among them: a torch optimizer's first step imports it (about 0.9 s here).
"""

import gc

import torch._dynamo  # noqa: F401

import cnnsweep.worker  # noqa: F401

# As the gc module's documentation advises before fork(): the workers' collections then skip
# these long-lived objects (their memory pages stay shared), and so does the server's exit.
gc.freeze()
