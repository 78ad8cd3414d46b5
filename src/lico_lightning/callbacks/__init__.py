"""Monitors: explain a probe set while a model trains, in a Trainer, under Fabric or in a loop.

:class:`ExplanationMonitor` is the one base (schedule, probes, runs, logging, safety; its
hosts are :class:`MonitorHost` adapters, its probe sets :class:`ProbeSet` dataclasses);
:class:`SaliencyMonitor` specialises it for classifiers, :class:`GroundingMonitor` for dual
encoders (phrase maps vs boxes), :class:`ConceptMonitor` for EXPLAIN-R surrogates. Under a
``Trainer`` a monitor is a callback; in a plain loop or a Fabric script call
``monitor.attach(model, probes, ...)`` once and ``monitor.step(global_step, epoch)``.
"""

from lico_lightning.callbacks.concept_monitor import ConceptMonitor, ConceptProbes
from lico_lightning.callbacks.grounding_monitor import GroundingMonitor, GroundingProbes
from lico_lightning.callbacks.hosts import MonitorHost
from lico_lightning.callbacks.monitor import Evaluation, ExplanationMonitor
from lico_lightning.callbacks.probes import ProbeSet
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
