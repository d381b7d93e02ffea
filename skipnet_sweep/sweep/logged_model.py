"""What MLflow runs to load a frontier run's registered model. The model is logged as code
(MLflow's "models from code": this file) with one artifact, a checkpoint holding the weights
and the config that rebuilds them; loading reads it with ``torch.load(weights_only=True)``
and rebuilds the network with the project's own builder, as every checkpoint is read, so
nothing is unpickled.

    model = mlflow.pyfunc.load_model("models:/skipnet-<sweep id>/<version>")
    logits = model.predict(images)  # float32 (N, C, H, W) -> (N, classes)
    net = model.unwrap_python_model().network  # the torch module (a ``Deployed``)
"""

from __future__ import annotations

import numpy as np
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from skipnet_sweep.methods import load_trained
from skipnet_sweep.metrics import MODEL_WEIGHTS
from skipnet_sweep.models.deploy import Deployed


class FrontierModel(PythonModel):
    """Images in, class logits out, as the network is deployed (``Deployed``)."""

    network: Deployed | None = None

    def load_context(self, context) -> None:
        net, _ = load_trained(context.artifacts[MODEL_WEIGHTS])
        self.network = Deployed(net)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.network(x).numpy()


set_model(FrontierModel())
