"""Monitors: explain a probe set while a model trains, in a Trainer, under Fabric or in a loop.

:class:`ExplanationMonitor` is the one base (schedule, probes, hosts, logging, safety);
:class:`SaliencyMonitor` specialises it for classifiers, :class:`GroundingMonitor` for dual
encoders (phrase maps vs boxes).
"""

from lico_lightning.callbacks.concept_monitor import ConceptMonitor, ConceptProbes
from lico_lightning.callbacks.grounding_monitor import GroundingMonitor, GroundingProbes
from lico_lightning.callbacks.monitor import Evaluation, ExplanationMonitor, MonitorHost, ProbeSet
from lico_lightning.callbacks.saliency_monitor import SaliencyMonitor, SaliencyProbes

__all__ = [
    "ConceptMonitor",
    "ConceptProbes",
    "Evaluation",
    "ExplanationMonitor",
    "GroundingMonitor",
    "GroundingProbes",
    "MonitorHost",
    "ProbeSet",
    "SaliencyMonitor",
    "SaliencyProbes",
]
