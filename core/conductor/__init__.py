"""The cloud-agnostic conductor: placement, container lifecycle, housekeeping."""

from core.conductor.conductor import Conductor
from core.conductor.fleet import ContainerFleet
from core.conductor.housekeeping import Housekeeper, HousekeepingReport

__all__ = ["Conductor", "ContainerFleet", "Housekeeper", "HousekeepingReport"]
