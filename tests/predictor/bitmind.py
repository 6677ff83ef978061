"""What the predictor's Python peers share: SN34 BitMind's `ImageSynapse` (bitmind/protocol.py at
557b085) and the offline patch `bittensor` needs before a Dendrite or Axon is made.

Import this before anything else from `bittensor`: the Dendrite asks the internet for its external
IP at construction, and this machine has no internet.
"""
import bittensor.utils.networking as networking


def offline(external_ip: str) -> None:
    """Makes `bittensor` believe its external IP is `external_ip` (a Dendrite whose external IP
    equals the target's addresses it as 0.0.0.0, so clients pick one that is not the axon's)."""
    networking.get_external_ip = lambda: external_ip


offline("127.0.0.2")

import bittensor as bt  # noqa: E402


class ImageSynapse(bt.Synapse):
    """SN34 BitMind's synapse: a base64 image in, the probability it is generated out."""
    image: str = ""
    prediction: float = -1.0

    def deserialize(self) -> float:
        return self.prediction
